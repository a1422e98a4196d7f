-- The SHA-256 of a batch's file once it has been written to the bank's
-- directory: a later build does not send it again (the bank takes files
-- away when it has read them).
ALTER TABLE batches ADD COLUMN file_sha256 TEXT;
