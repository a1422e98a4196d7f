//! Operations on PostgreSQL.

use crate::store::postgres::*;
use crate::store::sql::{self, MESSAGE_SELECT, TASK_SELECT};
use crate::store::*;
use deadpool_postgres::Transaction;

impl PgStore {
    pub(in crate::store) async fn replay(
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
            concat!(
                "UPDATE messages SET status = ",
                status_sql!(PENDING),
                ", payload = COALESCE($2, payload), updated_at = $3 WHERE id = $1"
            ),
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

    pub(in crate::store) async fn note(
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

    pub(in crate::store) async fn find_messages(
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

    pub(in crate::store) async fn targets(&self) -> Result<Vec<TargetRow>, StoreError> {
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
        for r in c.query(sql::MESSAGES_PER_STATE.pg(), &[]).await? {
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
                concat!("SELECT h.target, min(m.created_at) FROM heads h JOIN messages m ON m.id = h.message_id AND m.status = ", status_sql!(PENDING), " GROUP BY h.target"),
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
        for r in c.query(sql::PAUSED_TARGETS.pg(), &[]).await? {
            let t: String = r.get(0);
            row(&mut out, &t).paused = true;
        }
        Ok(out.into_values().collect())
    }

    pub(in crate::store) async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            sql::INSERT_TOKEN.pg(),
            &[&name, &role, &hash, &now_ms(), &expires_at],
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

    pub(in crate::store) async fn token(
        &self,
        hash: &str,
    ) -> Result<Option<TokenHolder>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql::LIVE_TOKEN.pg()).await?;
        Ok(c.query_opt(&st, &[&hash, &now_ms()])
            .await?
            .map(|r| TokenHolder {
                name: r.get(0),
                role: r.get(1),
            }))
    }

    pub(in crate::store) async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(sql::ALL_TOKENS.pg(), &[])
            .await?
            .iter()
            .map(|r| TokenRow {
                name: r.get(0),
                role: r.get(1),
                created_at: r.get(2),
                revoked_at: r.get(3),
                expires_at: r.get(4),
            })
            .collect())
    }

    pub(in crate::store) async fn rotate_token(
        &self,
        name: &str,
        hash: &str,
        overlap_until: i64,
        expires_at: Option<i64>,
        actor: &str,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = now_ms();
        let Some(live) = tx
            .query_opt(
                &format!("{} FOR UPDATE", sql::LIVE_TOKEN_BY_NAME.pg()),
                &[&name, &now],
            )
            .await?
        else {
            return Ok(None);
        };
        let (role, old_expiry, made): (String, Option<i64>, i64) =
            (live.get(0), live.get(1), live.get(2));
        let r = Rotation::new(
            name,
            &role,
            made,
            old_expiry,
            overlap_until,
            expires_at,
            now,
        );
        tx.execute(sql::RETIRE_TOKEN.pg(), &[&name, &r.retired, &r.until])
            .await?;
        tx.execute(
            sql::INSERT_TOKEN.pg(),
            &[&name, &role, &hash, &now, &r.expires_at],
        )
        .await?;
        audit(&tx, actor, "token_rotate", &r.subject, reason).await?;
        tx.commit().await?;
        Ok(Some(r.retired))
    }

    pub(in crate::store) async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(sql::REVOKE_TOKEN.pg(), &[&name, &now_ms()])
            .await?;
        if n > 0 {
            audit(&tx, actor, "token_revoke", &format!("token {name}"), reason).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(in crate::store) async fn create_task(
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

    pub(in crate::store) async fn running_tasks(&self) -> Result<Vec<i64>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(sql::RUNNING_TASKS.pg(), &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(in crate::store) async fn quarantine_counts(
        &self,
    ) -> Result<Vec<QuarantineCount>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(sql::QUARANTINE_COUNTS.pg(), &[])
            .await?
            .iter()
            .map(|r| QuarantineCount {
                source: r.get(0),
                mapping: r.get(1),
                records: r.get(2),
            })
            .collect())
    }

    pub(in crate::store) async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(&format!("{TASK_SELECT} WHERE id = $1"), &[&id])
            .await?
            .map(|r| task_row(&r)))
    }

    pub(in crate::store) async fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(&format!("{TASK_SELECT} ORDER BY id DESC"), &[])
            .await?
            .iter()
            .map(task_row)
            .collect())
    }

    pub(in crate::store) async fn set_task_status(
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
            tx.execute(sql::SET_TASK_STATUS.pg(), &[&id, &to, &now_ms()])
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

    pub(in crate::store) async fn run_task(
        &self,
        id: i64,
        n: usize,
    ) -> Result<Option<TaskRow>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(&format!("{TASK_SELECT} WHERE id = $1 FOR UPDATE"), &[&id])
            .await?
        else {
            return Ok(None);
        };
        let task = task_row(&row);
        let cursor: i64 = tx.query_one(sql::TASK_CURSOR.pg(), &[&id]).await?.get(0);
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
                concat!(
                    "UPDATE messages SET status = ",
                    status_sql!(PENDING),
                    ", updated_at = $2 WHERE id = ANY($1) AND status = ",
                    status_sql!(DEAD)
                ),
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
            sql::TASK_PROGRESS.pg(),
            &[&id, &done, &next_cursor, &status_now, &now],
        )
        .await?;
        let row = tx
            .query_one(&format!("{TASK_SELECT} WHERE id = $1"), &[&id])
            .await?;
        tx.commit().await?;
        Ok(Some(task_row(&row)))
    }

    pub(in crate::store) async fn quarantined(
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

    pub(in crate::store) async fn resolve_quarantine(
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
            tx.execute(sql::RESOLVE_QUARANTINE.pg(), &[qid, &now])
                .await?;
            n += 1;
            if let Some(m) = m {
                let idem = m.idempotency_key_for(&source, &source_id);
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
                        &[&inbox_id, &m.mapping, &m.target, &m.key, &idem, &m.payload, &now],
                    )
                    .await?
                    .get(0);
                tx.execute(sql::NEW_HEAD.pg(), &[&m.target, &m.key, &id, &now])
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

    pub(in crate::store) async fn skip(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = delivery_tx(&mut c).await?;
        let (target, key) = dead_message(&tx, id, "skipped").await?;
        let now = now_ms();
        tx.execute(
            concat!(
                "UPDATE messages SET status = ",
                status_sql!(SKIPPED),
                ", updated_at = $2 WHERE id = $1"
            ),
            &[&id, &now],
        )
        .await?;
        lock_head(&tx, &target, &key).await?;
        advance_many(&tx, &[&target], &[&key], now).await?;
        audit(&tx, actor, "skip", &format!("message {id}"), reason).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn set_paused(
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

    pub(in crate::store) async fn is_paused(&self, target: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::IS_PAUSED.pg(), &[&target])
            .await?
            .is_some_and(|r| r.get::<_, i64>(0) != 0))
    }

    pub(in crate::store) async fn message(
        &self,
        id: i64,
    ) -> Result<Option<MessageRow>, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt(&format!("{MESSAGE_SELECT} WHERE id = $1"), &[&id])
                .await?
                .map(|r| message_row(&r)),
        )
    }

    pub(in crate::store) async fn source_of(
        &self,
        id: i64,
    ) -> Result<Option<SourceRecord>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::SOURCE_OF.pg(), &[&id])
            .await?
            .map(|r| SourceRecord {
                source: r.get(0),
                record: r.get(1),
            }))
    }

    pub(in crate::store) async fn messages(
        &self,
        target: &str,
        status: Status,
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

    pub(in crate::store) async fn attempts(&self, id: i64) -> Result<Vec<Attempt>, StoreError> {
        let c = self.client().await?;
        let rows = c.query(sql::ATTEMPTS.pg(), &[&id]).await?;
        Ok(rows
            .iter()
            .map(|r| Attempt {
                at: r.get(0),
                duration_ms: r.get(1),
                status_code: r.get(2),
                error_class: r.get(3),
                excerpt: r.get(4),
                response_sha256: None,
            })
            .collect())
    }

    pub(in crate::store) async fn quarantine(
        &self,
        source: &str,
    ) -> Result<Vec<QuarantineReason>, StoreError> {
        let c = self.client().await?;
        let rows = c.query(sql::QUARANTINE_OF_SOURCE.pg(), &[&source]).await?;
        Ok(rows
            .iter()
            .map(|r| QuarantineReason {
                mapping: r.get(0),
                part: r.get(1),
                reason: r.get(2),
            })
            .collect())
    }

    pub(in crate::store) async fn audit(&self) -> Result<Vec<AuditRow>, StoreError> {
        let c = self.client().await?;
        let rows = c.query(sql::AUDIT_ROWS.pg(), &[]).await?;
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

    pub(in crate::store) async fn counts(&self) -> Result<Counts, StoreError> {
        let c = self.client().await?;
        let mut out = Counts::default();
        for r in c.query(sql::MESSAGES_PER_STATE.pg(), &[]).await? {
            out.messages.push(StateCount {
                target: r.get(0),
                status: r.get(1),
                messages: r.get(2),
            });
        }
        for r in c.query(concat!("SELECT m.target, count(*) FROM attempts a JOIN messages m ON m.id = a.message_id WHERE a.outcome = ", status_sql!(RETRIED), " GROUP BY m.target"), &[]).await? {
            out.retries.push(RetryCount {
                target: r.get(0),
                retried: r.get(1),
            });
        }
        drop(c);
        out.quarantined = self.quarantine_counts().await?;
        Ok(out)
    }
}

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
