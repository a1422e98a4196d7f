//! The store alone, without HTTP: ingest rate, drain rate (claim → settle
//! with a no-op delivery) and claim cost: the drain rate with a small and
//! with a large backlog (`TONGBAN_BENCH_BACKLOG`, default 1,000,000).
//!
//! `cargo bench --bench outbox` measures the embedded SQLite store;
//! with `TONGBAN_BENCH_DATABASE_URL=postgres://…` (an empty database) it
//! measures PostgreSQL too. `TONGBAN_BENCH_MESSAGES` sets the count
//! (default 200,000); `TONGBAN_BENCH_SKIP_SQLITE=1` measures PostgreSQL alone.

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
                idem_key: None,
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

/// Each claimed message settled as delivered (a no-op delivery).
fn delivered(c: &[Claimed]) -> Vec<Settle> {
    c.iter()
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
        .collect()
}

async fn drain(s: &Store) -> (usize, Duration) {
    drain_some(s, usize::MAX).await
}

/// Claims and settles (no-op delivery) until `max` are done or none is due.
async fn drain_some(s: &Store, max: usize) -> (usize, Duration) {
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        let c = s
            .claim(T, 512.min(max - n), Duration::from_secs(60))
            .await
            .unwrap();
        if c.is_empty() {
            return (n, t0.elapsed());
        }
        n += c.len();
        let last = n >= max;
        let settles = delivered(&c);
        s.settle(settles).await.unwrap();
        if last {
            return (n, t0.elapsed());
        }
    }
}

async fn measure(name: &str, s: Store, n: usize, backlog: usize) {
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
    // Claim cost: the drain rate of 20k messages with 20k pending, then
    // with `backlog` more pending (on 100k keys).
    if backlog == 0 {
        return;
    }
    let probe = 20_000;
    ingest(&s, n, probe, 2_000).await;
    let (d, took) = drain_some(&s, probe).await;
    let small = d as f64 / took.as_secs_f64();
    let t0 = Instant::now();
    ingest(&s, n + probe, backlog, 100_000).await;
    let filled = t0.elapsed();
    let (d, took) = drain_some(&s, probe).await;
    let large = d as f64 / took.as_secs_f64();
    println!(
        "{name}: drain of {probe}: {small:.0} messages/s with {probe} pending, {large:.0} messages/s with {} pending ({:+.0}%; the backlog took {:.0} s to ingest)",
        backlog + probe,
        (large / small - 1.0) * 100.0,
        filled.as_secs_f64()
    );
}

/// Ingest 500 (distinct keys) → claim 500 → settle 500, for `secs`: the
/// cycle benches/pgbench/cycle.sql runs with the same statements.
async fn cycle(s: &Store, secs: u64) -> f64 {
    let t0 = Instant::now();
    let mut n = 0usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k0 = (seed >> 33) % 99_500;
        let batch: Vec<Ingest> = (1..=500u64)
            .map(|g| Ingest {
                source: "cycle.source".into(),
                source_id: format!("{seed}-{g}"),
                record: br#"{"event_id":"x"}"#.to_vec(),
                messages: vec![NewMessage {
                    mapping: "m".into(),
                    target: "cycle.target".into(),
                    key: format!("P{}", k0 + g),
                    payload: vec![b'x'; 300],
                    idem_key: None,
                }],
                quarantine: vec![],
                cursor: None,
            })
            .collect();
        s.ingest(batch).await.unwrap();
        let c = s
            .claim("cycle.target", 500, Duration::from_secs(60))
            .await
            .unwrap();
        n += c.len();
        let settles = delivered(&c);
        s.settle(settles).await.unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// pgbench running benches/pgbench/cycle.sql on the same database; its
/// messages/s (transactions/s × 500), or why it could not run.
fn pgbench(url: &str, secs: u64) -> Result<f64, String> {
    let bin = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin")),
        )
        .map(|d| d.join("pgbench"))
        .find(|p| p.is_file())
        .ok_or("pgbench not found")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pgbench/cycle.sql");
    let o = std::process::Command::new(bin)
        .args(["-n", "-c", "1", "-T", &secs.to_string(), "-f", script, url])
        .output()
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&o.stdout);
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("pgbench: {out}{}", String::from_utf8_lossy(&o.stderr)))?;
    Ok(tps * 500.0)
}

fn main() {
    let n: usize = std::env::var("TONGBAN_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let backlog: usize = std::env::var("TONGBAN_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var("TONGBAN_BENCH_SKIP_SQLITE").is_err() {
            let s = Store::open("sqlite://bench.db", dir.path()).await.unwrap();
            measure("sqlite", s, n, backlog).await;
        }
        if let Ok(url) = std::env::var("TONGBAN_BENCH_DATABASE_URL") {
            let s = Store::open(&url, std::path::Path::new(".")).await.unwrap();
            measure("postgres", s, n, backlog).await;
            // Distance to the server's limit: the same cycle, tongban then pgbench.
            let s = Store::open(&url, std::path::Path::new(".")).await.unwrap();
            let ours = cycle(&s, 20).await;
            match pgbench(&url, 20) {
                Ok(theirs) => println!(
                    "postgres: cycle of 500 (ingest, claim, settle), one client: tongban {ours:.0} messages/s, pgbench with the same statements {theirs:.0} messages/s ({:.0}%)",
                    ours / theirs * 100.0
                ),
                Err(e) => println!("postgres: cycle: tongban {ours:.0} messages/s; pgbench did not run: {e}"),
            }
        } else {
            println!(
                "postgres: not measured (set TONGBAN_BENCH_DATABASE_URL to an empty database)"
            );
        }
    });
}
