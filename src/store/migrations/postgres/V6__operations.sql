-- API tokens of the operations API: only a SHA-256 of each token is kept.
CREATE TABLE tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at BIGINT  NOT NULL,
    revoked_at BIGINT
);
-- Finding failed messages by the time they last changed, and dead letters
-- by key (only dead messages are in it: nothing on the delivery path).
CREATE INDEX messages_by_update ON messages (status, updated_at, id) WHERE status <> 1;
CREATE INDEX messages_dead_by_key ON messages (key, id) WHERE status = 2;
-- Bulk replays by filter, run by the hub in chunks: progress, pause, cancel.
CREATE TABLE tasks (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT    NOT NULL,
    filter     TEXT    NOT NULL,
    cap        BIGINT  NOT NULL,
    status     TEXT    NOT NULL,
    cursor     BIGINT  NOT NULL DEFAULT 0,
    total      BIGINT  NOT NULL,
    done       BIGINT  NOT NULL DEFAULT 0,
    actor      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
