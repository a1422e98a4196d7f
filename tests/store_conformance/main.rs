//! One conformance suite, run against both stores: embedded SQLite and
//! PostgreSQL (a real server: see tests/support/pg.rs). Every guarantee the
//! dispatcher relies on is asserted here on the store itself.
//!
//! The tests are in one file per concern of the store, as the store is
//! (`src/store/{outbox,ops,payouts}`).

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;
use tongban::store::*;

/// Runs each listed test on SQLite and on PostgreSQL.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use tongban::store::Store;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = Store::open("sqlite://outbox.db", dir.path()).await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            use tongban::store::Store;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let url = crate::support::pg::database().await;
                    let store = Store::open(&url, std::path::Path::new(".")).await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
    };
}

// After the macro: each concern's file invokes it.
mod deadlines;
mod evidence;
mod ops;
mod outbox;
mod payouts;
mod schema;

const T: &str = "sscard.load_certificate";

const LEASE: Duration = Duration::from_secs(60);

fn record(source_id: &str, msgs: &[(&str, &str)]) -> Ingest {
    Ingest {
        source: "national_cert.events".into(),
        source_id: source_id.into(),
        record: format!("{{\"event_id\":\"{source_id}\"}}").into_bytes(),
        messages: msgs
            .iter()
            .map(|(target, key)| NewMessage {
                mapping: format!("to_{target}"),
                target: target.to_string(),
                key: key.to_string(),
                payload: format!("{source_id}->{target}").into_bytes(),
                idem_key: None,
            })
            .collect(),
        quarantine: vec![],
        cursor: None,
    }
}

fn settle(c: &Claimed, outcome: Outcome) -> Settle {
    Settle {
        id: c.id,
        target: c.target.clone(),
        key: c.key.clone(),
        lease: c.lease,
        outcome,
        attempt: Attempt {
            at: now_ms(),
            duration_ms: 3,
            status_code: Some(200),
            ..Default::default()
        },
    }
}

fn payloads(cs: &[Claimed]) -> Vec<String> {
    cs.iter()
        .map(|c| String::from_utf8(c.payload.clone()).unwrap())
        .collect()
}

async fn deliver_all(s: &Store, cs: &[Claimed]) {
    let n = s
        .settle(cs.iter().map(|c| settle(c, Outcome::Delivered)).collect())
        .await
        .unwrap();
    assert_eq!(n, cs.len());
}

/// A hub and a command (`tongban ingest`) may open a new SQLite store at
/// the same moment: every opener must succeed, and the schema be set up once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_new_sqlite_store_all_succeed() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let (url, base) = (url.clone(), dir.path().to_path_buf());
                tokio::spawn(async move { Store::open(&url, &base).await.map(|_| ()) })
            })
            .collect();
        for o in opens {
            o.await.unwrap().expect("every concurrent open succeeds");
        }
    }
}

/// PostgreSQL's delivery path keeps to index probes and nested loops while
/// its tables have no statistics yet (a new database, and autovacuum
/// analyses at most once a minute) and its heads have been rewritten many
/// times: no sequential or bitmap scan, no hash or merge join, and the next
/// message of a key found through `messages_pending_by_key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivery_plans_are_index_probes_without_statistics() {
    let url = support::pg::database().await;
    let s = Store::open(&url, std::path::Path::new(".")).await.unwrap();
    // 20,000 messages over 2,000 keys of one target, and half of the keys
    // claimed and delivered once: dead versions in heads and messages.
    for b in 0..20 {
        let batch = (0..1000)
            .map(|i| {
                let n = b * 1000 + i;
                record(&format!("e{n}"), &[(T, &format!("k{}", n % 2000))])
            })
            .collect();
        s.ingest(batch).await.unwrap();
    }
    for _ in 0..2 {
        let cs = s.claim(T, 500, LEASE).await.unwrap();
        assert_eq!(cs.len(), 500);
        deliver_all(&s, &cs).await;
    }
    let plans = s.delivery_plans(T, "k7").await.unwrap();
    assert_eq!(plans.len(), 5);
    for (name, plan) in &plans {
        for bad in ["Seq Scan", "Bitmap", "Hash Join", "Merge Join"] {
            assert!(!plan.contains(bad), "{name} plans a {bad}:\n{plan}");
        }
    }
    let advance = &plans.iter().find(|(n, _)| *n == "advance").unwrap().1;
    assert!(
        advance.contains("messages_pending_by_key"),
        "advance finds the next message elsewhere:\n{advance}"
    );
}
