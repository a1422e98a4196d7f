//! The store alone, without HTTP: ingest rate, drain rate (claim → settle
//! with a no-op delivery) and claim cost with a small and a large backlog.
//!
//! `cargo bench --bench outbox` measures the embedded SQLite store;
//! with `TONGBAN_BENCH_DATABASE_URL=postgres://…` (an empty database) it
//! measures PostgreSQL too. `TONGBAN_BENCH_MESSAGES` sets the count
//! (default 200,000).

use std::time::{Duration, Instant};
use tongban::store::*;

const T: &str = "bench.target";

fn batch(from: usize, n: usize, keys: usize) -> Vec<Ingest> {
    (from..from + n)
        .map(|i| Ingest {
            source: "bench.source".into(),
            source_id: i.to_string(),
            record: br#"{"event_id":"x"}"#.to_vec(),
            messages: vec![NewMessage {
                mapping: "m".into(),
                target: T.into(),
                key: format!("K{}", i % keys),
                payload: vec![b'x'; 300],
            }],
            quarantine: vec![],
            cursor: None,
        })
        .collect()
}

async fn ingest(s: &Store, from: usize, n: usize, keys: usize) -> Duration {
    let t0 = Instant::now();
    let mut i = from;
    while i < from + n {
        let m = 1000.min(from + n - i);
        s.ingest(batch(i, m, keys)).await.unwrap();
        i += m;
    }
    t0.elapsed()
}

async fn drain(s: &Store) -> (usize, Duration) {
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        let c = s.claim(T, 512, Duration::from_secs(60)).await.unwrap();
        if c.is_empty() {
            return (n, t0.elapsed());
        }
        n += c.len();
        let settles = c
            .iter()
            .map(|m| Settle {
                id: m.id,
                target: m.target.clone(),
                key: m.key.clone(),
                lease: m.lease,
                outcome: Outcome::Delivered,
                attempt: Attempt {
                    at: now_ms(),
                    duration_ms: 1,
                    status_code: Some(200),
                    ..Default::default()
                },
            })
            .collect();
        s.settle(settles).await.unwrap();
    }
}

/// Mean time of claiming 100 heads and releasing them.
async fn claim_cost(s: &Store) -> Duration {
    let rounds = 50;
    let t0 = Instant::now();
    for _ in 0..rounds {
        let c = s.claim(T, 100, Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.len(), 100);
        s.release(
            c.iter()
                .map(|m| (m.target.clone(), m.key.clone(), m.lease))
                .collect(),
        )
        .await
        .unwrap();
    }
    t0.elapsed() / rounds
}

async fn measure(name: &str, s: Store, n: usize) {
    let keys = (n / 10).max(1000);
    let took = ingest(&s, 0, n, keys).await;
    println!(
        "{name}: ingest {n} messages in batches of 1,000: {:.0} messages/s",
        n as f64 / took.as_secs_f64()
    );
    let (done, took) = drain(&s).await;
    assert_eq!(done, n);
    println!(
        "{name}: drain (claim 512, settle, no-op delivery): {:.0} messages/s",
        done as f64 / took.as_secs_f64()
    );
    // Claim cost: 10k pending, then 10k + 1M pending (the extra backlog on
    // keys that are all behind their heads, and on many more keys).
    ingest(&s, n, 10_000, 1000).await;
    let small = claim_cost(&s).await;
    let big = 1_000_000;
    ingest(&s, n + 10_000, big, 200_000).await;
    let large = claim_cost(&s).await;
    println!(
        "{name}: claim 100 + release, mean: {:.2} ms with 10k pending, {:.2} ms with {}k pending",
        small.as_secs_f64() * 1e3,
        large.as_secs_f64() * 1e3,
        (10_000 + big) / 1000
    );
}

fn main() {
    let n: usize = std::env::var("TONGBAN_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open("sqlite://bench.db", dir.path()).await.unwrap();
        measure("sqlite", s, n).await;
        if let Ok(url) = std::env::var("TONGBAN_BENCH_DATABASE_URL") {
            let s = Store::open(&url, std::path::Path::new(".")).await.unwrap();
            measure("postgres", s, n).await;
        } else {
            println!(
                "postgres: not measured (set TONGBAN_BENCH_DATABASE_URL to an empty database)"
            );
        }
    });
}
