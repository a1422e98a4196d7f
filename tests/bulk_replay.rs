//! Bulk replay through the operations API: 10,000 keys whose first message
//! the receiver refused for good (dead) and whose second waits behind it.
//! When the receiver is fixed, an operator starts one bulk replay of the
//! dead letters; the running hub replays them in chunks, the task shows its
//! progress, every message is delivered once, each key in order, and the
//! audit holds one row for the task.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

const KEYS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_dead_letters_replayed_by_one_task_in_key_order() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (state, base) = support::ops::receiver(true).await;
    let url = format!("{base}/deliver");
    support::hub::config(dir, "sqlite://var/tongban.db", &url, KEYS, 2);
    let admin_addr = format!("127.0.0.1:{}", support::free_port());
    let toml = std::fs::read_to_string(dir.join("tongban.toml")).unwrap();
    std::fs::write(
        dir.join("tongban.toml"),
        format!("{toml}[admin]\nlisten = \"{admin_addr}\"\n"),
    )
    .unwrap();
    let o = support::run(&[
        "token",
        "create",
        "--role",
        "operator",
        "--name",
        "otto",
        "--config",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", support::text(&o));
    let token = support::text(&o).0.trim().to_string();
    support::hub::ingest(dir, 2 * KEYS);

    let mut hub = support::hub::run_logged(dir, &[]);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::eventually(Duration::from_secs(120), "10,000 dead letters", || async {
        let c = store.counts().await.unwrap();
        c.messages("rx.deliver", tongban::store::status::DEAD) == KEYS as i64
    })
    .await;
    assert!(state.accepted.lock().unwrap().is_empty());

    // Fixed; one bulk replay of the target's dead letters.
    state.refuse.store(false, Ordering::SeqCst);
    support::listening(&admin_addr, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{admin_addr}/api/tasks"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "filter": {"target": "rx.deliver", "error_class": "http_422"},
            "cap": 20000,
            "reason": "the receiver accepts them again",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let task: serde_json::Value = r.json().await.unwrap();
    assert_eq!(task["total"], KEYS as i64);
    let id = task["id"].as_i64().unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let t: serde_json::Value = http
            .get(format!("http://{admin_addr}/api/tasks/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.push(t["done"].as_i64().unwrap());
        if t["status"] == "done" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task never finished: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.last().unwrap(), KEYS as i64);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows");

    support::eventually(Duration::from_secs(120), "everything delivered", || async {
        state.accepted.lock().unwrap().len() >= 2 * KEYS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());

    let accepted = state.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 2 * KEYS, "each delivered once");
    let mut idem = std::collections::HashSet::new();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for (k, body) in &accepted {
        assert!(idem.insert(k.clone()), "delivered twice: {k}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let seq = v["seq"].as_i64().unwrap();
        let prev = last_seq.insert(key.clone(), seq);
        assert_eq!(prev.map_or(-1, |p| p) + 1, seq, "key {key} in order");
    }
    let audit = store.audit().await.unwrap();
    let bulk: Vec<_> = audit.iter().filter(|a| a.action == "bulk_replay").collect();
    assert_eq!(bulk.len(), 1, "one audit row for the task");
    assert_eq!(bulk[0].actor, "otto");
    assert!(
        !audit.iter().any(|a| a.action == "replay"),
        "no row per message"
    );
}
