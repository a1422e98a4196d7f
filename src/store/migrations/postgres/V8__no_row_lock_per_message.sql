-- Messages and quarantine rows no longer carry a foreign key to the inbox.
--
-- The key made PostgreSQL run a check for every message inserted
-- (SELECT 1 FROM inbox WHERE id = $1 FOR KEY SHARE): a statement, and a
-- row lock written to the inbox row's page and to the WAL, per message.
-- What it guarded is kept by the store's code: messages and quarantine rows
-- are written only in the transaction that stores their inbox row (ingest),
-- or from an inbox row read in the same transaction (resolving quarantine),
-- and no inbox row is ever deleted. SQLite keeps its keys: there a check is
-- an index probe in the same process, and locks no row.
ALTER TABLE messages DROP CONSTRAINT messages_inbox_id_fkey;
ALTER TABLE quarantine DROP CONSTRAINT quarantine_inbox_id_fkey;
