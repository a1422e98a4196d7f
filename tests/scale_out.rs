//! Three `tongban run` processes on one PostgreSQL store: every message
//! delivered, none handed to two processes at once, and the work shared.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::hub::{config, hub, ingest};
use support::receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_share_one_postgres_store() {
    let (keys, per_key) = (1_000, 10);
    let (rx, url) = receiver::start(false, receiver::ACCEPT).await;
    let db = support::pg::database().await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &db, &url, keys, per_key);
    ingest(dir.path(), keys * per_key);
    let mut hubs: Vec<_> = (0..3).map(|_| hub(dir.path())).collect();
    support::eventually(
        Duration::from_secs(180),
        "all messages delivered",
        || async { rx.accepted.lock().unwrap().len() >= keys * per_key },
    )
    .await;
    for h in &hubs {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(h.id() as i32, libc::SIGTERM) };
    }
    for h in &mut hubs {
        assert!(h.wait().unwrap().success());
    }
    let accepted = rx.accepted.lock().unwrap().clone();
    let distinct: std::collections::HashSet<_> = accepted.iter().map(|(k, _)| k).collect();
    assert_eq!(distinct.len(), keys * per_key, "every message delivered");
    assert_eq!(accepted.len(), keys * per_key, "none delivered twice");
    assert_eq!(
        rx.overlaps.load(Ordering::SeqCst),
        0,
        "no message in flight twice at once"
    );
    let agents = rx.agents.lock().unwrap().clone();
    eprintln!("deliveries per hub process: {agents:?}");
    assert_eq!(agents.len(), 3, "all three processes delivered: {agents:?}");
    for (agent, n) in &agents {
        assert!(*n as usize >= keys * per_key / 10, "{agent} did only {n}");
    }
}
