-- Whose each payment is, and the holds on a person's payments from a month
-- on (a death registered after that month's payments were made): a held
-- payment goes into no batch, and those already in one raise an alarm.
ALTER TABLE payments ADD COLUMN holder_id TEXT NOT NULL DEFAULT '';
UPDATE payments SET holder_id = COALESCE(convert_from(record, 'UTF8')::jsonb ->> 'holder_id', '');
CREATE INDEX payments_by_holder ON payments (holder_id, period);

-- One hold per person, from the earliest month any stop gave.
CREATE TABLE payout_holds (
    holder_id   TEXT PRIMARY KEY,
    from_period TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    at          BIGINT NOT NULL
);
