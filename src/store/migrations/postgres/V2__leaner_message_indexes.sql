-- Fewer index writes per message. The inbox's (source, source_id) key
-- already makes each message once (messages are written only with a new
-- inbox row, in its transaction), so idem_key needs no unique index of its
-- own; and delivered messages, the bulk of the table, leave the status
-- index (operators list pending, dead and skipped messages).
ALTER TABLE messages DROP CONSTRAINT messages_idem_key_key;
DROP INDEX messages_by_status;
CREATE INDEX messages_by_status ON messages (target, status, id) WHERE status <> 1;
