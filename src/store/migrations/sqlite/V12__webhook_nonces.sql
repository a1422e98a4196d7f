-- The nonces of signed webhook requests seen within the window, kept in the
-- store so that a request replayed after a restart, or to another hub on
-- the same store, is still refused. Rows older than twice the window are
-- removed as new ones arrive (the timestamp check refuses such requests).
CREATE TABLE webhook_nonces (
    connector TEXT   NOT NULL,
    nonce     TEXT   NOT NULL,
    seen_at   BIGINT NOT NULL,
    PRIMARY KEY (connector, nonce)
);
CREATE INDEX webhook_nonces_by_age ON webhook_nonces (seen_at);
