-- The payout register: every payment instruction once (payment id =
-- subsidy type + holder + period), and the batches (bank files) they go
-- out in. A payment is in at most one live batch: the unique index on live
-- memberships makes a second one impossible, whoever builds.
CREATE TABLE payments (
    payment_id TEXT PRIMARY KEY,
    period     TEXT   NOT NULL,
    bank_code  TEXT   NOT NULL,
    amount_fen BIGINT NOT NULL,
    record     BLOB   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX payments_by_period ON payments (period, bank_code, payment_id);

-- One bank file. created: its CreDtTm, fixed when the batch is made, so a
-- file rendered again is byte-identical.
CREATE TABLE batches (
    batch_id  TEXT PRIMARY KEY,
    period    TEXT   NOT NULL,
    bank_code TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    created   TEXT   NOT NULL,
    count     BIGINT NOT NULL,
    total_fen BIGINT NOT NULL,
    live      BIGINT NOT NULL DEFAULT 1,
    UNIQUE (period, bank_code, seq)
);

CREATE TABLE batch_items (
    batch_id   TEXT   NOT NULL REFERENCES batches (batch_id),
    payment_id TEXT   NOT NULL REFERENCES payments (payment_id),
    position   BIGINT NOT NULL,
    live       BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (batch_id, payment_id)
);
CREATE UNIQUE INDEX batch_items_one_live ON batch_items (payment_id) WHERE live = 1;
