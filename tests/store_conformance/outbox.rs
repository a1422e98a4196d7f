//! The outbox: ingest, claims in key order, settles, leases, retries,
//! pauses, concurrent claimers and ingest beside delivery.

use super::*;

conformance!(
    reingesting_a_record_creates_nothing_new,
    messages_cursor_and_quarantine_commit_together,
    one_key_is_delivered_in_order_and_keys_are_independent,
    a_dead_message_parks_only_its_key_until_skipped,
    a_replay_puts_the_dead_message_first_again,
    an_expired_lease_is_claimed_again_and_the_stale_worker_cannot_settle,
    retries_wait_for_their_time_and_attempts_are_kept,
    paused_targets_hand_out_nothing,
    concurrent_claimers_never_share_a_message,
    ingesting_while_delivering_keeps_key_order_and_loses_nothing,
    a_message_naming_its_effect_carries_that_key,
    a_nonce_is_new_once_within_twice_the_window,
);

/// A feed that names its message's effect gives the key itself: two
/// records of two feeds with one effect carry one key, kept as given.
async fn a_message_naming_its_effect_carries_that_key(s: Store) {
    let effect = effect_key("subsidies.stop", "stop:DECEASED:A");
    let mut from_death = record("CV-1", &[("subsidies.stop", "A")]);
    from_death.source = "civil_affairs.events".into();
    from_death.messages[0].idem_key = Some(effect.clone());
    let mut from_cancel = record("EV-9", &[("subsidies.stop", "A")]);
    from_cancel.messages[0].idem_key = Some(effect.clone());
    let plain = record("EV-10", &[("subsidies.stop", "A")]);
    s.ingest(vec![from_death, from_cancel, plain])
        .await
        .unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let c = s.claim("subsidies.stop", 10, LEASE).await.unwrap();
        assert_eq!(c.len(), 1, "one at a time for one person");
        keys.push(c[0].idem_key.clone());
        deliver_all(&s, &c).await;
    }
    assert_eq!(keys[0], effect);
    assert_eq!(keys[1], effect);
    assert_eq!(
        keys[2],
        idempotency_key("national_cert.events", "EV-10", "to_subsidies.stop")
    );
    assert_ne!(
        effect_key("subsidies.stop", "x"),
        effect_key("sscard.unload_certificate", "x")
    );
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
        vec![QuarantineReason {
            mapping: "to_pension".to_string(),
            part: "level".to_string(),
            reason: "level 5 is not 1–4".to_string()
        }]
    );
    // A duplicate still advances the cursor (the source moved on).
    let mut dup = record("EV-1", &[(T, "A")]);
    dup.cursor = Some("cursor-2".into());
    s.ingest(vec![dup]).await.unwrap();
    assert_eq!(
        s.cursor("national_cert.events").await.unwrap().as_deref(),
        Some("cursor-2")
    );
    // A page with none of the source's records moves the cursor alone,
    // and a later record's cursor moves it on.
    s.set_cursor("national_cert.events", "cursor-3")
        .await
        .unwrap();
    assert_eq!(
        s.cursor("national_cert.events").await.unwrap().as_deref(),
        Some("cursor-3")
    );
    assert_eq!(s.inbox_len().await.unwrap(), 1);
    let mut r2 = record("EV-2", &[(T, "A")]);
    r2.cursor = Some("cursor-4".into());
    s.ingest(vec![r2]).await.unwrap();
    assert_eq!(
        s.cursor("national_cert.events").await.unwrap().as_deref(),
        Some("cursor-4")
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
    s.release(c.iter().map(Lease::from).collect())
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
        response_sha256: None,
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

fn nonce(connector: &str, n: &str) -> NonceUse {
    NonceUse {
        connector: connector.into(),
        nonce: n.into(),
    }
}

async fn a_nonce_is_new_once_within_twice_the_window(store: Store) {
    let w = 300_000;
    let t0 = 1_000_000_000_000;
    let first = store
        .first_use_nonces(
            vec![nonce("c", "n1"), nonce("c", "n2"), nonce("c", "n1")],
            t0,
            w,
        )
        .await
        .unwrap();
    assert_eq!(first, [true, true, false], "repeated within one group");
    let again = store
        .first_use_nonces(vec![nonce("c", "n1"), nonce("other", "n1")], t0 + 1, w)
        .await
        .unwrap();
    assert_eq!(again, [false, true], "per connector");
    // Within twice the window it stays used; after, it may be used again
    // (the timestamp check refuses such an old request anyway).
    let late = store
        .first_use_nonces(vec![nonce("c", "n1")], t0 + 2 * w, w)
        .await
        .unwrap();
    assert_eq!(late, [false]);
    let later = store
        .first_use_nonces(vec![nonce("c", "n1")], t0 + 2 * w + 2, w)
        .await
        .unwrap();
    assert_eq!(later, [true]);
    // A nonce whose request was not stored is forgotten: the same request
    // may come again; forgetting is of that use only (a later use stays).
    let t1 = t0 + 3 * w;
    let first = async |at| {
        store
            .first_use_nonces(vec![nonce("c", "n3")], at, w)
            .await
            .unwrap()
    };
    let forget = async || {
        store
            .forget_nonces(vec![nonce("c", "n3")], t1)
            .await
            .unwrap()
    };
    assert_eq!(first(t1).await, [true]);
    forget().await;
    assert_eq!(first(t1 + 5).await, [true]);
    forget().await;
    assert_eq!(first(t1 + 6).await, [false]);
}
