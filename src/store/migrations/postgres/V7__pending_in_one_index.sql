-- Pending messages live in one index only, messages_pending_by_key.
--
-- messages_by_status and messages_by_update held every message but the
-- delivered ones, so pending messages too: two more index entries for each
-- message ingested. And both matched the delivery path's "next pending
-- message of this key" (status = 0 implies status <> 1): while the table had
-- no statistics yet (autovacuum analyses at most once a minute), the planner
-- rated them equal to messages_pending_by_key and could pick
-- messages_by_status, reading every pending message of the target for each
-- key (seen with auto_explain: 5,500 rows filtered per key, 2 s per settle
-- of 500 messages). Now they hold dead and skipped messages only; pending
-- messages are listed through messages_pending_by_key or the primary key.
DROP INDEX messages_by_status;
CREATE INDEX messages_by_status ON messages (target, status, id) WHERE status >= 2;
DROP INDEX messages_by_update;
CREATE INDEX messages_by_update ON messages (status, updated_at, id) WHERE status >= 2;
