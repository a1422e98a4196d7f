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
use std::time::Duration;

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

    pub(in crate::store) async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
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
}

/// Every row of a query, each made by `f` (the statement cached).
pub(in crate::store) fn all<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map(params, f)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A key's oldest pending message.
pub(in crate::store) const NEXT_PENDING: &str = concat!(
    "SELECT id FROM messages WHERE target = ?1 AND key = ?2 AND status = ",
    status_sql!(PENDING),
    " ORDER BY id LIMIT 1"
);

/// A key's head: its claimed message and lease.
pub(in crate::store) const HEAD: &str =
    "SELECT message_id, lease FROM heads WHERE target = ?1 AND key = ?2";

/// Moves a key's head to its next pending message, or removes it.
pub(in crate::store) fn advance(
    c: &Connection,
    target: &str,
    key: &str,
    now: i64,
) -> Result<(), StoreError> {
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

pub(in crate::store) fn audit(
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
    evidence::sqlite::append(c, Some(evidence::operator(actor, action, subject, reason)))
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
                    idem_key: None,
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
