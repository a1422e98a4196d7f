//! Finding dead letters with a filter over a large outbox on PostgreSQL, as
//! the operations API and console do (`Store::find_messages`, first page of
//! 100): 5,000,000 messages over 8 targets, 1 % of them dead with an
//! attempt each. Prints p50/p95/max per filter and the query plan of each.
//!
//! `cargo bench --bench ops_list` starts a private PostgreSQL from the
//! installed binaries (as the tests do), or uses
//! `TONGBAN_BENCH_DATABASE_URL` (a server; a fresh database is made on it).
//! `TONGBAN_BENCH_MESSAGES` changes the size.

#[path = "../tests/support/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::time::Instant;
use tongban::store::{status, MessageFilter, Store};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    if let Ok(url) = std::env::var("TONGBAN_BENCH_DATABASE_URL") {
        // SAFETY: set before any thread of ours reads the environment.
        unsafe { std::env::set_var("TONGBAN_TEST_DATABASE_URL", url) };
    }
    let n: i64 = std::env::var("TONGBAN_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let url = pg::database().await;
    let store = Store::open(&url, std::path::Path::new(".")).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);

    let t0 = Instant::now();
    client
        .batch_execute(
            "INSERT INTO inbox (source, source_id, record, received_at) VALUES ('bench.src', '1', '\\x7b7d', 0)",
        )
        .await
        .unwrap();
    // Insert in slices of 500k so one statement never holds everything.
    let slice = 500_000;
    let mut from = 1;
    while from <= n {
        let to = (from + slice - 1).min(n);
        client
            .execute(
                "INSERT INTO messages (inbox_id, mapping, target, key, idem_key, payload, status, attempts, created_at, updated_at, last_error)
                 SELECT (SELECT min(id) FROM inbox), 'bench', 'system' || ((g / 100) % 8) || '.deliver', 'K' || (g % 400000), 'idem-' || g,
                        '\\x7b7d'::bytea, CASE WHEN g % 100 = 0 THEN 2 ELSE 1 END, 1,
                        1700000000000 + g, 1700000000000 + g,
                        CASE WHEN g % 100 = 0 THEN
                          CASE WHEN g % 300 = 0 THEN 'gave up after 7 attempts; the last: timeout after 30s'
                               ELSE 'refused for good: the target answered HTTP 422: unknown person' END
                        END
                 FROM generate_series($1::bigint, $2::bigint) g",
                &[&from, &to],
            )
            .await
            .unwrap();
        from = to + 1;
    }
    client
        .batch_execute(
            "INSERT INTO attempts (message_id, at, duration_ms, outcome, status_code, error_class, excerpt)
             SELECT id, updated_at, 12, 2, CASE WHEN last_error LIKE '%422%' THEN 422 END,
                    CASE WHEN last_error LIKE '%422%' THEN 'http_422' ELSE 'timeout' END, last_error
             FROM messages WHERE status = 2",
        )
        .await
        .unwrap();
    // As autovacuum leaves a table in steady state (visibility map set).
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
    println!(
        "{n} messages ({} dead) loaded in {:.1} s",
        n / 100,
        t0.elapsed().as_secs_f64()
    );

    let dead = |f: MessageFilter| MessageFilter {
        status: Some(status::DEAD),
        ..f
    };
    type Case<'a> = (&'static str, Box<dyn Fn(i64) -> MessageFilter + 'a>);
    let cases: Vec<Case> = vec![
        (
            "dead, one target",
            Box::new(move |i| {
                dead(MessageFilter {
                    target: Some(format!("system{}.deliver", i % 8)),
                    ..Default::default()
                })
            }),
        ),
        (
            "dead, one target, a later page",
            Box::new(move |i| {
                dead(MessageFilter {
                    target: Some(format!("system{}.deliver", i % 8)),
                    after: Some((i * 7919) % n),
                    ..Default::default()
                })
            }),
        ),
        (
            "dead, text in the reason",
            Box::new(|_| {
                dead(MessageFilter {
                    text: Some("HTTP 422".into()),
                    ..Default::default()
                })
            }),
        ),
        (
            "dead, error class",
            Box::new(|_| {
                dead(MessageFilter {
                    error_class: Some("timeout".into()),
                    ..Default::default()
                })
            }),
        ),
        (
            "dead, one target, last hour of updates",
            Box::new(move |i| {
                dead(MessageFilter {
                    target: Some(format!("system{}.deliver", i % 8)),
                    since: Some(1700000000000 + n - 3_600_000),
                    ..Default::default()
                })
            }),
        ),
        (
            "dead, one key",
            Box::new(|i| {
                dead(MessageFilter {
                    key: Some(format!("K{}", (i * 3100) % 400_000)),
                    ..Default::default()
                })
            }),
        ),
    ];
    println!("first page of 100, 200 queries each:");
    for (name, make) in &cases {
        let mut times = Vec::with_capacity(200);
        let mut rows = 0;
        for i in 0..200 {
            let f = make(i);
            let t = Instant::now();
            rows += store.find_messages(&f, 100).await.unwrap().len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {name:<40} p50 {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms  ({} rows a page on average)",
            times[100],
            times[189],
            times[199],
            rows / 200
        );
    }
    println!("query plans (the ids step, with the values bound as the store binds them):");
    for (name, make) in &cases {
        let (clause, params) = make(1).sql(|i| format!("${i}"));
        let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = params
            .into_iter()
            .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                match p {
                    tongban::store::Param::Text(t) => Box::new(t),
                    tongban::store::Param::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let sql = format!(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT m.id FROM messages m{clause} ORDER BY m.id LIMIT 101"
        );
        println!("-- {name}");
        for r in client.query(sql.as_str(), &refs).await.unwrap() {
            let line: String = r.get(0);
            println!("   {line}");
        }
    }
}
