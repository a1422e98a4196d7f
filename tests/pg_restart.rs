//! PostgreSQL restarted under a running hub: the hub reconnects and
//! finishes, nothing lost, one key's messages in order.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::hub::{config, hub, ingest};
use support::receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_survives_a_postgres_restart() {
    let (keys, per_key) = (500, 10);
    let server = support::pg::Server::start().expect("a private PostgreSQL server");
    let db = server.database().await;
    let (rx, url) = receiver::start(false, receiver::ACCEPT).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &db, &url, keys, per_key);
    ingest(dir.path(), keys * per_key);
    let mut h = hub(dir.path());
    support::eventually(Duration::from_secs(60), "deliveries under way", || async {
        rx.accepted.lock().unwrap().len() >= 500
    })
    .await;
    server.stop();
    let at_stop = rx.accepted.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().unwrap();
    support::eventually(
        Duration::from_secs(120),
        "all delivered after the restart",
        || async {
            let got: std::collections::HashSet<String> = rx
                .accepted
                .lock()
                .unwrap()
                .iter()
                .map(|(k, _)| k.clone())
                .collect();
            got.len() >= keys * per_key
        },
    )
    .await;
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(h.id() as i32, libc::SIGTERM) };
    assert!(
        h.wait().unwrap().success(),
        "the hub stops cleanly after the restart"
    );
    assert!(
        at_stop < keys * per_key,
        "the restart happened mid-run ({at_stop} delivered before it)"
    );
    let mut per: HashMap<String, Vec<u64>> = HashMap::new();
    for (_, body) in rx.accepted.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        per.entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(per.len(), keys);
    for (k, seqs) in per {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1),
            "key {k}: {seqs:?}"
        );
        assert_eq!(seqs.last(), Some(&(per_key as u64 - 1)));
    }
}
