//! The PostgreSQL store, through deadpool-postgres. Several hub processes
//! may share it: claims lock head rows with `FOR UPDATE SKIP LOCKED`, so
//! they never hand one message to two workers, and work spreads.

use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("src/store/migrations/postgres");
}

/// Advisory lock held while migrating, so that hubs starting together
/// migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7467_6261_6e01;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
}

/// The delivery path's statements (ingest, claim, settle, release, and the
/// advance of a head that skip shares with settle) have one right plan:
/// probes of the primary keys and of the partial indexes, joined by nested
/// loops. The planner is told to use nothing else, in the transaction only.
/// The queue tables change faster than their statistics (autovacuum
/// analyses at most once a minute, and a new database has none), and with
/// stale figures it chose, under auto_explain on the end-to-end
/// benchmark, a bitmap scan of `heads_due` that read every dead index entry
/// (199,000 for 1,000 heads) and a hash join over a sequential scan of all
/// messages to fetch 500 payloads.
const INDEX_PLANS: &str = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
                           SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// A transaction of the delivery path: see [`INDEX_PLANS`].
async fn delivery_tx(c: &mut deadpool_postgres::Object) -> Result<Transaction<'_>, StoreError> {
    let tx = c.transaction().await?;
    tx.batch_execute(INDEX_PLANS).await?;
    Ok(tx)
}

/// Claims a target's due heads (skipping heads locked by other claimers),
/// leases them and returns their messages.
const CLAIM: &str = "WITH due AS (
         SELECT target, key FROM heads
         WHERE target = $1 AND due_at <= $2
           AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.target = $1 AND t.paused <> 0)
         ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED),
     claimed AS (
         UPDATE heads h SET due_at = $4, lease = h.lease + 1
         FROM due WHERE h.target = due.target AND h.key = due.key
         RETURNING h.key, h.message_id, h.lease)
     SELECT m.id, claimed.key, m.idem_key, m.payload, m.attempts, claimed.lease
     FROM claimed JOIN messages m ON m.id = claimed.message_id
     ORDER BY m.id";

/// Locks the heads of a batch's keys, in one global order, and creates the
/// missing ones. A new head is created as it will stay: due now, pointing
/// at an id drawn here, under its lock, which the key's first message of the
/// batch then takes (so no placeholder row is filled in or removed later).
/// Returns the new heads only; an existing head is locked, not changed.
const LOCK_OR_CREATE_HEADS: &str = "INSERT INTO heads (target, key, message_id, due_at)
     SELECT t, k, nextval('messages_id_seq'), $3 FROM UNNEST($1::text[], $2::text[]) AS u(t, k)
     ON CONFLICT (target, key) DO UPDATE SET lease = heads.lease WHERE false
     RETURNING target, key, message_id";

/// Inserts a batch's messages, in batch order. A key's first message takes
/// the id its new head points at (`$1`, NULL for the others, which draw
/// theirs now: after every id drawn under the heads' locks).
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
     OVERRIDING SYSTEM VALUE
     SELECT coalesce(id, nextval('messages_id_seq')), i, mp, t, k, ik, p, $8, $8
     FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[])
          WITH ORDINALITY AS u(id, i, mp, t, k, ik, p, n)
     ORDER BY n";

/// Locks the heads of settled messages, in the global order.
const LOCK_HEADS: &str = "SELECT h.message_id, h.lease FROM heads h
     JOIN (SELECT DISTINCT t, k FROM UNNEST($1::text[], $2::text[]) AS u(t, k)) u
       ON h.target = u.t AND h.key = u.k
     ORDER BY h.target, h.key FOR UPDATE OF h";

/// Moves each key's head to its next pending message, or removes it.
const ADVANCE: &str = "WITH nxt AS (
         SELECT u.t, u.k, (SELECT m.id FROM messages m
                           WHERE m.target = u.t AND m.key = u.k AND m.status = 0
                           ORDER BY m.id LIMIT 1) AS id
         FROM UNNEST($1::text[], $2::text[]) AS u(t, k)),
     moved AS (
         UPDATE heads h SET message_id = nxt.id, due_at = $3
         FROM nxt WHERE h.target = nxt.t AND h.key = nxt.k AND nxt.id IS NOT NULL)
     DELETE FROM heads h USING nxt
     WHERE h.target = nxt.t AND h.key = nxt.k AND nxt.id IS NULL";

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

impl PgStore {
    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut cfg: tokio_postgres::Config = url.parse()?;
        // Plan each statement for the tables as they are now: a generic
        // plan cached while the tables were small (a seq scan of `heads`)
        // would stay in use after they grew, and settle 10× slower.
        let opts = format!(
            "{} -c plan_cache_mode=force_custom_plan",
            cfg.get_options().unwrap_or("")
        );
        cfg.options(opts.trim());
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pool_err)?;
        let mut obj = pool.get().await.map_err(pool_err)?;
        let client: &mut tokio_postgres::Client = &mut obj;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let migrated = embedded::migrations::runner().run_async(client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        migrated.map_err(|e| StoreError::Migration(e.to_string()))?;
        drop(obj);
        Ok(PgStore { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    pub(super) async fn ingest(&self, batch: Vec<Ingest>) -> Result<IngestOutcome, StoreError> {
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let now = now_ms();
        let mut out = IngestOutcome::default();

        // 1. Lock the batch's heads, in one global order (no deadlocks),
        // before any of its messages' ids is drawn: a key's ids are then
        // drawn in the order its transactions commit, and a settle cannot
        // retire a head while this batch adds to its key. Missing heads are
        // created pointing at an id drawn under their lock.
        let mut keys: Vec<(&str, &str)> = batch
            .iter()
            .flat_map(|i| {
                i.messages
                    .iter()
                    .map(|m| (m.target.as_str(), m.key.as_str()))
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let (kt, kk): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
        // New heads: (target, key) -> the id their first message takes.
        let mut new_heads: rustc_hash::FxHashMap<(String, String), i64> = Default::default();
        if !kt.is_empty() {
            let st = tx.prepare_cached(LOCK_OR_CREATE_HEADS).await?;
            for r in tx.query(&st, &[&kt, &kk, &now]).await? {
                new_heads.insert((r.get(0), r.get(1)), r.get(2));
            }
        }

        // 2. The inbox rows; a record already stored returns nothing.
        let (src, sid, rec): (Vec<&str>, Vec<&str>, Vec<&[u8]>) = batch
            .iter()
            .map(|i| (i.source.as_str(), i.source_id.as_str(), i.record.as_slice()))
            .fold((vec![], vec![], vec![]), |mut a, (s, i, r)| {
                a.0.push(s);
                a.1.push(i);
                a.2.push(r);
                a
            });
        let st = tx
            .prepare_cached(
                "INSERT INTO inbox (source, source_id, record, received_at)
                 SELECT s, i, r, $4 FROM UNNEST($1::text[], $2::text[], $3::bytea[]) AS u(s, i, r)
                 ON CONFLICT (source, source_id) DO NOTHING RETURNING id, source, source_id",
            )
            .await?;
        let rows = tx.query(&st, &[&src, &sid, &rec, &now]).await?;
        let mut stored: rustc_hash::FxHashMap<(String, String), i64> = rows
            .iter()
            .map(|r| ((r.get(1), r.get(2)), r.get(0)))
            .collect();

        // 3. Messages, in batch order (so a key's ids rise in source order),
        // and quarantine rows, for the records stored now.
        let (mut m_id, mut m_inbox) = (Vec::new(), Vec::new());
        let (mut m_map, mut m_tgt, mut m_key, mut m_idem, mut m_pay) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut q_inbox, mut q_map, mut q_part, mut q_reason) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut lookup = (String::new(), String::new());
        for item in &batch {
            // The first of several equal records in one batch is the one stored.
            let Some(inbox_id) = stored.remove(&(item.source.clone(), item.source_id.clone()))
            else {
                out.duplicates += 1;
                continue;
            };
            out.stored += 1;
            for m in &item.messages {
                // A new head's id goes to its key's first message (removed
                // from the map once taken).
                lookup.0.clear();
                lookup.0.push_str(&m.target);
                lookup.1.clear();
                lookup.1.push_str(&m.key);
                m_id.push(new_heads.remove(&lookup));
                m_inbox.push(inbox_id);
                m_map.push(m.mapping.as_str());
                m_tgt.push(m.target.as_str());
                m_key.push(m.key.as_str());
                m_idem.push(idempotency_key(&item.source, &item.source_id, &m.mapping));
                m_pay.push(m.payload.as_slice());
            }
            for q in &item.quarantine {
                q_inbox.push(inbox_id);
                q_map.push(q.mapping.as_str());
                q_part.push(q.part.as_str());
                q_reason.push(q.reason.as_str());
            }
        }
        if !m_inbox.is_empty() {
            let st = tx.prepare_cached(INSERT_MESSAGES).await?;
            out.messages = tx
                .execute(
                    &st,
                    &[
                        &m_id, &m_inbox, &m_map, &m_tgt, &m_key, &m_idem, &m_pay, &now,
                    ],
                )
                .await? as usize;
        }
        if !new_heads.is_empty() {
            // New heads whose key got no message after all (its records
            // were stored before): removed, never seen by anyone.
            let (dt, dk): (Vec<String>, Vec<String>) = new_heads.into_keys().unzip();
            let st = tx
                .prepare_cached(
                    "DELETE FROM heads h USING UNNEST($1::text[], $2::text[]) AS u(t, k)
                     WHERE h.target = u.t AND h.key = u.k",
                )
                .await?;
            tx.execute(&st, &[&dt, &dk]).await?;
        }
        if !q_inbox.is_empty() {
            let st = tx
                .prepare_cached(
                    "INSERT INTO quarantine (inbox_id, mapping, part, reason, at)
                     SELECT i, m, p, r, $5 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(i, m, p, r)",
                )
                .await?;
            out.quarantined = tx
                .execute(&st, &[&q_inbox, &q_map, &q_part, &q_reason, &now])
                .await? as usize;
        }

        // 4. Each source's latest cursor.
        let mut cursors: Vec<(&str, &str)> = Vec::new();
        for item in &batch {
            if let Some(cur) = &item.cursor {
                match cursors.iter_mut().find(|(s, _)| *s == item.source) {
                    Some(c) => c.1 = cur,
                    None => cursors.push((&item.source, cur)),
                }
            }
        }
        for (source, cur) in cursors {
            let st = tx
                .prepare_cached(
                    "INSERT INTO cursors (source, cursor, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                )
                .await?;
            tx.execute(&st, &[&source, &cur, &now]).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn claim(
        &self,
        target: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        // One statement, one commit.
        let st = tx.prepare_cached(CLAIM).await?;
        let rows = tx
            .query(&st, &[&target, &now, &(limit as i64), &until])
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                target: target.to_string(),
                key: r.get(1),
                idem_key: r.get(2),
                payload: r.get(3),
                attempts: r.get(4),
                lease: r.get(5),
            })
            .collect())
    }

    pub(super) async fn settle(&self, settles: Vec<Settle>) -> Result<usize, StoreError> {
        if settles.is_empty() {
            return Ok(0);
        }
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let now = now_ms();

        // Every attempt, applied or not, is recorded.
        let mut a = AttemptCols::default();
        for s in &settles {
            a.id.push(s.id);
            a.at.push(s.attempt.at);
            a.duration.push(s.attempt.duration_ms);
            a.outcome.push(outcome_code(&s.outcome));
            a.status.push(s.attempt.status_code);
            a.class.push(s.attempt.error_class.as_deref());
            a.excerpt.push(s.attempt.excerpt.as_deref());
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO attempts (message_id, at, duration_ms, outcome, status_code, error_class, excerpt)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &a.id,
                &a.at,
                &a.duration,
                &a.outcome,
                &a.status,
                &a.class,
                &a.excerpt,
            ],
        )
        .await?;

        // Lock the heads, in the global order, and keep the settles whose
        // lease is still current: a message claimed again after its lease
        // ran out is settled by the newer claim.
        let mut order: Vec<&Settle> = settles.iter().collect();
        order.sort_unstable_by(|x, y| (&x.target, &x.key).cmp(&(&y.target, &y.key)));
        let kt: Vec<&str> = order.iter().map(|s| s.target.as_str()).collect();
        let kk: Vec<&str> = order.iter().map(|s| s.key.as_str()).collect();
        let st = tx.prepare_cached(LOCK_HEADS).await?;
        let current: rustc_hash::FxHashSet<(i64, i64)> = tx
            .query(&st, &[&kt, &kk])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();

        let mut done = KeyCols::default();
        let mut retry = KeyCols::default();
        let mut dead = KeyCols::default();
        let mut applied = 0;
        for s in &settles {
            if !current.contains(&(s.id, s.lease)) {
                continue;
            }
            applied += 1;
            let cols = match &s.outcome {
                Outcome::Delivered => &mut done,
                Outcome::Retry { at } => {
                    retry.at.push(*at);
                    &mut retry
                }
                Outcome::Dead { .. } => &mut dead,
            };
            cols.id.push(s.id);
            cols.target.push(&s.target);
            cols.key.push(&s.key);
            cols.error.push(error_text(s));
        }
        if !done.id.is_empty() {
            let st = tx
                .prepare_cached(
                    "UPDATE messages SET status = 1, attempts = attempts + 1, updated_at = $2, last_error = NULL
                     WHERE id = ANY($1)",
                )
                .await?;
            tx.execute(&st, &[&done.id, &now]).await?;
            advance_many(&tx, &done.target, &done.key, now).await?;
        }
        if !retry.id.is_empty() {
            let st = tx
                .prepare_cached(
                    "WITH u AS (SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                                AS u(id, t, k, e, at)),
                     m AS (UPDATE messages m SET attempts = m.attempts + 1, updated_at = $6, last_error = u.e
                           FROM u WHERE m.id = u.id)
                     UPDATE heads h SET due_at = u.at FROM u WHERE h.target = u.t AND h.key = u.k",
                )
                .await?;
            tx.execute(
                &st,
                &[
                    &retry.id,
                    &retry.target,
                    &retry.key,
                    &retry.error,
                    &retry.at,
                    &now,
                ],
            )
            .await?;
        }
        if !dead.id.is_empty() {
            let st = tx
                .prepare_cached(
                    "WITH u AS (SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
                                AS u(id, t, k, e)),
                     m AS (UPDATE messages m SET status = 2, attempts = m.attempts + 1, updated_at = $5, last_error = u.e
                           FROM u WHERE m.id = u.id)
                     UPDATE heads h SET due_at = NULL FROM u WHERE h.target = u.t AND h.key = u.k",
                )
                .await?;
            tx.execute(&st, &[&dead.id, &dead.target, &dead.key, &dead.error, &now])
                .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The plans of the delivery path's statements for one target and key,
    /// as `EXPLAIN` gives them inside a delivery transaction, which is then
    /// rolled back.
    pub(super) async fn delivery_plans(
        &self,
        target: &str,
        key: &str,
    ) -> Result<Vec<(&'static str, String)>, StoreError> {
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let now = now_ms();
        let (t, k) = (vec![target], vec![key]);
        let (ids, inbox, mapping, idem) = (vec![None::<i64>], vec![1i64], vec!["m"], vec!["idem"]);
        let payload = vec![&b"{}"[..]];
        let mut out = Vec::new();
        type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
        let statements: [(&'static str, &str, Params); 5] = [
            ("claim", CLAIM, vec![&target, &now, &500i64, &now]),
            (
                "lock or create heads",
                LOCK_OR_CREATE_HEADS,
                vec![&t, &k, &now],
            ),
            (
                "insert messages",
                INSERT_MESSAGES,
                vec![&ids, &inbox, &mapping, &t, &k, &idem, &payload, &now],
            ),
            ("lock heads", LOCK_HEADS, vec![&t, &k]),
            ("advance", ADVANCE, vec![&t, &k, &now]),
        ];
        for (name, sql, params) in statements {
            let rows = tx.query(&format!("EXPLAIN {sql}"), &params).await?;
            let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            out.push((name, plan.join("\n")));
        }
        tx.rollback().await?;
        Ok(out)
    }

    pub(super) async fn release(
        &self,
        claims: Vec<(String, String, i64)>,
    ) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let (mut t, mut k, mut l) = (Vec::new(), Vec::new(), Vec::new());
        for (target, key, lease) in &claims {
            t.push(target.as_str());
            k.push(key.as_str());
            l.push(*lease);
        }
        let st = tx
            .prepare_cached(
                "UPDATE heads h SET due_at = $4 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS u(t, k, l)
                 WHERE h.target = u.t AND h.key = u.k AND h.lease = u.l",
            )
            .await?;
        tx.execute(&st, &[&t, &k, &l, &now_ms()]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn replay(
        &self,
        id: i64,
        payload: Option<Vec<u8>>,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (target, key) = dead_message(&tx, id, "replayed").await?;
        let now = now_ms();
        tx.execute(
            "UPDATE messages SET status = 0, payload = COALESCE($2, payload), updated_at = $3 WHERE id = $1",
            &[&id, &payload, &now],
        )
        .await?;
        tx.execute(
            "INSERT INTO heads (target, key, message_id, due_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (target, key) DO UPDATE SET message_id = excluded.message_id, due_at = excluded.due_at",
            &[&target, &key, &id, &now],
        )
        .await?;
        let action = if payload.is_some() {
            "replay_remapped"
        } else {
            "replay"
        };
        audit(&tx, actor, action, &format!("message {id}"), reason).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn note(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        audit(&tx, actor, action, subject, reason).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn find_messages(
        &self,
        filter: &MessageFilter,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let (clause, params) = filter.sql(|n| format!("${n}"));
        // The ids first (from the indexes alone where the filter allows),
        // then the rows: fetching whole rows while filtering read the heap
        // for every candidate.
        let sql = format!("SELECT m.id FROM messages m{clause} ORDER BY m.id LIMIT {limit}");
        let values = pg_values(params);
        let c = self.client().await?;
        // An unnamed statement: planned with the values given, so each
        // filter gets the plan that suits it.
        let ids: Vec<i64> = c
            .query(sql.as_str(), &pg_refs(&values))
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = c
            .query(
                &format!("{MESSAGE_SELECT} WHERE id = ANY($1) ORDER BY id"),
                &[&ids],
            )
            .await?;
        Ok(rows.iter().map(message_row).collect())
    }

    pub(super) async fn targets(&self) -> Result<Vec<TargetRow>, StoreError> {
        let c = self.client().await?;
        let mut out: std::collections::BTreeMap<String, TargetRow> = Default::default();
        fn row<'a>(
            out: &'a mut std::collections::BTreeMap<String, TargetRow>,
            t: &str,
        ) -> &'a mut TargetRow {
            out.entry(t.to_string()).or_insert_with(|| TargetRow {
                target: t.to_string(),
                ..TargetRow::default()
            })
        }
        for r in c
            .query(
                "SELECT target, status, count(*) FROM messages GROUP BY target, status",
                &[],
            )
            .await?
        {
            let (t, status, n): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
            let e = row(&mut out, &t);
            match status {
                0 => e.pending = n,
                1 => e.delivered = n,
                2 => e.dead = n,
                _ => e.skipped += n,
            }
        }
        for r in c
            .query(
                "SELECT h.target, min(m.created_at) FROM heads h JOIN messages m ON m.id = h.message_id AND m.status = 0 GROUP BY h.target",
                &[],
            )
            .await?
        {
            let (t, at): (String, i64) = (r.get(0), r.get(1));
            let e = row(&mut out, &t);
            if e.pending > 0 {
                e.oldest_pending_at = Some(at);
            }
        }
        for r in c
            .query("SELECT target FROM targets WHERE paused = 1", &[])
            .await?
        {
            let t: String = r.get(0);
            row(&mut out, &t).paused = true;
        }
        Ok(out.into_values().collect())
    }

    pub(super) async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&name, &role, &hash, &now_ms()],
        )
        .await?;
        audit(
            &tx,
            actor,
            "token_create",
            &format!("token {name} ({role})"),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn token(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT name, role FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
            .await?;
        Ok(c.query_opt(&st, &[&hash])
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    pub(super) async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT name, role, created_at, revoked_at FROM tokens ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| TokenRow {
            name: r.get(0),
            role: r.get(1),
            created_at: r.get(2),
            revoked_at: r.get(3),
        })
        .collect())
    }

    pub(super) async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &now_ms()],
            )
            .await?;
        if n > 0 {
            audit(&tx, actor, "token_revoke", &format!("token {name}"), reason).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(super) async fn create_task(
        &self,
        filter: &MessageFilter,
        cap: i64,
        actor: &str,
        reason: &str,
    ) -> Result<TaskRow, StoreError> {
        let (clause, params) = filter.sql(|n| format!("${n}"));
        let json = serde_json::to_string(filter).unwrap_or_default();
        let values = pg_values(params);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let total: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM (SELECT 1 FROM messages m{clause} LIMIT {cap}) x"),
                &pg_refs(&values),
            )
            .await?
            .get(0);
        let now = now_ms();
        let id: i64 = tx
            .query_one(
                "INSERT INTO tasks (kind, filter, cap, status, total, actor, reason, created_at, updated_at)
                 VALUES ('bulk_replay', $1, $2, 'running', $3, $4, $5, $6, $6) RETURNING id",
                &[&json, &cap, &total, &actor, &reason, &now],
            )
            .await?
            .get(0);
        audit(
            &tx,
            actor,
            "bulk_replay",
            &format!(
                "task {id}: {total} dead messages matching {}",
                crate::domain::mask::text(&json)
            ),
            reason,
        )
        .await?;
        tx.commit().await?;
        drop(c);
        self.task(id)
            .await?
            .ok_or(StoreError::Refused("the new task is gone".into()))
    }

    pub(super) async fn running_tasks(&self) -> Result<Vec<i64>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT id FROM tasks WHERE status = 'running' ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    pub(super) async fn quarantine_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query("SELECT i.source, q.mapping, count(*) FROM quarantine q JOIN inbox i ON i.id = q.inbox_id GROUP BY i.source, q.mapping", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub(super) async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(&format!("{TASK_SELECT} WHERE id = $1"), &[&id])
            .await?
            .map(|r| task_row(&r)))
    }

    pub(super) async fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(&format!("{TASK_SELECT} ORDER BY id DESC"), &[])
            .await?
            .iter()
            .map(task_row)
            .collect())
    }

    pub(super) async fn set_task_status(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now: Option<String> = tx
            .query_opt("SELECT status FROM tasks WHERE id = $1 FOR UPDATE", &[&id])
            .await?
            .map(|r| r.get(0));
        let moved = now.is_some_and(|s| from.contains(&s.as_str()));
        if moved {
            tx.execute(
                "UPDATE tasks SET status = $2, updated_at = $3 WHERE id = $1",
                &[&id, &to, &now_ms()],
            )
            .await?;
            audit(
                &tx,
                actor,
                &format!("task_{to}"),
                &format!("task {id}"),
                reason,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    pub(super) async fn run_task(&self, id: i64, n: usize) -> Result<Option<TaskRow>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(&format!("{TASK_SELECT} WHERE id = $1 FOR UPDATE"), &[&id])
            .await?
        else {
            return Ok(None);
        };
        let task = task_row(&row);
        let cursor: i64 = tx
            .query_one("SELECT cursor FROM tasks WHERE id = $1", &[&id])
            .await?
            .get(0);
        if task.status != "running" {
            return Ok(Some(task));
        }
        let mut f = task.filter.clone();
        f.status = Some(status::DEAD);
        f.after = Some(cursor);
        let want = (n as i64).min(task.cap - task.done).max(0);
        let (clause, params) = f.sql(|n| format!("${n}"));
        let values = pg_values(params);
        let rows: Vec<(i64, String, String)> = tx
            .query(
                &format!("SELECT m.id, m.target, m.key FROM messages m{clause} ORDER BY m.id LIMIT {want} FOR UPDATE"),
                &pg_refs(&values),
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let now = now_ms();
        if !rows.is_empty() {
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let targets: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            let keys: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
            tx.execute(
                "UPDATE messages SET status = 0, updated_at = $2 WHERE id = ANY($1) AND status = 2",
                &[&ids, &now],
            )
            .await?;
            tx.execute(
                "INSERT INTO heads (target, key, message_id, due_at)
                 SELECT t, k, i, $4 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(t, k, i)
                 ON CONFLICT (target, key) DO UPDATE SET message_id = excluded.message_id, due_at = excluded.due_at",
                &[&targets, &keys, &ids, &now],
            )
            .await?;
        }
        let done = task.done + rows.len() as i64;
        let finished = (rows.len() as i64) < want || done >= task.cap || want == 0;
        let next_cursor = rows.last().map_or(cursor, |r| r.0);
        let status_now = if finished { "done" } else { "running" };
        tx.execute(
            "UPDATE tasks SET done = $2, cursor = $3, status = $4, updated_at = $5 WHERE id = $1",
            &[&id, &done, &next_cursor, &status_now, &now],
        )
        .await?;
        let row = tx
            .query_one(&format!("{TASK_SELECT} WHERE id = $1"), &[&id])
            .await?;
        tx.commit().await?;
        Ok(Some(task_row(&row)))
    }

    pub(super) async fn quarantined(
        &self,
        source: Option<&str>,
        mapping: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QuarantineRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT q.id, i.source, i.source_id, q.mapping, q.part, q.reason, i.record
                 FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                 WHERE q.resolved_at IS NULL AND ($1::text IS NULL OR i.source = $1) AND ($2::text IS NULL OR q.mapping = $2)
                 ORDER BY q.id LIMIT $3",
                &[&source, &mapping, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| QuarantineRow {
                id: r.get(0),
                source: r.get(1),
                source_id: r.get(2),
                mapping: r.get(3),
                part: r.get(4),
                reason: r.get(5),
                record: r.get(6),
            })
            .collect())
    }

    pub(super) async fn resolve_quarantine(
        &self,
        items: Vec<(i64, Option<NewMessage>)>,
        actor: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = now_ms();
        let (mut n, mut queued) = (0usize, 0usize);
        for (qid, m) in &items {
            let Some(row) = tx
                .query_opt(
                    "SELECT q.inbox_id, i.source, i.source_id FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                     WHERE q.id = $1 AND q.resolved_at IS NULL FOR UPDATE OF q",
                    &[qid],
                )
                .await?
            else {
                continue;
            };
            let (inbox_id, source, source_id): (i64, String, String) =
                (row.get(0), row.get(1), row.get(2));
            tx.execute(
                "UPDATE quarantine SET resolved_at = $2 WHERE id = $1",
                &[qid, &now],
            )
            .await?;
            n += 1;
            if let Some(m) = m {
                let idem = idempotency_key(&source, &source_id, &m.mapping);
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
                        &[&inbox_id, &m.mapping, &m.target, &m.key, &idem, &m.payload, &now],
                    )
                    .await?
                    .get(0);
                tx.execute(
                    "INSERT INTO heads (target, key, message_id, due_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (target, key) DO NOTHING",
                    &[&m.target, &m.key, &id, &now],
                )
                .await?;
                queued += 1;
            }
        }
        if n > 0 {
            audit(
                &tx,
                actor,
                "quarantine_remap",
                &format!(
                    "{n} quarantined records ({queued} now mapped, {} filtered out)",
                    n - queued
                ),
                reason,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn skip(&self, id: i64, actor: &str, reason: &str) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let (target, key) = dead_message(&tx, id, "skipped").await?;
        let now = now_ms();
        tx.execute(
            "UPDATE messages SET status = 3, updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        lock_head(&tx, &target, &key).await?;
        advance_many(&tx, &[&target], &[&key], now).await?;
        audit(&tx, actor, "skip", &format!("message {id}"), reason).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn set_paused(
        &self,
        target: &str,
        paused: bool,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO targets (target, paused) VALUES ($1, $2)
             ON CONFLICT (target) DO UPDATE SET paused = excluded.paused",
            &[&target, &i64::from(paused)],
        )
        .await?;
        let action = if paused { "pause" } else { "resume" };
        audit(&tx, actor, action, &format!("target {target}"), reason).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn is_paused(&self, target: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt("SELECT paused FROM targets WHERE target = $1", &[&target])
                .await?
                .is_some_and(|r| r.get::<_, i64>(0) != 0),
        )
    }

    pub(super) async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt("SELECT cursor FROM cursors WHERE source = $1", &[&source])
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub(super) async fn message(&self, id: i64) -> Result<Option<MessageRow>, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt(&format!("{MESSAGE_SELECT} WHERE id = $1"), &[&id])
                .await?
                .map(|r| message_row(&r)),
        )
    }

    pub(super) async fn source_of(&self, id: i64) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let c = self.client().await?;
        Ok(c
            .query_opt(
                "SELECT i.source, i.record FROM messages m JOIN inbox i ON i.id = m.inbox_id WHERE m.id = $1",
                &[&id],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    pub(super) async fn messages(
        &self,
        target: &str,
        status: i64,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("{MESSAGE_SELECT} WHERE target = $1 AND status = $2 ORDER BY id LIMIT $3"),
                &[&target, &status, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(message_row).collect())
    }

    pub(super) async fn attempts(&self, id: i64) -> Result<Vec<Attempt>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT at, duration_ms, status_code, error_class, excerpt FROM attempts WHERE message_id = $1 ORDER BY id",
                &[&id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Attempt {
                at: r.get(0),
                duration_ms: r.get(1),
                status_code: r.get(2),
                error_class: r.get(3),
                excerpt: r.get(4),
            })
            .collect())
    }

    pub(super) async fn quarantine(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT q.mapping, q.part, q.reason FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                 WHERE i.source = $1 ORDER BY q.id",
                &[&source],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub(super) async fn audit(&self) -> Result<Vec<AuditRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT at, actor, action, subject, reason FROM audit ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditRow {
                at: r.get(0),
                actor: r.get(1),
                action: r.get(2),
                subject: r.get(3),
                reason: r.get(4),
            })
            .collect())
    }

    pub(super) async fn pending(&self, target: &str) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(
            "SELECT count(*) FROM messages WHERE target = $1 AND status = 0",
            &[&target],
        )
        .await?
        .get(0))
    }

    pub(super) async fn inbox_len(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT count(*) FROM inbox", &[]).await?.get(0))
    }

    pub(super) async fn record_payments(&self, rows: Vec<PaymentRow>) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let (mut id, mut period, mut bank, mut amount, mut record) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            id.push(r.payment_id.as_str());
            period.push(r.period.as_str());
            bank.push(r.bank_code.as_str());
            amount.push(r.amount_fen);
            record.push(r.record.as_slice());
        }
        let n = c
            .execute(
                "INSERT INTO payments (payment_id, period, bank_code, amount_fen, record, created_at)
                 SELECT i, p, b, a, r, $6 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[]) AS u(i, p, b, a, r)
                 ON CONFLICT (payment_id) DO NOTHING",
                &[&id, &period, &bank, &amount, &record, &now_ms()],
            )
            .await?;
        Ok(n as usize)
    }

    pub(super) async fn build_batches(
        &self,
        period: &str,
        max: usize,
        created: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Builders of one period take turns; the unique index on live
        // memberships is the guarantee either way.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tongban.build_batches:' || $1))",
            &[&period],
        )
        .await?;
        let unbatched: Vec<(String, String, i64)> = tx
            .query(
                "SELECT p.payment_id, p.bank_code, p.amount_fen FROM payments p
                 WHERE p.period = $1 AND NOT EXISTS
                   (SELECT 1 FROM batch_items i WHERE i.payment_id = p.payment_id AND i.live = 1)
                 ORDER BY p.bank_code COLLATE \"C\", p.payment_id COLLATE \"C\"",
                &[&period],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let banks: Vec<String> = {
            let mut b: Vec<String> = unbatched.iter().map(|u| u.1.clone()).collect();
            b.dedup();
            b
        };
        let mut seqs = std::collections::HashMap::new();
        for bank in &banks {
            let next: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE period = $1 AND bank_code = $2",
                    &[&period, bank],
                )
                .await?
                .get(0);
            seqs.insert(bank.clone(), next);
        }
        let plan = plan_batches(period, created, max, &unbatched, |bank| {
            Ok(seqs.get(bank).copied().unwrap_or(1))
        })?;
        for (row, ids) in &plan {
            tx.execute(
                "INSERT INTO batches (batch_id, period, bank_code, seq, created, count, total_fen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &row.batch_id,
                    &row.period,
                    &row.bank_code,
                    &row.seq,
                    &row.created,
                    &row.count,
                    &row.total_fen,
                ],
            )
            .await?;
            let positions: Vec<i64> = (0..ids.len() as i64).collect();
            tx.execute(
                "INSERT INTO batch_items (batch_id, payment_id, position)
                 SELECT $1, i, p FROM UNNEST($2::text[], $3::bigint[]) AS u(i, p)",
                &[&row.batch_id, ids, &positions],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(plan.into_iter().map(|(b, _)| b).collect())
    }

    pub(super) async fn batches(&self, period: &str) -> Result<Vec<BatchRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches
             WHERE period = $1 AND live = 1 ORDER BY bank_code COLLATE \"C\", seq",
            &[&period],
        )
        .await?
        .iter()
        .map(|r| BatchRow {
            batch_id: r.get(0),
            period: r.get(1),
            bank_code: r.get(2),
            seq: r.get(3),
            created: r.get(4),
            count: r.get(5),
            total_fen: r.get(6),
        })
        .collect())
    }

    pub(super) async fn batch_payments_page(
        &self,
        batch_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, PaymentRow)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT i.position, p.payment_id, p.period, p.bank_code, p.amount_fen, p.record
             FROM batch_items i JOIN payments p ON p.payment_id = i.payment_id
             WHERE i.batch_id = $1 AND i.position > $2 ORDER BY i.position LIMIT $3",
            &[&batch_id, &after, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| {
            (
                r.get(0),
                PaymentRow {
                    payment_id: r.get(1),
                    period: r.get(2),
                    bank_code: r.get(3),
                    amount_fen: r.get(4),
                    record: r.get(5),
                },
            )
        })
        .collect())
    }

    pub(super) async fn reissue(
        &self,
        payment_id: &str,
        corrected: Option<(Vec<u8>, String)>,
        actor: &str,
        reason: &str,
    ) -> Result<String, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT result FROM payments WHERE payment_id = $1 FOR UPDATE",
                &[&payment_id],
            )
            .await?
        else {
            return Err(StoreError::Refused(format!(
                "there is no payment {payment_id}"
            )));
        };
        let result: Option<String> = row.get(0);
        if let Some(why) = reissue_refusal(payment_id, result.as_deref()) {
            return Err(StoreError::Refused(why));
        }
        let batch: String = tx
            .query_opt(
                "UPDATE batch_items SET live = 0 WHERE payment_id = $1 AND live = 1 RETURNING batch_id",
                &[&payment_id],
            )
            .await?
            .map(|r| r.get(0))
            .unwrap_or_default();
        tx.execute(
            "UPDATE payments SET result = NULL, reason_code = NULL, result_at = NULL WHERE payment_id = $1",
            &[&payment_id],
        )
        .await?;
        if let Some((record, bank)) = &corrected {
            tx.execute(
                "UPDATE payments SET record = $2, bank_code = $3 WHERE payment_id = $1",
                &[&payment_id, record, bank],
            )
            .await?;
        }
        audit(
            &tx,
            actor,
            "reissue",
            &format!("payment {payment_id} (rejected in batch {batch})"),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(batch)
    }

    pub(super) async fn payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<(PaymentRow, Option<String>, Option<String>)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT payment_id, period, bank_code, amount_fen, record, result, reason_code FROM payments WHERE payment_id = $1",
            &[&payment_id],
        )
        .await?
        .map(|r| {
            (
                PaymentRow {
                    payment_id: r.get(0),
                    period: r.get(1),
                    bank_code: r.get(2),
                    amount_fen: r.get(3),
                    record: r.get(4),
                },
                r.get(5),
                r.get(6),
            )
        }))
    }

    pub(super) async fn mark_written(
        &self,
        batch_id: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE batches SET file_sha256 = $2 WHERE batch_id = $1",
            &[&batch_id, &sha256],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn written(&self, batch_id: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT file_sha256 FROM batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?
        .and_then(|r| r.get(0)))
    }

    pub(super) async fn batch(&self, batch_id: &str) -> Result<Option<BatchRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?
        .map(|r| BatchRow {
            batch_id: r.get(0),
            period: r.get(1),
            bank_code: r.get(2),
            seq: r.get(3),
            created: r.get(4),
            count: r.get(5),
            total_fen: r.get(6),
        }))
    }

    pub(super) async fn set_results(
        &self,
        results: Vec<(String, String, Option<String>)>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let (mut id, mut res, mut why) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r, w) in &results {
            id.push(i.as_str());
            res.push(r.as_str());
            why.push(w.as_deref());
        }
        c.execute(
            "UPDATE payments p SET result = u.r, reason_code = u.w, result_at = $4
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(i, r, w) WHERE p.payment_id = u.i",
            &[&id, &res, &why, &now_ms()],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn raise_alarms(
        &self,
        alarms: Vec<(String, String, String)>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let (mut b, mut k, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for (x, y, z) in &alarms {
            b.push(x.as_str());
            k.push(y.as_str());
            d.push(z.as_str());
        }
        c.execute(
            "INSERT INTO alarms (at, batch_id, kind, detail)
             SELECT $4, b, k, d FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(b, k, d)
             ON CONFLICT (batch_id, kind, detail) DO NOTHING",
            &[&b, &k, &d, &now_ms()],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT at, batch_id, kind, detail FROM alarms ORDER BY at, batch_id COLLATE \"C\", kind COLLATE \"C\", detail COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| AlarmRow { at: r.get(0), batch_id: r.get(1), kind: r.get(2), detail: r.get(3) })
        .collect())
    }

    pub(super) async fn results(&self, period: &str) -> Result<ResultCounts, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT b.batch_id, p.result, count(*), COALESCE(SUM(p.amount_fen), 0)::bigint
             FROM batches b JOIN batch_items i ON i.batch_id = b.batch_id AND i.live = 1
             JOIN payments p ON p.payment_id = i.payment_id
             WHERE b.period = $1 AND b.live = 1
             GROUP BY b.batch_id, p.result ORDER BY b.batch_id COLLATE \"C\", p.result COLLATE \"C\"",
            &[&period],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
    }

    pub(super) async fn counts(&self) -> Result<Counts, StoreError> {
        let c = self.client().await?;
        let mut out = Counts::default();
        for r in c
            .query(
                "SELECT target, status, count(*) FROM messages GROUP BY target, status",
                &[],
            )
            .await?
        {
            out.messages.push((r.get(0), r.get(1), r.get(2)));
        }
        for r in c.query("SELECT m.target, count(*) FROM attempts a JOIN messages m ON m.id = a.message_id WHERE a.outcome = 0 GROUP BY m.target", &[]).await? {
            out.retries.push((r.get(0), r.get(1)));
        }
        drop(c);
        out.quarantined = self.quarantine_counts().await?;
        Ok(out)
    }
}

const TASK_SELECT: &str = "SELECT id, kind, filter, cap, status, total, done, actor, reason, created_at, updated_at FROM tasks";

fn task_row(r: &tokio_postgres::Row) -> TaskRow {
    let filter: String = r.get(2);
    TaskRow {
        id: r.get(0),
        kind: r.get(1),
        filter: serde_json::from_str(&filter).unwrap_or_default(),
        cap: r.get(3),
        status: r.get(4),
        total: r.get(5),
        done: r.get(6),
        actor: r.get(7),
        reason: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
    }
}

type PgValue = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

fn pg_values(params: Vec<Param>) -> Vec<PgValue> {
    params
        .into_iter()
        .map(|p| -> PgValue {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect()
}

fn pg_refs(values: &[PgValue]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

const MESSAGE_SELECT: &str =
    "SELECT id, target, key, mapping, idem_key, status, attempts, last_error, payload, created_at, updated_at FROM messages";

fn message_row(r: &tokio_postgres::Row) -> MessageRow {
    MessageRow {
        id: r.get(0),
        target: r.get(1),
        key: r.get(2),
        mapping: r.get(3),
        idem_key: r.get(4),
        status: r.get(5),
        attempts: r.get(6),
        last_error: r.get(7),
        payload: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
    }
}

/// Columns of the attempts recorded by one settle.
#[derive(Default)]
struct AttemptCols<'a> {
    id: Vec<i64>,
    at: Vec<i64>,
    duration: Vec<i64>,
    outcome: Vec<i64>,
    status: Vec<Option<i64>>,
    class: Vec<Option<&'a str>>,
    excerpt: Vec<Option<&'a str>>,
}

/// Columns of the settles of one outcome.
#[derive(Default)]
struct KeyCols<'a> {
    id: Vec<i64>,
    target: Vec<&'a str>,
    key: Vec<&'a str>,
    error: Vec<Option<String>>,
    at: Vec<i64>,
}

/// Moves each key's head to its next pending message, or removes it. The
/// caller holds the heads' locks.
async fn advance_many(
    tx: &Transaction<'_>,
    targets: &[&str],
    keys: &[&str],
    now: i64,
) -> Result<(), StoreError> {
    let st = tx.prepare_cached(ADVANCE).await?;
    tx.execute(&st, &[&targets, &keys, &now]).await?;
    Ok(())
}

/// Locks a key's head.
async fn lock_head(tx: &Transaction<'_>, target: &str, key: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT 1 FROM heads WHERE target = $1 AND key = $2 FOR UPDATE",
        &[&target, &key],
    )
    .await?;
    Ok(())
}

/// The target and key of a dead message (locked); refuses any other state.
async fn dead_message(
    tx: &Transaction<'_>,
    id: i64,
    verb: &str,
) -> Result<(String, String), StoreError> {
    let row = tx
        .query_opt(
            "SELECT target, key, status FROM messages WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    require_dead(
        id,
        row.map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i64>(2),
            )
        }),
        verb,
    )
}

async fn audit(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, subject, reason) VALUES ($1, $2, $3, $4, $5)",
        &[&now_ms(), &actor, &action, &subject, &reason],
    )
    .await?;
    Ok(())
}
