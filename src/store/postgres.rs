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

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

impl PgStore {
    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let cfg: tokio_postgres::Config = url.parse()?;
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
        let tx = c.transaction().await?;
        let now = now_ms();
        let mut out = IngestOutcome::default();
        let inbox = tx
            .prepare_cached(
                "INSERT INTO inbox (source, source_id, record, received_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, source_id) DO NOTHING RETURNING id",
            )
            .await?;
        let message = tx
            .prepare_cached(
                "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (idem_key) DO NOTHING RETURNING id",
            )
            .await?;
        let head = tx
            .prepare_cached(
                "INSERT INTO heads (target, key, message_id, due_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (target, key) DO NOTHING",
            )
            .await?;
        let quarantine = tx
            .prepare_cached("INSERT INTO quarantine (inbox_id, mapping, part, reason, at) VALUES ($1, $2, $3, $4, $5)")
            .await?;
        let cursor = tx
            .prepare_cached(
                "INSERT INTO cursors (source, cursor, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
            )
            .await?;
        for item in &batch {
            let row = tx
                .query_opt(&inbox, &[&item.source, &item.source_id, &item.record, &now])
                .await?;
            match row {
                None => out.duplicates += 1,
                Some(row) => {
                    let inbox_id: i64 = row.get(0);
                    out.stored += 1;
                    for m in &item.messages {
                        let idem = idempotency_key(&item.source, &item.source_id, &m.mapping);
                        let r = tx
                            .query_opt(
                                &message,
                                &[
                                    &inbox_id, &m.mapping, &m.target, &m.key, &idem, &m.payload,
                                    &now,
                                ],
                            )
                            .await?;
                        if let Some(r) = r {
                            let id: i64 = r.get(0);
                            out.messages += 1;
                            tx.execute(&head, &[&m.target, &m.key, &id, &now]).await?;
                        }
                    }
                    for q in &item.quarantine {
                        tx.execute(
                            &quarantine,
                            &[&inbox_id, &q.mapping, &q.part, &q.reason, &now],
                        )
                        .await?;
                        out.quarantined += 1;
                    }
                }
            }
            if let Some(cur) = &item.cursor {
                tx.execute(&cursor, &[&item.source, cur, &now]).await?;
            }
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
        let tx = c.transaction().await?;
        let paused = tx
            .query_opt("SELECT paused FROM targets WHERE target = $1", &[&target])
            .await?
            .is_some_and(|r| r.get::<_, i64>(0) != 0);
        if paused {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let st = tx
            .prepare_cached(
                "WITH due AS (
                     SELECT target, key FROM heads WHERE target = $1 AND due_at <= $2
                     ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE heads h SET due_at = $4, lease = h.lease + 1
                 FROM due WHERE h.target = due.target AND h.key = due.key
                 RETURNING h.key, h.message_id, h.lease",
            )
            .await?;
        let heads = tx
            .query(&st, &[&target, &now, &(limit as i64), &until])
            .await?;
        let ids: Vec<i64> = heads.iter().map(|r| r.get(1)).collect();
        let msgs = tx
            .query(
                "SELECT id, idem_key, payload, attempts FROM messages WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        tx.commit().await?;
        let mut by_id: std::collections::HashMap<i64, (String, Vec<u8>, i64)> = msgs
            .into_iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let mut out = Vec::with_capacity(heads.len());
        for h in heads {
            let id: i64 = h.get(1);
            if let Some((idem_key, payload, attempts)) = by_id.remove(&id) {
                out.push(Claimed {
                    id,
                    target: target.to_string(),
                    key: h.get(0),
                    idem_key,
                    payload,
                    attempts,
                    lease: h.get(2),
                });
            }
        }
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    pub(super) async fn settle(&self, settles: Vec<Settle>) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = now_ms();
        let mut applied = 0;
        let attempt = tx
            .prepare_cached(
                "INSERT INTO attempts (message_id, at, duration_ms, outcome, status_code, error_class, excerpt)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        let head = tx
            .prepare_cached(
                "SELECT message_id, lease FROM heads WHERE target = $1 AND key = $2 FOR UPDATE",
            )
            .await?;
        for s in &settles {
            let code = outcome_code(&s.outcome);
            tx.execute(
                &attempt,
                &[
                    &s.id,
                    &s.attempt.at,
                    &s.attempt.duration_ms,
                    &code,
                    &s.attempt.status_code,
                    &s.attempt.error_class,
                    &s.attempt.excerpt,
                ],
            )
            .await?;
            let h = tx
                .query_opt(&head, &[&s.target, &s.key])
                .await?
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
            if h != Some((s.id, s.lease)) {
                continue; // claimed again after the lease ran out: the newer claim settles it
            }
            applied += 1;
            let error = error_text(s);
            match &s.outcome {
                Outcome::Delivered => {
                    tx.execute(
                        "UPDATE messages SET status = 1, attempts = attempts + 1, updated_at = $2, last_error = NULL WHERE id = $1",
                        &[&s.id, &now],
                    )
                    .await?;
                    advance(&tx, &s.target, &s.key, now).await?;
                }
                Outcome::Retry { at } => {
                    tx.execute(
                        "UPDATE messages SET attempts = attempts + 1, updated_at = $2, last_error = $3 WHERE id = $1",
                        &[&s.id, &now, &error],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE heads SET due_at = $3 WHERE target = $1 AND key = $2",
                        &[&s.target, &s.key, at],
                    )
                    .await?;
                }
                Outcome::Dead { .. } => {
                    tx.execute(
                        "UPDATE messages SET status = 2, attempts = attempts + 1, updated_at = $2, last_error = $3 WHERE id = $1",
                        &[&s.id, &now, &error],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE heads SET due_at = NULL WHERE target = $1 AND key = $2",
                        &[&s.target, &s.key],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    pub(super) async fn release(
        &self,
        claims: Vec<(String, String, i64)>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = now_ms();
        for (target, key, lease) in &claims {
            tx.execute(
                "UPDATE heads SET due_at = $4 WHERE target = $1 AND key = $2 AND lease = $3",
                &[target, key, lease, &now],
            )
            .await?;
        }
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

    pub(super) async fn skip(&self, id: i64, actor: &str, reason: &str) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (target, key) = dead_message(&tx, id, "skipped").await?;
        let now = now_ms();
        tx.execute(
            "UPDATE messages SET status = 3, updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        advance(&tx, &target, &key, now).await?;
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

    pub(super) async fn inbox_len(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT count(*) FROM inbox", &[]).await?.get(0))
    }
}

const MESSAGE_SELECT: &str =
    "SELECT id, target, key, mapping, idem_key, status, attempts, last_error, payload FROM messages";

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
    }
}

/// Moves a key's head to its next pending message, or removes it.
async fn advance(
    tx: &Transaction<'_>,
    target: &str,
    key: &str,
    now: i64,
) -> Result<(), StoreError> {
    let next = tx
        .query_opt(
            "SELECT id FROM messages WHERE target = $1 AND key = $2 AND status = 0 ORDER BY id LIMIT 1",
            &[&target, &key],
        )
        .await?;
    match next {
        Some(r) => {
            let n: i64 = r.get(0);
            tx.execute(
                "UPDATE heads SET message_id = $3, due_at = $4 WHERE target = $1 AND key = $2",
                &[&target, &key, &n, &now],
            )
            .await?
        }
        None => {
            tx.execute(
                "DELETE FROM heads WHERE target = $1 AND key = $2",
                &[&target, &key],
            )
            .await?
        }
    };
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
