//! The dispatcher against a real HTTP receiver on 127.0.0.1: order per key,
//! stable idempotency keys, poison messages parking only their key, and an
//! outage (503, then 429 with Retry-After) drained within what the retry
//! schedule and the circuit breaker allow.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::receiver::{self, Receiver};
use tongban::connectors::http::HttpSink;
use tongban::dispatch::breaker::BreakerConfig;
use tongban::dispatch::retry::RetryPolicy;
use tongban::dispatch::{run_target, TargetSettings, TargetStats};
use tongban::store::*;

const T: &str = "sscard.load_certificate";

fn batch(keys: usize, per_key: usize, poison_key: Option<usize>) -> Vec<Ingest> {
    let mut out = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            let poison = poison_key == Some(k) && seq == 0;
            out.push(Ingest {
                source: "national_cert.events".into(),
                source_id: format!("K{k}-{seq}"),
                record: b"{}".to_vec(),
                messages: vec![NewMessage {
                    mapping: "card_load".into(),
                    target: T.into(),
                    key: format!("K{k}"),
                    payload: format!("{{\"key\":\"K{k}\",\"seq\":{seq},\"poison\":{poison}}}")
                        .into_bytes(),
                    idem_key: None,
                }],
                quarantine: vec![],
                cursor: None,
            });
        }
    }
    out
}

fn settings(retry: Vec<u64>, breaker: BreakerConfig) -> TargetSettings {
    let mut s = TargetSettings::new(T);
    s.concurrency = 16;
    s.idle_poll = Duration::from_millis(20);
    s.retry = RetryPolicy {
        schedule: retry.into_iter().map(Duration::from_millis).collect(),
        jitter_percent: 20,
        max_retry_after: Duration::from_secs(2),
    };
    s.breaker = breaker;
    s.lease = Duration::from_secs(30);
    s
}

struct Running {
    store: Arc<Store>,
    rx: Arc<Receiver>,
    stats: Arc<TargetStats>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

async fn start(store: Store, s: TargetSettings, refuse_poison: bool, mode: u8) -> Running {
    start_batched(store, s, refuse_poison, mode, 1).await
}

async fn start_batched(
    store: Store,
    s: TargetSettings,
    refuse_poison: bool,
    mode: u8,
    per_request: usize,
) -> Running {
    let (rx, url) = receiver::start(refuse_poison, mode).await;
    let sink = Arc::new(
        HttpSink::new(&url, "POST", Duration::from_secs(5))
            .unwrap()
            .with_batch(per_request),
    );
    let store = Arc::new(store);
    let stats = Arc::new(TargetStats::default());
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_target(store.clone(), sink, s, stats.clone(), watch));
    Running {
        store,
        rx,
        stats,
        stop,
        task,
    }
}

/// Waits for the 2,000 messages of `batch(100, 20, None)`, stops the
/// dispatcher, checks that each key's came complete and in order, and
/// returns the idempotency keys received (one per message).
async fn all_delivered_in_order(r: &Running) -> std::collections::HashSet<String> {
    support::eventually(Duration::from_secs(60), "2,000 deliveries", || async {
        r.rx.accepted.lock().unwrap().len() >= 2000
    })
    .await;
    r.stop.send(true).unwrap();
    let seqs = sequences(&r.rx);
    assert_eq!(seqs.len(), 100);
    for (k, s) in &seqs {
        assert_eq!(
            *s,
            (0..20).collect::<Vec<u64>>(),
            "key {k} out of order or incomplete"
        );
    }
    let keys: std::collections::HashSet<String> =
        r.rx.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
    assert_eq!(keys.len(), 2000, "one idempotency key per message");
    keys
}

/// Per key, the sequence numbers in the order they were accepted.
fn sequences(rx: &Receiver) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for (_, body) in rx.accepted.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        out.entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["seq"].as_u64().unwrap());
    }
    out
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Store::open("sqlite://outbox.db", dir.path()).await.unwrap(),
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_in_key_order_with_stable_idempotency_keys() {
    let (store, _dir) = sqlite().await;
    store.ingest(batch(100, 20, None)).await.unwrap();
    let r = start(
        store,
        settings(vec![100], BreakerConfig::default()),
        false,
        receiver::ACCEPT,
    )
    .await;
    let keys = all_delivered_in_order(&r).await;
    r.task.await.unwrap().unwrap();
    assert!(keys.contains(&idempotency_key(
        "national_cert.events",
        "K3-7",
        "card_load"
    )));
    assert_eq!(r.stats.delivered.load(Ordering::SeqCst), 2000);
    assert!(r
        .store
        .messages(T, status::PENDING, 1)
        .await
        .unwrap()
        .is_empty());
}

async fn poison(store: Store) {
    store.ingest(batch(20, 5, Some(7))).await.unwrap();
    let r = start(
        store,
        settings(vec![50, 50, 50], BreakerConfig::default()),
        true,
        receiver::ACCEPT,
    )
    .await;
    support::eventually(
        Duration::from_secs(60),
        "all but the poisoned key",
        || async { r.rx.accepted.lock().unwrap().len() >= 95 },
    )
    .await;
    let dead = r.store.messages(T, status::DEAD, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, "K7");
    let reason = dead[0].last_error.clone().unwrap();
    assert_eq!(
        reason,
        "refused for good: the target answered HTTP 422: unknown person 110105********0017"
    );
    // Permanent: one attempt, no retries. K7's later messages wait.
    assert_eq!(r.store.attempts(dead[0].id).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sequences(&r.rx).contains_key("K7"),
        "nothing of K7 goes past its dead message"
    );
    assert_eq!(
        r.store
            .messages(T, status::PENDING, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    // The receiver is fixed; an operator replays: K7 goes, in order.
    r.rx.refuse_poison.store(false, Ordering::SeqCst);
    r.store
        .replay(
            dead[0].id,
            None,
            "ops@county",
            "card system fixed the person's record",
        )
        .await
        .unwrap();
    support::eventually(Duration::from_secs(30), "K7 delivered", || async {
        r.rx.accepted.lock().unwrap().len() >= 100
    })
    .await;
    assert_eq!(sequences(&r.rx)["K7"], [0, 1, 2, 3, 4]);
    r.stop.send(true).unwrap();
    r.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_parks_only_its_key_until_replayed_sqlite() {
    let (store, _dir) = sqlite().await;
    poison(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_parks_only_its_key_until_replayed_postgres() {
    let url = support::pg::database().await;
    poison(Store::open(&url, std::path::Path::new(".")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_drains_within_what_the_schedule_and_breaker_allow() {
    let (store, _dir) = sqlite().await;
    store.ingest(batch(50, 2, None)).await.unwrap();
    let breaker = BreakerConfig {
        threshold: 5,
        cooldown: Duration::from_millis(200),
        max_cooldown: Duration::from_millis(400),
    };
    // Generous schedule: nothing may go dead during a 2.5 s outage.
    let r = start(
        store,
        settings(
            vec![100, 200, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400],
            breaker,
        ),
        false,
        receiver::UNAVAILABLE,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r.rx.mode.store(receiver::TOO_MANY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = r.rx.requests.load(Ordering::SeqCst);
    r.rx.mode.store(receiver::ACCEPT, Ordering::SeqCst);
    support::eventually(
        Duration::from_secs(60),
        "everything delivered after the outage",
        || async { r.rx.accepted.lock().unwrap().len() >= 100 },
    )
    .await;
    r.stop.send(true).unwrap();
    r.task.await.unwrap().unwrap();
    // Without the breaker, 50 keys retried on this schedule would send
    // well over 300 requests in 2.5 s. With it: the first round (16), then
    // about one probe per cool-down (≥ 200 ms), and 429's Retry-After (1 s).
    eprintln!("requests during the 2.5 s outage: {during}");
    assert!(
        during <= 16 + 13 + 4, // first round + one probe per 200 ms cool-down + slack
        "{during} requests during the outage"
    );
    assert!(during >= 5, "the outage was really tried ({during})");
    for (k, s) in sequences(&r.rx) {
        assert_eq!(s, [0, 1], "key {k}");
    }
    assert!(
        r.store
            .messages(T, status::DEAD, 1)
            .await
            .unwrap()
            .is_empty(),
        "nothing went dead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_with_every_request_and_a_refusal_is_permanent() {
    use tongban::connectors::http::HttpAuth;
    let (store, _dir) = sqlite().await;
    store.ingest(batch(3, 1, None)).await.unwrap();
    let (rx, url) = receiver::start(false, receiver::ACCEPT).await;
    *rx.authorization.lock().unwrap() = Some("Bearer s3cret".into());
    let sink = |token: &str| {
        Arc::new(
            HttpSink::new(&url, "POST", Duration::from_secs(5))
                .unwrap()
                .with_auth(Some(HttpAuth::Bearer(token.into()))),
        )
    };
    let store = Arc::new(store);
    let stats = Arc::new(TargetStats::default());
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_target(
        store.clone(),
        sink("guess"),
        settings(vec![50], BreakerConfig::default()),
        stats.clone(),
        watch,
    ));
    support::eventually(Duration::from_secs(20), "refusals", || async {
        stats.dead.load(Ordering::SeqCst) >= 3
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let dead = store.messages(T, status::DEAD, 10).await.unwrap();
    assert_eq!(dead.len(), 3);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("refused for good: the target answered HTTP 401: bad credentials")
    );
    for m in &dead {
        store
            .replay(m.id, None, "ops", "token rotated")
            .await
            .unwrap();
    }
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_target(
        store.clone(),
        sink("s3cret"),
        settings(vec![50], BreakerConfig::default()),
        stats.clone(),
        watch,
    ));
    support::eventually(Duration::from_secs(20), "deliveries", || async {
        rx.accepted.lock().unwrap().len() >= 3
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// A sink that takes batches: 2,000 messages go in requests of up to 50,
/// each item with its own idempotency key, keys still in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_each_items_key_and_keep_key_order() {
    let (store, _dir) = sqlite().await;
    store.ingest(batch(100, 20, None)).await.unwrap();
    let mut s = settings(vec![100], BreakerConfig::default());
    s.concurrency = 4;
    let r = start_batched(store, s, false, receiver::ACCEPT, 50).await;
    let keys = all_delivered_in_order(&r).await;
    r.task.await.unwrap().unwrap();
    assert!(keys.contains(&idempotency_key(
        "national_cert.events",
        "K42-19",
        "card_load"
    )));
    let sizes = r.rx.batches.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 2000);
    assert!(sizes.iter().all(|&n| (1..=50).contains(&n)), "{sizes:?}");
    // 100 keys, at most one message per key in flight: 50 per request.
    assert!(
        sizes.len() <= 60,
        "{} requests for 2,000 messages",
        sizes.len()
    );
    assert_eq!(r.stats.requests.load(Ordering::SeqCst), sizes.len() as u64);
    assert_eq!(r.stats.delivered.load(Ordering::SeqCst), 2000);
}
