-- Bank results per payment, and alarms operations must see.
-- result: NULL while no result has come; ACCEPTED, REJECTED or PENDING.
ALTER TABLE payments ADD COLUMN result TEXT;
ALTER TABLE payments ADD COLUMN reason_code TEXT;
ALTER TABLE payments ADD COLUMN result_at BIGINT;

CREATE TABLE alarms (
    at       BIGINT  NOT NULL,
    batch_id TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    PRIMARY KEY (batch_id, kind, detail)
);
