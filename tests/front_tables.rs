//! Front-end database tables (库表交换) through `tongban run`, against real
//! PostgreSQL and MariaDB servers on 127.0.0.1 (started by the test
//! support), the hub's store on SQLite.
//!
//! In and out: rows read from one front-end table by watermark, marked
//! read once stored, mapped and written to another table with their
//! idempotency keys; a row whose column does not fit its field, and one
//! with a NULL where the field is not optional, are quarantined with a
//! reason naming the table, row and column; a row the target table
//! refuses (too long for its column) is dead with the database's reason,
//! and every other row of its batch is written; a row committed late with
//! a lower id is still read (the mark, not the watermark, says what is
//! new); date-times, booleans and lists arrive as they left.
//!
//! Crash: the hub is SIGKILLed three times while it reads and writes
//! 20,000 rows, then left to finish: every row stored once in the inbox,
//! written once to the target (by content, not only by key), each key's
//! rows in order.

mod support;

use mysql_async::prelude::Queryable;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use support::hub::write;

const EV: &str = r#"{"type":"record","name":"Ev","namespace":"t","fields":[
 {"name":"key","type":"string"},
 {"name":"seq","type":"long"},
 {"name":"name","type":"string"},
 {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"active","type":"boolean"},
 {"name":"tags","type":{"type":"array","items":"string"}},
 {"name":"note","type":["null","string"],"default":null}]}"#;

/// A front-end database of either engine.
enum Front {
    Pg(String),
    My(String),
}

impl Front {
    async fn start(engine: &str) -> Front {
        match engine {
            "postgres" => Front::Pg(support::pg::database().await),
            _ => Front::My(support::mariadb::database().await),
        }
    }

    fn url(&self) -> &str {
        match self {
            Front::Pg(u) | Front::My(u) => u,
        }
    }

    /// The `key` column, quoted for the engine.
    fn key(&self) -> &str {
        match self {
            Front::Pg(_) => "key",
            Front::My(_) => "`key`",
        }
    }

    fn engine(&self) -> &str {
        match self {
            Front::Pg(_) => "postgres",
            Front::My(_) => "mariadb",
        }
    }

    async fn exec(&self, sql: &[&str]) {
        match self {
            Front::Pg(url) => {
                let c = pg(url).await;
                for s in sql {
                    c.batch_execute(s)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e:?}"));
                }
            }
            Front::My(url) => support::mariadb::exec(url, sql).await,
        }
    }

    /// Rows of a query, each column as text.
    async fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Front::Pg(url) => {
                let c = pg(url).await;
                c.simple_query(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                        }
                        _ => None,
                    })
                    .collect()
            }
            Front::My(url) => {
                let pool = mysql_async::Pool::new(url.as_str());
                let mut c = pool.get_conn().await.unwrap();
                let rows: Vec<mysql_async::Row> =
                    c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                drop(c);
                pool.disconnect().await.ok();
                rows.into_iter()
                    .map(|r| {
                        r.unwrap()
                            .into_iter()
                            .map(|v| match v {
                                mysql_async::Value::NULL => None,
                                mysql_async::Value::Bytes(b) => {
                                    Some(String::from_utf8_lossy(&b).into_owned())
                                }
                                v => Some(v.as_sql(true).trim_matches('\'').to_string()),
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    async fn count(&self, sql: &str) -> usize {
        self.query(sql).await[0][0]
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap()
    }

    /// The source table and the target table; `unique_seq`: the target
    /// refuses a second row of a `seq` (so only keys keep duplicates out).
    async fn tables(&self, unique_seq: bool) {
        let uq = if unique_seq { " UNIQUE" } else { "" };
        match self {
            Front::Pg(_) => {
                self.exec(&[
                    "CREATE TABLE rows_in (id bigserial PRIMARY KEY, key text NOT NULL, seq varchar(20), name text, at timestamptz, active boolean, tags jsonb, note text, read_flag int NOT NULL DEFAULT 0)",
                    &format!("CREATE TABLE rows_out (wid bigserial, idempotency_key varchar(64) NOT NULL UNIQUE, key text, seq bigint{uq}, name varchar(20), at timestamp, active boolean, tags text, note text)"),
                ])
                .await
            }
            Front::My(_) => {
                self.exec(&[
                    "CREATE TABLE rows_in (id bigint AUTO_INCREMENT PRIMARY KEY, `key` varchar(40) NOT NULL, seq varchar(20), name varchar(100), at datetime(3), active tinyint(1), tags json, note text, read_flag int NOT NULL DEFAULT 0)",
                    &format!("CREATE TABLE rows_out (wid bigint AUTO_INCREMENT PRIMARY KEY, idempotency_key varchar(64) NOT NULL UNIQUE, `key` varchar(40), seq bigint{uq}, name varchar(20), at datetime(3), active tinyint(1), tags text, note text)"),
                ])
                .await
            }
        }
    }

    /// Rows `from..=to` into the source table: id and seq n, key `K<n % keys>`,
    /// at 2026-12-01 10:00:00 (+08:00) plus n seconds.
    async fn fill(&self, from: usize, to: usize, keys: usize) {
        let sql = match self {
            Front::Pg(_) => format!(
                "INSERT INTO rows_in (id, key, seq, name, at, active, tags, note) SELECT g, 'K' || (g % {keys}), g::text, '张三' || g, timestamptz '2026-12-01 10:00:00+08' + g * interval '1 second', g % 2 = 0, ('[\"a\",\"b' || g || '\"]')::jsonb, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END FROM generate_series({from}, {to}) AS s(g) ORDER BY s.g"
            ),
            Front::My(_) => format!(
                "SET SESSION max_recursive_iterations = 10000000; INSERT INTO rows_in (id, `key`, seq, name, at, active, tags, note) WITH RECURSIVE g(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM g WHERE n < {to}) SELECT n, CONCAT('K', n % {keys}), n, CONCAT('张三', n), TIMESTAMP('2026-12-01 10:00:00') + INTERVAL n SECOND, n % 2 = 0, CONCAT('[\"a\",\"b', n, '\"]'), IF(n % 3 = 0, NULL, CONCAT('n', n)) FROM g ORDER BY n"
            ),
        };
        self.exec(&[&sql]).await;
    }
}

fn config(dir: &Path, engine: &str, batch: usize) {
    let source = format!(
        "table = \"rows_in\"\nwatermark = \"id\"\nmark = {{ column = \"read_flag\", value = \"1\" }}\nbatch = {batch}\n"
    );
    config_with(dir, engine, &source, batch);
}

fn config_with(dir: &Path, engine: &str, source: &str, batch: usize) {
    write(dir, "tongban.toml", "[store]\nurl = \"sqlite://var/t.db\"\n[dispatch]\nretry_schedule = [\"100ms\", \"200ms\", \"400ms\", \"1s\", \"1s\", \"1s\", \"1s\"]\nlease = \"5s\"\n");
    write(dir, "schemas/Ev.avsc", EV);
    write(
        dir,
        "connectors/front.toml",
        &format!(
            r#"kind = "database"
engine = "{engine}"
url = "${{env:FRONT_DB}}"

[operations.rows]
direction = "source"
schema = "Ev"
poll_interval = "100ms"
{source}
[operations.out]
direction = "sink"
schema = "Ev"
table = "rows_out"
batch = {batch}
"#
        ),
    );
    write(dir, "mappings/in_to_out.toml", "from = \"front.rows\"\nto = \"front.out\"\nas = \"e\"\nkey = \"e.key\"\n[fields]\nkey = \"e.key\"\nseq = \"e.seq\"\nname = \"e.name\"\nat = \"e.at\"\nactive = \"e.active\"\ntags = \"e.tags\"\nnote = \"e.note\"\n");
}

/// Prints the hub's log if the test fails.
struct ShowLog<'a>(&'a Path);

impl Drop for ShowLog<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.0.join("hub.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- hub.log (last 40 lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

async fn store(dir: &Path) -> tongban::store::Store {
    tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap()
}

fn sigterm(mut child: std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM stops the hub cleanly"
    );
}

async fn in_and_out(engine: &str) {
    const N: usize = 3_000;
    let front = Front::start(engine).await;
    front.tables(true).await;
    front.fill(1, N, 300).await;
    // Row 100's seq is not a number; row 200 has no name; row 300's name
    // is too long for the target's column.
    front
        .exec(&[
            "UPDATE rows_in SET seq = 'abc' WHERE seq = '100'",
            "UPDATE rows_in SET name = NULL WHERE seq = '200'",
            "UPDATE rows_in SET name = '一二三四五六七八九十一二三四五六七八九十一二三' WHERE seq = '300'",
        ])
        .await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let _log = ShowLog(dir);
    config(dir, front.engine(), 500);
    let check = support::run(&["check", "--config", dir.to_str().unwrap()]);
    assert!(check.status.success(), "{:?}", support::text(&check));
    let hub = support::hub::run_logged(dir, &[("FRONT_DB", front.url())]);
    // Row 300's key (K0) is parked behind its dead message: its later
    // rows (600, 900, …) wait, as per-key order wants; other keys go on.
    let parked = (600..=N).step_by(300).count();
    let want = N - 3 - parked;
    support::eventually(
        Duration::from_secs(120),
        "the good rows written",
        || async { front.count("SELECT count(*) FROM rows_out").await >= want },
    )
    .await;
    // Rows that arrive later are read too, and one committed late with a
    // lower id than rows already read.
    front.fill(N + 1, N + 100, 300).await;
    front
        .exec(&["INSERT INTO rows_in (id, key, seq, name, at, active, tags) VALUES (-7, 'K7', '-7', '迟到', '2026-12-01 09:00:00', true, '[]')"
            .replace(" key,", if engine == "postgres" { " key," } else { " `key`," })
            .as_str()])
        .await;
    support::eventually(
        Duration::from_secs(60),
        "the later rows written",
        || async { front.count("SELECT count(*) FROM rows_out").await >= want + 101 },
    )
    .await;
    support::eventually(Duration::from_secs(30), "every row marked read", || async {
        front
            .count("SELECT count(*) FROM rows_in WHERE read_flag = 1")
            .await
            == N + 101
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(hub);

    assert_eq!(
        front.count("SELECT count(*) FROM rows_out").await,
        want + 101
    );
    assert_eq!(
        front
            .count("SELECT count(DISTINCT idempotency_key) FROM rows_out")
            .await,
        want + 101
    );
    let missing: Vec<String> = front
        .query("SELECT seq FROM rows_out WHERE seq IN (100, 200, 300)")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "the bad rows are not written: {missing:?}"
    );
    let late = front
        .query("SELECT name FROM rows_out WHERE seq = -7")
        .await;
    assert_eq!(
        late,
        [[Some("迟到".to_string())]],
        "the late row with a lower id"
    );
    // Values as they left: wall time in +08:00, booleans, lists, NULLs.
    let r = front
        .query(&format!(
            "SELECT {}, name, at, active, tags, note FROM rows_out WHERE seq = 5",
            front.key()
        ))
        .await;
    let r = &r[0];
    assert_eq!(r[0].as_deref(), Some("K5"));
    assert_eq!(r[1].as_deref(), Some("张三5"));
    assert!(
        r[2].as_deref().unwrap().starts_with("2026-12-01 10:00:05"),
        "{:?}",
        r[2]
    );
    assert!(matches!(r[3].as_deref(), Some("f" | "0")), "{:?}", r[3]);
    assert_eq!(r[4].as_deref(), Some("[\"a\",\"b5\"]"));
    assert_eq!(r[5].as_deref(), Some("n5"));
    let r = front
        .query("SELECT active, note FROM rows_out WHERE seq = 6")
        .await;
    assert!(matches!(r[0][0].as_deref(), Some("t" | "1")), "{:?}", r[0]);
    assert_eq!(r[0][1], None);

    let store = store(dir).await;
    let q = store.quarantine("front.rows").await.unwrap();
    let reasons: Vec<&str> = q.iter().map(|q| q.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("table rows_in, row ")
            && r.contains(": column seq (text) does not fit field seq")
            && r.contains("not an integer")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(
            |r| r.contains(": column name (text) does not fit field name") && r.contains("NULL")
        ),
        "{reasons:?}"
    );
    assert_eq!(
        store.inbox_len().await.unwrap() as usize,
        N + 101,
        "every row is kept"
    );
    let dead = store
        .messages("front.out", tongban::store::Status::Dead, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].key, "K0");
    let waiting = store
        .messages("front.out", tongban::store::Status::Pending, 100)
        .await
        .unwrap();
    assert_eq!(waiting.len(), parked, "only the dead row's key waits");
    assert!(waiting.iter().all(|m| m.key == "K0"));
    let why = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        why.to_lowercase().contains("too long") && why.contains("table rows_out"),
        "{why}"
    );
}

#[tokio::test]
async fn postgres_front_tables_in_and_out() {
    in_and_out("postgres").await;
}

#[tokio::test]
async fn mariadb_front_tables_in_and_out() {
    in_and_out("mariadb").await;
}

async fn crash(engine: &str) {
    const N: usize = 20_000;
    const KEYS: usize = 500;
    let front = Front::start(engine).await;
    front.tables(false).await;
    front.fill(1, N, KEYS).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let _log = ShowLog(dir);
    config(dir, front.engine(), 200);
    let env = [("FRONT_DB", front.url())];
    let mut rng = tongban::synth::Rng::new(tongban::store::now_ms() as u64);
    let mut written = 0;
    for round in 0..3 {
        let mut child = support::hub::run_logged(dir, &env);
        let floor = written + 500;
        support::eventually(Duration::from_secs(120), "some rows written", || async {
            front.count("SELECT count(*) FROM rows_out").await >= floor
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        written = front.count("SELECT count(*) FROM rows_out").await;
        eprintln!("round {round}: {written} rows written when killed");
    }
    assert!(
        written < N,
        "the kills came while rows were still being written"
    );
    let child = support::hub::run_logged(dir, &env);
    support::eventually(
        Duration::from_secs(240),
        "all 20,000 rows written",
        || async { front.count("SELECT count(*) FROM rows_out").await >= N },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(child);

    assert_eq!(front.count("SELECT count(*) FROM rows_out").await, N);
    assert_eq!(
        front
            .count("SELECT count(DISTINCT seq) FROM rows_out")
            .await,
        N,
        "no row written twice (under another key either)"
    );
    assert_eq!(
        front
            .count("SELECT count(*) FROM rows_in WHERE read_flag = 1")
            .await,
        N
    );
    let store = store(dir).await;
    assert_eq!(
        store.inbox_len().await.unwrap() as usize,
        N,
        "each row stored once"
    );
    let key = if engine == "postgres" { "key" } else { "`key`" };
    let rows = front
        .query(&format!("SELECT {key}, seq FROM rows_out ORDER BY wid"))
        .await;
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut keys = HashSet::new();
    for r in rows {
        let (k, seq) = (
            r[0].clone().unwrap(),
            r[1].as_deref().unwrap().parse::<i64>().unwrap(),
        );
        let prev = last.insert(k.clone(), seq);
        assert!(
            prev.is_none_or(|p| p < seq),
            "key {k}: {seq} written after {prev:?}"
        );
        keys.insert(k);
    }
    assert_eq!(keys.len(), KEYS);
}

#[tokio::test]
async fn postgres_front_tables_survive_sigkill() {
    crash("postgres").await;
}

#[tokio::test]
async fn mariadb_front_tables_survive_sigkill() {
    crash("mariadb").await;
}

/// Without a mark: a query read by a time then an id, the cursor kept in
/// the store. Rows with the same time across page boundaries are each
/// read once; a restarted hub goes on from its cursor.
async fn by_watermark(engine: &str) {
    let front = Front::start(engine).await;
    front.tables(true).await;
    front.fill(1, 1_000, 50).await;
    // 150 rows share one time: the id breaks the tie, across pages of 100.
    let zone = if engine == "postgres" { "+08" } else { "" };
    front
        .exec(&[&format!(
            "UPDATE rows_in SET at = '2026-12-01 10:08:20{zone}' WHERE id BETWEEN 450 AND 599"
        )])
        .await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let _log = ShowLog(dir);
    let query = format!(
        "SELECT id, {k}, seq, name, at, active, tags, note FROM rows_in WHERE seq <> '13'",
        k = front.key()
    );
    let source = format!("query = \"{query}\"\nwatermark = [\"at\", \"id\"]\nbatch = 100\n");
    config_with(dir, front.engine(), &source, 100);
    let env = [("FRONT_DB", front.url())];
    let hub = support::hub::run_logged(dir, &env);
    support::eventually(Duration::from_secs(60), "999 rows written", || async {
        front.count("SELECT count(*) FROM rows_out").await >= 999
    })
    .await;
    sigterm(hub);
    let log_before = std::fs::read_to_string(dir.join("hub.log")).unwrap().len();
    front.fill(1_001, 1_100, 50).await;
    let hub = support::hub::run_logged(dir, &env);
    support::eventually(Duration::from_secs(60), "1,099 rows written", || async {
        front.count("SELECT count(*) FROM rows_out").await >= 1_099
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(hub);
    assert_eq!(front.count("SELECT count(*) FROM rows_out").await, 1_099);
    assert_eq!(
        front
            .count("SELECT count(*) FROM rows_out WHERE seq = 13")
            .await,
        0
    );
    let store = store(dir).await;
    assert_eq!(
        store.inbox_len().await.unwrap(),
        1_099,
        "each row stored once"
    );
    // After the restart only the new rows were read.
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    let after = &log[log_before..];
    let stored: usize = after
        .lines()
        .filter(|l| l.contains("Front-end rows stored"))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["fields"]["already_stored"], 0, "{l}");
            v["fields"]["rows"].as_u64().unwrap() as usize
        })
        .sum();
    assert_eq!(stored, 100, "the restarted hub read from its cursor");
    let cursor = store.cursor("front.rows").await.unwrap().unwrap();
    assert!(cursor.ends_with(",\"1100\"]"), "{cursor}");
}

#[tokio::test]
async fn postgres_query_by_time_and_id() {
    by_watermark("postgres").await;
}

#[tokio::test]
async fn mariadb_query_by_time_and_id() {
    by_watermark("mariadb").await;
}

/// `tongban demo --employment-tables`: the employment department takes
/// referrals from a front-end table and answers in another; every
/// invariant holds, each referral the rules select is taken once, and
/// every decision is read back and marked.
async fn demo_over_tables(engine: &str) {
    let front = Front::start(engine).await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let url = front.url().to_string();
    let out = tokio::task::spawn_blocking(move || {
        support::tongban()
            .args([
                "demo",
                "--people",
                "300",
                "--months",
                "1",
                "--timeout",
                "180s",
            ])
            .args(["--employment-tables", &url, "--workdir"])
            .arg(&work)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = support::text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    for (name, ok) in report["invariants"].as_object().unwrap() {
        assert_eq!(ok, true, "invariant {name}: {stdout}");
    }
    let connector = std::fs::read_to_string(dir.path().join("connectors/employment.toml")).unwrap();
    assert!(connector.contains("kind = \"database\""), "{connector}");
    let mut taken = 0;
    for tag in ["main", "shandong"] {
        let referred = front
            .count(&format!("SELECT count(*) FROM employment_referral_{tag}"))
            .await;
        let decided = front
            .count(&format!(
                "SELECT count(*) FROM employment_decision_{tag} WHERE read_flag = 1"
            ))
            .await;
        assert_eq!(
            referred, decided,
            "{tag}: every referral decided and its decision read"
        );
        taken += referred;
    }
    assert!(taken > 20, "{taken} referrals over the tables");
    let names = front
        .query("SELECT name FROM employment_referral_main WHERE name IS NOT NULL LIMIT 1")
        .await;
    assert!(
        names[0][0].as_deref().is_some_and(|n| !n.is_ascii()),
        "Chinese names arrive intact: {names:?}"
    );
}

#[tokio::test]
async fn the_demo_runs_employment_over_postgres_tables() {
    demo_over_tables("postgres").await;
}

#[tokio::test]
async fn the_demo_runs_employment_over_mariadb_tables() {
    demo_over_tables("mariadb").await;
}

/// A PostgreSQL client whose connection runs on its own task.
async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}
