//! The outbox on PostgreSQL.

use crate::store::postgres::*;
use crate::store::sql;
use crate::store::*;
use std::time::Duration;

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

impl PgStore {
    pub(in crate::store) async fn ingest(
        &self,
        batch: Vec<Ingest>,
    ) -> Result<IngestOutcome, StoreError> {
        let receipts = evidence::receipts(&batch);
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
        let mut received = Vec::new();
        for (item, receipt) in batch.iter().zip(&receipts) {
            // The first of several equal records in one batch is the one stored.
            let Some(inbox_id) = stored.remove(&(item.source.clone(), item.source_id.clone()))
            else {
                out.duplicates += 1;
                continue;
            };
            out.stored += 1;
            received.push((inbox_id, item, receipt));
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
                m_idem.push(m.idempotency_key_for(&item.source, &item.source_id));
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
            let st = tx.prepare_cached(sql::SET_CURSOR.pg()).await?;
            tx.execute(&st, &[&source, &cur, &now]).await?;
        }
        evidence::postgres::append(&tx, evidence::received(received.into_iter())).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(in crate::store) async fn claim(
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

    pub(in crate::store) async fn settle(&self, settles: Vec<Settle>) -> Result<usize, StoreError> {
        if settles.is_empty() {
            return Ok(0);
        }
        let receipts = evidence::delivery_receipts(&settles);
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
        let mut delivered = Vec::new();
        for (s, receipt) in settles.iter().zip(&receipts) {
            if !current.contains(&(s.id, s.lease)) {
                continue;
            }
            applied += 1;
            delivered.extend(receipt.as_ref().map(|r| (s, r)));
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
                .prepare_cached(concat!(
                    "UPDATE messages SET status = ",
                    status_sql!(DELIVERED),
                    ", attempts = attempts + 1, updated_at = $2, last_error = NULL
                     WHERE id = ANY($1)"
                ))
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
                    concat!("WITH u AS (SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
                                AS u(id, t, k, e)),
                     m AS (UPDATE messages m SET status = ", status_sql!(DEAD), ", attempts = m.attempts + 1, updated_at = $5, last_error = u.e
                           FROM u WHERE m.id = u.id)
                     UPDATE heads h SET due_at = NULL FROM u WHERE h.target = u.t AND h.key = u.k"),
                )
                .await?;
            tx.execute(&st, &[&dead.id, &dead.target, &dead.key, &dead.error, &now])
                .await?;
        }
        evidence::postgres::append(&tx, evidence::delivered(delivered.into_iter())).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// The plans of the delivery path's statements for one target and key,
    /// as `EXPLAIN` gives them inside a delivery transaction, which is then
    /// rolled back.
    pub(in crate::store) async fn delivery_plans(
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

    pub(in crate::store) async fn release(&self, claims: Vec<Lease>) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let (mut t, mut k, mut l) = (Vec::new(), Vec::new(), Vec::new());
        for Lease { target, key, lease } in &claims {
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

    pub(in crate::store) async fn cursor(
        &self,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::CURSOR.pg(), &[&source])
            .await?
            .map(|r| r.get(0)))
    }

    pub(in crate::store) async fn set_cursor(
        &self,
        source: &str,
        cursor: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql::SET_CURSOR.pg()).await?;
        c.execute(&st, &[&source, &cursor, &crate::store::now_ms()])
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn first_use_nonces(
        &self,
        uses: Vec<NonceUse>,
        now: i64,
        window_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let expired = now - 2 * window_ms;
        // One statement cannot touch a row twice: a nonce repeated within
        // the list is a replay of its first use.
        let repeated = repeated_in_list(&uses);
        let (conn, nonce): (Vec<&str>, Vec<&str>) = uses
            .iter()
            .zip(&repeated)
            .filter(|(_, r)| !**r)
            .map(|(u, _)| (u.connector.as_str(), u.nonce.as_str()))
            .unzip();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM webhook_nonces WHERE seen_at < $1", &[&expired])
            .await?;
        let rows = tx
            .query(
                "INSERT INTO webhook_nonces (connector, nonce, seen_at)
                 SELECT c, n, $3 FROM UNNEST($1::text[], $2::text[]) AS u(c, n)
                 ON CONFLICT (connector, nonce) DO UPDATE SET seen_at = EXCLUDED.seen_at
                 WHERE webhook_nonces.seen_at < $4
                 RETURNING connector, nonce",
                &[&conn, &nonce, &now, &expired],
            )
            .await?;
        tx.commit().await?;
        let new: std::collections::HashSet<(String, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(uses
            .iter()
            .zip(repeated)
            .map(|(u, r)| !r && new.contains(&(u.connector.clone(), u.nonce.clone())))
            .collect())
    }

    pub(in crate::store) async fn forget_nonces(
        &self,
        uses: Vec<NonceUse>,
        now: i64,
    ) -> Result<(), StoreError> {
        let (conn, nonce): (Vec<&str>, Vec<&str>) = uses
            .iter()
            .map(|u| (u.connector.as_str(), u.nonce.as_str()))
            .unzip();
        let c = self.client().await?;
        c.execute(
            "DELETE FROM webhook_nonces w USING UNNEST($1::text[], $2::text[]) AS u(c, n)
             WHERE w.connector = u.c AND w.nonce = u.n AND w.seen_at = $3",
            &[&conn, &nonce, &now],
        )
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn pending(&self, target: &str) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(
            concat!(
                "SELECT count(*) FROM messages WHERE target = $1 AND status = ",
                status_sql!(PENDING)
            ),
            &[&target],
        )
        .await?
        .get(0))
    }

    pub(in crate::store) async fn inbox_len(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(sql::INBOX_LEN.pg(), &[]).await?.get(0))
    }
}
