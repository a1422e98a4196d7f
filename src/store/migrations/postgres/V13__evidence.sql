-- The exchange log (src/store/evidence). A fact is written to `evidence`
-- and named in `evidence_pending` in the transaction that makes it durable;
-- the chainer gives each pending fact its place in `evidence_chain` (its
-- position, the hash of the entry before, its own hash) and takes it off
-- the pending list. Facts, chain and seals cannot be changed or removed.
CREATE TABLE evidence (
    id   BIGSERIAL PRIMARY KEY,
    at   BIGINT NOT NULL,
    kind TEXT   NOT NULL,
    body TEXT   NOT NULL
);
CREATE TABLE evidence_pending (id BIGINT PRIMARY KEY);
CREATE TABLE evidence_chain (
    pos  BIGINT PRIMARY KEY,
    id   BIGINT NOT NULL UNIQUE,
    prev BYTEA  NOT NULL,
    hash BYTEA  NOT NULL
);
CREATE INDEX evidence_by_time ON evidence (at);

CREATE TABLE evidence_seals (
    pos       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    hash      BYTEA  NOT NULL,
    algorithm TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    signature BYTEA  NOT NULL
);

CREATE FUNCTION evidence_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the exchange log is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER evidence_append_only BEFORE UPDATE OR DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
CREATE TRIGGER evidence_chain_append_only BEFORE UPDATE OR DELETE ON evidence_chain
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
CREATE TRIGGER evidence_seals_append_only BEFORE UPDATE OR DELETE ON evidence_seals
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
