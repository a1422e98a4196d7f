//! Replay re-mapped: a dead message is mapped again from its stored source
//! record with the mapping as it is now, and goes first in its key again;
//! the action is audited. Refused when the new mapping would change the
//! ordering key, and for a message that is not dead. On both stores.

mod support;

use std::time::Duration;
use tongban::config::Config;
use tongban::pipeline::{replay_remapped, Pipeline};
use tongban::store::*;

const T: &str = "rx.deliver";

/// Settles a claimed message as refused for good.
async fn refuse(store: &Store, m: &Claimed) {
    let dead = Settle {
        id: m.id,
        target: m.target.clone(),
        key: m.key.clone(),
        lease: m.lease,
        outcome: Outcome::Dead {
            reason: "refused".into(),
        },
        attempt: Attempt::default(),
    };
    assert_eq!(store.settle(vec![dead]).await.unwrap(), 1);
}

async fn scenario(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    support::hub::config(dir.path(), url, "http://127.0.0.1:9/deliver", 2, 1);
    let load = |d: &std::path::Path| {
        let (cfg, diags) = Config::load(d);
        cfg.unwrap_or_else(|| panic!("{diags:?}"))
    };
    let cfg = load(dir.path());
    let store = Store::open(url, dir.path()).await.unwrap();
    let p = Pipeline::new(&cfg, "src.events").unwrap();
    let input = std::fs::read_to_string(dir.path().join("input.jsonl")).unwrap();
    let batch = input
        .lines()
        .map(|l| p.record(l.as_bytes(), None))
        .collect();
    store.ingest(batch).await.unwrap();

    // K0's message is refused for good.
    let c = store.claim(T, 10, Duration::from_secs(60)).await.unwrap();
    let k0 = c.iter().find(|m| m.key == "K0").unwrap().clone();
    assert!(String::from_utf8_lossy(&k0.payload).contains(r#""id":"K0-0""#));
    refuse(&store, &k0).await;

    // The mapping is fixed: `id` now carries the key.
    support::edit(
        dir.path(),
        "mappings/ev_to_rx.toml",
        "id = \"e.id\"",
        "id = \"e.key\"",
    );
    let fixed = load(dir.path());
    replay_remapped(&fixed, &store, k0.id, "ops:li", "mapping fixed")
        .await
        .unwrap();
    let again = store.claim(T, 10, Duration::from_secs(60)).await.unwrap();
    let m = again
        .iter()
        .find(|m| m.id == k0.id)
        .expect("K0 first again");
    assert!(
        String::from_utf8_lossy(&m.payload).contains(r#""id":"K0""#),
        "{}",
        String::from_utf8_lossy(&m.payload)
    );
    assert_eq!(
        m.idem_key, k0.idem_key,
        "same message, same idempotency key"
    );
    let audit = store.audit().await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.reason.as_str()
        ),
        ("ops:li", "replay_remapped", "mapping fixed")
    );

    // Not dead any more: refused, nothing audited.
    let e = replay_remapped(&fixed, &store, k0.id, "ops:li", "again")
        .await
        .unwrap_err();
    assert!(
        matches!(e, tongban::pipeline::PipelineError::NotDead { id, status: "pending" } if id == k0.id),
        "{e}"
    );
    assert!(e.to_string().contains("not dead"), "{e}");
    assert_eq!(store.audit().await.unwrap().len(), audit.len());

    // A mapping that would move the record to another key is refused.
    refuse(&store, m).await;
    support::edit(
        dir.path(),
        "mappings/ev_to_rx.toml",
        "key = \"e.key\"",
        "key = \"e.id\"",
    );
    let rekeyed = load(dir.path());
    let e = replay_remapped(&rekeyed, &store, k0.id, "ops:li", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(e, tongban::pipeline::PipelineError::OtherKey(id) if id == k0.id),
        "{e}"
    );
    assert!(e.to_string().contains("another ordering key"), "{e}");
    assert_eq!(
        store.message(k0.id).await.unwrap().unwrap().status,
        status::DEAD
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_remapped_sqlite() {
    scenario("sqlite://outbox.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_remapped_postgres() {
    let url = support::pg::database().await;
    scenario(&url).await;
}
