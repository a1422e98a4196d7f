//! Front-end database tables (`kind = "database"`) measured against bare
//! batched statements of the same crate, in the same run, on PostgreSQL
//! and MariaDB servers started on 127.0.0.1 by the test support:
//!
//! - **sink**: bare multi-row `INSERT … VALUES` (500 rows a statement, 4
//!   connections) against `DatabaseSink` (stored JSON payloads → rows with
//!   their idempotency keys, 500 a transaction, 4 at once), then the
//!   whole dispatcher draining the same messages from the SQLite store;
//! - **source**: bare keyset `SELECT … WHERE id > $1 ORDER BY id LIMIT 500`
//!   pages against `DatabaseSource` reading the same rows, each row read
//!   against the schema and mapped (`read_page`), then the same stored
//!   with its cursor in the SQLite store (inbox, outbox messages), a page
//!   a transaction.
//!
//! ```text
//! cargo bench --bench front_tables                                # 1M rows each way, both engines
//! TONGBAN_BENCH_ROWS=100000 TONGBAN_BENCH_ONLY=mariadb cargo bench --bench front_tables
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tongban::dispatch::Sink;
use tongban::store::Claimed;

const SCHEMA: &str = r#"{"type":"record","name":"CardLoad","namespace":"t","fields":[{"name":"request_id","type":"string"},{"name":"social_security_no","type":"string"},{"name":"name","type":"string"},{"name":"certificate_no","type":"string"},{"name":"category","type":"int"},{"name":"level","type":"int"},{"name":"valid_until","type":"string"}]}"#;
const PER: usize = 500;
const CONNECTIONS: usize = 4;

fn row(i: usize) -> (String, String, String, String, String, i32, i32, String) {
    (
        format!("{:032x}", i * 7919),
        format!("EV-{i}"),
        "110105199003070017".into(),
        "张三".into(),
        "11010519900307001741".into(),
        4,
        1,
        "20361102".into(),
    )
}

fn messages(n: usize) -> Vec<Claimed> {
    (0..n)
        .map(|i| {
            let r = row(i);
            Claimed {
                id: i as i64 + 1,
                target: "front.out".into(),
                key: format!("11010519900307{:04}", i % 5000),
                idem_key: r.0,
                payload: format!(
                    "{{\"request_id\":\"{}\",\"social_security_no\":\"{}\",\"name\":\"{}\",\"certificate_no\":\"{}\",\"category\":{},\"level\":{},\"valid_until\":\"{}\"}}",
                    r.1, r.2, r.3, r.4, r.5, r.6, r.7
                )
                .into_bytes(),
                attempts: 0,
                lease: 1,
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Pg,
    My,
}

struct Front {
    engine: Engine,
    url: String,
}

const COLS: &str = "idempotency_key, request_id, social_security_no, name, certificate_no, category, level, valid_until";

impl Front {
    async fn exec(&self, sql: &str) {
        match self.engine {
            Engine::Pg => {
                let c = pg(&self.url).await;
                c.batch_execute(sql).await.unwrap();
            }
            Engine::My => support::mariadb::exec(&self.url, &[sql]).await,
        }
    }

    async fn table(&self, name: &str) {
        let id = match self.engine {
            Engine::Pg => "id bigserial PRIMARY KEY",
            Engine::My => "id bigint AUTO_INCREMENT PRIMARY KEY",
        };
        self.exec(&format!("DROP TABLE IF EXISTS {name}")).await;
        self.exec(&format!("CREATE TABLE {name} ({id}, idempotency_key varchar(64) NOT NULL UNIQUE, request_id varchar(40), social_security_no varchar(18), name varchar(40), certificate_no varchar(20), category int, level int, valid_until varchar(8))")).await;
    }

    async fn count(&self, name: &str) -> usize {
        match self.engine {
            Engine::Pg => {
                let c = pg(&self.url).await;
                let r = c
                    .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                    .await
                    .unwrap();
                r.get::<_, i64>(0) as usize
            }
            Engine::My => {
                let pool = mysql_async::Pool::new(self.url.as_str());
                let mut c = pool.get_conn().await.unwrap();
                let n: Option<i64> = c
                    .query_first(format!("SELECT count(*) FROM {name}"))
                    .await
                    .unwrap();
                n.unwrap_or(0) as usize
            }
        }
    }

    /// Bare batched INSERTs of rows `0..n`, 500 a statement, 4 connections.
    async fn bare_insert(&self, name: &str, n: usize) -> f64 {
        let chunks: Vec<(usize, usize)> =
            (0..n).step_by(PER).map(|s| (s, (s + PER).min(n))).collect();
        let t = Instant::now();
        match self.engine {
            Engine::Pg => {
                let placeholders = |rows: usize| {
                    (0..rows)
                        .map(|i| {
                            let b = i * 8;
                            format!(
                                "(${},${},${},${},${},${},${},${})",
                                b + 1,
                                b + 2,
                                b + 3,
                                b + 4,
                                b + 5,
                                b + 6,
                                b + 7,
                                b + 8
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let full = format!("INSERT INTO {name} ({COLS}) VALUES {}", placeholders(PER));
                let mut clients = Vec::new();
                for _ in 0..CONNECTIONS {
                    let c = pg(&self.url).await;
                    let st = c.prepare(&full).await.unwrap();
                    clients.push((c, st));
                }
                let placeholders = &placeholders;
                let clients = &clients;
                futures::stream::iter(chunks.into_iter().enumerate())
                    .for_each_concurrent(CONNECTIONS, |(k, (a, b))| async move {
                        let (c, full) = &clients[k % CONNECTIONS];
                        let rows: Vec<_> = (a..b).map(row).collect();
                        let mut ps: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
                        for r in &rows {
                            ps.extend([
                                &r.0 as &(dyn tokio_postgres::types::ToSql + Sync),
                                &r.1,
                                &r.2,
                                &r.3,
                                &r.4,
                                &r.5,
                                &r.6,
                                &r.7,
                            ]);
                        }
                        if rows.len() == PER {
                            c.execute(full, &ps).await.unwrap();
                        } else {
                            let sql = format!(
                                "INSERT INTO {name} ({COLS}) VALUES {}",
                                placeholders(rows.len())
                            );
                            c.execute(sql.as_str(), &ps).await.unwrap();
                        }
                    })
                    .await;
            }
            Engine::My => {
                let pool = mysql_async::Pool::new(self.url.as_str());
                let pool = &pool;
                futures::stream::iter(chunks)
                    .for_each_concurrent(CONNECTIONS, |(a, b)| async move {
                        let mut c = pool.get_conn().await.unwrap();
                        let mut vs: Vec<mysql_async::Value> = Vec::new();
                        for r in (a..b).map(row) {
                            vs.extend([
                                r.0.into(),
                                r.1.into(),
                                r.2.into(),
                                r.3.into(),
                                r.4.into(),
                                r.5.into(),
                                r.6.into(),
                                r.7.into(),
                            ]);
                        }
                        let one = "(?,?,?,?,?,?,?,?)";
                        let sql = format!(
                            "INSERT INTO {name} ({COLS}) VALUES {}",
                            vec![one; b - a].join(",")
                        );
                        c.exec_drop(sql, mysql_async::Params::Positional(vs))
                            .await
                            .unwrap();
                    })
                    .await;
            }
        }
        n as f64 / t.elapsed().as_secs_f64()
    }

    /// Bare keyset pages over the whole table; rows read.
    async fn bare_select(&self, name: &str) -> (usize, f64) {
        let t = Instant::now();
        let mut after = 0i64;
        let mut n = 0;
        match self.engine {
            Engine::Pg => {
                let c = pg(&self.url).await;
                let st = c
                    .prepare(&format!(
                        "SELECT id, {COLS} FROM {name} WHERE id > $1 ORDER BY id LIMIT {PER}"
                    ))
                    .await
                    .unwrap();
                loop {
                    let rows = c.query(&st, &[&after]).await.unwrap();
                    let Some(last) = rows.last() else { break };
                    after = last.get(0);
                    for r in &rows {
                        let s: &str = r.get(2);
                        std::hint::black_box(s);
                    }
                    n += rows.len();
                }
            }
            Engine::My => {
                let pool = mysql_async::Pool::new(self.url.as_str());
                let mut c = pool.get_conn().await.unwrap();
                let sql =
                    format!("SELECT id, {COLS} FROM {name} WHERE id > ? ORDER BY id LIMIT {PER}");
                loop {
                    let rows: Vec<mysql_async::Row> = c.exec(&sql, (after,)).await.unwrap();
                    let Some(last) = rows.last() else { break };
                    after = last.get(0).unwrap();
                    n += rows.len();
                    std::hint::black_box(&rows);
                }
            }
        }
        (n, n as f64 / t.elapsed().as_secs_f64())
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A configuration: the front-end database's `rows_in` read into a feed
/// that writes `rows_out`.
fn config(dir: &Path, engine: Engine) -> &'static tongban::config::Config {
    let e = if engine == Engine::Pg {
        "postgres"
    } else {
        "mysql"
    };
    write(
        dir,
        "tongban.toml",
        "[store]\nurl = \"sqlite://var/b.db\"\n",
    );
    write(dir, "schemas/CardLoad.avsc", SCHEMA);
    write(dir, "connectors/front.toml", &format!("kind = \"database\"\nengine = \"{e}\"\nurl = \"${{env:TONGBAN_BENCH_FRONT_DB}}\"\n[operations.rows]\ndirection = \"source\"\nschema = \"CardLoad\"\ntable = \"rows_in\"\nwatermark = \"id\"\nbatch = {PER}\n[operations.out]\ndirection = \"sink\"\nschema = \"CardLoad\"\ntable = \"rows_out\"\nbatch = {PER}\n"));
    let fields = [
        "request_id",
        "social_security_no",
        "name",
        "certificate_no",
        "category",
        "level",
        "valid_until",
    ]
    .map(|f| format!("{f} = \"r.{f}\"\n"))
    .concat();
    write(dir, "mappings/in_to_out.toml", &format!("from = \"front.rows\"\nto = \"front.out\"\nas = \"r\"\nkey = \"r.social_security_no\"\n[fields]\n{fields}"));
    let (cfg, diags) = tongban::config::Config::load(dir);
    let cfg = cfg.unwrap_or_else(|| panic!("{diags:?}"));
    Box::leak(Box::new(cfg))
}

fn db_settings(
    cfg: &tongban::config::Config,
) -> tongban::connectors::database::settings::DatabaseSettings {
    match tongban::connectors::settings::of(&cfg.connectors["front"].spec, &cfg.dir) {
        Ok(tongban::connectors::settings::Settings::Database(d)) => d,
        _ => panic!("a database connector"),
    }
}

async fn store(dir: &Path) -> Arc<tongban::store::Store> {
    Arc::new(
        tongban::store::Store::open("sqlite://var/b.db", dir)
            .await
            .unwrap(),
    )
}

/// `DatabaseSink`, 500 messages a delivery, 4 at once.
async fn sink(cfg: &tongban::config::Config, ms: &[Claimed]) -> f64 {
    use tongban::connectors::database::settings::DatabaseOperation;
    let d = db_settings(cfg);
    let DatabaseOperation::Write(w) = d.operations["out"].clone() else {
        panic!()
    };
    let record = cfg.schemas.get("CardLoad").unwrap().record.clone();
    let s = tongban::connectors::database::DatabaseSink::new(&d, w, record).unwrap();
    let s = &s;
    let t = Instant::now();
    futures::stream::iter(ms.chunks(PER))
        .for_each_concurrent(CONNECTIONS, |chunk| async move {
            let r = s.deliver_each(chunk).await;
            assert!(
                r.iter().all(|r| r.is_ok()),
                "{:?}",
                r.iter().find(|r| r.is_err())
            );
        })
        .await;
    ms.len() as f64 / t.elapsed().as_secs_f64()
}

/// The dispatcher draining the messages from the SQLite store into `rows_out`.
async fn dispatched(cfg: &'static tongban::config::Config, dir: &Path, ms: &[Claimed]) -> f64 {
    use tongban::store::{Ingest, NewMessage};
    let store = store(dir).await;
    for (c, chunk) in ms.chunks(1000).enumerate() {
        let batch = chunk
            .iter()
            .map(|m| Ingest {
                source: "bench.src".into(),
                source_id: format!("{c}-{}", m.id),
                record: b"{}".to_vec(),
                messages: vec![NewMessage {
                    mapping: "bench".into(),
                    target: "front.out".into(),
                    key: m.key.clone(),
                    payload: m.payload.clone(),
                    idem_key: None,
                }],
                quarantine: vec![],
                cursor: None,
            })
            .collect();
        store.ingest(batch).await.unwrap();
    }
    let t: tongban::config::OpRef = tongban::config::OpRef {
        connector: "front".into(),
        operation: "out".into(),
    };
    let plan = tongban::hub::targets::plan(cfg, &t).unwrap();
    let (sink, settings) = tongban::hub::targets::build(cfg, &t, plan, &store).unwrap();
    let stats = Arc::new(tongban::dispatch::TargetStats::default());
    let (stop, watch) = tokio::sync::watch::channel(false);
    let n = ms.len() as u64;
    let started = Instant::now();
    let task = tokio::spawn(tongban::dispatch::run_target(
        store.clone(),
        sink,
        settings,
        stats.clone(),
        watch,
    ));
    while stats.delivered.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    rate
}

/// `DatabaseSource` reading `rows_in` into the SQLite store until done.
async fn source(cfg: &'static tongban::config::Config, dir: &Path, n: usize) -> (f64, f64) {
    use tongban::connectors::database::settings::DatabaseOperation;
    let store = store(dir).await;
    let d = db_settings(cfg);
    let DatabaseOperation::Read(r) = d.operations["rows"].clone() else {
        panic!()
    };
    let src = tongban::config::OpRef {
        connector: "front".into(),
        operation: "rows".into(),
    };
    let intake = tongban::connectors::intake::Intake::new(cfg, store.clone(), &src).unwrap();
    let s = tongban::connectors::database::DatabaseSource::new(intake, &d, r).unwrap();
    // The connector alone: pages read, each row against the schema and
    // through the feed, nothing stored.
    let t = Instant::now();
    let mut cursor = None;
    let mut read = 0;
    loop {
        let page = s.read_page(cursor.as_deref()).await.unwrap();
        if page.records.is_empty() {
            break;
        }
        read += page.records.len();
        assert!(page
            .records
            .iter()
            .all(|r| r.quarantine.is_empty() && r.messages.len() == 1));
        cursor = page.cursor;
    }
    assert_eq!(read, n);
    let alone = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    while s.poll_once().await.unwrap() {}
    let rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(
        store.inbox_len().await.unwrap() as usize,
        n,
        "every row stored"
    );
    (alone, rate)
}

async fn engine(engine: Engine, n: usize) {
    let label = if engine == Engine::Pg {
        "postgres"
    } else {
        "mariadb"
    };
    let url = match engine {
        Engine::Pg => support::pg::database().await,
        Engine::My => support::mariadb::database().await,
    };
    let front = Front {
        engine,
        url: url.clone(),
    };
    // SAFETY: set before any thread of ours reads the environment.
    unsafe { std::env::set_var("TONGBAN_BENCH_FRONT_DB", &url) };
    let ms = messages(n);

    front.table("bare_out").await;
    let bi = front.bare_insert("bare_out", n).await;
    front.table("rows_out").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), engine);
    let si = sink(cfg, &ms).await;
    assert_eq!(front.count("rows_out").await, n);
    println!(
        "{label} sink:   bare INSERT {bi:>9.0} rows/s   DatabaseSink {si:>9.0} rows/s ({:.0} %)",
        100.0 * si / bi
    );
    front.table("rows_out").await;
    let di = dispatched(cfg, dir.path(), &ms).await;
    assert_eq!(front.count("rows_out").await, n);
    println!("{label} sink:   dispatcher from the SQLite store {di:>9.0} rows/s ({:.0} % of bare INSERT)", 100.0 * di / bi);

    // The source reads what the bare insert wrote.
    front.exec("DROP TABLE IF EXISTS rows_in").await;
    front
        .exec(&match engine {
            Engine::Pg => "ALTER TABLE bare_out RENAME TO rows_in".to_string(),
            Engine::My => "RENAME TABLE bare_out TO rows_in".to_string(),
        })
        .await;
    let (read, bs) = front.bare_select("rows_in").await;
    assert_eq!(read, n);
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(dir2.path(), engine);
    let (alone, ss) = source(cfg2, dir2.path(), n).await;
    println!("{label} source: bare SELECT pages {bs:>9.0} rows/s   DatabaseSource pages read and mapped {alone:>9.0} rows/s ({:.0} %)", 100.0 * alone / bs);
    println!("{label} source: DatabaseSource into the SQLite store {ss:>9.0} rows/s ({:.0} % of bare SELECT)", 100.0 * ss / bs);
}

fn main() {
    let n: usize = std::env::var("TONGBAN_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let only = std::env::var("TONGBAN_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("{n} rows each way");
        if only.is_empty() || only == "postgres" {
            engine(Engine::Pg, n).await;
        }
        if only.is_empty() || only == "mariadb" {
            engine(Engine::My, n).await;
        }
    });
}

/// A PostgreSQL client whose connection runs on its own task.
async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}
