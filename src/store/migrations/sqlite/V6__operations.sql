-- API tokens of the operations API: only a SHA-256 of each token is kept.
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
-- Finding failed messages by the time they last changed.
CREATE INDEX messages_by_update ON messages (status, updated_at, id) WHERE status <> 1;
