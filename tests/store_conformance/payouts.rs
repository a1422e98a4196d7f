//! The payout register: batches per bank, file order, concurrent
//! builders, re-issues of rejected payments.

use super::*;

conformance!(
    payments_are_batched_once_per_bank_and_totals_add_up,
    a_batch_is_read_in_file_order_a_page_at_a_time,
    concurrent_batch_builders_never_put_a_payment_in_two_batches,
    only_rejected_payments_are_reissued_into_a_later_batch,
    a_hold_keeps_a_persons_later_payments_out_and_names_those_already_sent,
);

fn payment(i: u64, bank: &str, fen: i64) -> PaymentRow {
    PaymentRow {
        payment_id: format!("LIVING-{i:018}-2026-11"),
        period: "2026-11".into(),
        bank_code: bank.into(),
        amount_fen: fen,
        holder_id: format!("{i:018}"),
        record: format!("{{\"payment_id\":\"LIVING-{i:018}-2026-11\"}}").into_bytes(),
    }
}

/// A payment of one holder for one month.
fn monthly(holder: &str, period: &str, fen: i64) -> PaymentRow {
    let id = format!("LIVING-{holder}-{}", period.replace('-', ""));
    PaymentRow {
        payment_id: id.clone(),
        period: period.into(),
        bank_code: "105100000017".into(),
        amount_fen: fen,
        holder_id: holder.into(),
        record: format!("{{\"payment_id\":\"{id}\",\"holder_id\":\"{holder}\"}}").into_bytes(),
    }
}

/// A death registered after a month's file went out: the holder's
/// payments of that month on go into no batch any more (built before or
/// after the hold), those already in a batch are returned with their bank
/// answer, a second hold keeps the earlier month, and nobody else's
/// payments are held.
async fn a_hold_keeps_a_persons_later_payments_out_and_names_those_already_sent(store: Store) {
    let (dead, alive) = ("140105196309090071", "110105199003070017");
    store
        .record_payments(vec![
            monthly(dead, "2027-01", 41_000),
            monthly(alive, "2027-01", 41_000),
            monthly(dead, "2027-02", 41_000),
        ])
        .await
        .unwrap();
    // January's file made and paid, February's made, not yet answered.
    for p in ["2027-01", "2027-02"] {
        store
            .build_batches(p, 10, "2027-01-23T10:00:00")
            .await
            .unwrap();
    }
    store
        .set_results(vec![BankResult {
            payment_id: format!("LIVING-{dead}-202701"),
            result: "ACCEPTED".into(),
            reason_code: None,
        }])
        .await
        .unwrap();
    // March's payment comes after the hold.
    let held = store
        .hold_payments(dead, "2027-02", "DECEASED")
        .await
        .unwrap();
    assert_eq!(
        held.iter()
            .map(|h| (
                h.payment_id.as_str(),
                h.period.as_str(),
                h.amount_fen,
                h.result.as_deref()
            ))
            .collect::<Vec<_>>(),
        [(
            format!("LIVING-{dead}-202702").as_str(),
            "2027-02",
            41_000,
            None
        )]
    );
    assert!(held[0].batch_id.starts_with("TB-2027-02-"), "{held:?}");
    assert_eq!(held[0].position, 0, "the first transfer of its file");
    // An earlier month: January's paid payment is named too.
    let held = store
        .hold_payments(dead, "2027-01", "DECEASED")
        .await
        .unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held[0].result.as_deref(), Some("ACCEPTED"));
    // A later month does not shorten the hold.
    let held = store
        .hold_payments(dead, "2027-03", "DECEASED")
        .await
        .unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    store
        .record_payments(vec![
            monthly(dead, "2027-03", 41_000),
            monthly(alive, "2027-03", 41_000),
        ])
        .await
        .unwrap();
    let march = store
        .build_batches("2027-03", 10, "2027-03-23T10:00:00")
        .await
        .unwrap();
    let ids: Vec<String> = store
        .batch_payments(&march[0].batch_id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.payment_id)
        .collect();
    assert_eq!(march.len(), 1);
    assert_eq!(ids, [format!("LIVING-{alive}-202703")]);
    // The holder is read back with each payment.
    let p = store.payment(&ids[0]).await.unwrap().unwrap();
    assert_eq!(p.row.holder_id, alive);
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
            BankResult {
                payment_id: ids[0].clone(),
                result: "ACCEPTED".into(),
                reason_code: None,
            },
            BankResult {
                payment_id: ids[1].clone(),
                result: "REJECTED".into(),
                reason_code: Some("AC04".into()),
            },
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
    let PaymentState { row, result, .. } = store.payment(&ids[1]).await.unwrap().unwrap();
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
        .filter(|r| r.batch_id == first[0].batch_id)
        .map(|r| r.payments)
        .sum();
    assert_eq!(in_first, 2);
    assert!(store
        .build_batches("2026-11", 10, "x")
        .await
        .unwrap()
        .is_empty());
}
