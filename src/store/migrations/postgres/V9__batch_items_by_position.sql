-- A batch's payments are read in file order a page at a time (a file is
-- rendered, and a bank's answer reconciled, without holding the batch
-- whole): each page starts after the last position read.
CREATE UNIQUE INDEX batch_items_by_position ON batch_items (batch_id, position);
