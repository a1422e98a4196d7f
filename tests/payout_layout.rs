//! Bank payouts in a bank's own layout instead of ISO 20022: the shipped
//! fixed-width GBK layout (`layouts/bank_fixed_gbk.toml`) on the bank
//! connector, the real processes (`tongban ingest`, `tongban run`,
//! `tongban payouts build`), and the bank simulator answering with the
//! layout's result files, which the running hub reconciles.

mod support;

use std::collections::BTreeMap;

use support::payouts::run_ok;

/// The bank connector switched to the fixed-width GBK layout.
fn use_layout(dir: &std::path::Path) {
    let layout = "format = \"layout\"\nlayout = \"layouts/bank_fixed_gbk.toml\"";
    support::edit(
        dir,
        "connectors/bank.toml",
        "format = \"xml\"\nfile_pattern = \"*.pain001.xml\"\nxml_root = \"Document\"\nxml_namespace = \"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"",
        &format!("{layout}\nfile_pattern = \"*.txt\""),
    );
    support::edit(
        dir,
        "connectors/bank.toml",
        "format = \"pain002\"\nfile_pattern = \"*.pain002.xml\"",
        &format!("{layout}\nfile_pattern = \"*.result.txt\""),
    );
}

#[tokio::test]
async fn payments_go_out_in_the_banks_fixed_width_gbk_layout_and_its_results_are_reconciled() {
    in_layout(false).await;
}

/// The same over SFTP: the files uploaded to a private OpenSSH server
/// serving the bank's directory, the result files read back over SFTP.
#[tokio::test]
async fn the_banks_layout_files_travel_over_sftp_too() {
    in_layout(true).await;
}

async fn in_layout(over_sftp: bool) {
    let d = support::copy_config();
    let dir = d.path();
    let cfg = dir.to_str().unwrap();
    use_layout(dir);
    let _sshd = over_sftp.then(|| {
        let sshd = tongban::sim::sshd::Sshd::start(&dir.join("var/sshd")).expect("openssh-server");
        let bank = dir.join("var/bank");
        std::fs::create_dir_all(&bank).unwrap();
        support::edit(
            dir,
            "connectors/bank.toml",
            "kind = \"file\"\ndescription = \"Payout bank channel (file drop)\"\ndirectory = \"var/bank\"",
            &format!(
                "kind = \"sftp\"\ndirectory = \"{}\"\n{}",
                bank.canonicalize().unwrap().display(),
                sshd.connector_lines()
            ),
        );
        sshd
    });
    run_ok(&["check", "--config", cfg]);
    let lines = support::payouts::ingest_sample(cfg);
    let paid: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .collect();
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for v in &paid {
        let e = want
            .entry(v["bank_code"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        e.1 += v["amount_fen"].as_i64().unwrap();
    }

    let mut hub = support::hub::run_logged(dir, &[]);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::payouts::recorded(&store, paid.len()).await;
    let out = run_ok(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    assert!(out.contains(".txt"), "{out}");
    assert_eq!(out.contains("uploaded to sftp://"), over_sftp, "{out}");

    // One file per bank, every line its layout's width in bytes, the names
    // in GBK, and the trailer's count and total those of the details.
    let outdir = dir.join("var/bank/out");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&outdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert_eq!(files.len(), want.len(), "{files:?}");
    let mut got: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut names_seen = String::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let sum = std::fs::read_to_string(format!("{}.sha256", f.display())).unwrap();
        assert!(sum.starts_with(&tongban::connectors::file::sha256_hex(&bytes)));
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "Chinese names are GBK, not UTF-8"
        );
        let text = encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(&bytes)
            .expect("GBK text");
        names_seen.push_str(&text);
        let rows: Vec<&[u8]> = bytes
            .strip_suffix(b"\n")
            .unwrap()
            .split(|&b| b == b'\n')
            .collect();
        assert!(rows.iter().all(|r| r.ends_with(b"\r")));
        let (h, details, t) = (rows[0], &rows[1..rows.len() - 1], rows[rows.len() - 1]);
        assert_eq!(h.len(), 1 + 40 + 8 + 8 + 32 + 70 + 8 + 18 + 1);
        assert_eq!(t.len(), 1 + 8 + 18 + 1);
        let mut fen = 0;
        let mut bank = String::new();
        for r in details {
            assert_eq!(r.len(), 1 + 8 + 40 + 32 + 60 + 12 + 15 + 60 + 1, "{r:?}");
            let amount = std::str::from_utf8(&r[153..168]).unwrap();
            fen += tongban::formats::pain::fen(amount.trim_start_matches('0')).unwrap();
            bank = std::str::from_utf8(&r[141..153]).unwrap().to_string();
        }
        let count: i64 = std::str::from_utf8(&t[1..9]).unwrap().parse().unwrap();
        let total: i64 = std::str::from_utf8(&t[9..27]).unwrap().parse().unwrap();
        assert_eq!((count, total), (details.len() as i64, fen));
        got.insert(bank, (count, total));
    }
    assert_eq!(got, want);
    assert!(names_seen.contains("张三"), "{names_seen}");

    // The bank, in the same layout: one account closed.
    let layout = std::sync::Arc::new(
        tongban::formats::layout::Layout::load(&dir.join("layouts/bank_fixed_gbk.toml")).unwrap(),
    );
    let bank = tongban::sim::bank::Bank::with_layout(&dir.join("var/bank"), layout);
    let closed = "6228480012345678903";
    support::payouts::open_accounts(&bank, &lines, closed);
    assert_eq!(bank.poll_once().unwrap(), want.len());
    let answers: Vec<String> = std::fs::read_dir(dir.join("var/bank/in"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        answers.iter().any(|n| n.ends_with(".result.txt")),
        "{answers:?}"
    );

    let results = support::payouts::all_results(&store, paid.len()).await;
    let of = |res: &str| support::payouts::tally(&results, res);
    let closed_paid: Vec<&&serde_json::Value> = paid
        .iter()
        .filter(|v| v["bank_account_no"] == closed)
        .collect();
    let closed_fen: i64 = closed_paid
        .iter()
        .map(|v| v["amount_fen"].as_i64().unwrap())
        .sum();
    let all_fen: i64 = paid.iter().map(|v| v["amount_fen"].as_i64().unwrap()).sum();
    assert!(!closed_paid.is_empty());
    assert_eq!(of("REJECTED"), (closed_paid.len() as i64, closed_fen));
    assert_eq!(
        of("ACCEPTED"),
        (
            (paid.len() - closed_paid.len()) as i64,
            all_fen - closed_fen
        )
    );
    assert!(store.alarms().await.unwrap().is_empty());

    // The same file again: refused whole (AM05) in the result file's header,
    // and the alarm names the batch.
    let processed = dir.join("var/bank/out/processed");
    let name = std::fs::read_dir(&processed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".txt"))
        .unwrap();
    let batch_id = name.trim_end_matches(".txt").to_string();
    let bytes = std::fs::read(processed.join(&name)).unwrap();
    tongban::connectors::file::write_with_checksum(&outdir, &format!("again-{name}"), &bytes)
        .unwrap();
    assert_eq!(bank.poll_once().unwrap(), 1);
    support::payouts::alarm(&store, &batch_id, "file_refused").await;
    assert!(bank.paid_twice().is_empty());
    assert_eq!(store.results("2026-11").await.unwrap(), results);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
}

#[test]
fn a_layout_that_names_an_unknown_value_is_refused_with_its_file_and_line() {
    let d = support::copy_config();
    let dir = d.path();
    use_layout(dir);
    support::edit(
        dir,
        "layouts/bank_fixed_gbk.toml",
        "{ value = \"creditor_name\", width = 60 },",
        "{ value = \"creditor_nam\", width = 60 },",
    );
    let o = support::run(&["check", "--config", dir.to_str().unwrap()]);
    let (out, err) = support::text(&o);
    assert!(!o.status.success());
    let all = format!("{out}{err}");
    assert!(
        all.contains("layouts/bank_fixed_gbk.toml:") && all.contains("no value \"creditor_nam\""),
        "{all}"
    );
}
