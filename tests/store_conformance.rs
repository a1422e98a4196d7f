//! One conformance suite, run against both stores: embedded SQLite and
//! PostgreSQL (a real server: see tests/support/pg.rs). Every guarantee the
//! dispatcher relies on is asserted here on the store itself.

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

conformance!(
    reingesting_a_record_creates_nothing_new,
    messages_cursor_and_quarantine_commit_together,
    one_key_is_delivered_in_order_and_keys_are_independent,
    a_dead_message_parks_only_its_key_until_skipped,
    a_replay_puts_the_dead_message_first_again,
    an_expired_lease_is_claimed_again_and_the_stale_worker_cannot_settle,
    retries_wait_for_their_time_and_attempts_are_kept,
    paused_targets_hand_out_nothing,
    operator_actions_refuse_wrong_states,
    concurrent_claimers_never_share_a_message,
    ingesting_while_delivering_keeps_key_order_and_loses_nothing,
    payments_are_batched_once_per_bank_and_totals_add_up,
    a_batch_is_read_in_file_order_a_page_at_a_time,
    concurrent_batch_builders_never_put_a_payment_in_two_batches,
    only_rejected_payments_are_reissued_into_a_later_batch,
    failed_messages_are_found_by_filter_in_pages,
    targets_show_backlog_dead_letters_and_pauses,
    tokens_are_found_by_hash_until_revoked,
    bulk_replays_go_in_chunks_and_obey_cap_pause_and_cancel,
    quarantined_records_are_resolved_once_into_messages,
);

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

async fn reingesting_a_record_creates_nothing_new(s: Store) {
    let r = record("EV-1", &[(T, "A"), ("subsidies.apply_eligibility", "A")]);
    let first = s.ingest(vec![r.clone()]).await.unwrap();
    assert_eq!(
        first,
        IngestOutcome {
            stored: 1,
            duplicates: 0,
            messages: 2,
            quarantined: 0
        }
    );
    let again = s.ingest(vec![r.clone(), r]).await.unwrap();
    assert_eq!(
        again,
        IngestOutcome {
            stored: 0,
            duplicates: 2,
            messages: 0,
            quarantined: 0
        }
    );
    assert_eq!(s.inbox_len().await.unwrap(), 1);
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].idem_key,
        idempotency_key("national_cert.events", "EV-1", &format!("to_{T}"))
    );
    // Once its key is delivered, the record comes again with a new one of
    // the same key: the old one makes nothing (and leaves no head behind to
    // block the key); the new one is the next delivery of the key.
    deliver_all(&s, &c).await;
    let r = record("EV-1", &[(T, "A")]);
    let next = record("EV-2", &[(T, "A")]);
    let out = s.ingest(vec![r]).await.unwrap();
    assert_eq!((out.duplicates, out.messages), (1, 0));
    assert_eq!(s.pending(T).await.unwrap(), 0);
    s.ingest(vec![next]).await.unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(payloads(&c), [format!("EV-2->{T}")]);
}

async fn messages_cursor_and_quarantine_commit_together(s: Store) {
    let mut r = record("EV-1", &[(T, "A")]);
    r.cursor = Some("cursor-after-EV-1".into());
    r.quarantine = vec![Quarantined {
        mapping: "to_pension".into(),
        part: "level".into(),
        reason: "level 5 is not 1–4".into(),
    }];
    let out = s.ingest(vec![r]).await.unwrap();
    assert_eq!(out.quarantined, 1);
    assert_eq!(
        s.cursor("national_cert.events").await.unwrap().as_deref(),
        Some("cursor-after-EV-1")
    );
    assert_eq!(
        s.quarantine("national_cert.events").await.unwrap(),
        vec![(
            "to_pension".to_string(),
            "level".to_string(),
            "level 5 is not 1–4".to_string()
        )]
    );
    // A duplicate still advances the cursor (the source moved on).
    let mut dup = record("EV-1", &[(T, "A")]);
    dup.cursor = Some("cursor-2".into());
    s.ingest(vec![dup]).await.unwrap();
    assert_eq!(
        s.cursor("national_cert.events").await.unwrap().as_deref(),
        Some("cursor-2")
    );
}

async fn one_key_is_delivered_in_order_and_keys_are_independent(s: Store) {
    s.ingest(vec![
        record("1", &[(T, "A")]),
        record("2", &[(T, "A")]),
        record("3", &[(T, "B")]),
    ])
    .await
    .unwrap();
    s.ingest(vec![record("4", &[(T, "A")])]).await.unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(
        payloads(&c),
        [format!("1->{T}"), format!("3->{T}")],
        "one message per key: each key's oldest"
    );
    assert!(
        s.claim(T, 10, LEASE).await.unwrap().is_empty(),
        "leased heads are not handed out twice"
    );
    deliver_all(&s, &c).await;
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(payloads(&c), [format!("2->{T}")]);
    deliver_all(&s, &c).await;
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(payloads(&c), [format!("4->{T}")]);
    deliver_all(&s, &c).await;
    assert!(s.claim(T, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(s.messages(T, status::DELIVERED, 10).await.unwrap().len(), 4);
}

async fn a_dead_message_parks_only_its_key_until_skipped(s: Store) {
    s.ingest(vec![
        record("1", &[(T, "A")]),
        record("2", &[(T, "A")]),
        record("3", &[(T, "B")]),
        record("4", &[(T, "B")]),
    ])
    .await
    .unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    let (a, b) = (&c[0], &c[1]);
    s.settle(vec![
        settle(
            a,
            Outcome::Dead {
                reason: "the card system refused the record: unknown person (HTTP 422)".into(),
            },
        ),
        settle(b, Outcome::Delivered),
    ])
    .await
    .unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(
        payloads(&c),
        [format!("4->{T}")],
        "key A waits behind its dead message; B flows"
    );
    deliver_all(&s, &c).await;
    assert!(s.claim(T, 10, LEASE).await.unwrap().is_empty());
    let dead = s.message(a.id).await.unwrap().unwrap();
    assert_eq!(dead.status, status::DEAD);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("the card system refused the record: unknown person (HTTP 422)")
    );
    s.skip(a.id, "ops@county", "person moved away; handled by phone")
        .await
        .unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(
        payloads(&c),
        [format!("2->{T}")],
        "after the skip, A's next message goes"
    );
    assert_eq!(
        s.message(a.id).await.unwrap().unwrap().status,
        status::SKIPPED
    );
    let audit = s.audit().await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("ops@county", "skip")
    );
    assert_eq!(audit[0].subject, format!("message {}", a.id));
    assert_eq!(audit[0].reason, "person moved away; handled by phone");
}

async fn a_replay_puts_the_dead_message_first_again(s: Store) {
    s.ingest(vec![record("1", &[(T, "A")]), record("2", &[(T, "A")])])
        .await
        .unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    let first = c[0].clone();
    s.settle(vec![settle(
        &first,
        Outcome::Dead {
            reason: "HTTP 422".into(),
        },
    )])
    .await
    .unwrap();
    assert!(s.claim(T, 10, LEASE).await.unwrap().is_empty());
    s.replay(
        first.id,
        Some(b"fixed".to_vec()),
        "ops@county",
        "re-mapped after the mapping fix",
    )
    .await
    .unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].id, c[0].payload.as_slice()),
        (first.id, &b"fixed"[..])
    );
    assert_eq!(
        c[0].idem_key, first.idem_key,
        "a replay keeps the idempotency key"
    );
    assert_eq!(c[0].attempts, 1);
    deliver_all(&s, &c).await;
    assert_eq!(
        payloads(&s.claim(T, 10, LEASE).await.unwrap()),
        [format!("2->{T}")]
    );
    assert_eq!(s.audit().await.unwrap()[0].action, "replay_remapped");
}

async fn an_expired_lease_is_claimed_again_and_the_stale_worker_cannot_settle(s: Store) {
    s.ingest(vec![record("1", &[(T, "A")]), record("2", &[(T, "A")])])
        .await
        .unwrap();
    let short = Duration::from_millis(300);
    let first = s.claim(T, 10, short).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(s.claim(T, 10, short).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "the lease ran out: the message is handed out again"
    );
    assert_eq!(
        (again[0].id, &again[0].idem_key),
        (first[0].id, &first[0].idem_key)
    );
    assert_ne!(again[0].lease, first[0].lease);
    // The first worker comes back late: its settle is refused, the attempt kept.
    assert_eq!(
        s.settle(vec![settle(&first[0], Outcome::Delivered)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.message(first[0].id).await.unwrap().unwrap().status,
        status::PENDING
    );
    let before = s.pending(T).await.unwrap();
    assert!(before > 0);
    assert_eq!(
        s.settle(vec![settle(&again[0], Outcome::Delivered)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.pending(T).await.unwrap(), before - 1);
    assert_eq!(s.pending("no.such_target").await.unwrap(), 0);
    assert_eq!(s.attempts(first[0].id).await.unwrap().len(), 2);
    // Released claims are due at once.
    let c = s.claim(T, 10, LEASE).await.unwrap();
    s.release(
        c.iter()
            .map(|c| (c.target.clone(), c.key.clone(), c.lease))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(s.claim(T, 10, LEASE).await.unwrap().len(), 1);
}

async fn retries_wait_for_their_time_and_attempts_are_kept(s: Store) {
    s.ingest(vec![record("1", &[(T, "A")])]).await.unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    let mut st = settle(&c[0], Outcome::Retry { at: now_ms() + 400 });
    st.attempt = Attempt {
        at: now_ms(),
        duration_ms: 5000,
        status_code: Some(503),
        error_class: Some("http_503".into()),
        excerpt: Some("Service Unavailable".into()),
    };
    s.settle(vec![st]).await.unwrap();
    assert!(
        s.claim(T, 10, LEASE).await.unwrap().is_empty(),
        "not before its retry time"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].attempts, 1);
    deliver_all(&s, &c).await;
    let a = s.attempts(c[0].id).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(
        (
            a[0].status_code,
            a[0].error_class.as_deref(),
            a[0].duration_ms
        ),
        (Some(503), Some("http_503"), 5000)
    );
    let m = s.message(c[0].id).await.unwrap().unwrap();
    assert_eq!(
        (m.status, m.attempts, m.last_error),
        (status::DELIVERED, 2, None)
    );
}

async fn paused_targets_hand_out_nothing(s: Store) {
    s.ingest(vec![record("1", &[(T, "A"), ("pension.enrol", "A")])])
        .await
        .unwrap();
    s.set_paused(T, true, "ops@province", "card system maintenance window")
        .await
        .unwrap();
    assert!(s.is_paused(T).await.unwrap());
    assert!(s.claim(T, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        s.claim("pension.enrol", 10, LEASE).await.unwrap().len(),
        1,
        "other targets flow"
    );
    s.set_paused(T, false, "ops@province", "maintenance over")
        .await
        .unwrap();
    assert_eq!(s.claim(T, 10, LEASE).await.unwrap().len(), 1);
    let actions: Vec<String> = s
        .audit()
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.action, a.subject))
        .collect();
    assert_eq!(
        actions,
        [format!("pause target {T}"), format!("resume target {T}")]
    );
}

async fn operator_actions_refuse_wrong_states(s: Store) {
    s.ingest(vec![record("1", &[(T, "A")])]).await.unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    let e = s
        .replay(c[0].id, None, "ops", "why not")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "message {} is pending: only dead messages are replayed",
            c[0].id
        )
    );
    deliver_all(&s, &c).await;
    let e = s.skip(c[0].id, "ops", "x").await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "message {} is delivered: only dead messages are skipped",
            c[0].id
        )
    );
    assert!(s
        .replay(999_999, None, "ops", "x")
        .await
        .unwrap_err()
        .to_string()
        .contains("there is no message 999999"));
    assert!(
        s.audit().await.unwrap().is_empty(),
        "refused actions write no audit row"
    );
}

async fn concurrent_claimers_never_share_a_message(s: Store) {
    let keys = 200;
    let batch: Vec<Ingest> = (0..keys * 3)
        .map(|i| record(&i.to_string(), &[(T, &format!("K{}", i % keys))]))
        .collect();
    s.ingest(batch).await.unwrap();
    let s = std::sync::Arc::new(s);
    let in_flight = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, in_flight) = (s.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let mut delivered = Vec::new();
            loop {
                let c = s.claim(T, 16, LEASE).await.unwrap();
                if c.is_empty() {
                    // Others may still hold leases on the last heads.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if s.claim(T, 1, LEASE)
                        .await
                        .map(|c| c.is_empty())
                        .unwrap_or(true)
                        && s.messages(T, status::PENDING, 1).await.unwrap().is_empty()
                    {
                        return delivered;
                    }
                    continue;
                }
                for m in &c {
                    assert!(
                        in_flight.lock().unwrap().insert(m.key.clone()),
                        "key {} claimed twice at once",
                        m.key
                    );
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                for m in &c {
                    in_flight.lock().unwrap().remove(&m.key);
                }
                s.settle(c.iter().map(|m| settle(m, Outcome::Delivered)).collect())
                    .await
                    .unwrap();
                delivered.extend(c.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "no message delivered twice");
    assert_eq!(n, keys * 3, "every message delivered");
}

/// Four ingesters add to the same ten keys while two workers deliver: a
/// key's messages go in the order they were stored, and none is left
/// without a head (it would never be claimed).
async fn ingesting_while_delivering_keeps_key_order_and_loses_nothing(s: Store) {
    let s = std::sync::Arc::new(s);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ingesters, batches, per_batch, keys) = (4, 40, 10, 10);
    let mut feeders = Vec::new();
    for w in 0..ingesters {
        let s = s.clone();
        feeders.push(tokio::spawn(async move {
            for b in 0..batches {
                let batch = (0..per_batch)
                    .map(|i| {
                        let n = b * per_batch + i;
                        record(&format!("w{w}-{n:05}"), &[(T, &format!("K{}", n % keys))])
                    })
                    .collect();
                s.ingest(batch).await.unwrap();
            }
        }));
    }
    // Claims in the order they happened: a key's next message can only be
    // claimed after its previous one is settled.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64, String)>::new()));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (s, done, seen) = (s.clone(), done.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let c = s.claim(T, 8, LEASE).await.unwrap();
                if c.is_empty() {
                    if done.load(std::sync::atomic::Ordering::SeqCst)
                        || std::time::Instant::now() > deadline
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                seen.lock().unwrap().extend(c.iter().map(|m| {
                    (
                        m.key.clone(),
                        m.id,
                        String::from_utf8_lossy(&m.payload).into_owned(),
                    )
                }));
                s.settle(c.iter().map(|m| settle(m, Outcome::Delivered)).collect())
                    .await
                    .unwrap();
            }
        }));
    }
    for f in feeders {
        f.await.unwrap();
    }
    // Let the workers drain what is claimable, then stop them.
    let t0 = std::time::Instant::now();
    while !s.messages(T, status::PENDING, 1).await.unwrap().is_empty()
        && t0.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let pending = s.messages(T, status::PENDING, 10).await.unwrap();
    assert!(
        pending.is_empty(),
        "messages left pending with no head to claim them: {:?}",
        pending.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    assert_eq!(
        seen.len(),
        ingesters * batches * per_batch,
        "each delivered once"
    );
    // Per key: ids rise in delivery order, and each ingester's records of
    // the key come in the order it stored them.
    let mut by_key: std::collections::HashMap<String, Vec<(i64, String)>> = Default::default();
    for (k, id, p) in seen {
        by_key.entry(k).or_default().push((id, p));
    }
    for (k, list) in by_key {
        assert!(
            list.windows(2).all(|w| w[0].0 < w[1].0),
            "key {k} delivered out of id order"
        );
        for w in 0..ingesters {
            let prefix = format!("w{w}-");
            let mine: Vec<&String> = list
                .iter()
                .map(|x| &x.1)
                .filter(|p| p.starts_with(&prefix))
                .collect();
            assert!(
                mine.windows(2).all(|x| x[0] < x[1]),
                "key {k}: ingester {w} out of order"
            );
        }
    }
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

fn payment(i: u64, bank: &str, fen: i64) -> PaymentRow {
    PaymentRow {
        payment_id: format!("LIVING-{i:018}-2026-11"),
        period: "2026-11".into(),
        bank_code: bank.into(),
        amount_fen: fen,
        record: format!("{{\"payment_id\":\"LIVING-{i:018}-2026-11\"}}").into_bytes(),
    }
}

/// Property, over random sets of payments: after building, every payment
/// of the period is in exactly one live batch, each batch holds one bank's
/// payments and at most `max`, and the batches' totals add up to the sum
/// of the amounts. Building again makes nothing new; a later payment goes
/// into a new batch numbered after the others.
async fn payments_are_batched_once_per_bank_and_totals_add_up(store: Store) {
    let mut rng = tongban::synth::Rng::new(tongban::store::now_ms() as u64);
    let banks = [
        "102100099996",
        "103100000026",
        "105100000017",
        "308584000013",
    ];
    let mut next = 0u64;
    for round in 0..4 {
        let n = 1 + rng.below(300) as usize;
        let max = 1 + rng.below(60) as usize;
        let rows: Vec<PaymentRow> = (0..n)
            .map(|_| {
                next += 1;
                payment(
                    next,
                    banks[rng.below(4) as usize],
                    1 + rng.below(50_000) as i64,
                )
            })
            .collect();
        // Recording twice stores each once.
        assert_eq!(store.record_payments(rows.clone()).await.unwrap(), n);
        assert_eq!(
            store.record_payments(rows[..n / 2].to_vec()).await.unwrap(),
            0
        );
        let made = store
            .build_batches("2026-11", max, "2026-11-23T10:00:00")
            .await
            .unwrap();
        assert!(!made.is_empty());
        let mut ids = std::collections::HashMap::new();
        let mut total = 0;
        for b in &made {
            assert!(
                b.count as usize <= max && b.count > 0,
                "round {round}: {b:?}"
            );
            let items = store.batch_payments(&b.batch_id).await.unwrap();
            assert_eq!(items.len() as i64, b.count);
            assert_eq!(items.iter().map(|p| p.amount_fen).sum::<i64>(), b.total_fen);
            for p in items {
                assert_eq!(p.bank_code, b.bank_code);
                assert!(
                    ids.insert(p.payment_id, b.batch_id.clone()).is_none(),
                    "a payment in two batches"
                );
            }
            total += b.total_fen;
        }
        assert_eq!(
            ids.len(),
            n,
            "round {round}: every new payment in one batch"
        );
        assert_eq!(total, rows.iter().map(|p| p.amount_fen).sum::<i64>());
        assert!(store
            .build_batches("2026-11", max, "x")
            .await
            .unwrap()
            .is_empty());
    }
    // Numbers continue per bank; the live batches of the period are listed.
    let all = store.batches("2026-11").await.unwrap();
    for bank in banks {
        let seqs: Vec<i64> = all
            .iter()
            .filter(|b| b.bank_code == bank)
            .map(|b| b.seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{bank}");
    }
    assert!(all
        .iter()
        .all(|b| b.batch_id == tongban::store::batch_id("2026-11", &b.bank_code, b.seq)));
    assert!(store.batches("2026-12").await.unwrap().is_empty());
}

/// A batch larger than a page is read in pages that follow the file's
/// order: positions rise without a gap, each payment comes once, and the
/// page after the last is empty.
async fn a_batch_is_read_in_file_order_a_page_at_a_time(store: Store) {
    let n = 2_345u64;
    // Recorded out of order: the batch orders its payments by id.
    let rows: Vec<PaymentRow> = (0..n)
        .map(|i| payment((i * 7_919) % n + 1, "105100000017", 100 + i as i64))
        .collect();
    store.record_payments(rows.clone()).await.unwrap();
    let made = store
        .build_batches("2026-11", 5_000, "2026-11-23T10:00:00")
        .await
        .unwrap();
    assert_eq!(made.len(), 1);
    let batch = &made[0].batch_id;
    let (mut after, mut seen, mut sizes) = (-1, Vec::new(), Vec::new());
    loop {
        let page = store
            .batch_payments_page(batch, after, 1_000)
            .await
            .unwrap();
        sizes.push(page.len());
        if page.is_empty() {
            break;
        }
        for (position, p) in page {
            assert_eq!(position, after + 1, "positions follow each other");
            after = position;
            seen.push(p.payment_id);
        }
    }
    assert_eq!(sizes, [1_000, 1_000, 345, 0]);
    let mut want: Vec<String> = rows.into_iter().map(|p| p.payment_id).collect();
    want.sort();
    assert_eq!(seen, want, "the file's order: by payment id");
    let whole: Vec<String> = store
        .batch_payments(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.payment_id)
        .collect();
    assert_eq!(whole, want);
}

/// Several builders at once (several hubs, or an operator and a cron job):
/// each payment ends up in exactly one batch.
async fn concurrent_batch_builders_never_put_a_payment_in_two_batches(store: Store) {
    let rows: Vec<PaymentRow> = (0..2_000)
        .map(|i| {
            payment(
                i,
                ["102100099996", "105100000017"][i as usize % 2],
                100 + i as i64,
            )
        })
        .collect();
    store.record_payments(rows).await.unwrap();
    let store = std::sync::Arc::new(store);
    let builders: Vec<_> = (0..4)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(
                async move { s.build_batches("2026-11", 300, "2026-11-23T10:00:00").await },
            )
        })
        .collect();
    let mut made = Vec::new();
    for b in builders {
        // A builder may lose a race and fail; it must never double-book.
        if let Ok(batches) = b.await.unwrap() {
            made.extend(batches);
        }
    }
    let all = store.batches("2026-11").await.unwrap();
    assert_eq!(made.len(), all.len());
    let mut seen = std::collections::HashSet::new();
    for b in &all {
        for p in store.batch_payments(&b.batch_id).await.unwrap() {
            assert!(seen.insert(p.payment_id), "a payment in two batches");
        }
    }
    assert_eq!(seen.len(), 2_000);
}

/// Re-issue: refused for an accepted payment, one without a result and an
/// unknown one; a rejected one leaves its batch (audited, the old
/// membership kept as history), takes its corrected account, and goes
/// into the next batch built, and only there.
async fn only_rejected_payments_are_reissued_into_a_later_batch(store: Store) {
    let bank = "105100000017";
    let rows: Vec<PaymentRow> = (1..=3).map(|i| payment(i, bank, 1000 * i as i64)).collect();
    let ids: Vec<String> = rows.iter().map(|r| r.payment_id.clone()).collect();
    store.record_payments(rows).await.unwrap();
    let first = store
        .build_batches("2026-11", 10, "2026-11-23T10:00:00")
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    store
        .set_results(vec![
            (ids[0].clone(), "ACCEPTED".into(), None),
            (ids[1].clone(), "REJECTED".into(), Some("AC04".into())),
        ])
        .await
        .unwrap();
    let refused = |r: Result<String, StoreError>| match r {
        Err(StoreError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let why = refused(store.reissue(&ids[0], None, "ops", "x").await);
    assert!(
        why.contains("accepted") && why.contains("never paid again"),
        "{why}"
    );
    let why = refused(store.reissue(&ids[2], None, "ops", "x").await);
    assert!(why.contains("no bank result"), "{why}");
    assert!(refused(store.reissue("nope", None, "ops", "x").await).contains("no payment nope"));

    let corrected = (
        b"{\"creditor_account\":\"6222000000000000004\"}".to_vec(),
        "102100099996".to_string(),
    );
    let old = store
        .reissue(
            &ids[1],
            Some(corrected.clone()),
            "ops-li",
            "account corrected after AC04",
        )
        .await
        .unwrap();
    assert_eq!(old, first[0].batch_id);
    let (row, result, _) = store.payment(&ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (row.record, row.bank_code, result),
        (corrected.0, corrected.1.clone(), None)
    );
    let audit = store.audit().await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("ops-li", "reissue")
    );
    assert!(
        last.subject.contains(&ids[1]) && last.subject.contains(&old),
        "{last:?}"
    );
    // Not twice before a new result.
    assert!(refused(store.reissue(&ids[1], None, "ops", "x").await).contains("no bank result"));

    let second = store
        .build_batches("2026-11", 10, "2026-11-24T10:00:00")
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].bank_code, corrected.1);
    let items = store.batch_payments(&second[0].batch_id).await.unwrap();
    assert_eq!(
        items
            .iter()
            .map(|p| p.payment_id.clone())
            .collect::<Vec<_>>(),
        vec![ids[1].clone()]
    );
    // The first batch's results no longer count it; nothing is built twice.
    let results = store.results("2026-11").await.unwrap();
    let in_first: i64 = results
        .iter()
        .filter(|r| r.0 == first[0].batch_id)
        .map(|r| r.2)
        .sum();
    assert_eq!(in_first, 2);
    assert!(store
        .build_batches("2026-11", 10, "x")
        .await
        .unwrap()
        .is_empty());
}

async fn failed_messages_are_found_by_filter_in_pages(s: Store) {
    const U: &str = "pension.enrol";
    s.ingest(vec![
        record("1", &[(T, "A"), (U, "A")]),
        record("2", &[(T, "B")]),
        record("3", &[(T, "C")]),
        record("4", &[(T, "D")]),
    ])
    .await
    .unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    let dead = |c: &Claimed, why: &str, class: &str| {
        let mut x = settle(c, Outcome::Dead { reason: why.into() });
        x.attempt.error_class = Some(class.into());
        x.attempt.status_code = Some(422);
        x
    };
    let before = now_ms();
    s.settle(vec![
        dead(
            &c[0],
            "refused for good: unknown person 50% sure",
            "http_422",
        ),
        dead(&c[1], "refused for good: bad certificate", "http_422"),
        dead(
            &c[2],
            "gave up after 7 attempts; the last: timeout",
            "timeout",
        ),
        settle(&c[3], Outcome::Delivered),
    ])
    .await
    .unwrap();
    let ids = |rows: Vec<MessageRow>| rows.iter().map(|m| m.id).collect::<Vec<_>>();
    let s = &s;
    let f = |f: MessageFilter| async move { s.find_messages(&f, 100).await.unwrap() };
    let dead_t = MessageFilter {
        target: Some(T.into()),
        status: Some(status::DEAD),
        ..Default::default()
    };
    assert_eq!(ids(f(dead_t.clone()).await), [c[0].id, c[1].id, c[2].id]);
    // Pages by id.
    let page = s.find_messages(&dead_t, 2).await.unwrap();
    assert_eq!(ids(page.clone()), [c[0].id, c[1].id]);
    let rest = MessageFilter {
        after: Some(page[1].id),
        ..dead_t.clone()
    };
    assert_eq!(ids(f(rest).await), [c[2].id]);
    // By error class, by text (a `%` in it is a character, not a wildcard), by key.
    let by_class = MessageFilter {
        error_class: Some("timeout".into()),
        ..Default::default()
    };
    assert_eq!(ids(f(by_class).await), [c[2].id]);
    let by_text = MessageFilter {
        text: Some("50% sure".into()),
        ..Default::default()
    };
    assert_eq!(ids(f(by_text).await), [c[0].id]);
    let wildcard = MessageFilter {
        text: Some("50%".into()),
        status: Some(status::DEAD),
        ..Default::default()
    };
    assert_eq!(f(wildcard).await.len(), 1);
    let by_key = MessageFilter {
        key: Some("A".into()),
        ..Default::default()
    };
    let rows = f(by_key).await;
    assert_eq!(rows.len(), 2, "key A on both targets");
    // By time: changed since the settle, none before.
    let since = MessageFilter {
        since: Some(before),
        status: Some(status::DEAD),
        ..Default::default()
    };
    assert_eq!(f(since).await.len(), 3);
    let until = MessageFilter {
        until: Some(before - 60_000),
        ..Default::default()
    };
    assert!(f(until).await.is_empty());
    let m = s.message(c[0].id).await.unwrap().unwrap();
    assert!(m.created_at <= m.updated_at && m.updated_at >= before);
}

async fn targets_show_backlog_dead_letters_and_pauses(s: Store) {
    const U: &str = "pension.enrol";
    s.ingest(vec![
        record("1", &[(T, "A")]),
        record("2", &[(T, "A")]),
        record("3", &[(T, "B"), (U, "B")]),
    ])
    .await
    .unwrap();
    let made = now_ms();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    s.settle(vec![
        settle(
            &c[0],
            Outcome::Dead {
                reason: "no".into(),
            },
        ),
        settle(&c[1], Outcome::Delivered),
    ])
    .await
    .unwrap();
    s.set_paused(U, true, "ops", "their maintenance window")
        .await
        .unwrap();
    s.set_paused("kafka.idle", true, "ops", "not yet live")
        .await
        .unwrap();
    let t = s.targets().await.unwrap();
    let get = |n: &str| t.iter().find(|r| r.target == n).unwrap().clone();
    let tt = get(T);
    assert_eq!(
        (tt.pending, tt.delivered, tt.dead, tt.paused),
        (1, 1, 1, false)
    );
    // The pending message behind the dead one is parked, not waiting: its
    // target's age counts only messages that can go.
    let uu = get(U);
    assert_eq!((uu.pending, uu.paused), (1, true));
    assert!(uu.oldest_pending_at.is_some_and(|at| at <= made));
    let idle = get("kafka.idle");
    assert_eq!(
        (idle.pending, idle.paused, idle.oldest_pending_at),
        (0, true, None)
    );
}

async fn tokens_are_found_by_hash_until_revoked(s: Store) {
    s.create_token("vera", "viewer", "h1", "setup")
        .await
        .unwrap();
    s.create_token("otto", "operator", "h2", "setup")
        .await
        .unwrap();
    assert!(
        s.create_token("vera", "admin", "h3", "setup")
            .await
            .is_err(),
        "names are unique"
    );
    assert_eq!(
        s.token("h1").await.unwrap(),
        Some(("vera".into(), "viewer".into()))
    );
    assert_eq!(s.token("nope").await.unwrap(), None);
    assert!(s.revoke_token("vera", "ada", "left").await.unwrap());
    assert!(!s.revoke_token("vera", "ada", "again").await.unwrap());
    assert_eq!(s.token("h1").await.unwrap(), None);
    let all = s.tokens().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].revoked_at.is_some() && all[1].revoked_at.is_none());
    let audit = s.audit().await.unwrap();
    let actions: Vec<_> = audit
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("setup", "token_create"),
            ("setup", "token_create"),
            ("ada", "token_revoke")
        ]
    );
}

async fn bulk_replays_go_in_chunks_and_obey_cap_pause_and_cancel(s: Store) {
    let recs: Vec<Ingest> = (0..7)
        .map(|i| record(&i.to_string(), &[(T, &format!("K{i}"))]))
        .collect();
    s.ingest(recs).await.unwrap();
    let c = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 7);
    s.settle(
        c.iter()
            .map(|m| {
                settle(
                    m,
                    Outcome::Dead {
                        reason: "down".into(),
                    },
                )
            })
            .collect(),
    )
    .await
    .unwrap();
    let f = MessageFilter {
        target: Some(T.into()),
        ..Default::default()
    };
    // Capped at 5: two chunks of 2, then one of 1, then done.
    let t = s
        .create_task(&f, 5, "otto", "receiver fixed")
        .await
        .unwrap();
    assert_eq!((t.total, t.done, t.status.as_str()), (5, 0, "running"));
    let t1 = s.run_task(t.id, 2).await.unwrap().unwrap();
    assert_eq!((t1.done, t1.status.as_str()), (2, "running"));
    // Paused: a run does nothing.
    assert!(s
        .set_task_status(t.id, &["running"], "paused", "otto", "wait")
        .await
        .unwrap());
    assert_eq!(s.run_task(t.id, 2).await.unwrap().unwrap().done, 2);
    assert!(!s
        .set_task_status(t.id, &["running"], "paused", "otto", "again")
        .await
        .unwrap());
    assert!(s
        .set_task_status(t.id, &["paused"], "running", "otto", "go")
        .await
        .unwrap());
    let t2 = s.run_task(t.id, 2).await.unwrap().unwrap();
    let t3 = s.run_task(t.id, 2).await.unwrap().unwrap();
    assert_eq!((t2.done, t3.done, t3.status.as_str()), (4, 5, "done"));
    // Five replayed, in id order: claimable again, each once.
    let again = s.claim(T, 10, LEASE).await.unwrap();
    let mut ids: Vec<i64> = again.iter().map(|m| m.id).collect();
    ids.sort();
    let mut first5: Vec<i64> = c.iter().map(|m| m.id).collect();
    first5.sort();
    assert_eq!(ids, first5[..5]);
    // A second task takes the other two; cancelled before it runs, it does nothing.
    let t = s.create_task(&f, 100, "otto", "the rest").await.unwrap();
    assert_eq!(t.total, 2);
    assert!(s
        .set_task_status(t.id, &["running", "paused"], "cancelled", "otto", "not now")
        .await
        .unwrap());
    assert_eq!(s.run_task(t.id, 10).await.unwrap().unwrap().done, 0);
    assert_eq!(
        s.find_messages(
            &MessageFilter {
                status: Some(status::DEAD),
                ..Default::default()
            },
            10
        )
        .await
        .unwrap()
        .len(),
        2
    );
    // One audit row per task, and one per pause, resume and cancel.
    let actions: Vec<String> = s
        .audit()
        .await
        .unwrap()
        .iter()
        .map(|a| a.action.clone())
        .collect();
    assert_eq!(
        actions,
        [
            "bulk_replay",
            "task_paused",
            "task_running",
            "bulk_replay",
            "task_cancelled"
        ]
    );
    assert_eq!(s.tasks().await.unwrap().len(), 2);
}

async fn quarantined_records_are_resolved_once_into_messages(s: Store) {
    let mut r = record("9", &[(T, "A")]);
    r.quarantine.push(Quarantined {
        mapping: "to_pension".into(),
        part: "field `level`".into(),
        reason: "division by zero".into(),
    });
    s.ingest(vec![r, record("10", &[(T, "B")])]).await.unwrap();
    let q = s
        .quarantined(Some("national_cert.events"), None, 10)
        .await
        .unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].source_id.as_str(), q[0].mapping.as_str()),
        ("9", "to_pension")
    );
    assert_eq!(q[0].record, b"{\"event_id\":\"9\"}");
    assert!(s
        .quarantined(None, Some("other"), 10)
        .await
        .unwrap()
        .is_empty());
    let m = NewMessage {
        mapping: "to_pension".into(),
        target: "pension.enrol".into(),
        key: "A".into(),
        payload: b"fixed".to_vec(),
    };
    assert_eq!(
        s.resolve_quarantine(vec![(q[0].id, Some(m.clone()))], "ops", "fixed")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.resolve_quarantine(vec![(q[0].id, Some(m))], "ops", "again")
            .await
            .unwrap(),
        0
    );
    assert!(s.quarantined(None, None, 10).await.unwrap().is_empty());
    let c = s.claim("pension.enrol", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].payload, b"fixed");
    assert_eq!(
        c[0].idem_key,
        idempotency_key("national_cert.events", "9", "to_pension")
    );
    let audit = s.audit().await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "quarantine_remap");
}
