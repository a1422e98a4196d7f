-- The exchange log (src/store/evidence). A fact is written to `evidence`
-- and named in `evidence_pending` in the transaction that makes it durable;
-- the chainer gives each pending fact its place in `evidence_chain` (its
-- position, the hash of the entry before, its own hash) and takes it off
-- the pending list. Facts, chain and seals cannot be changed or removed.
CREATE TABLE evidence (
    id   INTEGER PRIMARY KEY,
    at   BIGINT NOT NULL,
    kind TEXT   NOT NULL,
    body TEXT   NOT NULL
);
CREATE TABLE evidence_pending (id INTEGER PRIMARY KEY);
CREATE TABLE evidence_chain (
    pos  INTEGER PRIMARY KEY,
    id   BIGINT NOT NULL UNIQUE,
    prev BLOB   NOT NULL,
    hash BLOB   NOT NULL
);
CREATE INDEX evidence_by_time ON evidence (at);

CREATE TABLE evidence_seals (
    pos       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    hash      BLOB   NOT NULL,
    algorithm TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    signature BLOB   NOT NULL
);

CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a fact cannot be changed'); END;
CREATE TRIGGER evidence_no_delete BEFORE DELETE ON evidence
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a fact cannot be removed'); END;
CREATE TRIGGER evidence_chain_no_update BEFORE UPDATE ON evidence_chain
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: the chain cannot be changed'); END;
CREATE TRIGGER evidence_chain_no_delete BEFORE DELETE ON evidence_chain
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: the chain cannot be changed'); END;
CREATE TRIGGER evidence_seals_no_update BEFORE UPDATE ON evidence_seals
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a seal cannot be changed'); END;
CREATE TRIGGER evidence_seals_no_delete BEFORE DELETE ON evidence_seals
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a seal cannot be removed'); END;
