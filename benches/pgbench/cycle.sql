-- One ingest → claim → settle cycle of 500 messages, with the statements
-- tongban's PostgreSQL store sends (src/store/postgres.rs), the arrays
-- built in SQL instead of bound from Rust. Run by `cargo bench --bench
-- outbox` against the same database, to compare tongban's cycle rate with
-- the server's: messages/s = transactions/s × 500. Each transaction holds
-- the planner to index plans, as the store's delivery path does
-- (INDEX_PLANS in src/store/postgres.rs).
\set r random(1, 1000000000000)
\set k0 random(0, 99500)
-- ingest: lock the heads or create them pointing at ids drawn under their
-- locks, store inbox rows, and messages (a new head's id to its key's first)
BEGIN;
SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
WITH h AS (INSERT INTO heads (target, key, message_id, due_at)
  SELECT t, k, nextval('messages_id_seq'), 0 FROM UNNEST(
    ARRAY(SELECT 'pgbench.target' FROM generate_series(1, 500)),
    ARRAY(SELECT 'P' || (:k0 + g) FROM generate_series(1, 500) g ORDER BY 1)) AS u(t, k)
  ON CONFLICT (target, key) DO UPDATE SET lease = heads.lease WHERE false
  RETURNING key, message_id),
  -- The new heads' ids by key, as tongban's map does it in Rust (a join of
  -- arrays would be 500 x 500 comparisons with hash joins disabled).
  o AS (SELECT coalesce(jsonb_object_agg(key, message_id), '{}') AS o FROM h)
SELECT ARRAY(SELECT (o ->> ('P' || (:k0 + g)))::bigint FROM generate_series(1, 500) g ORDER BY g)::text
  AS head_ids FROM o \gset
WITH i AS (INSERT INTO inbox (source, source_id, record, received_at)
  SELECT s, i, r, 0 FROM UNNEST(
    ARRAY(SELECT 'pgbench.source' FROM generate_series(1, 500)),
    ARRAY(SELECT :r || '-' || g FROM generate_series(1, 500) g),
    ARRAY(SELECT '\x7b226576656e745f6964223a2278227d'::bytea FROM generate_series(1, 500))) AS u(s, i, r)
  ON CONFLICT (source, source_id) DO NOTHING RETURNING id, source, source_id)
SELECT array_agg(id ORDER BY id)::text AS inbox_ids FROM i \gset
INSERT INTO messages (id, inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
  OVERRIDING SYSTEM VALUE
  SELECT coalesce(id, nextval('messages_id_seq')), i, mp, t, k, ik, p, 0, 0
  FROM UNNEST(
    ':head_ids'::bigint[],
    ':inbox_ids'::bigint[],
    ARRAY(SELECT 'm' FROM generate_series(1, 500)),
    ARRAY(SELECT 'pgbench.target' FROM generate_series(1, 500)),
    ARRAY(SELECT 'P' || (:k0 + g) FROM generate_series(1, 500) g),
    ARRAY(SELECT md5(:r || '-' || g) || md5(g::text) FROM generate_series(1, 500) g),
    ARRAY(SELECT convert_to(repeat('x', 300), 'UTF8') FROM generate_series(1, 500)))
    WITH ORDINALITY AS u(id, i, mp, t, k, ik, p, n)
  ORDER BY n;
COMMIT;
-- claim
BEGIN;
SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
WITH due AS (
    SELECT target, key FROM heads
    WHERE target = 'pgbench.target' AND due_at <= 1
      AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.target = 'pgbench.target' AND t.paused <> 0)
    ORDER BY due_at LIMIT 500 FOR UPDATE SKIP LOCKED),
  claimed AS (
    UPDATE heads h SET due_at = 9000000000000, lease = h.lease + 1
    FROM due WHERE h.target = due.target AND h.key = due.key
    RETURNING h.key, h.message_id, h.lease),
  rows AS (
    SELECT m.id, claimed.key, m.idem_key, m.payload, m.attempts, claimed.lease
    FROM claimed JOIN messages m ON m.id = claimed.message_id ORDER BY m.id)
SELECT array_agg(id ORDER BY id)::text AS ids, array_agg(key ORDER BY id)::text AS keys,
       array_agg(key ORDER BY key)::text AS sorted_keys FROM rows \gset
COMMIT;
-- settle: attempts, lock heads, mark delivered, advance heads
BEGIN;
SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
INSERT INTO attempts (message_id, at, duration_ms, outcome, status_code, error_class, excerpt)
  SELECT * FROM UNNEST(':ids'::bigint[],
    ARRAY(SELECT 0::bigint FROM UNNEST(':ids'::bigint[])), ARRAY(SELECT 1::bigint FROM UNNEST(':ids'::bigint[])),
    ARRAY(SELECT 0::bigint FROM UNNEST(':ids'::bigint[])), ARRAY(SELECT 200::bigint FROM UNNEST(':ids'::bigint[])),
    ARRAY(SELECT NULL::text FROM UNNEST(':ids'::bigint[])), ARRAY(SELECT NULL::text FROM UNNEST(':ids'::bigint[])));
SELECT count(*) FROM (
  SELECT h.message_id, h.lease FROM heads h
  JOIN (SELECT DISTINCT t, k FROM UNNEST(ARRAY(SELECT 'pgbench.target' FROM UNNEST(':sorted_keys'::text[])), ':sorted_keys'::text[]) AS u(t, k)) u
    ON h.target = u.t AND h.key = u.k
  ORDER BY h.target, h.key FOR UPDATE OF h) locked;
UPDATE messages SET status = 1, attempts = attempts + 1, updated_at = 0, last_error = NULL
  WHERE id = ANY(':ids'::bigint[]);
WITH nxt AS (
    SELECT u.t, u.k, (SELECT m.id FROM messages m
                      WHERE m.target = u.t AND m.key = u.k AND m.status = 0
                      ORDER BY m.id LIMIT 1) AS id
    FROM UNNEST(ARRAY(SELECT 'pgbench.target' FROM UNNEST(':keys'::text[])), ':keys'::text[]) AS u(t, k)),
  moved AS (
    UPDATE heads h SET message_id = nxt.id, due_at = 0
    FROM nxt WHERE h.target = nxt.t AND h.key = nxt.k AND nxt.id IS NOT NULL)
DELETE FROM heads h USING nxt
WHERE h.target = nxt.t AND h.key = nxt.k AND nxt.id IS NULL;
COMMIT;
