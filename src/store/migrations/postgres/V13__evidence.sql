-- The exchange log (src/store/evidence): facts written unchained in the
-- transaction that makes them durable; the chainer gives each its position,
-- the hash of the entry before and its own hash. Chained entries and seals
-- cannot be changed or removed.
CREATE TABLE evidence (
    id   BIGSERIAL PRIMARY KEY,
    at   BIGINT NOT NULL,
    kind TEXT   NOT NULL,
    body TEXT   NOT NULL,
    pos  BIGINT UNIQUE,
    prev BYTEA,
    hash BYTEA
);
CREATE INDEX evidence_unchained ON evidence (id) WHERE pos IS NULL;
CREATE INDEX evidence_by_time ON evidence (at) WHERE pos IS NOT NULL;

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
    IF TG_TABLE_NAME = 'evidence_seals' OR OLD.pos IS NOT NULL THEN
        RAISE EXCEPTION 'the exchange log is append-only: % of a chained entry or seal refused', TG_OP;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER evidence_append_only BEFORE UPDATE OR DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
CREATE TRIGGER evidence_seals_append_only BEFORE UPDATE OR DELETE ON evidence_seals
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
