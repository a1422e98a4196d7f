//! pain.001 files as tongban writes them, validated against the official
//! ISO 20022 XSDs by a real validator (`xmllint --schema`): both versions,
//! several payment blocks, Chinese names, characters that need escaping.
//! A deliberately broken file must fail, so the validator is really used.

mod support;

use std::path::Path;
use std::process::Command;
use tongban::formats::pain::*;

fn xmllint(file: &Path, version: Version) -> (bool, String) {
    let xsd = support::root()
        .join("tests/data/iso20022")
        .join(format!("{}.xsd", version.name()));
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&xsd)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("xmllint is needed (Debian package libxml2-utils; scripts/test.sh installs it): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file(version: Version) -> Vec<u8> {
    let mut rng = tongban::synth::Rng::new(7);
    let blocks: Vec<Vec<Transfer>> = (0..3)
        .map(|b| {
            (0..40)
                .map(|i| {
                    let p = tongban::synth::person(&mut rng);
                    Transfer {
                        end_to_end_id: format!("CARE-{}-2026-11", p.id),
                        amount_fen: 7_500 + (i * 137 + b * 11) as i64,
                        creditor_name: if i == 3 {
                            "O'Brien & <Sons>".into()
                        } else {
                            p.name
                        },
                        creditor_account: p.card,
                        creditor_bank: (i % 5 != 0).then(|| p.bank_code.clone()),
                        remittance: format!("重度残疾人护理补贴 2026-11 #{i}"),
                    }
                })
                .collect()
        })
        .collect();
    let count: i64 = blocks.iter().map(|b| b.len() as i64).sum();
    let total: i64 = blocks.iter().flatten().map(|t| t.amount_fen).sum();
    let mut w = Pain001Writer::start(
        Vec::new(),
        version,
        GroupHeader {
            msg_id: "TB-2026-11-105100000017-0001".into(),
            created: "2026-11-23T10:00:00".into(),
            count,
            total_fen: total,
            initiator: "某省残疾人联合会".into(),
        },
    )
    .unwrap();
    for (i, b) in blocks.iter().enumerate() {
        w.block(PaymentBlock {
            id: format!("TB-2026-11-105100000017-0001-{i}"),
            execution_date: "2026-11-25".into(),
            debtor_name: "某省财政厅 两项补贴专户".into(),
            debtor_account: "110010000000000000001".into(),
            debtor_bank: "105100000017".into(),
            count: b.len() as i64,
            total_fen: b.iter().map(|t| t.amount_fen).sum(),
        })
        .unwrap();
        for t in b {
            w.transfer(t).unwrap();
        }
    }
    w.finish().unwrap()
}

#[test]
fn written_files_validate_against_the_official_schemas() {
    let dir = tempfile::tempdir().unwrap();
    for v in [Version::V03, Version::V09] {
        let bytes = file(v);
        let p = dir.path().join(format!("{}.xml", v.name()));
        std::fs::write(&p, &bytes).unwrap();
        let (ok, msg) = xmllint(&p, v);
        assert!(ok, "{} does not validate:\n{msg}", v.name());
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("<NbOfTxs>120</NbOfTxs>"));
        assert!(
            text.contains("O&apos;Brien &amp; &lt;Sons&gt;")
                || text.contains("O'Brien &amp; &lt;Sons&gt;")
        );
        // The other version's schema refuses it: the check is real.
        let other = if v == Version::V03 {
            Version::V09
        } else {
            Version::V03
        };
        assert!(
            !xmllint(&p, other).0,
            "{} validated against the other version",
            v.name()
        );
    }
}

#[test]
fn a_broken_file_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8(file(Version::V03)).unwrap();
    // The amount before the payment id: out of the schema's order.
    let broken = text.replacen(
        "<PmtId>",
        "<Amt><InstdAmt Ccy=\"CNY\">1.00</InstdAmt></Amt><PmtId>",
        1,
    );
    let p = dir.path().join("broken.xml");
    std::fs::write(&p, broken).unwrap();
    let (ok, msg) = xmllint(&p, Version::V03);
    assert!(!ok);
    assert!(msg.contains("Amt"), "{msg}");
}
