//! End to end, with real processes: `tongban ingest` (decode → map →
//! inbox/outbox) and `tongban run` (claim → deliver over HTTP → settle) at
//! the same time, against a receiver on 127.0.0.1, on each store. Prints
//! messages per second from the first record read to the last delivery
//! acknowledged, and the hub's peak RSS.
//!
//! ```text
//! cargo bench --bench e2e                               # 200k messages
//! TONGBAN_BENCH_MESSAGES=1000000 cargo bench --bench e2e
//! TONGBAN_BENCH_STORES=sqlite cargo bench --bench e2e   # or postgres
//! TONGBAN_BENCH_RUNS=batched cargo bench --bench e2e    # or per_message
//! TONGBAN_BENCH_RSS_BACKLOG=5000000 cargo bench --bench e2e  # RSS with 5M pending
//! ```
//!
//! Three runs per store: batch delivery (500 messages per request, 4
//! requests in flight); one request per message over 64 keep-alive
//! connections (messages stored first, so this measures delivery alone);
//! and, when asked, the hub's RSS while 5M messages are pending. PostgreSQL
//! is a private durable server started from the installed binaries (or
//! `TONGBAN_TEST_DATABASE_URL`), as in the tests.

#[path = "../tests/support/mod.rs"]
mod support;

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counter {
    messages: AtomicU64,
    requests: AtomicU64,
}

/// Accepts everything; counts messages (items of a batch, or single bodies).
async fn receiver() -> (Arc<Counter>, String) {
    async fn handle(State(c): State<Arc<Counter>>, h: HeaderMap, body: Bytes) -> &'static str {
        let n = if h.contains_key("x-tongban-batch-size") {
            memchr::memmem::find_iter(&body, b"\"idempotency_key\"").count() as u64
        } else {
            1
        };
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.messages.fetch_add(n, Ordering::Relaxed);
        "ok"
    }
    let c = Arc::new(Counter::default());
    let app = Router::new()
        .route("/deliver", post(handle))
        .with_state(c.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/deliver", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (c, url)
}

/// A hub directory: one source, one HTTP target, `n` input records.
fn config(dir: &Path, store: &str, url: &str, n: usize, batch: u32, concurrency: u32) {
    let keys = (n / 10).max(1);
    support::hub::config(dir, store, url, keys, n / keys);
    support::edit(
        dir,
        "connectors/rx.toml",
        "concurrency = 64",
        &format!("concurrency = {concurrency}"),
    );
    let mut rx = std::fs::read_to_string(dir.join("connectors/rx.toml")).unwrap();
    rx.push_str(&format!("batch = {batch}\n"));
    std::fs::write(dir.join("connectors/rx.toml"), rx).unwrap();
}

fn ingest(dir: &Path) -> Child {
    support::tongban()
        .args([
            "ingest",
            "--config",
            dir.to_str().unwrap(),
            "--source",
            "src.events",
        ])
        .arg(dir.join("input.jsonl"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Peak resident set of a process, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn stop(mut hub: Child) {
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    let _ = hub.wait();
}

async fn wait_for(c: &Counter, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while c.messages.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Ingest and delivery together, batch delivery.
async fn batched(name: &str, store: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (c, url) = receiver().await;
    config(dir.path(), store, &url, n, 500, 4);
    // The store (and its migrations) exist before the clock starts.
    let o = support::tongban()
        .args([
            "ingest",
            "--config",
            dir.path().to_str().unwrap(),
            "--source",
            "src.events",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hub = support::hub::hub(dir.path());
    let t0 = Instant::now();
    let mut ing = ingest(dir.path());
    let ok = wait_for(&c, n as u64, Duration::from_secs(3600)).await;
    let took = t0.elapsed();
    let ingest_ok = ing.wait().unwrap().success();
    let rss = peak_rss_mb(hub.id());
    stop(hub);
    assert!(ok && ingest_ok, "{name}: not everything was delivered");
    println!(
        "{name}: end to end (ingest + map + outbox + batch delivery, 500/request): {n} messages in {:.1} s = {:.0} messages/s; {} requests; hub peak RSS {rss:.0} MB",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        c.requests.load(Ordering::Relaxed)
    );
}

/// One request per message, 64 connections: messages stored first.
async fn per_message(name: &str, store: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (c, url) = receiver().await;
    config(dir.path(), store, &url, n, 1, 64);
    assert!(ingest(dir.path()).wait().unwrap().success());
    let t0 = Instant::now();
    let hub = support::hub::hub(dir.path());
    let ok = wait_for(&c, n as u64, Duration::from_secs(3600)).await;
    let took = t0.elapsed();
    stop(hub);
    assert!(ok, "{name}: not everything was delivered");
    println!(
        "{name}: one HTTP request per message, 64 connections: {n} messages in {:.1} s = {:.0} messages/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// The hub's RSS while `backlog` messages are pending and it delivers.
async fn rss(name: &str, store: &str, backlog: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (c, url) = receiver().await;
    config(dir.path(), store, &url, backlog, 500, 4);
    let t0 = Instant::now();
    assert!(ingest(dir.path()).wait().unwrap().success());
    let filled = t0.elapsed();
    let hub = support::hub::hub(dir.path());
    let t1 = Instant::now();
    wait_for(&c, 200_000, Duration::from_secs(600)).await;
    let took = t1.elapsed();
    let rss = peak_rss_mb(hub.id());
    stop(hub);
    println!(
        "{name}: with {backlog} pending (ingested in {:.0} s): hub peak RSS {rss:.0} MB while delivering the first 200,000 ({:.0} messages/s)",
        filled.as_secs_f64(),
        200_000.0 / took.as_secs_f64()
    );
    let _ = c;
}

fn main() {
    let n: usize = std::env::var("TONGBAN_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let backlog: Option<usize> = std::env::var("TONGBAN_BENCH_RSS_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok());
    let stores = std::env::var("TONGBAN_BENCH_STORES").unwrap_or("sqlite,postgres".into());
    let runs = std::env::var("TONGBAN_BENCH_RUNS").unwrap_or("batched,per_message".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for name in stores.split(',') {
            let url = |_: &str| async {
                match name {
                    "postgres" => support::pg::database().await,
                    _ => "sqlite://outbox.db".to_string(),
                }
            };
            if runs.contains("batched") {
                batched(name, &url("").await, n).await;
            }
            if runs.contains("per_message") {
                per_message(name, &url("").await, n.min(200_000)).await;
            }
            if let Some(b) = backlog {
                rss(name, &url("").await, b).await;
            }
        }
    });
}
