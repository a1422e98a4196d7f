//! The exchange log: every durable fact written in its own transaction,
//! chained in commit order, verifiable, and one chain however many
//! chainers run.

use super::*;
use tongban::store::evidence::*;

conformance!(
    every_kind_of_fact_is_chained_in_order_and_verifies,
    concurrent_chainers_make_one_chain,
);

async fn chain_all(s: &Store) -> Vec<Entry> {
    while s.chain_evidence(1000).await.unwrap().chained > 0 {}
    s.evidence(1, i64::MAX, 100_000).await.unwrap()
}

async fn every_kind_of_fact_is_chained_in_order_and_verifies(s: Store) {
    // A source id that is an ID number is kept masked.
    let mut r1 = record("110105199003070017", &[(T, "K1")]);
    r1.record = b"{\"event_id\":\"E1\"}".to_vec();
    let out = s
        .ingest(vec![r1.clone(), record("EV-2", &[(T, "K2")])])
        .await
        .unwrap();
    assert_eq!(out.stored, 2);
    // A duplicate stores nothing, and writes no fact.
    s.ingest(vec![r1]).await.unwrap();
    let claimed = s.claim(T, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let mut delivered = settle(&claimed[0], Outcome::Delivered);
    delivered.attempt.response_sha256 = Some("ab".repeat(32));
    let retry = settle(
        &claimed[1],
        Outcome::Retry {
            at: now_ms() + 60_000,
        },
    );
    assert_eq!(s.settle(vec![delivered, retry]).await.unwrap(), 2);
    s.mark_written("2026-12-BANK-001", &"cd".repeat(32))
        .await
        .unwrap();
    s.set_results(vec![BankResult {
        payment_id: "P-1".into(),
        result: "REJECTED".into(),
        reason_code: Some("AC04".into()),
    }])
    .await
    .unwrap();
    s.set_paused(T, true, "ops-1", "bank asked to hold 110105199003070017")
        .await
        .unwrap();

    let counts = s.log_counts().await.unwrap();
    assert_eq!((counts.chained, counts.unchained), (0, 5));
    let entries = chain_all(&s).await;
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "received",
            "delivered",
            "payment_file",
            "bank_results",
            "operator"
        ]
    );
    let pos: Vec<i64> = entries.iter().map(|e| e.pos).collect();
    assert_eq!(pos, [1, 2, 3, 4, 5]);
    let received: serde_json::Value = serde_json::from_str(&entries[0].body).unwrap();
    assert_eq!(received["sources"][0]["source"], "national_cert.events");
    let rows = received["sources"][0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{received}");
    assert_eq!(rows[0][1], "110105********0017", "masked: {received}");
    assert_eq!(
        rows[0][2],
        tongban::store::evidence::sha256_hex(b"{\"event_id\":\"E1\"}")
    );
    // Only the delivery is a fact of `delivered`, with the answer's digest.
    let delivered: serde_json::Value = serde_json::from_str(&entries[1].body).unwrap();
    let rows = delivered["targets"][0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{delivered}");
    assert_eq!(delivered["targets"][0]["target"], T);
    assert_eq!(rows[0][0], claimed[0].id);
    let answer = rows[0][2].as_u64().unwrap() as usize;
    assert_eq!(delivered["responses"][answer], "ab".repeat(32));
    assert!(entries[2].body.contains(&"cd".repeat(32)));
    assert!(entries[3].body.contains("AC04"));
    assert!(entries[4].body.contains("ops-1"));
    assert!(
        !entries
            .iter()
            .any(|e| e.body.contains("110105199003070017")),
        "no ID number in the clear"
    );

    // The chain verifies, and a seal vouches for it.
    let key = SealKey::generate("ed25519").unwrap();
    let head = s.chain_evidence(10).await.unwrap().head.unwrap();
    assert_eq!(head.pos, 5);
    s.add_seal(key.seal(head, now_ms())).await.unwrap();
    let ok = s.verify_log(vec![key.public()], 1, 5).await.unwrap();
    assert_eq!(ok.broken, None);
    let v = ok.verified;
    assert_eq!((v.entries, v.seals_checked, v.sealed_to), (5, 1, Some(5)));
    // A range short of the seal is vouched for by it too.
    let part = s.verify_log(vec![key.public()], 2, 3).await.unwrap();
    assert_eq!(part.broken, None);
    assert_eq!(
        (part.verified.first, part.verified.sealed_to),
        (Some(2), Some(5))
    );
    // Another key's seal breaks the range.
    let other = SealKey::generate("sm2").unwrap();
    let bad = s.verify_log(vec![other.public()], 1, 5).await.unwrap();
    assert!(bad.broken.unwrap().why.contains("not a trusted key"));
    // New facts continue the chain from its end.
    s.set_paused(T, false, "ops-1", "resumed").await.unwrap();
    let more = chain_all(&s).await;
    assert_eq!(more.len(), 6);
    assert_eq!(more[5].prev, more[4].hash);
    let c = s.log_counts().await.unwrap();
    assert_eq!(
        (c.chained, c.unchained, c.seals, c.sealed_to),
        (6, 0, 1, Some(5))
    );
}

async fn concurrent_chainers_make_one_chain(s: Store) {
    let s = std::sync::Arc::new(s);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    s.ingest(vec![record(&format!("W{w}-{i}"), &[(T, "K")])])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let chainers: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    s.chain_evidence(7).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(chainers) {
        t.await.unwrap();
    }
    let entries = chain_all(&s).await;
    assert_eq!(entries.len(), 100, "one entry per ingest, none lost");
    let c = s.verify_log(vec![], 1, 100).await.unwrap();
    assert_eq!(c.broken, None);
    assert_eq!(c.verified.entries, 100);
}
