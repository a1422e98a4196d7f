-- Inbox: every source record, verbatim, once per (source, source_id).
CREATE TABLE inbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT    NOT NULL,
    source_id   TEXT    NOT NULL,
    record      BYTEA    NOT NULL,
    received_at BIGINT  NOT NULL,
    UNIQUE (source, source_id)
);

-- Outbox: one row per (source record, mapping). status: 0 pending,
-- 1 delivered, 2 dead, 3 skipped.
CREATE TABLE messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox_id   BIGINT  NOT NULL REFERENCES inbox (id),
    mapping    TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    idem_key   TEXT    NOT NULL UNIQUE,
    payload    BYTEA    NOT NULL,
    status     BIGINT  NOT NULL DEFAULT 0,
    attempts   BIGINT  NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    last_error TEXT
);
CREATE INDEX messages_pending_by_key ON messages (target, key, id) WHERE status = 0;
CREATE INDEX messages_by_status ON messages (target, status, id);

-- One row per (target, key) with pending work: its oldest pending message.
-- due_at: when it may be claimed (NULL: parked behind a dead message);
-- lease: bumped at every claim, so a stale worker cannot settle.
CREATE TABLE heads (
    target     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    message_id BIGINT  NOT NULL,
    due_at     BIGINT,
    lease      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (target, key)
);
CREATE INDEX heads_due ON heads (target, due_at) WHERE due_at IS NOT NULL;

-- Every delivery attempt, append-only.
CREATE TABLE attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  BIGINT  NOT NULL,
    at          BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    outcome     BIGINT  NOT NULL,
    status_code BIGINT,
    error_class TEXT,
    excerpt     TEXT
);
CREATE INDEX attempts_by_message ON attempts (message_id, id);

-- Source records a mapping could not map, with the reason.
CREATE TABLE quarantine (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox_id    BIGINT  NOT NULL REFERENCES inbox (id),
    mapping     TEXT    NOT NULL,
    part        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    resolved_at BIGINT
);

CREATE TABLE cursors (
    source     TEXT PRIMARY KEY,
    cursor     TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE targets (
    target TEXT PRIMARY KEY,
    paused BIGINT  NOT NULL DEFAULT 0
);

-- Who did what, when and why.
CREATE TABLE audit (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    reason  TEXT    NOT NULL
);
