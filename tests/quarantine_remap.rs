//! The quarantine after a mapping fix: a feed that fails on some records
//! (division by zero) quarantines them with the reason while the others are
//! delivered; the mapping is fixed; `tongban quarantine remap --dry-run`
//! counts, `remap` queues them (one audit row), and the hub delivers them,
//! each once. A record still failing stays with its reason.

mod support;

use std::time::Duration;
use support::ops::{cli, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_records_are_mapped_again_after_a_fix_and_delivered() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (state, rx_url) = support::ops::receiver(false).await;
    let admin_addr = format!("127.0.0.1:{}", support::free_port());
    config(dir, &admin_addr, &rx_url);
    // Records with seq 1 fail: 1 / (1 - 1).
    let mapping = dir.join("mappings/people_to_rx.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace("seq = \"p.seq\"", "seq = \"p.seq / (p.seq - 1) + p.seq\""),
    )
    .unwrap();
    let out = cli(
        dir,
        &[
            "ingest",
            "--source",
            "src.people",
            dir.join("input.jsonl").to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("3 messages") || out.contains("2 messages"),
        "{out}"
    );
    assert!(out.contains("1 quarantined"), "{out}");
    let out = cli(dir, &["quarantine", "list", "--source", "src.people"]);
    assert!(out.contains("division by zero"), "{out}");

    let mut hub = support::hub::run_logged(dir, &[]);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(30),
        "the good records delivered",
        || async { state.accepted.lock().unwrap().len() == 2 },
    )
    .await;

    // Still broken: a dry run finds it failing, and nothing changes.
    let out = cli(
        dir,
        &["quarantine", "remap", "--dry-run", "--reason", "check"],
    );
    assert!(
        out.contains("0 mapped, 0 filtered out, 1 still failing"),
        "{out}"
    );

    // The fix.
    std::fs::write(&mapping, &text).unwrap();
    let out = cli(
        dir,
        &[
            "quarantine",
            "remap",
            "--source",
            "src.people",
            "--dry-run",
            "--reason",
            "check",
        ],
    );
    assert!(out.contains("dry run: 1 mapped"), "{out}");
    assert_eq!(store.quarantined(None, None, 10).await.unwrap().len(), 1);
    let out = cli(
        dir,
        &[
            "quarantine",
            "remap",
            "--source",
            "src.people",
            "--reason",
            "feed fixed: seq copied as is",
            "--actor",
            "ops-li",
        ],
    );
    assert!(
        out.contains("1 mapped, 0 filtered out, 0 still failing"),
        "{out}"
    );
    support::eventually(
        Duration::from_secs(30),
        "the remapped record delivered",
        || async { state.accepted.lock().unwrap().len() == 3 },
    )
    .await;
    // Once: a second remap finds nothing.
    let out = cli(dir, &["quarantine", "remap", "--reason", "again"]);
    assert!(
        out.contains("0 mapped, 0 filtered out, 0 still failing"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = state.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 3);
    let keys: std::collections::HashSet<_> = accepted.iter().map(|a| a.0.clone()).collect();
    assert_eq!(keys.len(), 3, "each delivered once");
    assert!(
        accepted.iter().any(|a| a.1.contains("\"seq\":1")),
        "{accepted:?}"
    );
    let audit = store.audit().await.unwrap();
    let rows: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "quarantine_remap")
        .collect();
    assert_eq!(rows.len(), 1, "{audit:?}");
    assert_eq!(
        (rows[0].actor.as_str(), rows[0].reason.as_str()),
        ("ops-li", "feed fixed: seq copied as is")
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
}
