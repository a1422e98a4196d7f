//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, one
//! connection owned by one thread (SQLite has one writer at a time anyway).
//!
//! Group commit: every call is a job for that thread. The thread takes all
//! the jobs waiting (up to [`GROUP`]), runs them in one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each job. Under load,
//! one fsync makes many calls durable instead of one; a call alone costs
//! what it did before. If any call of a group fails, the group is rolled
//! back and each call runs again alone, in its own transaction, so a
//! failing call never takes another's changes with it.

use super::*;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::mpsc;

mod embedded {
    refinery::embed_migrations!("src/store/migrations/sqlite");
}

/// The page cache unless the URL says otherwise (`?cache_mib=N`), in MiB.
pub const DEFAULT_CACHE_MIB: u32 = 64;

/// The SQLite store. One hub process per database file.
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

/// Most calls made durable by one commit.
const GROUP: usize = 128;

/// One call waiting for the store's thread.
trait Job: Send {
    /// Runs the call in the current transaction; whether it succeeded.
    fn run(&mut self, c: &mut Connection) -> bool;
    /// Answers the caller once the commit is known.
    fn finish(self: Box<Self>, commit: Result<(), &str>);
}

struct Call<T, F> {
    f: F,
    result: Option<Result<T, StoreError>>,
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnMut(&mut Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, c: &mut Connection) -> bool {
        let f = &mut self.f;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c)))
            .unwrap_or_else(|_| Err(StoreError::Task("a store call panicked".into())));
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), &str>) {
        let r = match (commit, self.result) {
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(StoreError::Task(format!("committing: {e}"))),
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => Err(StoreError::Task("the call did not run".into())),
        };
        let _ = self.answer.send(r);
    }
}

/// Runs jobs in one transaction; the commit's outcome, or false if a job
/// failed (then everything is rolled back).
fn group(conn: &mut Connection, jobs: &mut [Box<dyn Job>]) -> Result<bool, String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())?;
    for j in jobs.iter_mut() {
        if !j.run(conn) {
            let _ = conn.execute_batch("ROLLBACK");
            return Ok(false);
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e.to_string())
        }
    }
}

/// The store's thread: groups of calls, one transaction and one commit each.
fn serve(mut conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut waiting = vec![first];
        while waiting.len() < GROUP {
            match jobs.try_recv() {
                Ok(j) => waiting.push(j),
                Err(_) => break,
            }
        }
        match group(&mut conn, &mut waiting) {
            Ok(true) => waiting.into_iter().for_each(|j| j.finish(Ok(()))),
            Err(e) => waiting.into_iter().for_each(|j| j.finish(Err(&e))),
            // One failed: each again alone, so that only it fails.
            Ok(false) => {
                for mut j in waiting {
                    let commit = group(&mut conn, std::slice::from_mut(&mut j));
                    j.finish(match &commit {
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    });
                }
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path, cache_mib: u32) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            // Other processes may open the same file at the same moment (a
            // hub and `tongban ingest`): the schema is set up under an
            // exclusive lock on a file beside it, and every statement waits
            // for a busy database rather than failing.
            let lock_path = path.with_extension("lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            // SAFETY: flock on a file descriptor we own; released when `lock` drops.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
                return Err(StoreError::Io(std::io::Error::last_os_error()));
            }
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            // Plans that do not depend on bound values. Without this, SQLite
            // marks a parameter compared by `=` as "re-plan when rebound",
            // and rusqlite clears the bindings of every statement it returns
            // to its cache, so each use of such a cached statement was
            // parsed and planned again (10 % of the store thread in a demo).
            // Statuses, which partial indexes select on, are written into
            // the SQL as literals instead.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
            // Every statement of the delivery path stays prepared.
            conn.set_prepared_statement_cache_capacity(64);
            // Page cache: claims and settles walk indexes of millions of
            // rows, which SQLite's default 2 MiB cannot hold.
            conn.pragma_update(None, "cache_size", -1024 * i64::from(cache_mib))?;
            embedded::migrations::runner()
                .run(&mut conn)
                .map_err(|e| StoreError::Migration(e.to_string()))?;
            // Checkpoint the WAL into the database every 8,000 pages (32 MiB)
            // rather than every 1,000: hot index pages are written once per
            // checkpoint, not once per 4 MiB of log.
            conn.pragma_update(None, "wal_autocheckpoint", 8_000)?;
            drop(lock);
            let (jobs, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("tongban-sqlite".into())
                .spawn(move || serve(conn, rx))?;
            Ok(SqliteStore { jobs })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(Call {
                f,
                result: None,
                answer,
            }))
            .map_err(|_| StoreError::Task("the store's thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Task("the store's thread has stopped".into()))?
    }

    pub(super) async fn ingest(&self, batch: Vec<Ingest>) -> Result<IngestOutcome, StoreError> {
        self.with(move |c| {
            let now = now_ms();
            let mut out = IngestOutcome::default();
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
                    "INSERT INTO cursors (source, cursor, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                )?;
                for item in &batch {
                    let inbox_id: Option<i64> = inbox
                        .query_row(params![item.source, item.source_id, item.record, now], |r| r.get(0))
                        .optional()?;
                    match inbox_id {
                        None => out.duplicates += 1,
                        Some(inbox_id) => {
                            out.stored += 1;
                            for m in &item.messages {
                                let idem = idempotency_key(&item.source, &item.source_id, &m.mapping);
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
            Ok(out)
        })
        .await
    }

    pub(super) async fn claim(
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

    pub(super) async fn settle(&self, settles: Vec<Settle>) -> Result<usize, StoreError> {
        self.with(move |c| {
            let now = now_ms();
            let mut applied = 0;
            for s in &settles {
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
                let error = error_text(s);
                match &s.outcome {
                    Outcome::Delivered => {
                        c.prepare_cached(
                            "UPDATE messages SET status = 1, attempts = attempts + 1, updated_at = ?2, last_error = NULL WHERE id = ?1",
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
                            "UPDATE messages SET status = 2, attempts = attempts + 1, updated_at = ?2, last_error = ?3 WHERE id = ?1",
                        )?
                        .execute(params![s.id, now, error])?;
                        c.prepare_cached("UPDATE heads SET due_at = NULL WHERE target = ?1 AND key = ?2")?
                            .execute(params![s.target, s.key])?;
                    }
                }
            }
            Ok(applied)
        })
        .await
    }

    pub(super) async fn release(
        &self,
        claims: Vec<(String, String, i64)>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            let now = now_ms();
            for (target, key, lease) in &claims {
                c.prepare_cached(
                    "UPDATE heads SET due_at = ?4 WHERE target = ?1 AND key = ?2 AND lease = ?3",
                )?
                .execute(params![target, key, lease, now])?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn replay(
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
                "UPDATE messages SET status = 0, payload = COALESCE(?2, payload), updated_at = ?3 WHERE id = ?1",
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

    pub(super) async fn note(
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

    pub(super) async fn find_messages(
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

    pub(super) async fn targets(&self) -> Result<Vec<TargetRow>, StoreError> {
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
            let counts: Vec<(String, i64, i64)> = all(c, "SELECT target, status, count(*) FROM messages GROUP BY target, status", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
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
            let oldest: Vec<(String, i64)> = all(c, "SELECT h.target, min(m.created_at) FROM heads h JOIN messages m ON m.id = h.message_id AND m.status = 0 GROUP BY h.target", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for (t, at) in oldest {
                let r = row(&mut out, &t);
                if r.pending > 0 {
                    r.oldest_pending_at = Some(at);
                }
            }
            let paused: Vec<String> = all(c, "SELECT target FROM targets WHERE paused = 1", [], |r| r.get(0))?;
            for t in paused {
                row(&mut out, &t).paused = true;
            }
            Ok(out.into_values().collect())
        })
        .await
    }

    pub(super) async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
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
                "INSERT INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, role, hash, now_ms()],
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

    pub(super) async fn token(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let hash = hash.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached(
                "SELECT name, role FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
            )?
            .query_row([&hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    pub(super) async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.with(|c| {
            all(
                c,
                "SELECT name, role, created_at, revoked_at FROM tokens ORDER BY id",
                [],
                |r| {
                    Ok(TokenRow {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        created_at: r.get(2)?,
                        revoked_at: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    pub(super) async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let (name, actor, reason) = (name.to_string(), actor.to_string(), reason.to_string());
        self.with(move |c| {
            let n = c.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, now_ms()],
            )?;
            if n > 0 {
                audit(c, &actor, "token_revoke", &format!("token {name}"), &reason)?;
            }
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn create_task(
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

    pub(super) async fn running_tasks(&self) -> Result<Vec<i64>, StoreError> {
        self.with(|c| {
            all(
                c,
                "SELECT id FROM tasks WHERE status = 'running' ORDER BY id",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    pub(super) async fn quarantine_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.with(|c| quarantine_counts(c)).await
    }

    pub(super) async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        self.with(move |c| {
            Ok(
                c.query_row(&format!("{TASK_SELECT} WHERE id = ?1"), [id], task_row)
                    .optional()?,
            )
        })
        .await
    }

    pub(super) async fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.with(|c| all(c, &format!("{TASK_SELECT} ORDER BY id DESC"), [], task_row))
            .await
    }

    pub(super) async fn set_task_status(
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
                c.execute(
                    "UPDATE tasks SET status = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, to, now_ms()],
                )?;
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

    pub(super) async fn run_task(&self, id: i64, n: usize) -> Result<Option<TaskRow>, StoreError> {
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
            let cursor: i64 = c.query_row("SELECT cursor FROM tasks WHERE id = ?1", [id], |r| r.get(0))?;
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
                    "UPDATE messages SET status = 0, updated_at = ?2 WHERE id = ?1 AND status = 2",
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
                "UPDATE tasks SET done = ?2, cursor = ?3, status = ?4, updated_at = ?5 WHERE id = ?1",
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

    pub(super) async fn quarantined(
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

    pub(super) async fn resolve_quarantine(
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
                    c.prepare_cached("UPDATE quarantine SET resolved_at = ?2 WHERE id = ?1")?;
                let mut message = c.prepare_cached(
                    "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
                )?;
                let mut head = c.prepare_cached(
                    "INSERT INTO heads (target, key, message_id, due_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (target, key) DO NOTHING",
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
                        let idem = idempotency_key(&source, &source_id, &m.mapping);
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

    pub(super) async fn skip(&self, id: i64, actor: &str, reason: &str) -> Result<(), StoreError> {
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.with(move |c| {
            let (target, key) = dead_message(c, id, "skipped")?;
            let now = now_ms();
            c.execute(
                "UPDATE messages SET status = 3, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            advance(c, &target, &key, now)?;
            audit(c, &actor, "skip", &format!("message {id}"), &reason)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn set_paused(
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

    pub(super) async fn is_paused(&self, target: &str) -> Result<bool, StoreError> {
        let target = target.to_string();
        self.with(move |c| {
            let p: Option<i64> = c
                .query_row(
                    "SELECT paused FROM targets WHERE target = ?1",
                    [&target],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(p.is_some_and(|p| p != 0))
        })
        .await
    }

    pub(super) async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        let source = source.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT cursor FROM cursors WHERE source = ?1",
                [&source],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    pub(super) async fn message(&self, id: i64) -> Result<Option<MessageRow>, StoreError> {
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

    pub(super) async fn source_of(&self, id: i64) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT i.source, i.record FROM messages m JOIN inbox i ON i.id = m.inbox_id WHERE m.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    pub(super) async fn messages(
        &self,
        target: &str,
        status: i64,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let target = target.to_string();
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

    pub(super) async fn attempts(&self, id: i64) -> Result<Vec<Attempt>, StoreError> {
        self.with(move |c| {
            all(c, "SELECT at, duration_ms, status_code, error_class, excerpt FROM attempts WHERE message_id = ?1 ORDER BY id", [id], |r| {
                Ok(Attempt {
                    at: r.get(0)?,
                    duration_ms: r.get(1)?,
                    status_code: r.get(2)?,
                    error_class: r.get(3)?,
                    excerpt: r.get(4)?,
                })
            })
        })
        .await
    }

    pub(super) async fn quarantine(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let source = source.to_string();
        self.with(move |c| {
            all(c, "SELECT q.mapping, q.part, q.reason FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                 WHERE i.source = ?1 ORDER BY q.id", [&source], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        })
        .await
    }

    pub(super) async fn audit(&self) -> Result<Vec<AuditRow>, StoreError> {
        self.with(|c| {
            all(
                c,
                "SELECT at, actor, action, subject, reason FROM audit ORDER BY id",
                [],
                |r| {
                    Ok(AuditRow {
                        at: r.get(0)?,
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        subject: r.get(3)?,
                        reason: r.get(4)?,
                    })
                },
            )
        })
        .await
    }

    pub(super) async fn pending(&self, target: &str) -> Result<i64, StoreError> {
        let target = target.to_string();
        self.with(move |c| {
            Ok(
                c.prepare_cached("SELECT count(*) FROM messages WHERE target = ?1 AND status = 0")?
                    .query_row([&target], |r| r.get(0))?,
            )
        })
        .await
    }

    pub(super) async fn inbox_len(&self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.query_row("SELECT count(*) FROM inbox", [], |r| r.get(0))?))
            .await
    }

    pub(super) async fn record_payments(&self, rows: Vec<PaymentRow>) -> Result<usize, StoreError> {
        self.with(move |c| {
            let mut n = 0;
            {
                let mut st = c.prepare_cached(
                    "INSERT INTO payments (payment_id, period, bank_code, amount_fen, record, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (payment_id) DO NOTHING",
                )?;
                let now = now_ms();
                for r in &rows {
                    n += st.execute(rusqlite::params![r.payment_id, r.period, r.bank_code, r.amount_fen, r.record, now])?;
                }
            }
            Ok(n)
        })
        .await
    }

    pub(super) async fn build_batches(
        &self,
        period: &str,
        max: usize,
        created: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let (period, created) = (period.to_string(), created.to_string());
        self.with(move |c| {
            let unbatched: Vec<(String, String, i64)> = all(c, "SELECT p.payment_id, p.bank_code, p.amount_fen FROM payments p
                     WHERE p.period = ?1 AND NOT EXISTS
                       (SELECT 1 FROM batch_items i WHERE i.payment_id = p.payment_id AND i.live = 1)
                     ORDER BY p.bank_code, p.payment_id", [&period], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let plan = plan_batches(&period, &created, max, &unbatched, |bank| {
                Ok(c.query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE period = ?1 AND bank_code = ?2",
                    [&period, bank],
                    |r| r.get(0),
                )?)
            })?;
            {
                let mut b = c.prepare_cached(
                    "INSERT INTO batches (batch_id, period, bank_code, seq, created, count, total_fen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let mut item = c.prepare_cached(
                    "INSERT INTO batch_items (batch_id, payment_id, position) VALUES (?1, ?2, ?3)",
                )?;
                for (row, ids) in &plan {
                    b.execute(rusqlite::params![row.batch_id, row.period, row.bank_code, row.seq, row.created, row.count, row.total_fen])?;
                    for (pos, id) in ids.iter().enumerate() {
                        item.execute(rusqlite::params![row.batch_id, id, pos as i64])?;
                    }
                }
            }
            Ok(plan.into_iter().map(|(b, _)| b).collect())
        })
        .await
    }

    pub(super) async fn batches(&self, period: &str) -> Result<Vec<BatchRow>, StoreError> {
        let period = period.to_string();
        self.with(move |c| {
            all(
                c,
                "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches
                 WHERE period = ?1 AND live = 1 ORDER BY bank_code, seq",
                [&period],
                |r| {
                    Ok(BatchRow {
                        batch_id: r.get(0)?,
                        period: r.get(1)?,
                        bank_code: r.get(2)?,
                        seq: r.get(3)?,
                        created: r.get(4)?,
                        count: r.get(5)?,
                        total_fen: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    pub(super) async fn batch_payments_page(
        &self,
        batch_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, PaymentRow)>, StoreError> {
        let batch_id = batch_id.to_string();
        self.with(move |c| {
            all(
                c,
                "SELECT i.position, p.payment_id, p.period, p.bank_code, p.amount_fen, p.record
                 FROM batch_items i JOIN payments p ON p.payment_id = i.payment_id
                 WHERE i.batch_id = ?1 AND i.position > ?2 ORDER BY i.position LIMIT ?3",
                rusqlite::params![batch_id, after, limit as i64],
                |r| Ok((r.get(0)?, payment_at(r, 1)?)),
            )
        })
        .await
    }

    pub(super) async fn reissue(
        &self,
        payment_id: &str,
        corrected: Option<(Vec<u8>, String)>,
        actor: &str,
        reason: &str,
    ) -> Result<String, StoreError> {
        let (payment_id, actor, reason) = (
            payment_id.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.with(move |c| {
            let result: Option<Option<String>> = c
                .query_row("SELECT result FROM payments WHERE payment_id = ?1", [&payment_id], |r| r.get(0))
                .optional()?;
            let Some(result) = result else {
                return Err(StoreError::Refused(format!("there is no payment {payment_id}")));
            };
            if let Some(why) = reissue_refusal(&payment_id, result.as_deref()) {
                return Err(StoreError::Refused(why));
            }
            let batch: Option<String> = c
                .query_row(
                    "SELECT batch_id FROM batch_items WHERE payment_id = ?1 AND live = 1",
                    [&payment_id],
                    |r| r.get(0),
                )
                .optional()?;
            c.execute("UPDATE batch_items SET live = 0 WHERE payment_id = ?1 AND live = 1", [&payment_id])?;
            c.execute(
                "UPDATE payments SET result = NULL, reason_code = NULL, result_at = NULL WHERE payment_id = ?1",
                [&payment_id],
            )?;
            if let Some((record, bank)) = &corrected {
                c.execute(
                    "UPDATE payments SET record = ?2, bank_code = ?3 WHERE payment_id = ?1",
                    rusqlite::params![payment_id, record, bank],
                )?;
            }
            let batch = batch.unwrap_or_default();
            audit(c, &actor, "reissue", &format!("payment {payment_id} (rejected in batch {batch})"), &reason)?;
            Ok(batch)
        })
        .await
    }

    pub(super) async fn payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<(PaymentRow, Option<String>, Option<String>)>, StoreError> {
        let payment_id = payment_id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT payment_id, period, bank_code, amount_fen, record, result, reason_code FROM payments WHERE payment_id = ?1",
                [&payment_id],
                |r| Ok((payment_at(r, 0)?, r.get(5)?, r.get(6)?)),
            )
            .optional()?)
        })
        .await
    }

    pub(super) async fn mark_written(
        &self,
        batch_id: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let (b, h) = (batch_id.to_string(), sha256.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE batches SET file_sha256 = ?2 WHERE batch_id = ?1",
                [&b, &h],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn written(&self, batch_id: &str) -> Result<Option<String>, StoreError> {
        let b = batch_id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT file_sha256 FROM batches WHERE batch_id = ?1",
                [&b],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
        })
        .await
    }

    pub(super) async fn batch(&self, batch_id: &str) -> Result<Option<BatchRow>, StoreError> {
        let batch_id = batch_id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches WHERE batch_id = ?1",
                [&batch_id],
                |r| {
                    Ok(BatchRow {
                        batch_id: r.get(0)?,
                        period: r.get(1)?,
                        bank_code: r.get(2)?,
                        seq: r.get(3)?,
                        created: r.get(4)?,
                        count: r.get(5)?,
                        total_fen: r.get(6)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub(super) async fn set_results(
        &self,
        results: Vec<(String, String, Option<String>)>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            {
                let mut st = c.prepare_cached(
                    "UPDATE payments SET result = ?2, reason_code = ?3, result_at = ?4 WHERE payment_id = ?1",
                )?;
                let now = now_ms();
                for (id, result, reason) in &results {
                    st.execute(rusqlite::params![id, result, reason, now])?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn raise_alarms(
        &self,
        alarms: Vec<(String, String, String)>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            {
                let mut st = c.prepare_cached(
                    "INSERT INTO alarms (at, batch_id, kind, detail) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (batch_id, kind, detail) DO NOTHING",
                )?;
                let now = now_ms();
                for (b, k, d) in &alarms {
                    st.execute(rusqlite::params![now, b, k, d])?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        self.with(|c| {
            all(
                c,
                "SELECT at, batch_id, kind, detail FROM alarms ORDER BY at, batch_id, kind, detail",
                [],
                |r| {
                    Ok(AlarmRow {
                        at: r.get(0)?,
                        batch_id: r.get(1)?,
                        kind: r.get(2)?,
                        detail: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    pub(super) async fn results(&self, period: &str) -> Result<ResultCounts, StoreError> {
        let period = period.to_string();
        self.with(move |c| {
            all(
                c,
                "SELECT b.batch_id, p.result, count(*), COALESCE(SUM(p.amount_fen), 0)
                 FROM batches b JOIN batch_items i ON i.batch_id = b.batch_id AND i.live = 1
                 JOIN payments p ON p.payment_id = i.payment_id
                 WHERE b.period = ?1 AND b.live = 1
                 GROUP BY b.batch_id, p.result ORDER BY b.batch_id, p.result",
                [&period],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        })
        .await
    }

    pub(super) async fn counts(&self) -> Result<Counts, StoreError> {
        self.with(|c| {
            let mut out = Counts::default();
            let mut st = c.prepare("SELECT target, status, count(*) FROM messages GROUP BY target, status")?;
            for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
                out.messages.push(r?);
            }
            let mut st = c.prepare("SELECT m.target, count(*) FROM attempts a JOIN messages m ON m.id = a.message_id WHERE a.outcome = 0 GROUP BY m.target")?;
            for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
                out.retries.push(r?);
            }
            out.quarantined = quarantine_counts(c)?;
            Ok(out)
        })
        .await
    }
}

const TASK_SELECT: &str = "SELECT id, kind, filter, cap, status, total, done, actor, reason, created_at, updated_at FROM tasks";

/// Every row of a query, each made by `f` (the statement cached).
fn all<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map(params, f)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A payment from its five columns (payment_id, period, bank_code,
/// amount_fen, record) starting at column `i`.
fn payment_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<PaymentRow> {
    Ok(PaymentRow {
        payment_id: r.get(i)?,
        period: r.get(i + 1)?,
        bank_code: r.get(i + 2)?,
        amount_fen: r.get(i + 3)?,
        record: r.get(i + 4)?,
    })
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

fn quarantine_counts(c: &Connection) -> Result<Vec<(String, String, i64)>, StoreError> {
    all(c, "SELECT i.source, q.mapping, count(*) FROM quarantine q JOIN inbox i ON i.id = q.inbox_id GROUP BY i.source, q.mapping", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
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

const MESSAGE_SELECT: &str =
    "SELECT id, target, key, mapping, idem_key, status, attempts, last_error, payload, created_at, updated_at FROM messages";

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

/// A key's oldest pending message.
const NEXT_PENDING: &str =
    "SELECT id FROM messages WHERE target = ?1 AND key = ?2 AND status = 0 ORDER BY id LIMIT 1";
/// A key's head: its claimed message and lease.
const HEAD: &str = "SELECT message_id, lease FROM heads WHERE target = ?1 AND key = ?2";

/// Moves a key's head to its next pending message, or removes it.
fn advance(c: &Connection, target: &str, key: &str, now: i64) -> Result<(), StoreError> {
    let next: Option<i64> = c
        .prepare_cached(NEXT_PENDING)?
        .query_row(params![target, key], |r| r.get(0))
        .optional()?;
    match next {
        Some(n) => c
            .prepare_cached(
                "UPDATE heads SET message_id = ?3, due_at = ?4 WHERE target = ?1 AND key = ?2",
            )?
            .execute(params![target, key, n, now])?,
        None => c
            .prepare_cached("DELETE FROM heads WHERE target = ?1 AND key = ?2")?
            .execute(params![target, key])?,
    };
    Ok(())
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

fn audit(
    c: &Connection,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO audit (at, actor, action, subject, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), actor, action, subject, reason],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = tokio::sync::oneshot::Receiver<Result<Vec<i64>, StoreError>>;

    /// Queues a call that inserts `x` into `t`, then fails if asked to, and
    /// answers with the rows it saw.
    fn queue(jobs: &mpsc::Sender<Box<dyn Job>>, x: i64, fail: bool) -> Answer {
        let (answer, rx) = tokio::sync::oneshot::channel();
        let f = move |c: &mut Connection| {
            if x > 0 {
                c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            }
            if fail {
                return Err(StoreError::Refused(format!("call {x} fails")));
            }
            let mut st = c.prepare("SELECT x FROM t ORDER BY x")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<i64>, _>>()?)
        };
        jobs.send(Box::new(Call {
            f,
            result: None,
            answer,
        }))
        .unwrap();
        rx
    }

    #[test]
    fn a_group_commits_together_and_a_failing_call_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("g.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        let (jobs, rx) = mpsc::channel();
        // Queued before the thread starts: one group.
        let ok1 = queue(&jobs, 1, false);
        let bad = queue(&jobs, 2, true);
        let ok3 = queue(&jobs, 3, false);
        let read = queue(&jobs, 0, false);
        drop(jobs);
        std::thread::spawn(move || serve(conn, rx)).join().unwrap();
        assert_eq!(ok1.blocking_recv().unwrap().unwrap(), vec![1]);
        let e = bad.blocking_recv().unwrap().unwrap_err();
        assert!(e.to_string().contains("call 2 fails"), "{e}");
        assert_eq!(ok3.blocking_recv().unwrap().unwrap(), vec![1, 3]);
        // The failing call's insert is gone; the others' are committed.
        assert_eq!(read.blocking_recv().unwrap().unwrap(), vec![1, 3]);
        let c = Connection::open(dir.path().join("g.db")).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn statements_of_the_delivery_path_are_planned_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), DEFAULT_CACHE_MIB)
            .await
            .unwrap();
        let batch = (0..40)
            .map(|i| Ingest {
                source: "src.op".into(),
                source_id: format!("r{i}"),
                record: b"{}".to_vec(),
                messages: vec![NewMessage {
                    mapping: "m".into(),
                    target: "t.op".into(),
                    key: format!("person-{}", i % 20),
                    payload: b"{}".to_vec(),
                }],
                quarantine: vec![],
                cursor: None,
            })
            .collect();
        store.ingest(batch).await.unwrap();
        // Two rounds: each key's first message, then its second.
        for _ in 0..2 {
            let claimed = store
                .claim("t.op", 100, Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(claimed.len(), 20);
            let settles = claimed
                .into_iter()
                .map(|c| Settle {
                    id: c.id,
                    target: c.target,
                    key: c.key,
                    lease: c.lease,
                    outcome: Outcome::Delivered,
                    attempt: Attempt::default(),
                })
                .collect();
            assert_eq!(store.settle(settles).await.unwrap(), 20);
        }
        // Each statement ran 40 times with other values bound; none was
        // parsed and planned again for it.
        let reprepared = store
            .with(|c| {
                let mut n = Vec::new();
                for sql in [NEXT_PENDING, HEAD] {
                    n.push(
                        c.prepare_cached(sql)?
                            .get_status(rusqlite::StatementStatus::RePrepare),
                    );
                }
                Ok(n)
            })
            .await
            .unwrap();
        assert_eq!(reprepared, vec![0, 0]);
    }

    #[tokio::test]
    async fn the_page_cache_is_the_size_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db"), 8)
            .await
            .unwrap();
        let kib: i64 = store
            .with(|c| Ok(c.query_row("PRAGMA cache_size", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(kib, -8 * 1024);
    }
}
