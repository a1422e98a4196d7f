//! The sample month of payouts, for the payout tests.

use std::time::Duration;

/// Runs `tongban` and insists that it succeeds; its standard output.
pub fn run_ok(args: &[&str]) -> String {
    let o = super::run(args);
    let (out, err) = super::text(&o);
    assert!(o.status.success(), "tongban {args:?}:\n{out}{err}");
    out
}

/// Ingests `tests/data/payouts.jsonl` through the subsidies payout list
/// into the configuration at `cfg`; its records.
pub fn ingest_sample(cfg: &str) -> Vec<serde_json::Value> {
    let input = super::root().join("tests/data/payouts.jsonl");
    run_ok(&[
        "ingest",
        "--config",
        cfg,
        "--source",
        "subsidies.payout_list",
        input.to_str().unwrap(),
    ]);
    std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the running hub has recorded `n` payment instructions.
pub async fn recorded(store: &tongban::store::Store, n: usize) {
    super::eventually(Duration::from_secs(60), "instructions recorded", || async {
        store
            .messages(
                "bank.payment_instructions",
                tongban::store::status::DELIVERED,
                100,
            )
            .await
            .unwrap()
            .len()
            == n
    })
    .await;
}

/// Waits until each of the `n` payments of 2026-11 has a result; the
/// results.
pub async fn all_results(store: &tongban::store::Store, n: usize) -> tongban::store::ResultCounts {
    super::eventually(
        Duration::from_secs(60),
        "every payment has its result",
        || async {
            let r = store.results("2026-11").await.unwrap();
            r.iter().all(|x| x.result.is_some())
                && r.iter().map(|x| x.payments).sum::<i64>() == n as i64
        },
    )
    .await;
    store.results("2026-11").await.unwrap()
}

/// Payments and fen with the result `res`.
pub fn tally(results: &tongban::store::ResultCounts, res: &str) -> (i64, i64) {
    results
        .iter()
        .filter(|x| x.result.as_deref() == Some(res))
        .fold((0, 0), |a, x| (a.0 + x.payments, a.1 + x.fen))
}

/// Waits for the alarm of `kind` on `batch_id`.
pub async fn alarm(store: &tongban::store::Store, batch_id: &str, kind: &str) {
    super::eventually(Duration::from_secs(60), "the alarm", || async {
        store
            .alarms()
            .await
            .unwrap()
            .iter()
            .any(|a| a.batch_id == batch_id && a.kind == kind)
    })
    .await;
}

/// Opens the account of every sample record in the bank's book, `closed`
/// closed.
pub fn open_accounts(bank: &tongban::sim::bank::Bank, lines: &[serde_json::Value], closed: &str) {
    for v in lines {
        let acct = v["bank_account_no"].as_str().unwrap();
        let state = if acct == closed {
            tongban::sim::bank::AccountState::Closed
        } else {
            tongban::sim::bank::AccountState::Open
        };
        bank.account(acct, v["account_name"].as_str().unwrap(), state);
    }
}
