-- The exchange log (src/store/evidence): facts written unchained in the
-- transaction that makes them durable; the chainer gives each its position,
-- the hash of the entry before and its own hash. Chained entries and seals
-- cannot be changed or removed.
CREATE TABLE evidence (
    id   INTEGER PRIMARY KEY,
    at   BIGINT NOT NULL,
    kind TEXT   NOT NULL,
    body TEXT   NOT NULL,
    pos  BIGINT UNIQUE,
    prev BLOB,
    hash BLOB
);
CREATE INDEX evidence_unchained ON evidence (id) WHERE pos IS NULL;
CREATE INDEX evidence_by_time ON evidence (at) WHERE pos IS NOT NULL;

CREATE TABLE evidence_seals (
    pos       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    hash      BLOB   NOT NULL,
    algorithm TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    signature BLOB   NOT NULL
);

CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence WHEN OLD.pos IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a chained entry cannot be changed'); END;
CREATE TRIGGER evidence_no_delete BEFORE DELETE ON evidence WHEN OLD.pos IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a chained entry cannot be removed'); END;
CREATE TRIGGER evidence_seals_no_update BEFORE UPDATE ON evidence_seals
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a seal cannot be changed'); END;
CREATE TRIGGER evidence_seals_no_delete BEFORE DELETE ON evidence_seals
BEGIN SELECT RAISE(ABORT, 'the exchange log is append-only: a seal cannot be removed'); END;
