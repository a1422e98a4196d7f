//! The bank simulator: payment files in, pain.002 status reports out,
//! through a shared directory. Its account book refuses closed, blocked,
//! unknown and deceased holders' accounts and names that do not match
//! (a partly accepted file: PART); a file it already processed is refused
//! whole as a duplicate (AM05) and nothing is paid twice; a file whose
//! totals do not match is refused (FF01); a half-written file waits. Also
//! as a process: `tongban sim bank --dir`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tongban::formats::pain::*;
use tongban::sim::bank::{AccountState, Bank};

const ACCOUNTS: [(&str, &str, AccountState, Option<&str>); 7] = [
    ("6217000000000000004", "张三", AccountState::Open, None),
    ("6222000000000000004", "李四", AccountState::Open, None),
    (
        "6234567890123451",
        "王五",
        AccountState::Closed,
        Some("AC04"),
    ),
    (
        "6217001234567890122",
        "赵六",
        AccountState::Blocked,
        Some("AC06"),
    ),
    (
        "6228480012345678903",
        "孙七",
        AccountState::Deceased,
        Some("MD07"),
    ),
    (
        "6212260000111122222",
        "周八",
        AccountState::Open,
        Some("BE01"),
    ),
    (
        "6236680000999988885",
        "吴九",
        AccountState::Open,
        Some("AC01"),
    ),
];

fn batch(msg_id: &str, lie_about_total: bool) -> Vec<u8> {
    let transfers: Vec<Transfer> = ACCOUNTS
        .iter()
        .enumerate()
        .map(|(i, (acct, name, _, code))| Transfer {
            end_to_end_id: format!("LIVING-{i}-2026-11"),
            amount_fen: 41_000 + i as i64,
            // BE01: the file names someone else.
            creditor_name: if *code == Some("BE01") {
                "别人".into()
            } else {
                name.to_string()
            },
            creditor_account: acct.to_string(),
            creditor_bank: Some("105100000017".into()),
            remittance: "困难残疾人生活补贴 2026-11".into(),
        })
        .collect();
    let total: i64 = transfers.iter().map(|t| t.amount_fen).sum();
    let declared = if lie_about_total { total + 1 } else { total };
    let mut w = Pain001Writer::start(
        Vec::new(),
        Version::V03,
        GroupHeader {
            msg_id: msg_id.into(),
            created: "2026-11-23T10:00:00".into(),
            count: transfers.len() as i64,
            total_fen: declared,
            initiator: "tongban".into(),
        },
    )
    .unwrap();
    w.block(PaymentBlock {
        id: msg_id.into(),
        execution_date: "2026-11-25".into(),
        debtor_name: "某省财政厅".into(),
        debtor_account: "110010000000000000001".into(),
        debtor_bank: "105100000017".into(),
        count: transfers.len() as i64,
        total_fen: declared,
    })
    .unwrap();
    // The writer refuses to write totals that lie; write the honest file,
    // then make it lie, as a broken sender would.
    for t in &transfers {
        w.transfer(t).ok();
    }
    match w.finish() {
        Ok(b) => b,
        Err(_) => {
            let honest = batch(msg_id, false);
            String::from_utf8(honest)
                .unwrap()
                .replacen(
                    &format!("<CtrlSum>{}</CtrlSum>", amount(total)),
                    &format!("<CtrlSum>{}</CtrlSum>", amount(total + 1)),
                    1,
                )
                .into_bytes()
        }
    }
}

fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir.join("out")).unwrap();
    tongban::connectors::file::write_with_checksum(&dir.join("out"), name, bytes).unwrap();
}

fn answer(dir: &Path, name: &str) -> (StatusReport, Vec<TxStatus>) {
    let mut txs = Vec::new();
    let bytes = std::fs::read(dir.join("in").join(name)).unwrap();
    let r = read_pain002(bytes.as_slice(), |t| txs.push(t)).unwrap();
    (r, txs)
}

#[test]
fn the_bank_pays_by_its_book_and_refuses_duplicates_and_bad_totals() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let bank = Bank::new(dir);
    for (acct, name, state, code) in ACCOUNTS {
        if code != Some("AC01") {
            bank.account(acct, name, state);
        }
    }
    // Half-written: no checksum file yet.
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/TB-0.pain001.xml"), b"<Document>").unwrap();
    drop_file(
        dir,
        "TB-1.pain001.xml",
        &batch("TB-2026-11-105100000017-0001", false),
    );
    assert_eq!(bank.poll_once().unwrap(), 1, "only the complete file");
    assert!(dir.join("out/TB-0.pain001.xml").exists());

    let (r, txs) = answer(dir, "TB-2026-11-105100000017-0001.pain002.xml");
    assert_eq!(r.original_msg_id, "TB-2026-11-105100000017-0001");
    assert_eq!(r.group_status.as_deref(), Some("PART"));
    assert_eq!(r.original_count, Some(7));
    let got: HashMap<String, (String, Option<String>)> = txs
        .into_iter()
        .map(|t| (t.end_to_end_id, (t.status, t.reason)))
        .collect();
    for (i, (_, _, _, code)) in ACCOUNTS.iter().enumerate() {
        let (status, reason) = &got[&format!("LIVING-{i}-2026-11")];
        match code {
            None => assert_eq!((status.as_str(), reason), ("ACSC", &None)),
            Some(c) => assert_eq!((status.as_str(), reason.as_deref()), ("RJCT", Some(*c))),
        }
    }
    assert_eq!(bank.credited().len(), 2);

    // The same file again (a resend after a crash): refused whole, AM05.
    drop_file(
        dir,
        "TB-1-again.pain001.xml",
        &batch("TB-2026-11-105100000017-0001", false),
    );
    assert_eq!(bank.poll_once().unwrap(), 1);
    let answers: Vec<String> = std::fs::read_dir(dir.join("in"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pain002.xml") && n != "TB-2026-11-105100000017-0001.pain002.xml")
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (r, txs) = answer(dir, &answers[0]);
    assert_eq!(
        (r.group_status.as_deref(), r.group_reason.as_deref()),
        (Some("RJCT"), Some("AM05"))
    );
    assert!(txs.is_empty());
    assert!(bank.paid_twice().is_empty(), "nothing paid twice");
    assert_eq!(bank.common.ledger.lock().unwrap().repeats, 0);

    // Totals that do not match the transfers: refused whole, FF01.
    drop_file(
        dir,
        "TB-2.pain001.xml",
        &batch("TB-2026-11-105100000017-0002", true),
    );
    assert_eq!(bank.poll_once().unwrap(), 1);
    let (r, _) = answer(dir, "TB-2026-11-105100000017-0002.pain002.xml");
    assert_eq!(r.group_reason.as_deref(), Some("FF01"));
    assert_eq!(bank.credited().len(), 2);
}

#[tokio::test]
async fn the_bank_process_answers_files_dropped_in_its_directory() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("bank");
    let mut child = support::tongban()
        .args(["sim", "bank", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop_file(
        &dir,
        "TB-9.pain001.xml",
        &batch("TB-2026-11-105100000017-0009", false),
    );
    // The answer is written before the file read moves aside: wait for both.
    let want = dir.join("in/TB-2026-11-105100000017-0009.pain002.xml.sha256");
    let moved = dir.join("out/processed/TB-9.pain001.xml.sha256");
    support::eventually(Duration::from_secs(20), "the bank's answer", || async {
        want.exists() && moved.exists()
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // An empty account book: every account open, all paid.
    let (r, txs) = answer(&dir, "TB-2026-11-105100000017-0009.pain002.xml");
    assert_eq!(r.group_status.as_deref(), Some("ACSC"));
    assert_eq!(txs.len(), 7);
    assert!(dir.join("out/processed/TB-9.pain001.xml").exists());
}
