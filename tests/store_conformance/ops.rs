//! Operations: state checks of operator actions, messages found by
//! filter, targets, tokens, bulk replays and the quarantine.

use super::*;

conformance!(
    operator_actions_refuse_wrong_states,
    failed_messages_are_found_by_filter_in_pages,
    targets_show_backlog_dead_letters_and_pauses,
    tokens_are_found_by_hash_until_revoked,
    tokens_expire_and_rotate_without_a_gap,
    bulk_replays_go_in_chunks_and_obey_cap_pause_and_cancel,
    quarantined_records_are_resolved_once_into_messages,
);

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
    s.create_token("vera", "viewer", "h1", None, "setup")
        .await
        .unwrap();
    s.create_token("otto", "operator", "h2", None, "setup")
        .await
        .unwrap();
    assert!(
        s.create_token("vera", "admin", "h3", None, "setup")
            .await
            .is_err(),
        "names are unique"
    );
    assert_eq!(
        s.token("h1").await.unwrap(),
        Some(TokenHolder {
            name: "vera".into(),
            role: "viewer".into()
        })
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
        idem_key: None,
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

async fn tokens_expire_and_rotate_without_a_gap(s: Store) {
    let now = now_ms();
    let holder = |name: &str, role: &str| {
        Some(TokenHolder {
            name: name.into(),
            role: role.into(),
        })
    };
    // Expired: lets no one in; still listed, with its expiry.
    s.create_token("old", "viewer", "e1", Some(now - 1), "setup")
        .await
        .unwrap();
    assert_eq!(s.token("e1").await.unwrap(), None, "an expired token");
    s.create_token("ci", "operator", "r1", Some(now + 3_600_000), "setup")
        .await
        .unwrap();
    assert_eq!(s.token("r1").await.unwrap(), holder("ci", "operator"));

    // Rotated: both work during the overlap, the old one under its new name.
    let overlap_until = now_ms() + 1_500;
    let old = s
        .rotate_token("ci", "r2", overlap_until, None, "ada", "yearly")
        .await
        .unwrap()
        .expect("a live token");
    assert!(old.starts_with("ci@"), "{old}");
    assert_eq!(s.token("r2").await.unwrap(), holder("ci", "operator"));
    assert_eq!(s.token("r1").await.unwrap(), holder(&old, "operator"));
    let listed = s.tokens().await.unwrap();
    let retired = listed.iter().find(|t| t.name == old).unwrap();
    assert_eq!(retired.expires_at, Some(overlap_until));
    // The new one lives as long as the old one did (an hour), from now.
    let new = listed.iter().find(|t| t.name == "ci").unwrap();
    let life = new.expires_at.unwrap() - new.created_at;
    assert!((3_599_000..=3_601_000).contains(&life), "{life}");
    // After it, only the new one.
    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    assert_eq!(s.token("r1").await.unwrap(), None, "the old one expired");
    assert_eq!(s.token("r2").await.unwrap(), holder("ci", "operator"));
    // Nothing to rotate: no live token of that name.
    assert_eq!(
        s.rotate_token("old", "r3", now_ms(), None, "ada", "x")
            .await
            .unwrap(),
        None
    );
    let audit = s.audit().await.unwrap();
    let rotate = audit.iter().find(|a| a.action == "token_rotate").unwrap();
    assert_eq!(
        (rotate.actor.as_str(), rotate.reason.as_str()),
        ("ada", "yearly")
    );
}
