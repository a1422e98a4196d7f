//! Operations on SQLite.

use crate::store::sql::{self, MESSAGE_SELECT, TASK_SELECT};
use crate::store::sqlite::*;
use crate::store::*;
use rusqlite::{params, Connection, OptionalExtension};

impl SqliteStore {
    pub(in crate::store) async fn replay(
        &self,
        id: i64,
        payload: Option<Vec<u8>>,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.with(move |c| {
            let (target, key) = dead_message(c, id, "replayed")?;
            let now = now_ms();
            c.execute(
                concat!("UPDATE messages SET status = ", status_sql!(PENDING), ", payload = COALESCE(?2, payload), updated_at = ?3 WHERE id = ?1"),
                params![id, payload, now],
            )?;
            c.execute(
                "INSERT INTO heads (target, key, message_id, due_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target, key) DO UPDATE SET message_id = excluded.message_id, due_at = excluded.due_at",
                params![target, key, id, now],
            )?;
            let action = if payload.is_some() { "replay_remapped" } else { "replay" };
            audit(c, &actor, action, &format!("message {id}"), &reason)?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn note(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (actor, action, subject, reason) = (
            actor.to_string(),
            action.to_string(),
            subject.to_string(),
            reason.to_string(),
        );
        self.with(move |c| {
            audit(c, &actor, &action, &subject, &reason)?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn find_messages(
        &self,
        filter: &MessageFilter,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let (clause, params) = filter.sql(|n| format!("?{n}"));
        let sql = format!(
            "SELECT m.id, m.target, m.key, m.mapping, m.idem_key, m.status, m.attempts, m.last_error, m.payload, m.created_at, m.updated_at
             FROM messages m{clause} ORDER BY m.id LIMIT {limit}"
        );
        self.with(move |c| {
            all(
                c,
                &sql,
                rusqlite::params_from_iter(sqlite_values(params.clone())),
                message_row,
            )
        })
        .await
    }

    pub(in crate::store) async fn targets(&self) -> Result<Vec<TargetRow>, StoreError> {
        self.with(|c| {
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
            let counts: Vec<(String, i64, i64)> = all(c, sql::MESSAGES_PER_STATE.sqlite(), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for (t, status, n) in counts {
                let r = row(&mut out, &t);
                match status {
                    0 => r.pending = n,
                    1 => r.delivered = n,
                    2 => r.dead = n,
                    _ => r.skipped += n,
                }
            }
            // The oldest pending message of a target is the lowest pending id.
            let oldest: Vec<(String, i64)> = all(c, concat!("SELECT h.target, min(m.created_at) FROM heads h JOIN messages m ON m.id = h.message_id AND m.status = ", status_sql!(PENDING), " GROUP BY h.target"), [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for (t, at) in oldest {
                let r = row(&mut out, &t);
                if r.pending > 0 {
                    r.oldest_pending_at = Some(at);
                }
            }
            let paused: Vec<String> = all(c, sql::PAUSED_TARGETS.sqlite(), [], |r| r.get(0))?;
            for t in paused {
                row(&mut out, &t).paused = true;
            }
            Ok(out.into_values().collect())
        })
        .await
    }

    pub(in crate::store) async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (name, role, hash, actor) = (
            name.to_string(),
            role.to_string(),
            hash.to_string(),
            actor.to_string(),
        );
        self.with(move |c| {
            c.execute(
                sql::INSERT_TOKEN.sqlite(),
                params![name, role, hash, now_ms(), expires_at],
            )?;
            audit(
                c,
                &actor,
                "token_create",
                &format!("token {name} ({role})"),
                "",
            )?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn token(
        &self,
        hash: &str,
    ) -> Result<Option<TokenHolder>, StoreError> {
        let hash = hash.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached(sql::LIVE_TOKEN.sqlite())?
                .query_row(params![hash, now_ms()], |r| {
                    Ok(TokenHolder {
                        name: r.get(0)?,
                        role: r.get(1)?,
                    })
                })
                .optional()?)
        })
        .await
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
        let (name, hash, actor, reason) = (
            name.to_string(),
            hash.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.with(move |c| {
            let now = now_ms();
            let live: Option<(String, Option<i64>, i64)> = c
                .prepare_cached(sql::LIVE_TOKEN_BY_NAME.sqlite())?
                .query_row(params![name, now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((role, old_expiry, made)) = live else {
                return Ok(None);
            };
            let r = Rotation::new(
                &name,
                &role,
                made,
                old_expiry,
                overlap_until,
                expires_at,
                now,
            );
            c.execute(
                sql::RETIRE_TOKEN.sqlite(),
                params![name, r.retired, r.until],
            )?;
            c.execute(
                sql::INSERT_TOKEN.sqlite(),
                params![name, role, hash, now, r.expires_at],
            )?;
            audit(c, &actor, "token_rotate", &r.subject, &reason)?;
            Ok(Some(r.retired))
        })
        .await
    }

    pub(in crate::store) async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.with(|c| {
            all(c, sql::ALL_TOKENS.sqlite(), [], |r| {
                Ok(TokenRow {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    created_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            })
        })
        .await
    }

    pub(in crate::store) async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let (name, actor, reason) = (name.to_string(), actor.to_string(), reason.to_string());
        self.with(move |c| {
            let n = c.execute(sql::REVOKE_TOKEN.sqlite(), params![name, now_ms()])?;
            if n > 0 {
                audit(c, &actor, "token_revoke", &format!("token {name}"), &reason)?;
            }
            Ok(n > 0)
        })
        .await
    }

    pub(in crate::store) async fn create_task(
        &self,
        filter: &MessageFilter,
        cap: i64,
        actor: &str,
        reason: &str,
    ) -> Result<TaskRow, StoreError> {
        let (clause, params) = filter.sql(|n| format!("?{n}"));
        let json = serde_json::to_string(filter).unwrap_or_default();
        let (actor, reason) = (actor.to_string(), reason.to_string());
        let id = self
            .with(move |c| {
                let total: i64 = c.query_row(
                    &format!("SELECT count(*) FROM (SELECT 1 FROM messages m{clause} LIMIT {cap})"),
                    rusqlite::params_from_iter(sqlite_values(params.clone())),
                    |r| r.get(0),
                )?;
                let now = now_ms();
                c.execute(
                    "INSERT INTO tasks (kind, filter, cap, status, total, actor, reason, created_at, updated_at)
                     VALUES ('bulk_replay', ?1, ?2, 'running', ?3, ?4, ?5, ?6, ?6)",
                    params![json, cap, total, actor, reason, now],
                )?;
                let id = c.last_insert_rowid();
                audit(
                    c,
                    &actor,
                    "bulk_replay",
                    &format!(
                "task {id}: {total} dead messages matching {}",
                crate::domain::mask::text(&json)
            ),
                    &reason,
                )?;
                Ok(id)
            })
            .await?;
        self.task(id)
            .await?
            .ok_or(StoreError::Refused("the new task is gone".into()))
    }

    pub(in crate::store) async fn running_tasks(&self) -> Result<Vec<i64>, StoreError> {
        self.with(|c| all(c, sql::RUNNING_TASKS.sqlite(), [], |r| r.get(0)))
            .await
    }

    pub(in crate::store) async fn quarantine_counts(
        &self,
    ) -> Result<Vec<QuarantineCount>, StoreError> {
        self.with(|c| quarantine_counts(c)).await
    }

    pub(in crate::store) async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        self.with(move |c| {
            Ok(
                c.query_row(&format!("{TASK_SELECT} WHERE id = ?1"), [id], task_row)
                    .optional()?,
            )
        })
        .await
    }

    pub(in crate::store) async fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.with(|c| all(c, &format!("{TASK_SELECT} ORDER BY id DESC"), [], task_row))
            .await
    }

    pub(in crate::store) async fn set_task_status(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let (to, actor, reason) = (to.to_string(), actor.to_string(), reason.to_string());
        self.with(move |c| {
            let now: Option<String> = c
                .query_row("SELECT status FROM tasks WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            let moved = now.is_some_and(|s| from.contains(&s));
            if moved {
                c.execute(sql::SET_TASK_STATUS.sqlite(), params![id, to, now_ms()])?;
                audit(
                    c,
                    &actor,
                    &format!("task_{to}"),
                    &format!("task {id}"),
                    &reason,
                )?;
            }
            Ok(moved)
        })
        .await
    }

    pub(in crate::store) async fn run_task(
        &self,
        id: i64,
        n: usize,
    ) -> Result<Option<TaskRow>, StoreError> {
        self.with(move |c| {
            let Some(task) = c
                .query_row(&format!("{TASK_SELECT} WHERE id = ?1"), [id], task_row)
                .optional()?
            else {
                return Ok(None);
            };
            if task.status != "running" {
                return Ok(Some(task));
            }
            let cursor: i64 = c.query_row(sql::TASK_CURSOR.sqlite(), [id], |r| r.get(0))?;
            let mut f = task.filter.clone();
            f.status = Some(status::DEAD);
            f.after = Some(cursor);
            let want = (n as i64).min(task.cap - task.done).max(0);
            let (clause, params) = f.sql(|n| format!("?{n}"));
            let rows: Vec<(i64, String, String)> = all(c, &format!(
                    "SELECT m.id, m.target, m.key FROM messages m{clause} ORDER BY m.id LIMIT {want}"
                ), rusqlite::params_from_iter(sqlite_values(params)), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            let now = now_ms();
            {
                let mut up = c.prepare_cached(
                    concat!("UPDATE messages SET status = ", status_sql!(PENDING), ", updated_at = ?2 WHERE id = ?1 AND status = ", status_sql!(DEAD)),
                )?;
                let mut head = c.prepare_cached(
                    "INSERT INTO heads (target, key, message_id, due_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (target, key) DO UPDATE SET message_id = excluded.message_id, due_at = excluded.due_at",
                )?;
                for (mid, target, key) in &rows {
                    up.execute(params![mid, now])?;
                    head.execute(params![target, key, mid, now])?;
                }
            }
            let done = task.done + rows.len() as i64;
            let finished = (rows.len() as i64) < want || done >= task.cap || want == 0;
            c.execute(
                sql::TASK_PROGRESS.sqlite(),
                params![
                    id,
                    done,
                    rows.last().map_or(cursor, |r| r.0),
                    if finished { "done" } else { "running" },
                    now
                ],
            )?;
            let row = c.query_row(&format!("{TASK_SELECT} WHERE id = ?1"), [id], task_row)?;
            Ok(Some(row))
        })
        .await
    }

    pub(in crate::store) async fn quarantined(
        &self,
        source: Option<&str>,
        mapping: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QuarantineRow>, StoreError> {
        let (source, mapping) = (source.map(str::to_string), mapping.map(str::to_string));
        self.with(move |c| {
            all(c, "SELECT q.id, i.source, i.source_id, q.mapping, q.part, q.reason, i.record
                 FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                 WHERE q.resolved_at IS NULL AND (?1 IS NULL OR i.source = ?1) AND (?2 IS NULL OR q.mapping = ?2)
                 ORDER BY q.id LIMIT ?3", params![source, mapping, limit as i64], |r| {
                Ok(QuarantineRow {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    source_id: r.get(2)?,
                    mapping: r.get(3)?,
                    part: r.get(4)?,
                    reason: r.get(5)?,
                    record: r.get(6)?,
                })
            })
        })
        .await
    }

    pub(in crate::store) async fn resolve_quarantine(
        &self,
        items: Vec<(i64, Option<NewMessage>)>,
        actor: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.with(move |c| {
            let now = now_ms();
            let mut n = 0;
            let mut queued = 0;
            {
                let mut get = c.prepare_cached(
                    "SELECT q.inbox_id, i.source, i.source_id FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                     WHERE q.id = ?1 AND q.resolved_at IS NULL",
                )?;
                let mut resolve =
                    c.prepare_cached(sql::RESOLVE_QUARANTINE.sqlite())?;
                let mut message = c.prepare_cached(
                    "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
                )?;
                let mut head = c.prepare_cached(
                    sql::NEW_HEAD.sqlite(),
                )?;
                for (qid, m) in &items {
                    let Some((inbox_id, source, source_id)) = get
                        .query_row([qid], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                        })
                        .optional()?
                    else {
                        continue;
                    };
                    resolve.execute(params![qid, now])?;
                    n += 1;
                    if let Some(m) = m {
                        let idem = m.idempotency_key_for(&source, &source_id);
                        let id: i64 = message.query_row(
                            params![inbox_id, m.mapping, m.target, m.key, idem, m.payload, now],
                            |r| r.get(0),
                        )?;
                        head.execute(params![m.target, m.key, id, now])?;
                        queued += 1;
                    }
                }
            }
            if n > 0 {
                audit(
                    c,
                    &actor,
                    "quarantine_remap",
                    &format!("{n} quarantined records ({queued} now mapped, {} filtered out)", n - queued),
                    &reason,
                )?;
            }
            Ok(n)
        })
        .await
    }

    pub(in crate::store) async fn skip(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.with(move |c| {
            let (target, key) = dead_message(c, id, "skipped")?;
            let now = now_ms();
            c.execute(
                concat!(
                    "UPDATE messages SET status = ",
                    status_sql!(SKIPPED),
                    ", updated_at = ?2 WHERE id = ?1"
                ),
                params![id, now],
            )?;
            advance(c, &target, &key, now)?;
            audit(c, &actor, "skip", &format!("message {id}"), &reason)?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn set_paused(
        &self,
        target: &str,
        paused: bool,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (target, actor, reason) = (target.to_string(), actor.to_string(), reason.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO targets (target, paused) VALUES (?1, ?2)
                 ON CONFLICT (target) DO UPDATE SET paused = excluded.paused",
                params![target, i64::from(paused)],
            )?;
            let action = if paused { "pause" } else { "resume" };
            audit(c, &actor, action, &format!("target {target}"), &reason)?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn is_paused(&self, target: &str) -> Result<bool, StoreError> {
        let target = target.to_string();
        self.with(move |c| {
            let p: Option<i64> = c
                .query_row(sql::IS_PAUSED.sqlite(), [&target], |r| r.get(0))
                .optional()?;
            Ok(p.is_some_and(|p| p != 0))
        })
        .await
    }

    pub(in crate::store) async fn message(
        &self,
        id: i64,
    ) -> Result<Option<MessageRow>, StoreError> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!("{MESSAGE_SELECT} WHERE id = ?1"),
                [id],
                message_row,
            )
            .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn source_of(
        &self,
        id: i64,
    ) -> Result<Option<SourceRecord>, StoreError> {
        self.with(move |c| {
            Ok(c.query_row(sql::SOURCE_OF.sqlite(), [id], |r| {
                Ok(SourceRecord {
                    source: r.get(0)?,
                    record: r.get(1)?,
                })
            })
            .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn messages(
        &self,
        target: &str,
        status: Status,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let target = target.to_string();
        let status = status.code();
        self.with(move |c| {
            all(
                c,
                &format!(
                    "{MESSAGE_SELECT} WHERE target = ?1 AND status = {status} ORDER BY id LIMIT ?2"
                ),
                params![target, limit as i64],
                message_row,
            )
        })
        .await
    }

    pub(in crate::store) async fn attempts(&self, id: i64) -> Result<Vec<Attempt>, StoreError> {
        self.with(move |c| {
            all(c, sql::ATTEMPTS.sqlite(), [id], |r| {
                Ok(Attempt {
                    at: r.get(0)?,
                    duration_ms: r.get(1)?,
                    status_code: r.get(2)?,
                    error_class: r.get(3)?,
                    excerpt: r.get(4)?,
                    response_sha256: None,
                })
            })
        })
        .await
    }

    pub(in crate::store) async fn quarantine(
        &self,
        source: &str,
    ) -> Result<Vec<QuarantineReason>, StoreError> {
        let source = source.to_string();
        self.with(move |c| {
            all(c, sql::QUARANTINE_OF_SOURCE.sqlite(), [&source], |r| {
                Ok(QuarantineReason {
                    mapping: r.get(0)?,
                    part: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
        })
        .await
    }

    pub(in crate::store) async fn audit(&self) -> Result<Vec<AuditRow>, StoreError> {
        self.with(|c| {
            all(c, sql::AUDIT_ROWS.sqlite(), [], |r| {
                Ok(AuditRow {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    subject: r.get(3)?,
                    reason: r.get(4)?,
                })
            })
        })
        .await
    }

    pub(in crate::store) async fn counts(&self) -> Result<Counts, StoreError> {
        self.with(|c| {
            let mut out = Counts::default();
            let mut st = c.prepare(sql::MESSAGES_PER_STATE.sqlite())?;
            for r in st.query_map([], |r| {
                Ok(StateCount {
                    target: r.get(0)?,
                    status: r.get(1)?,
                    messages: r.get(2)?,
                })
            })? {
                out.messages.push(r?);
            }
            let mut st = c.prepare(concat!("SELECT m.target, count(*) FROM attempts a JOIN messages m ON m.id = a.message_id WHERE a.outcome = ", status_sql!(RETRIED), " GROUP BY m.target"))?;
            for r in st.query_map([], |r| {
                Ok(RetryCount {
                    target: r.get(0)?,
                    retried: r.get(1)?,
                })
            })? {
                out.retries.push(r?);
            }
            out.quarantined = quarantine_counts(c)?;
            Ok(out)
        })
        .await
    }
}

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    let filter: String = r.get(2)?;
    Ok(TaskRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        filter: serde_json::from_str(&filter).unwrap_or_default(),
        cap: r.get(3)?,
        status: r.get(4)?,
        total: r.get(5)?,
        done: r.get(6)?,
        actor: r.get(7)?,
        reason: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

fn quarantine_counts(c: &Connection) -> Result<Vec<QuarantineCount>, StoreError> {
    all(c, sql::QUARANTINE_COUNTS.sqlite(), [], |r| {
        Ok(QuarantineCount {
            source: r.get(0)?,
            mapping: r.get(1)?,
            records: r.get(2)?,
        })
    })
}

fn sqlite_values(params: Vec<Param>) -> Vec<rusqlite::types::Value> {
    params
        .into_iter()
        .map(|p| match p {
            Param::Text(t) => rusqlite::types::Value::Text(t),
            Param::Int(i) => rusqlite::types::Value::Integer(i),
        })
        .collect()
}

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        target: r.get(1)?,
        key: r.get(2)?,
        mapping: r.get(3)?,
        idem_key: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        payload: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

/// The target and key of a dead message; refuses any other state.
fn dead_message(c: &Connection, id: i64, verb: &str) -> Result<(String, String), StoreError> {
    let row: Option<(String, String, i64)> = c
        .query_row(
            "SELECT target, key, status FROM messages WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    require_dead(id, row, verb)
}
