//! The outbox on SQLite.

use crate::store::sql;
use crate::store::sqlite::*;
use crate::store::*;
use rusqlite::{params, OptionalExtension};
use std::time::Duration;

/// Records a nonce unless it was seen since `?4`; returns a row when new.
const NONCE_FIRST_USE: &str =
    "INSERT INTO webhook_nonces (connector, nonce, seen_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (connector, nonce) DO UPDATE SET seen_at = excluded.seen_at
     WHERE webhook_nonces.seen_at < ?4
     RETURNING 1";

impl SqliteStore {
    pub(in crate::store) async fn ingest(
        &self,
        batch: Vec<Ingest>,
    ) -> Result<IngestOutcome, StoreError> {
        let receipts = evidence::receipts(&batch);
        self.with(move |c| {
            let now = now_ms();
            let mut out = IngestOutcome::default();
            let mut received = Vec::new();
            {
                let mut inbox = c.prepare_cached(
                    "INSERT INTO inbox (source, source_id, record, received_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (source, source_id) DO NOTHING RETURNING id",
                )?;
                let mut message = c.prepare_cached(
                    "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
                )?;
                let mut head = c.prepare_cached(
                    "INSERT INTO heads (target, key, message_id, due_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (target, key) DO NOTHING",
                )?;
                let mut quarantine = c.prepare_cached(
                    "INSERT INTO quarantine (inbox_id, mapping, part, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut cursor = c.prepare_cached(
                    sql::SET_CURSOR.sqlite(),
                )?;
                for (item, receipt) in batch.iter().zip(&receipts) {
                    let inbox_id: Option<i64> = inbox
                        .query_row(params![item.source, item.source_id, item.record, now], |r| r.get(0))
                        .optional()?;
                    match inbox_id {
                        None => out.duplicates += 1,
                        Some(inbox_id) => {
                            out.stored += 1;
                            received.push((inbox_id, item, receipt));
                            for m in &item.messages {
                                let idem = m.idempotency_key_for(&item.source, &item.source_id);
                                let id: Option<i64> = message
                                    .query_row(
                                        params![inbox_id, m.mapping, m.target, m.key, idem, m.payload, now],
                                        |r| r.get(0),
                                    )
                                    .optional()?;
                                if let Some(id) = id {
                                    out.messages += 1;
                                    head.execute(params![m.target, m.key, id, now])?;
                                }
                            }
                            for q in &item.quarantine {
                                quarantine.execute(params![inbox_id, q.mapping, q.part, q.reason, now])?;
                                out.quarantined += 1;
                            }
                        }
                    }
                    if let Some(cur) = &item.cursor {
                        cursor.execute(params![item.source, cur, now])?;
                    }
                }
            }
            evidence::sqlite::append(c, evidence::received(received.into_iter()))?;
            Ok(out)
        })
        .await
    }

    pub(in crate::store) async fn claim(
        &self,
        target: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let target = target.to_string();
        self.with(move |c| {
            let paused: bool = c
                .query_row(
                    "SELECT paused FROM targets WHERE target = ?1",
                    [&target],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some_and(|p| p != 0);
            let mut out = Vec::new();
            if !paused {
                let now = now_ms();
                let until = now + lease.as_millis() as i64;
                let heads: Vec<(String, i64, i64)> = all(
                    c,
                    "UPDATE heads SET due_at = ?1, lease = lease + 1
                         WHERE rowid IN (SELECT rowid FROM heads WHERE target = ?2 AND due_at <= ?3
                                         ORDER BY due_at LIMIT ?4)
                         RETURNING key, message_id, lease",
                    params![until, target, now, limit as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                let mut msg = c.prepare_cached(
                    "SELECT idem_key, payload, attempts FROM messages WHERE id = ?1",
                )?;
                for (key, id, lease) in heads {
                    let (idem_key, payload, attempts) =
                        msg.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    out.push(Claimed {
                        id,
                        target: target.clone(),
                        key,
                        idem_key,
                        payload,
                        attempts,
                        lease,
                    });
                }
            }
            out.sort_by_key(|c| c.id);
            Ok(out)
        })
        .await
    }

    pub(in crate::store) async fn settle(&self, settles: Vec<Settle>) -> Result<usize, StoreError> {
        let receipts = evidence::delivery_receipts(&settles);
        self.with(move |c| {
            let now = now_ms();
            let mut applied = 0;
            let mut delivered = Vec::new();
            for (s, receipt) in settles.iter().zip(&receipts) {
                c.prepare_cached(
                    "INSERT INTO attempts (message_id, at, duration_ms, outcome, status_code, error_class, excerpt)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    s.id,
                    s.attempt.at,
                    s.attempt.duration_ms,
                    outcome_code(&s.outcome),
                    s.attempt.status_code,
                    s.attempt.error_class,
                    s.attempt.excerpt
                ])?;
                let head: Option<(i64, i64)> = c
                    .prepare_cached(HEAD)?
                    .query_row(params![s.target, s.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if head != Some((s.id, s.lease)) {
                    continue; // claimed again after the lease ran out: the newer claim settles it
                }
                applied += 1;
                delivered.extend(receipt.as_ref().map(|r| (s, r)));
                let error = error_text(s);
                match &s.outcome {
                    Outcome::Delivered => {
                        c.prepare_cached(
                            concat!("UPDATE messages SET status = ", status_sql!(DELIVERED), ", attempts = attempts + 1, updated_at = ?2, last_error = NULL WHERE id = ?1"),
                        )?
                        .execute(params![s.id, now])?;
                        advance(c, &s.target, &s.key, now)?;
                    }
                    Outcome::Retry { at } => {
                        c.prepare_cached(
                            "UPDATE messages SET attempts = attempts + 1, updated_at = ?2, last_error = ?3 WHERE id = ?1",
                        )?
                        .execute(params![s.id, now, error])?;
                        c.prepare_cached("UPDATE heads SET due_at = ?3 WHERE target = ?1 AND key = ?2")?
                            .execute(params![s.target, s.key, at])?;
                    }
                    Outcome::Dead { .. } => {
                        c.prepare_cached(
                            concat!("UPDATE messages SET status = ", status_sql!(DEAD), ", attempts = attempts + 1, updated_at = ?2, last_error = ?3 WHERE id = ?1"),
                        )?
                        .execute(params![s.id, now, error])?;
                        c.prepare_cached("UPDATE heads SET due_at = NULL WHERE target = ?1 AND key = ?2")?
                            .execute(params![s.target, s.key])?;
                    }
                }
            }
            evidence::sqlite::append(c, evidence::delivered(delivered.into_iter()))?;
            Ok(applied)
        })
        .await
    }

    pub(in crate::store) async fn release(&self, claims: Vec<Lease>) -> Result<(), StoreError> {
        self.with(move |c| {
            let now = now_ms();
            for Lease { target, key, lease } in &claims {
                c.prepare_cached(
                    "UPDATE heads SET due_at = ?4 WHERE target = ?1 AND key = ?2 AND lease = ?3",
                )?
                .execute(params![target, key, lease, now])?;
            }
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn cursor(
        &self,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        let source = source.to_string();
        self.with(move |c| {
            Ok(c.query_row(sql::CURSOR.sqlite(), [&source], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn set_cursor(
        &self,
        source: &str,
        cursor: &str,
    ) -> Result<(), StoreError> {
        let (source, cursor) = (source.to_string(), cursor.to_string());
        self.with(move |c| {
            c.prepare_cached(sql::SET_CURSOR.sqlite())?
                .execute(params![source, cursor, crate::store::now_ms()])?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn first_use_nonces(
        &self,
        uses: Vec<NonceUse>,
        now: i64,
        window_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.with(move |c| {
            let expired = now - 2 * window_ms;
            c.prepare_cached("DELETE FROM webhook_nonces WHERE seen_at < ?1")?
                .execute([expired])?;
            let mut put = c.prepare_cached(NONCE_FIRST_USE)?;
            let mut fresh = Vec::with_capacity(uses.len());
            for u in &uses {
                let inserted = put
                    .query_row(params![u.connector, u.nonce, now, expired], |_| Ok(()))
                    .optional()?
                    .is_some();
                fresh.push(inserted);
            }
            Ok(fresh)
        })
        .await
    }

    pub(in crate::store) async fn forget_nonces(
        &self,
        uses: Vec<NonceUse>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            let mut del = c.prepare_cached(
                "DELETE FROM webhook_nonces WHERE connector = ?1 AND nonce = ?2 AND seen_at = ?3",
            )?;
            for u in &uses {
                del.execute(params![u.connector, u.nonce, now])?;
            }
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn pending(&self, target: &str) -> Result<i64, StoreError> {
        let target = target.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached(concat!(
                "SELECT count(*) FROM messages WHERE target = ?1 AND status = ",
                status_sql!(PENDING)
            ))?
            .query_row([&target], |r| r.get(0))?)
        })
        .await
    }

    pub(in crate::store) async fn inbox_len(&self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.query_row(sql::INBOX_LEN.sqlite(), [], |r| r.get(0))?))
            .await
    }
}
