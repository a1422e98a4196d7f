//! Batch files delivered through the outbox by HTTP upload to the bank
//! simulator (`POST /payments/files`, bearer token, SHA-256 header), with
//! the bank down when `payouts build` first tries: the build says the files
//! are not delivered, the attempts are recorded, and the running hub's
//! files target delivers each file once when the bank is back. The bank
//! reads each file once, its bytes are the ones recorded as sent, and
//! nobody is paid twice.

mod support;

use std::time::Duration;
use tongban::store::status;

const FILES: &str = "bank_upload.payment_instructions/files";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_files_are_uploaded_through_the_outbox_and_survive_a_bank_outage() {
    let d = support::copy_config();
    let dir = d.path();
    let cfg = dir.to_str().unwrap();

    // The bank: an HTTP endpoint for payment files (down at first), the
    // result files still through the shared directory.
    let bank = tongban::sim::bank::Bank::new(&dir.join("var/bank"));
    bank.require_token("bank-secret");
    bank.common.set_faults(tongban::sim::Faults {
        error_permille: 1000,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tongban::sim::serve(listener, bank.router()));

    support::hub::write(
        dir,
        "connectors/bank.toml",
        "kind = \"file\"\ndirectory = \"var/bank\"\n\n[operations.payment_results]\ndirection = \"source\"\nschema = \"PaymentResult\"\nformat = \"pain002\"\nfile_pattern = \"*.pain002.xml\"\n",
    );
    support::hub::write(
        dir,
        "connectors/bank_upload.toml",
        &format!(
            "kind = \"http\"\nbase_url = \"http://{addr}\"\ntimeout = \"5s\"\nretry_schedule = [\"300ms\", \"600ms\", \"1s\"]\n\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:BANK_TOKEN}}\"\n\n[operations.payment_instructions]\ndirection = \"sink\"\nschema = \"PaymentInstruction\"\nformat = \"xml\"\nmethod = \"POST\"\npath = \"/payments/files\"\nxml_root = \"Document\"\nxml_namespace = \"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"\n"
        ),
    );
    support::edit(
        dir,
        "mappings/payout_to_payment_instruction.toml",
        "to   = \"bank.payment_instructions\"",
        "to   = \"bank_upload.payment_instructions\"",
    );
    let lines = support::payouts::ingest_sample(cfg);
    let paid: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .collect();
    support::payouts::open_accounts(&bank, &lines, "none closed");
    let all_fen: i64 = paid.iter().map(|v| v["amount_fen"].as_i64().unwrap()).sum();

    let env = [("BANK_TOKEN", "bank-secret")];
    let mut hub = support::hub::run_logged(dir, &env);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::eventually(Duration::from_secs(60), "instructions recorded", || async {
        store
            .messages("bank_upload.payment_instructions", status::DELIVERED, 100)
            .await
            .unwrap()
            .len()
            == paid.len()
    })
    .await;

    // The bank answers 503: the build makes the batches, tries each file
    // once and says they are not delivered.
    let o = support::tongban()
        .args(["payouts", "build", "--config", cfg, "--period", "2026-11"])
        .envs(env)
        .output()
        .unwrap();
    let (out, err) = support::text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(out.contains("4 batches (4 new)"), "{out}");
    assert!(out.contains("NOT DELIVERED YET"), "{out}");
    assert!(out.contains("503"), "{out}");
    assert!(err.contains("batch files not delivered"), "{err}");
    let waiting = store.messages(FILES, status::PENDING, 100).await.unwrap();
    assert_eq!(waiting.len(), 4, "one file message per bank, waiting");
    for m in &waiting {
        let a = store.attempts(m.id).await.unwrap();
        assert!(a.iter().all(|a| a.status_code == Some(503)), "{a:?}");
    }
    assert!(
        !dir.join("var/bank/out").exists()
            || std::fs::read_dir(dir.join("var/bank/out")).unwrap().count() == 0,
        "nothing reached the bank"
    );

    // The bank is back: the hub's files target retries and delivers; the
    // bank pays; the hub reconciles.
    bank.common.set_faults(tongban::sim::Faults::default());
    let banker = tokio::spawn(bank.clone().run());
    let results = support::payouts::all_results(&store, paid.len()).await;
    assert_eq!(
        support::payouts::tally(&results, "ACCEPTED"),
        (paid.len() as i64, all_fen)
    );
    let files = store.messages(FILES, status::DELIVERED, 100).await.unwrap();
    assert_eq!(files.len(), 4);
    for m in &files {
        let a = store.attempts(m.id).await.unwrap();
        assert!(a.len() >= 2, "retried after the outage: {a:?}");
        assert_eq!(a.last().unwrap().status_code, Some(201), "{a:?}");
    }
    // The bank read each file once, and it is the file recorded as sent.
    let processed = dir.join("var/bank/out/processed");
    let mut read = 0;
    for b in store.batches("2026-11").await.unwrap() {
        let name = format!("{}.pain001.xml", b.batch_id);
        let bytes = std::fs::read(processed.join(&name)).unwrap();
        assert_eq!(
            store.written(&b.batch_id).await.unwrap().as_deref(),
            Some(tongban::connectors::file::sha256_hex(&bytes).as_str())
        );
        let check = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(support::root().join("tests/data/iso20022/pain.001.001.03.xsd"))
            .arg(processed.join(&name))
            .output()
            .expect("xmllint (libxml2-utils; scripts/test.sh installs it)");
        assert!(check.status.success(), "{check:?}");
        read += 1;
    }
    assert_eq!(read, 4);
    let names: Vec<_> = std::fs::read_dir(&processed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pain001.xml"))
        .collect();
    assert_eq!(names.len(), 4, "no file uploaded twice: {names:?}");
    assert!(store.alarms().await.unwrap().is_empty());
    assert!(bank.paid_twice().is_empty());
    assert_eq!(bank.credited().len(), paid.len());

    // A second build finds nothing to send.
    let o = support::tongban()
        .args(["payouts", "build", "--config", cfg, "--period", "2026-11"])
        .envs(env)
        .output()
        .unwrap();
    let (out, err) = support::text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("4 batches (0 new)"), "{out}");
    assert!(!out.contains("uploaded to"), "{out}");

    banker.abort();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
}
