//! Bank payouts end to end with the real processes: the sample payout list
//! ingested, `tongban run` recording the payment instructions in the payout
//! register, `tongban payouts build` writing one pain.001 file per bank
//! that validates against the official XSD with totals that match the
//! input, a file lost after a crash written again byte for byte, and a
//! second build making nothing new.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::payouts::run_ok;

fn sha256(p: &std::path::Path) -> String {
    tongban::connectors::file::sha256_hex(&std::fs::read(p).unwrap())
}

#[tokio::test]
async fn payment_instructions_become_one_valid_file_per_bank_rebuilt_byte_for_byte() {
    let d = support::copy_config();
    let dir = d.path();
    let cfg = dir.to_str().unwrap();
    let lines = support::payouts::ingest_sample(cfg);

    // What the files must hold: per bank, the payments with an amount.
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for v in &lines {
        let fen = v["amount_fen"].as_i64().unwrap();
        if fen > 0 {
            let e = want
                .entry(v["bank_code"].as_str().unwrap().to_string())
                .or_default();
            e.0 += 1;
            e.1 += fen;
        }
    }
    let payments: i64 = want.values().map(|w| w.0).sum();

    let mut hub = support::hub::run_logged(dir, &[]);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::payouts::recorded(&store, payments as usize).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());

    let out = run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    assert!(
        out.contains(&format!(
            "2026-11: {} batches ({} new)",
            want.len(),
            want.len()
        )),
        "{out}"
    );
    // The files went out through the outbox: one delivered message per
    // batch on the files target, each with its attempt recorded.
    let files = store
        .messages(
            "bank.payment_instructions/files",
            tongban::store::status::DELIVERED,
            100,
        )
        .await
        .unwrap();
    assert_eq!(files.len(), want.len(), "one file message per bank");
    for m in &files {
        assert_eq!(m.attempts, 1);
        let a = store.attempts(m.id).await.unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].error_class.is_none(), "{:?}", a[0]);
        assert!(a[0].excerpt.as_deref().unwrap_or("").contains("written to"));
    }
    let outdir = dir.join("var/bank/out");
    let xsd = support::root().join("tests/data/iso20022/pain.001.001.03.xsd");
    let mut sums = BTreeMap::new();
    for (bank, (count, total)) in &want {
        let name = format!("TB-2026-11-{bank}-0001.pain001.xml");
        let file = outdir.join(&name);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("<NbOfTxs>{count}</NbOfTxs>")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "<CtrlSum>{}</CtrlSum>",
            tongban::formats::pain::amount(*total)
        )));
        assert!(text.contains("<EndToEndId>"), "{text}");
        let check = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(&xsd)
            .arg(&file)
            .output()
            .expect("xmllint (libxml2-utils; scripts/test.sh installs it)");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(outdir.join(format!("{name}.sha256"))).unwrap(),
            tongban::connectors::file::checksum_line(&name, text.as_bytes())
        );
        sums.insert(bank.clone(), sha256(&file));
    }

    // A file gone from the directory (the bank took it, or lost it): a
    // build does not send it again; `--resend` writes it again, byte for
    // byte, and makes no new batch.
    let (bank, digest) = sums.iter().next().unwrap();
    let name = format!("TB-2026-11-{bank}-0001.pain001.xml");
    std::fs::remove_file(outdir.join(&name)).unwrap();
    std::fs::remove_file(outdir.join(format!("{name}.sha256"))).unwrap();
    let out = run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    assert!(
        out.contains(&format!("2026-11: {} batches (0 new)", want.len())),
        "{out}"
    );
    assert!(!out.contains("written to"), "{out}");
    assert!(!outdir.join(&name).exists());
    let batch_id = name.trim_end_matches(".pain001.xml");
    let o = support::run(&[
        "payouts", "build", "--config", cfg, "--period", "2026-11", "--resend", batch_id,
    ]);
    assert!(!o.status.success(), "a resend without a reason is refused");
    let resend = |reason: &str| {
        support::run(&[
            "payouts", "build", "--config", cfg, "--period", "2026-11", "--resend", batch_id,
            "--reason", reason, "--actor", "ops-li",
        ])
    };
    let o = resend("the bank lost it");
    let (out, err) = support::text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out.matches("written to").count(), 1, "{out}");
    assert_eq!(&sha256(&outdir.join(&name)), digest);
    assert!(store
        .audit()
        .await
        .unwrap()
        .iter()
        .any(|a| a.action == "resend_file"
            && a.actor == "ops-li"
            && a.subject == format!("batch {batch_id}")));

    // Nothing to do the third time; status lists the batches.
    let out = run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    assert!(!out.contains("written to"), "{out}");
    let out = run_ok(&["payouts", "status", "--config", cfg, "--period", "2026-11"]);
    let total: i64 = want.values().map(|w| w.1).sum();
    assert!(
        out.contains(&format!(
            "{} batches, {payments} payments, {} yuan",
            want.len(),
            tongban::formats::pain::amount(total)
        )),
        "{out}"
    );
    // A bad period is refused with a reason.
    let o = support::run(&["payouts", "build", "--config", cfg, "--period", "2026-13"]);
    assert!(!o.status.success());
    assert!(support::text(&o).1.contains("2026-13"));

    // The register and the file disagree (as if a payment changed after the
    // file went out): a resend is refused (a dead letter, for an operator),
    // and neither the file nor a half-written one is left in the bank's
    // directory.
    std::fs::remove_file(outdir.join(&name)).unwrap();
    std::fs::remove_file(outdir.join(format!("{name}.sha256"))).unwrap();
    let real = store.written(batch_id).await.unwrap().unwrap();
    assert_eq!(&real, digest);
    store.mark_written(batch_id, &"0".repeat(64)).await.unwrap();
    let o = resend("the bank lost it again");
    let (out, err) = support::text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("its file would differ from the one sent"),
        "{out}{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(batch_id))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The sample month's payout list ingested, the hub running and recording
/// the payment instructions, and the month's batch files built: the
/// sample's records, the hub process and the store.
async fn month_built(
    dir: &std::path::Path,
) -> (
    Vec<serde_json::Value>,
    std::process::Child,
    tongban::store::Store,
) {
    let cfg = dir.to_str().unwrap();
    let lines = support::payouts::ingest_sample(cfg);
    let paid = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .count();
    let hub = support::hub::run_logged(dir, &[]);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::payouts::recorded(&store, paid).await;
    run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    (lines, hub, store)
}

#[tokio::test]
async fn bank_results_are_reconciled_and_a_duplicate_file_raises_an_alarm() {
    let d = support::copy_config();
    let dir = d.path();
    let cfg = dir.to_str().unwrap();
    let (lines, mut hub, store) = month_built(dir).await;
    let paid: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .collect();

    // The bank: every account open, but one closed.
    let bank = tongban::sim::bank::Bank::new(&dir.join("var/bank"));
    let closed = "6228480012345678903";
    support::payouts::open_accounts(&bank, &lines, closed);
    assert_eq!(bank.poll_once().unwrap(), 4, "one file per bank");

    // The running hub reads the answers and reconciles them.
    let results = support::payouts::all_results(&store, paid.len()).await;
    let of = |res: &str| support::payouts::tally(&results, res);
    let closed_fen: i64 = paid
        .iter()
        .filter(|v| v["bank_account_no"] == closed)
        .map(|v| v["amount_fen"].as_i64().unwrap())
        .sum();
    let all_fen: i64 = paid.iter().map(|v| v["amount_fen"].as_i64().unwrap()).sum();
    let n_closed = paid
        .iter()
        .filter(|v| v["bank_account_no"] == closed)
        .count() as i64;
    assert_eq!(of("REJECTED"), (n_closed, closed_fen));
    assert_eq!(
        of("ACCEPTED"),
        (paid.len() as i64 - n_closed, all_fen - closed_fen)
    );
    // Each result goes on towards the two-subsidies system.
    support::eventually(
        Duration::from_secs(30),
        "results queued for the subsidies system",
        || async {
            let c = store.counts().await.unwrap();
            c.messages("subsidies.payout_results", tongban::store::status::PENDING)
                == paid.len() as i64
        },
    )
    .await;

    // The bank gets a batch file a second time (say, resent by hand): it
    // refuses it whole, nothing is paid twice, and the alarm names the batch.
    let processed = dir.join("var/bank/out/processed");
    let name = std::fs::read_dir(&processed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".pain001.xml"))
        .unwrap();
    let batch_id = name.trim_end_matches(".pain001.xml").to_string();
    let bytes = std::fs::read(processed.join(&name)).unwrap();
    tongban::connectors::file::write_with_checksum(
        &dir.join("var/bank/out"),
        &format!("again-{name}"),
        &bytes,
    )
    .unwrap();
    assert_eq!(bank.poll_once().unwrap(), 1);
    support::payouts::alarm(&store, &batch_id, "file_refused").await;
    assert!(bank.paid_twice().is_empty());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());

    let out = run_ok(&["payouts", "status", "--config", cfg, "--period", "2026-11"]);
    assert!(
        out.contains(&format!(
            "ALARM {batch_id} file_refused: AM05: the bank refused the file as a duplicate"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "rejected {n_closed} / {}",
            tongban::formats::pain::amount(closed_fen)
        )),
        "{out}"
    );
    // The results are still the first file's: the duplicate changed nothing.
    assert_eq!(store.results("2026-11").await.unwrap(), results);

    // Re-issue: never for an accepted payment; the rejected ones, with the
    // corrected account, go out again in a new batch and are paid once.
    let id_of = |v: &serde_json::Value| {
        format!(
            "{}-{}-{}",
            v["subsidy_type"].as_str().unwrap(),
            v["holder_id"].as_str().unwrap(),
            v["period"].as_str().unwrap().replace('-', "")
        )
    };
    let accepted = paid
        .iter()
        .find(|v| v["bank_account_no"] != closed)
        .unwrap();
    let o = support::run(&[
        "payouts",
        "reissue",
        &id_of(accepted),
        "--reason",
        "x",
        "--config",
        cfg,
    ]);
    assert!(!o.status.success());
    assert!(
        support::text(&o).1.contains("never paid again"),
        "{:?}",
        support::text(&o)
    );
    let new_account = "6217000000000000004";
    for v in paid.iter().filter(|v| v["bank_account_no"] == closed) {
        let out = run_ok(&[
            "payouts",
            "reissue",
            &id_of(v),
            "--reason",
            "account corrected after AC04",
            "--account",
            new_account,
            "--actor",
            "ops-wang",
            "--config",
            cfg,
        ]);
        assert!(out.contains("re-issued"), "{out}");
        bank.account(
            new_account,
            v["account_name"].as_str().unwrap(),
            tongban::sim::bank::AccountState::Open,
        );
    }
    let out = run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    assert!(out.contains("(1 new)"), "{out}");
    let mut hub = support::hub::run_logged(dir, &[]);
    assert_eq!(bank.poll_once().unwrap(), 1);
    support::eventually(
        Duration::from_secs(60),
        "the re-issued payments accepted",
        || async {
            let r = store.results("2026-11").await.unwrap();
            r.iter()
                .filter(|x| x.result.as_deref() == Some("ACCEPTED"))
                .map(|x| x.payments)
                .sum::<i64>()
                == paid.len() as i64
        },
    )
    .await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
    assert!(bank.paid_twice().is_empty(), "nobody paid twice");
    let credited: i64 = bank
        .credited()
        .keys()
        .map(|id| {
            paid.iter().find(|v| &id_of(v) == id).unwrap()["amount_fen"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(credited, all_fen, "everyone paid exactly what is due");
    let audit = store.audit().await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "reissue" && a.actor == "ops-wang")
            .count() as i64,
        n_closed
    );
}

#[tokio::test]
async fn a_batch_made_before_a_crash_gets_its_file_at_the_next_build() {
    let d = support::copy_config();
    let dir = d.path();
    let cfg = dir.to_str().unwrap();
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    let input = support::root().join("tests/data/payouts.jsonl");
    let mut rows = Vec::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["amount_fen"].as_i64() > Some(0) {
            let instr = serde_json::json!({
                "payment_id": format!("{}-{}-202611", v["subsidy_type"].as_str().unwrap(), v["holder_id"].as_str().unwrap()),
                "holder_id": v["holder_id"], "period": "2026-11", "amount_fen": v["amount_fen"], "currency": "CNY",
                "creditor_name": v["account_name"], "creditor_account": v["bank_account_no"],
                "creditor_bank_code": v["bank_code"], "remittance_info": "两项补贴 2026-11",
            });
            rows.push(tongban::payout::payment_row(&serde_json::to_vec(&instr).unwrap()).unwrap());
        }
    }
    store.record_payments(rows).await.unwrap();
    // The batches are made, then the process dies before writing files.
    let made = store
        .build_batches("2026-11", 50_000, "2026-11-23T10:00:00")
        .await
        .unwrap();
    drop(store);
    let out = run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    assert!(
        out.contains(&format!("{} batches (0 new)", made.len())),
        "{out}"
    );
    assert_eq!(
        out.matches("earlier, written to").count(),
        made.len(),
        "{out}"
    );
    for b in &made {
        let text = std::fs::read_to_string(
            dir.join("var/bank/out")
                .join(format!("{}.pain001.xml", b.batch_id)),
        )
        .unwrap();
        assert!(
            text.contains("<CreDtTm>2026-11-23T10:00:00</CreDtTm>"),
            "the batch's own time"
        );
    }
}

#[tokio::test]
async fn a_file_delivered_but_not_acknowledged_before_a_crash_is_not_sent_again_and_is_paid_once() {
    use tongban::dispatch::Sink;
    let d = support::copy_config();
    let dir = d.path();
    let (cfg, diags) = tongban::config::Config::load(dir);
    let cfg = cfg.unwrap_or_else(|| panic!("{diags:?}"));
    let store = std::sync::Arc::new(
        tongban::store::Store::open("sqlite://var/tongban.db", dir)
            .await
            .unwrap(),
    );
    let lines = support::payouts::ingest_sample(dir.to_str().unwrap());
    let hub = support::hub::run_logged(dir, &[]);
    let paid = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .count();
    support::payouts::recorded(&store, paid).await;
    let mut hub = hub;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());

    let plan = tongban::payout::build(&cfg, &store, "2026-11", None, None)
        .await
        .unwrap();
    assert_eq!(plan.queued, plan.batches.len());
    let sink = tongban::payout::FilesSink::new(
        store.clone(),
        cfg.hub.payouts.clone(),
        plan.bank.clone(),
        None,
    );
    let target = plan.bank.files_target();
    let lease = Duration::from_millis(200);
    let outdir = dir.join("var/bank/out");
    // Delivered, then the process dies before the outbox hears of it.
    let first = store.claim(&target, 100, lease).await.unwrap();
    assert_eq!(first.len(), plan.batches.len());
    let mut sums = BTreeMap::new();
    for m in &first {
        sink.deliver(m).await.unwrap();
    }
    for b in &plan.batches {
        sums.insert(
            b.batch_id.clone(),
            sha256(&outdir.join(format!("{}.pain001.xml", b.batch_id))),
        );
    }
    // One file's checksum file was never written (the process died
    // between placing the file and writing it): the bank does not take
    // that file; it takes and pays the others meanwhile.
    let (late, _) = sums.iter().next().unwrap();
    let late_sum = outdir.join(format!("{late}.pain001.xml.sha256"));
    std::fs::remove_file(&late_sum).unwrap();
    let bank = tongban::sim::bank::Bank::new(&dir.join("var/bank"));
    support::payouts::open_accounts(&bank, &lines, "none closed");
    assert_eq!(bank.poll_once().unwrap(), plan.batches.len() - 1);

    // After the lease, the same messages are claimed again (same
    // idempotency keys). The register knows each file was sent (its
    // digest): nothing is sent again, so the bank never sees the hub's own
    // retry as a duplicate; the file left without its checksum file gets
    // it now, with the digest of the bytes sent.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let again = store.claim(&target, 100, lease).await.unwrap();
    assert_eq!(
        again.iter().map(|m| &m.idem_key).collect::<Vec<_>>(),
        first.iter().map(|m| &m.idem_key).collect::<Vec<_>>()
    );
    for m in &again {
        let d = sink.deliver(m).await.unwrap();
        let excerpt = d.excerpt.unwrap_or_default();
        assert!(excerpt.starts_with("already sent to"), "{excerpt}");
        let finished = excerpt.contains("checksum file written now");
        assert_eq!(
            finished,
            m.payload.windows(late.len()).any(|w| w == late.as_bytes()),
            "{excerpt}"
        );
    }
    let name = format!("{late}.pain001.xml");
    assert_eq!(
        std::fs::read_to_string(&late_sum).unwrap(),
        tongban::connectors::file::checksum_line(
            &name,
            &std::fs::read(outdir.join(&name)).unwrap()
        )
    );
    for (id, sum) in &sums {
        assert_eq!(store.written(id).await.unwrap().as_ref(), Some(sum));
    }
    // The bank takes the last file once; no file was refused as a
    // duplicate, nobody is paid twice, everyone is paid.
    assert_eq!(bank.poll_once().unwrap(), 1);
    assert_eq!(bank.poll_once().unwrap(), 0);
    for e in std::fs::read_dir(dir.join("var/bank/in"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        assert!(!text.contains("AM05"), "{}", e.path().display());
    }
    assert!(bank.paid_twice().is_empty());
    assert_eq!(bank.credited().len(), paid);

    // A build after the restart makes no batch and queues no file; every
    // payment is in exactly one batch.
    let plan2 = tongban::payout::build(&cfg, &store, "2026-11", None, None)
        .await
        .unwrap();
    assert!(plan2.new.is_empty());
    assert_eq!(plan2.queued, 0);
    let mut seen = std::collections::HashSet::new();
    for b in &plan2.batches {
        for p in store.batch_payments(&b.batch_id).await.unwrap() {
            assert!(seen.insert(p.payment_id), "a payment in two batches");
        }
    }
    assert_eq!(seen.len(), paid);
}

/// The bank answers MD07 (the account holder has died): the register
/// raises an alarm (the ID number masked) and the person's subsidies are
/// stopped as a death, with the death's one idempotency key.
#[tokio::test]
async fn a_holder_the_bank_reports_deceased_raises_an_alarm_and_stops_the_subsidies() {
    let d = support::copy_config();
    let dir = d.path();
    let (lines, mut hub, store) = month_built(dir).await;
    let paid: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .collect();

    let bank = tongban::sim::bank::Bank::new(&dir.join("var/bank"));
    support::payouts::open_accounts(&bank, &lines, "");
    let dead = paid[0];
    let holder = dead["holder_id"].as_str().unwrap();
    bank.account(
        dead["bank_account_no"].as_str().unwrap(),
        dead["account_name"].as_str().unwrap(),
        tongban::sim::bank::AccountState::Deceased,
    );
    bank.poll_once().unwrap();
    let results = support::payouts::all_results(&store, paid.len()).await;
    let deceased = paid.iter().filter(|v| v["holder_id"] == holder).count() as i64;
    assert_eq!(support::payouts::tally(&results, "REJECTED").0, deceased);

    support::eventually(Duration::from_secs(30), "the stop queued", || async {
        store
            .messages("subsidies.stop", tongban::store::status::PENDING, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.key == holder)
    })
    .await;
    let stops = store
        .messages("subsidies.stop", tongban::store::status::PENDING, 10)
        .await
        .unwrap();
    let effect = tongban::store::effect_key("subsidies.stop", &format!("stop:DECEASED:{holder}"));
    assert!(
        stops
            .iter()
            .all(|m| m.key == holder && m.idem_key == effect),
        "one person, one death: {:?}",
        stops
            .iter()
            .map(|m| (&m.key, &m.idem_key))
            .collect::<Vec<_>>()
    );
    let v: serde_json::Value = serde_json::from_slice(&stops[0].payload).unwrap();
    assert_eq!(v["reason"], "DECEASED");
    assert_eq!(v["effective_month"], "2026-12");
    let alarms = store.alarms().await.unwrap();
    let alarm = alarms
        .iter()
        .find(|a| a.kind == "holder_deceased")
        .expect("a holder_deceased alarm");
    assert!(
        !alarm.detail.contains(holder) && alarm.detail.contains("MD07"),
        "{}",
        alarm.detail
    );
    // And the register holds the person's payments from that month: the
    // refused payment is not re-issued into a new batch, to another account
    // or the same.
    support::eventually(Duration::from_secs(30), "the hold delivered", || async {
        store
            .messages(
                "payout_register.holds",
                tongban::store::status::DELIVERED,
                10,
            )
            .await
            .unwrap()
            .iter()
            .any(|m| m.key == holder)
    })
    .await;
    let refused = format!("{}-{holder}-202611", dead["subsidy_type"].as_str().unwrap());
    store
        .reissue(&refused, None, "ops", "the bank says the holder died")
        .await
        .unwrap();
    let again = store
        .build_batches("2026-11", 1000, "2026-11-25T10:00:00")
        .await
        .unwrap();
    assert!(again.is_empty(), "a held payment went into {again:?}");
    assert!(
        store
            .alarms()
            .await
            .unwrap()
            .iter()
            .any(|a| a.kind == "paid_after_stop"
                && a.detail.contains("did not pay it")
                && !a.detail.contains(holder)),
        "the held payment named, masked"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
}
