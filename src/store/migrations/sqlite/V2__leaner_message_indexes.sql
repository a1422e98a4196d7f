-- Fewer index writes per message. The inbox's (source, source_id) key
-- already makes each message once (messages are written only with a new
-- inbox row, in its transaction), so idem_key needs no unique index of its
-- own; and delivered messages, the bulk of the table, leave the status
-- index (operators list pending, dead and skipped messages). SQLite cannot
-- drop a column's UNIQUE constraint, so the table is rebuilt.
CREATE TABLE messages_v2 (
    id         INTEGER PRIMARY KEY,
    inbox_id   INTEGER NOT NULL REFERENCES inbox (id),
    mapping    TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    idem_key   TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    status     INTEGER NOT NULL DEFAULT 0,
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT
);
INSERT INTO messages_v2 SELECT id, inbox_id, mapping, target, key, idem_key, payload, status,
    attempts, created_at, updated_at, last_error FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_pending_by_key ON messages (target, key, id) WHERE status = 0;
CREATE INDEX messages_by_status ON messages (target, status, id) WHERE status <> 1;
