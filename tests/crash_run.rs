//! `tongban run` killed with SIGKILL at random moments, ten times, then
//! left to finish: every message delivered, one key's messages in order,
//! every redelivery with the same idempotency key and body. On both stores.
//! Ends with SIGTERM, which must stop the hub cleanly (exit 0).

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;
use support::receiver;

const KEYS: usize = 2_000;
const PER_KEY: usize = 10;

use support::hub::{config, hub, ingest};

async fn crash_and_recover(store_url: &str) {
    let (rx, url) = receiver::start(false, receiver::ACCEPT).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), store_url, &url, KEYS, PER_KEY);
    ingest(dir.path(), KEYS * PER_KEY);

    let mut rng = tongban::synth::Rng::new(tongban::store::now_ms() as u64);
    for _ in 0..10 {
        let mut child = hub(dir.path());
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let during = rx.accepted.lock().unwrap().len();
    let mut child = hub(dir.path());
    support::eventually(
        Duration::from_secs(240),
        "all 20,000 messages delivered",
        || async { rx.distinct() >= KEYS * PER_KEY },
    )
    .await;
    // SIGTERM: a clean stop.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must stop the hub cleanly: {status:?}"
    );

    let accepted = rx.accepted.lock().unwrap().clone();
    eprintln!(
        "{} deliveries before the last start, {} in all, for {} messages",
        during,
        accepted.len(),
        KEYS * PER_KEY
    );
    assert!(during > 0, "the hub delivered between the kills");
    let mut bodies: HashMap<String, String> = HashMap::new();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for (idem, body) in &accepted {
        let prev = bodies.entry(idem.clone()).or_insert_with(|| body.clone());
        assert_eq!(prev, body, "a redelivery carries the same key and body");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        per_key
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(bodies.len(), KEYS * PER_KEY, "every message delivered");
    for (k, seqs) in &per_key {
        // Repeats (a delivery whose record was lost in a kill) are allowed;
        // going back is not: n+1 never before n is done.
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1),
            "key {k} out of order: {seqs:?}"
        );
        assert_eq!(seqs.first(), Some(&0));
        assert_eq!(seqs.last(), Some(&(PER_KEY as u64 - 1)));
    }
    let _ = std::io::stderr().flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_sqlite() {
    crash_and_recover("sqlite://outbox.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_postgres() {
    let url = support::pg::database().await;
    crash_and_recover(&url).await;
}
