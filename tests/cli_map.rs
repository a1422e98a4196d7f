//! `tongban map`: good records to stdout, one clear error line per bad
//! record to stderr, the others mapped, exit 1 when any was rejected.

mod support;

use std::io::Write;
use std::process::Stdio;
use support::text;

#[test]
fn bad_records_are_reported_one_line_each_and_the_rest_are_mapped() {
    let o = support::run(&[
        "map",
        "--mapping",
        "certificate_issued_to_card_load",
        "tests/data/bad/certificate_events.jsonl",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["EV-000001", "EV-000002", "EV-000004"]);
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        "record 2 (line 2): input: EOF while parsing a value (column 39)",
        "record 3 (line 3): input field `holder_name`: expected string, found an integer",
        "record 4 (line 4): input field `holder_id`: missing required field",
        "record 5 (line 5): field `social_security_no`: invalid ID number 110105********0011: check character is 1, expected 7",
        "record 6 (line 6): field `certificate_no`: invalid certificate number 110105**********1781: category 8 is not 1–7",
        "record 7 (line 7): input field `kind`: \"ISSUEDX\" is not one of ISSUED,",
        "record 8 (line 8): input: not valid UTF-8 (bad byte at column 39)",
        "record 10 (line 11): input field `valid_until`: expected a date YYYY-MM-DD",
        "certificate_issued_to_card_load: mapped 3, filtered 0, rejected 8",
    ];
    assert_eq!(lines.len(), expect.len(), "{err}");
    for (l, e) in lines.iter().zip(expect) {
        assert!(l.starts_with(e), "got {l:?}\nwant {e:?}");
    }
    // Personal data never appears unmasked in error lines.
    for id in ["110105199003070011", "11010519900307001781"] {
        assert!(!err.contains(id), "{err}");
    }
}

#[test]
fn a_10_mb_line_is_rejected_and_the_next_record_still_maps() {
    let good = std::fs::read_to_string(support::root().join("tests/data/certificate_events.jsonl"))
        .unwrap();
    let first = good.lines().next().unwrap();
    let big = format!("{{\"event_id\":\"{}\"}}", "x".repeat(10 << 20));
    let mut child = support::tongban()
        .args(["map", "-m", "certificate_issued_to_card_load", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = format!("{first}\n{big}\n{first}\n");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(out.lines().count(), 2);
    assert!(
        err.starts_with(
            "record 2 (line 2): input: the record is 10485775 bytes, over the limit of 1048576"
        ),
        "{err}"
    );
}

#[test]
fn xml_documents_map_and_a_malformed_one_is_reported() {
    let o = support::run(&[
        "map",
        "-m",
        "card_result_to_application_status",
        "tests/data/card_results.xml",
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1]["status"], "CARD_REFUSED");
    assert_eq!(
        recs[1]["message"],
        "社保卡加载失败 card refused: 本人尚未申领社保卡 no card issued"
    );
    let o = support::run(&[
        "map",
        "-m",
        "card_result_to_application_status",
        "tests/data/bad/card_results.xml",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(out.lines().count(), 2);
    assert!(
        err.starts_with(
            "record 2 (line 11): input: malformed XML: element <CertificateResult> is not closed"
        ),
        "{err}"
    );
}

#[test]
fn unknown_mapping_and_missing_file_are_usage_errors() {
    let o = support::run(&["map", "-m", "nope", "tests/data/payouts.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o)
        .1
        .contains("no mapping \"nope\"; have: application_to_cert_application,"));
    let o = support::run(&[
        "map",
        "-m",
        "payout_to_payment_instruction",
        "tests/data/none.jsonl",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("cannot open tests/data/none.jsonl"));
}

#[test]
fn mapped_output_is_exact() {
    let o = support::run(&[
        "map",
        "-m",
        "payout_to_payment_instruction",
        "tests/data/payouts.jsonl",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"payment_id":"LIVING-110105199003070017-202611","subsidy_type":"LIVING","holder_id":"110105199003070017",
            "period":"2026-11","amount_fen":11000,"currency":"CNY","creditor_name":"张三","creditor_account":"6217001234567890122",
            "creditor_bank_code":"105100000017","remittance_info":"困难残疾人生活补贴 2026-11","region_code":"110105"})
    );
    assert!(err.contains("mapped 6, filtered 2, rejected 0"), "{err}");
}

#[test]
fn output_keeps_input_order_and_record_numbers_across_batches() {
    // ~6 MB: several batches, mapped on every core, written back in order.
    let mut rng = tongban::synth::Rng::new(9);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let mut input = String::new();
    let n = 10_000u64;
    for i in 0..n {
        if i == 7_777 || i == 123 {
            input.push_str("{\"event_id\": \"broken\"\n");
        }
        let p = tongban::synth::person(&mut rng);
        input.push_str(&tongban::synth::issued_event(&mut rng, &p, i, day).to_string());
        input.push('\n');
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &input).unwrap();
    let o = support::run(&[
        "map",
        "-m",
        "certificate_issued_to_card_load",
        file.path().to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = (0..n).map(|i| format!("EV-{i:08}")).collect();
    assert_eq!(ids, want);
    let errs: Vec<&str> = err.lines().collect();
    assert!(
        errs[0].starts_with("record 124 (line 124): input:"),
        "{err}"
    );
    assert!(
        errs[1].starts_with("record 7779 (line 7779): input:"),
        "{err}"
    );
    assert_eq!(
        errs[2],
        "certificate_issued_to_card_load: mapped 10000, filtered 0, rejected 2"
    );
}
