//! Fuzz targets, on stable Rust: every parser and compiler that takes
//! outside input, fed for a bounded time (`TONGBAN_FUZZ_SECONDS` each,
//! default 3; `.ci/run` gives each 30) with inputs made by proptest: real
//! samples (the corpus: `tests/data`, the shipped connectors, mappings and
//! layouts, files the hub's own writers make) mutated byte by byte, and
//! arbitrary bytes and text.
//!
//! Each target asserts what must hold whatever the input: no panic; every
//! rejection names the record's part or field; no valid ID number or bank
//! card in any error text; round trips give back what went in; the
//! validators agree with a reference model written from the standards.
//! A failure is shrunk to a minimal input and its seed kept in
//! `tests/fuzz/regressions/<target>.txt`, replayed first on every run; what
//! a target found is also kept as a named test at the end of this file.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, FileFailurePersistence, TestError, TestRunner};
use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tongban::config::Config;

/// The time each target runs.
fn budget() -> Duration {
    let s = std::env::var("TONGBAN_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

/// Runs `test` on inputs from `strategy` until the budget is spent, 256
/// cases a round, each round from a fresh random seed; the seeds of
/// failures are kept and replayed first.
fn fuzz<S>(name: &'static str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let deadline = Instant::now() + budget();
    let path: &'static str =
        Box::leak(format!("tests/fuzz/regressions/{name}.txt").into_boxed_str());
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(RunConfig {
            cases: 256,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
            source_file: Some("tests/fuzz.rs"),
            max_shrink_time: 30_000,
            ..RunConfig::default()
        });
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                panic!("{name}: {why}\nminimal input: {input:?}\n(seed kept in {path})")
            }
            Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
        }
        cases += 256;
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("{name}: {cases} cases in {:.1} s", budget().as_secs_f64());
}

/// The shipped configuration (the repository's connectors, mappings,
/// schemas), loaded once.
fn shipped() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let (cfg, diags) = Config::load(&support::root());
        cfg.unwrap_or_else(|| panic!("the shipped configuration loads: {diags}"))
    })
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(support::root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn lines(path: &str) -> Vec<Vec<u8>> {
    read(path)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect()
}

/// Bytes that break parsers more often than random ones do.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"<",
    b">",
    b"&",
    b"/",
    b"=",
    b"'",
    b"\0",
    b"\xff",
    b"\xe4\xb8\xad",
    b"\xe4",
    b"99999999999999999999",
    b"-1",
    b"1e400",
    b"null",
    b"<!DOCTYPE x [<!ENTITY a \"b\">]>",
    b"]]>",
    b"&#x0;",
    b"&amp;",
    b"<![CDATA[",
    b"\r\n",
    b"110105199003070017",
    b"6217000000000000004",
    b"\"\xe4\xb8\xad\xe6\x96\x87\"",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// Flips bits of the byte at a place (a fraction of the length).
    Flip(u16, u8),
    /// Inserts a token.
    Token(u16, usize),
    /// Inserts random bytes.
    Insert(u16, Vec<u8>),
    /// Removes up to n bytes.
    Delete(u16, u8),
    /// Cuts the input short.
    Truncate(u16),
    /// Repeats a stretch.
    Repeat(u16, u8, u8),
}

impl Mutation {
    fn apply(&self, b: &mut Vec<u8>) {
        let at = |f: u16, len: usize| (f as usize * (len + 1)) / 65536;
        match self {
            Mutation::Flip(f, x) if !b.is_empty() => {
                let i = at(*f, b.len() - 1);
                b[i] ^= x.max(&1);
            }
            Mutation::Flip(..) => {}
            Mutation::Token(f, t) => {
                let i = at(*f, b.len());
                let t = TOKENS[t % TOKENS.len()];
                b.splice(i..i, t.iter().copied());
            }
            Mutation::Insert(f, bytes) => {
                let i = at(*f, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(f, n) => {
                let i = at(*f, b.len());
                let j = (i + *n as usize).min(b.len());
                b.drain(i..j);
            }
            Mutation::Truncate(f) => b.truncate(at(*f, b.len())),
            Mutation::Repeat(f, n, times) => {
                let i = at(*f, b.len());
                let j = (i + *n as usize).min(b.len());
                let piece = b[i..j].to_vec();
                for _ in 0..(*times % 8) {
                    b.splice(j..j, piece.iter().copied());
                }
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(f, x)| Mutation::Flip(f, x)),
        (any::<u16>(), any::<usize>()).prop_map(|(f, t)| Mutation::Token(f, t)),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(f, b)| Mutation::Insert(f, b)),
        (any::<u16>(), any::<u8>()).prop_map(|(f, n)| Mutation::Delete(f, n)),
        any::<u16>().prop_map(Mutation::Truncate),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(f, n, t)| Mutation::Repeat(f, n, t)),
    ]
}

/// A corpus input with a few mutations, or (one time in eight) any bytes.
fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!corpus.is_empty());
    let n = corpus.len();
    prop_oneof![
        7 => (0..n, prop::collection::vec(mutation(), 0..6)).prop_map(move |(i, ms)| {
            let mut b = corpus[i].clone();
            for m in &ms {
                m.apply(&mut b);
            }
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..600),
    ]
}

/// Maximal runs of digits and `X` in `text` that are valid ID numbers,
/// certificate numbers' holders or bank cards: what masking must hide.
fn personal_in(text: &str) -> Option<String> {
    let mut run = String::new();
    let mut found = None;
    let mut check = |run: &str| {
        let id = (run.len() == 18 || run.len() == 20)
            && tongban::domain::ResidentId::parse(&run[..18]).is_ok();
        let card = tongban::domain::luhn::validate_card(run).is_ok();
        if id || card {
            found = Some(run.to_string());
        }
    };
    for c in text.chars() {
        if c.is_ascii_digit() || c == 'X' || c == 'x' {
            run.push(c);
        } else {
            check(&run);
            run.clear();
        }
    }
    check(&run);
    found
}

fn no_personal(text: &str) -> Result<(), TestCaseError> {
    match personal_in(text) {
        Some(p) => Err(TestCaseError::fail(format!(
            "personal data in the clear ({p}) in: {text}"
        ))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- intake

#[test]
fn json_intake_quarantines_what_it_cannot_read_and_names_the_part() {
    let cfg = shipped();
    let source = "provincial_platform.applications";
    let p = tongban::pipeline::Pipeline::new(cfg, source).unwrap();
    let feeds = cfg
        .mappings
        .values()
        .filter(|m| m.from.to_string() == source)
        .count();
    fuzz(
        "json_intake",
        mutated(lines("tests/data/applications.jsonl")),
        |raw| {
            let ingest = p.record_as(&raw, Some("f.jsonl:1".into()), None);
            prop_assert!(!ingest.source_id.is_empty());
            prop_assert_eq!(&ingest.record, &raw, "kept as received");
            // Each feed made at most one thing of it: a message or a
            // quarantine row (or nothing: its `when` left it out).
            let mut by: Vec<&str> = ingest
                .messages
                .iter()
                .map(|m| m.mapping.as_str())
                .chain(ingest.quarantine.iter().map(|q| q.mapping.as_str()))
                .collect();
            by.sort_unstable();
            let n = by.len();
            by.dedup();
            prop_assert_eq!(n, by.len(), "one outcome per feed");
            prop_assert!(n <= feeds);
            for q in &ingest.quarantine {
                prop_assert!(
                    q.reason.starts_with("input") || !q.part.is_empty(),
                    "a rejection names its part: {:?}",
                    q
                );
                no_personal(&q.reason)?;
            }
            Ok(())
        },
    );
}

#[test]
fn intake_through_the_store_stores_each_record_once_whatever_the_bytes() {
    let cfg = shipped();
    let p = tongban::pipeline::Pipeline::new(cfg, "provincial_platform.applications").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt
        .block_on(tongban::store::Store::open("sqlite://fuzz.db", dir.path()))
        .unwrap();
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    fuzz(
        "intake_store",
        prop::collection::vec(mutated(lines("tests/data/applications.jsonl")), 1..20),
        |records| {
            let batch: Vec<_> = records
                .iter()
                .enumerate()
                .map(|(i, r)| p.record_as(r, Some(format!("f.jsonl:{i}")), None))
                .collect();
            let mut seen = seen.lock().unwrap();
            let new: std::collections::HashSet<String> = batch
                .iter()
                .map(|i| i.source_id.clone())
                .filter(|id| !seen.contains(id))
                .collect();
            let before = rt.block_on(store.inbox_len()).unwrap();
            let out = rt.block_on(store.ingest(batch.clone())).unwrap();
            let after = rt.block_on(store.inbox_len()).unwrap();
            prop_assert_eq!(out.stored, new.len(), "each new record stored once");
            prop_assert_eq!(out.stored + out.duplicates, batch.len(), "none lost");
            prop_assert_eq!(after - before, new.len() as i64);
            let again = rt.block_on(store.ingest(batch)).unwrap();
            prop_assert_eq!(again.stored, 0, "a record read again stores nothing");
            seen.extend(new);
            Ok(())
        },
    );
}

#[test]
fn xml_records_of_any_text_are_read_or_refused_with_a_reason() {
    let cfg = shipped();
    let m = cfg
        .mappings
        .values()
        .find(|m| m.from.to_string() == "sscard.results")
        .expect("a feed of sscard.results");
    let ty = m.source_type().clone();
    let text = String::from_utf8(read("tests/data/card_results.xml")).unwrap();
    let corpus: Vec<Vec<u8>> = tongban::formats::xml::split_documents(&text)
        .into_iter()
        .map(|(_, d)| d.as_bytes().to_vec())
        .collect();
    fuzz("xml_records", mutated(corpus), |raw| {
        let Ok(doc) = std::str::from_utf8(&raw) else {
            return Ok(());
        };
        match tongban::formats::xml::document_to_json(doc, &ty) {
            Ok(v) => {
                // What was read maps (or is refused) without a panic.
                let json = serde_json::to_vec(&v).unwrap();
                if let Ok(d) = m.decode_json(&json) {
                    let _ = m.apply(&d);
                }
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(!e.is_empty());
                no_personal(&e)?;
            }
        }
        Ok(())
    });
}

// ------------------------------------------------------------ bank files

fn pain002_samples() -> Vec<Vec<u8>> {
    use tongban::formats::pain::{write_pain002, StatusReport, TxStatus};
    let report = StatusReport {
        msg_id: "RPT-1".into(),
        original_msg_id: "2026-12-102100099996-001".into(),
        original_count: Some(2),
        original_total_fen: Some(150_000),
        group_status: Some("PART".into()),
        group_reason: None,
    };
    let txs = vec![
        TxStatus {
            end_to_end_id: "L-110105199003070017-2026-12".into(),
            status: "ACSC".into(),
            reason: None,
        },
        TxStatus {
            end_to_end_id: "C-2".into(),
            status: "RJCT".into(),
            reason: Some("AC04".into()),
        },
    ];
    vec![write_pain002(Vec::new(), &report, "2026-12-05T10:00:00", txs).unwrap()]
}

#[test]
fn pain002_of_any_bytes_is_read_or_refused_and_round_trips() {
    use tongban::formats::pain::{read_pain002, write_pain002, StatusReport, TxStatus};
    fuzz("pain002_read", mutated(pain002_samples()), |raw| {
        let mut n = 0usize;
        match read_pain002(&raw[..], |_| n += 1) {
            Ok(_) => {}
            Err(e) => no_personal(&e.to_string())?,
        }
        Ok(())
    });
    let id = "[A-Za-z0-9-]{1,35}";
    let tx = (
        id,
        "ACCP|ACSC|RJCT|PDNG",
        proptest::option::of("[A-Z]{2}[0-9]{2}"),
    )
        .prop_map(|(end_to_end_id, status, reason)| TxStatus {
            end_to_end_id,
            status,
            reason,
        });
    let report = (
        id,
        id,
        proptest::option::of(0i64..1_000_000),
        proptest::option::of(0i64..1_000_000_000_000),
        proptest::option::of("ACCP|PART|RJCT"),
        proptest::option::of("AM05|FF01"),
    )
        .prop_map(|(m, o, c, t, s, r)| StatusReport {
            msg_id: m,
            original_msg_id: o,
            original_count: c,
            original_total_fen: t,
            group_status: s,
            group_reason: r,
        });
    fuzz(
        "pain002_round_trip",
        (report, prop::collection::vec(tx, 0..20)),
        |(report, txs)| {
            let doc =
                write_pain002(Vec::new(), &report, "2026-12-05T10:00:00", txs.clone()).unwrap();
            let mut back = Vec::new();
            let read = read_pain002(&doc[..], |t| back.push(t)).unwrap();
            prop_assert_eq!(read, report);
            prop_assert_eq!(back, txs);
            Ok(())
        },
    );
}

#[derive(Clone, Debug)]
struct Pay {
    id: String,
    fen: i64,
    name: String,
    account: String,
    remittance: String,
}

fn pain001(version: tongban::formats::pain::Version, pays: &[Pay]) -> Vec<u8> {
    use tongban::formats::pain::{GroupHeader, Pain001Writer, PaymentBlock, Transfer};
    let total: i64 = pays.iter().map(|p| p.fen).sum();
    let mut w = Pain001Writer::start(
        Vec::new(),
        version,
        GroupHeader {
            msg_id: "2026-12-102100099996-001".into(),
            created: "2026-12-05T10:00:00".into(),
            count: pays.len() as i64,
            total_fen: total,
            initiator: "某市残疾人联合会".into(),
        },
    )
    .unwrap();
    w.block(PaymentBlock {
        id: "B-1".into(),
        execution_date: "2026-12-10".into(),
        debtor_name: "某市残疾人联合会".into(),
        debtor_account: "1100000000000000001".into(),
        debtor_bank: "102100099996".into(),
        count: pays.len() as i64,
        total_fen: total,
    })
    .unwrap();
    for p in pays {
        w.transfer(&Transfer {
            end_to_end_id: p.id.clone(),
            amount_fen: p.fen,
            creditor_name: p.name.clone(),
            creditor_account: p.account.clone(),
            creditor_bank: Some("102100099996".into()),
            remittance: p.remittance.clone(),
        })
        .unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn pain001_round_trips_amounts_names_and_accounts_exactly() {
    use tongban::formats::pain::{read_pain001, Version};
    let pay = (
        "[A-Za-z0-9-]{1,35}",
        1i64..10_000_000_000,
        "[\\p{Han}A-Za-z &<>\"'·]{1,70}",
        "[0-9]{16,19}",
        "[\\p{Han}A-Za-z0-9 &<>-]{1,140}",
    )
        .prop_map(|(id, fen, name, account, remittance)| Pay {
            id,
            fen,
            name: name
                .trim()
                .chars()
                .take(70)
                .collect::<String>()
                .replace("  ", " "),
            account,
            remittance: remittance.trim().to_string(),
        })
        .prop_filter("names and remittances not blank", |p| {
            !p.name.trim().is_empty() && !p.remittance.trim().is_empty()
        });
    fuzz(
        "pain001_round_trip",
        (any::<bool>(), prop::collection::vec(pay, 1..30)),
        |(v9, pays)| {
            let version = if v9 { Version::V09 } else { Version::V03 };
            let doc = pain001(version, &pays);
            let mut back = Vec::new();
            let header = read_pain001(&doc[..], |t| back.push(t)).unwrap();
            prop_assert_eq!(header.count, Some(pays.len() as i64));
            prop_assert_eq!(
                header.total_fen,
                Some(pays.iter().map(|p| p.fen).sum::<i64>())
            );
            prop_assert_eq!(back.len(), pays.len());
            for (t, p) in back.iter().zip(&pays) {
                prop_assert_eq!(&t.end_to_end_id, &p.id);
                prop_assert_eq!(t.amount_fen, Some(p.fen));
                prop_assert_eq!(&t.currency, "CNY");
                prop_assert_eq!(&t.creditor_name, &p.name);
                prop_assert_eq!(&t.creditor_account, &p.account);
            }
            Ok(())
        },
    );
    let sample = pain001(
        Version::V03,
        &[Pay {
            id: "L-1".into(),
            fen: 12_345,
            name: "张三".into(),
            account: "6217000000000000004".into(),
            remittance: "2026-12 生活补贴".into(),
        }],
    );
    fuzz("pain001_read", mutated(vec![sample]), |raw| {
        if let Err(e) = read_pain001(&raw[..], |_| {}) {
            no_personal(&e.to_string())?;
        }
        Ok(())
    });
}

#[test]
fn layout_result_files_of_any_bytes_are_read_or_refused_by_line() {
    let layout = tongban::formats::layout::Layout::load(
        &support::root().join("layouts/bank_fixed_gbk.toml"),
    )
    .unwrap();
    let delimited = tongban::formats::layout::Layout::load(
        &support::root().join("layouts/bank_delimited_utf8.toml"),
    )
    .unwrap();
    let sample = |l: &tongban::formats::layout::Layout| {
        let value = |name: &str| -> Option<String> {
            Some(
                match name {
                    n if n.contains("count") => "2",
                    n if n.contains("amount") || n.contains("total") || n.contains("fen") => {
                        "150000"
                    }
                    n if n.contains("date") => "20261210",
                    n if n.contains("result") || n.contains("status") => "ACCEPTED",
                    n if n.contains("reason") => "AC04",
                    n if n.contains("name") => "张三",
                    n if n.contains("account") => "6217000000000000004",
                    n if n.contains("bank") => "102100099996",
                    _ => "2026-12-102100099996-001",
                }
                .to_string(),
            )
        };
        let mut out = Vec::new();
        let r = &l.results;
        let mut line = 1;
        if !r.header.is_empty() {
            let _ = l.write_line(&r.header, line, &value, &mut out);
            line += 1;
        }
        for _ in 0..2 {
            let _ = l.write_line(&r.detail, line, &value, &mut out);
            line += 1;
        }
        if !r.trailer.is_empty() {
            let _ = l.write_line(&r.trailer, line, &value, &mut out);
        }
        out
    };
    let corpus = vec![sample(&layout), sample(&delimited)];
    fuzz("layout_results", mutated(corpus), |raw| {
        for l in [&layout, &delimited] {
            if let Err(e) = l.read_file(&l.results, &raw) {
                let e = format!("{e:?}");
                no_personal(&e)?;
            }
        }
        Ok(())
    });
}

// --------------------------------------------------------------- webhooks

#[test]
fn a_webhook_signature_passes_only_for_the_request_signed() {
    use tongban::config::connector::MacAlgorithm;
    use tongban::connectors::http::sign::Signer;
    let signer = Signer::new("platform", b"hook-secret", MacAlgorithm::HmacSm3);
    let other = Signer::new("platform", b"another-secret", MacAlgorithm::HmacSha256);
    let now = 1_800_000_000_000i64;
    let window = 300_000i64;
    fuzz(
        "webhook_signature",
        (
            "/[a-z/]{0,30}(\\?[a-z=&0-9]{0,20})?",
            prop::collection::vec(any::<u8>(), 0..300),
            -2 * window..2 * window,
            0usize..7,
            any::<u8>(),
            prop::collection::vec(".{0,80}", 4),
        ),
        |(path, body, skew, change, x, junk)| {
            let ts = now + skew;
            let headers = signer.sign("POST", &path, &body, ts);
            fn get<'h>(h: &'h [(String, String); 4]) -> impl Fn(&str) -> Option<&'h str> {
                move |name| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
            }
            let ok = signer
                .verify("POST", &path, &body, get(&headers), now, window)
                .map(|n| n.len());
            prop_assert_eq!(ok.is_ok(), skew.abs() <= window, "{:?}", ok);
            // One change anywhere and it fails.
            let mut h = headers.clone();
            let mut b = body.clone();
            let mut p = path.clone();
            let flip = |s: &mut String| {
                let mut v = s.clone().into_bytes();
                if v.is_empty() {
                    v.push(b'a');
                } else {
                    let i = x as usize % v.len();
                    v[i] = if v[i] == b'0' { b'1' } else { b'0' };
                }
                *s = String::from_utf8_lossy(&v).into_owned();
            };
            match change {
                0 => b.push(x),
                1 => p.push('x'),
                2 => flip(&mut h[1].1), // timestamp
                3 => flip(&mut h[2].1), // nonce
                4 => flip(&mut h[3].1), // signature
                5 => flip(&mut h[0].1), // app key
                _ => h = other.sign("POST", &path, &body, ts),
            }
            let changed = signer.verify("POST", &p, &b, get(&h), now, window);
            prop_assert!(changed.is_err(), "change {} passed: {:?}", change, h);
            // Headers of any text: refused without a panic.
            let junk_h: [(String, String); 4] = [
                (headers[0].0.clone(), junk[0].clone()),
                (headers[1].0.clone(), junk[1].clone()),
                (headers[2].0.clone(), junk[2].clone()),
                (headers[3].0.clone(), junk[3].clone()),
            ];
            let _ = signer.verify("POST", &path, &body, get(&junk_h), now, window);
            Ok(())
        },
    );
}

// -------------------------------------------------- mappings and config

/// Expressions made of the mapping language's words, in any order.
fn expression(root: &'static str) -> impl Strategy<Value = String> {
    let words: Vec<String> = [
        root,
        ".",
        "id_no",
        "name",
        "birth",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "+",
        "-",
        "*",
        "/",
        "%",
        "==",
        "!=",
        "<",
        ">=",
        "&&",
        "||",
        "!",
        "?",
        ":",
        ",",
        "'x'",
        "\"中\"",
        "1",
        "0",
        "-9223372036854775808",
        "9223372036854775807",
        "1.5",
        "true",
        "false",
        "null",
        "size",
        "trim",
        "has",
        "int",
        "string",
        "matches",
        "lookup",
        "valid_id",
        "in",
        " ",
        "'1101'",
        "b'ab'",
        "1u",
        "0x7f",
        "\\",
        "'",
        "\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(words), 1..14).prop_map(|w| w.concat()),
        1 => ".{0,60}",
    ]
}

#[test]
fn the_mapping_compiler_refuses_any_expression_it_cannot_type_with_its_part() {
    use tongban::mapping::{MappingSource, Program};
    let cfg = shipped();
    let m = cfg
        .mappings
        .get("application_to_cert_application")
        .expect("the shipped feed");
    let samples: Vec<_> = lines("tests/data/applications.jsonl")
        .iter()
        .filter_map(|l| m.decode_json(l).ok())
        .collect();
    let tables = Default::default();
    let fields: Vec<String> = m
        .target
        .record
        .fields
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    fuzz(
        "mapping_compiler",
        (
            expression("a"),
            proptest::option::of(expression("a")),
            prop::collection::vec((prop::sample::select(fields), expression("a")), 0..4),
        ),
        |(key, when, exprs)| {
            let fs: Vec<(&str, &str)> = exprs
                .iter()
                .map(|(f, e)| (f.as_str(), e.as_str()))
                .collect();
            let src = MappingSource {
                root_name: "a",
                source: m.source.record.clone(),
                target: m.target.record.clone(),
                when: when.as_deref(),
                key: &key,
                idempotency: None,
                fields: fs,
            };
            match Program::compile(&src, &tables) {
                Ok(p) => {
                    for d in &samples {
                        if let Err(e) = p.run(d) {
                            prop_assert!(!e.part.is_empty(), "{:?}", e);
                            no_personal(&e.message)?;
                        }
                    }
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for e in &errors {
                        // Each error names its part (when, key or a field)
                        // and says what is wrong, at a place inside it.
                        prop_assert!(!e.part.to_string().is_empty(), "{:?}", e);
                        prop_assert!(!e.message.is_empty(), "{:?}", e);
                        let text = match e.part.to_string().as_str() {
                            "when" => when.clone().unwrap_or_default(),
                            "key" => key.clone(),
                            f => exprs
                                .iter()
                                .filter(|(n, _)| n == f)
                                .map(|(_, x)| x.clone())
                                .next_back()
                                .unwrap_or_default(),
                        };
                        if let Some(o) = e.offset {
                            prop_assert!(o <= text.len(), "offset {} past {:?}: {:?}", o, text, e);
                        }
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn connector_and_hub_files_of_any_text_load_or_are_refused() {
    let root = support::root();
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(root.join("connectors"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "toml").then(|| std::fs::read(p).unwrap())
        })
        .collect();
    corpus.push(read("tongban.toml"));
    corpus.push(read("docker/tongban.compose.toml"));
    fuzz("config_toml", mutated(corpus), |raw| {
        let Ok(text) = std::str::from_utf8(&raw) else {
            return Ok(());
        };
        if let Ok(spec) = toml::from_str::<tongban::config::ConnectorSpec>(text) {
            let _ = tongban::connectors::settings::of(&spec, &root);
        }
        let _ = toml::from_str::<tongban::config::HubConfig>(text);
        Ok(())
    });
}

#[test]
fn secret_references_are_read_exactly_and_never_echo_a_value() {
    use tongban::config::Secret;
    fuzz(
        "secret_references",
        prop_oneof![
            "\\$\\{(env|file):[A-Za-z0-9_/.-]{0,20}\\}",
            ".{0,40}",
            "\\$\\{env:.{0,10}\\}",
        ],
        |s| {
            match Secret::parse(&s) {
                Ok(r) => prop_assert_eq!(r.to_string(), s.clone(), "read exactly"),
                Err(e) => {
                    let e = e.to_string();
                    if s.len() >= 4 {
                        prop_assert!(!e.contains(&s), "the value echoed: {}", e);
                    }
                }
            }
            // Debug output is the reference, never a resolved value.
            if let Ok(r) = Secret::parse(&s) {
                prop_assert_eq!(format!("{r:?}"), s);
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------ validators

/// GB 11643-1999, written from the standard: weights 2^(17-i) mod 11, check
/// character `(12 - S mod 11) mod 11` with 10 as `X`; a birth date that is
/// a real day from 1850 to today (China time); a province of GB/T 2260.
fn reference_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = (0..17)
        .map(|i| u32::from(b[i] - b'0') * (1u32 << (17 - i)) % 11)
        .sum();
    let check = (12 - sum % 11) % 11;
    let want = if check == 10 {
        b'X'
    } else {
        b'0' + check as u8
    };
    if b[17].to_ascii_uppercase() != want {
        return false;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    let Some(date) = chrono::NaiveDate::from_ymd_opt(n(6..10) as i32, n(10..12), n(12..14)) else {
        return false;
    };
    let today = tongban::domain::china_now().date_naive();
    let provinces = [
        11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51,
        52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
    ];
    chrono::Datelike::year(&date) >= 1850 && date <= today && provinces.contains(&n(0..2))
}

/// Luhn, written from ISO/IEC 7812: from the right, every second digit
/// doubled (less 9 above 9); the sum a multiple of 10; 16 to 19 digits.
fn reference_card(s: &str) -> bool {
    let b = s.as_bytes();
    (16..=19).contains(&b.len())
        && b.iter().all(u8::is_ascii_digit)
        && b.iter()
            .rev()
            .enumerate()
            .map(|(i, c)| {
                let d = u32::from(c - b'0');
                if i % 2 == 1 {
                    if d * 2 > 9 {
                        d * 2 - 9
                    } else {
                        d * 2
                    }
                } else {
                    d
                }
            })
            .sum::<u32>()
            % 10
            == 0
}

/// A certificate number (docs/domain.md §2): a valid ID number, a category
/// 1–7, a level 1–4, and for a reissue `B` and a number without a leading 0.
fn reference_cert(s: &str) -> bool {
    let Some(id) = s.get(..18) else { return false };
    let rest = &s.as_bytes()[18..];
    reference_id(id)
        && rest.len() >= 2
        && (b'1'..=b'7').contains(&rest[0])
        && (b'1'..=b'4').contains(&rest[1])
        && match &rest[2..] {
            [] => true,
            [b'B', n @ ..] => {
                !n.is_empty() && n[0] != b'0' && n.len() <= 9 && n.iter().all(u8::is_ascii_digit)
            }
            _ => false,
        }
}

fn id_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(11u32), Just(37), Just(14), Just(99), 0u32..100],
        0u32..10000,
        1840u32..2100,
        0u32..14,
        0u32..33,
        0u32..1000,
        prop::sample::select(b"0123456789Xx".to_vec()),
    )
        .prop_map(|(p, county, y, m, d, seq, check)| {
            let head = format!("{p:02}{county:04}{y:04}{m:02}{d:02}{seq:03}");
            // Half the time the right check character, so valid numbers come up.
            let right = tongban::domain::id::check_char(head.as_bytes());
            let c = if seq % 2 == 0 { right } else { check };
            format!("{head}{}", c as char)
        })
}

#[test]
fn the_validators_agree_with_a_reference_model() {
    use tongban::domain::{luhn, CertificateNo, ResidentId};
    fuzz(
        "validators",
        (
            prop_oneof![3 => id_like(), 1 => ".{0,22}", 1 => "[0-9Xx]{17,19}"],
            prop_oneof![
                "[0-9]{15,20}",
                "[0-9]{15,18}".prop_map(|s| {
                    let d = luhn::check_digit(s.as_bytes());
                    format!("{s}{}", d as char)
                }),
                ".{0,20}",
            ],
            (
                id_like(),
                "[0-9]{2}",
                prop_oneof![Just(String::new()), "B[0-9]{1,3}", ".{0,4}"],
            ),
        ),
        |(id, card, (holder, cl, suffix))| {
            prop_assert_eq!(
                ResidentId::parse(&id).is_ok(),
                reference_id(&id),
                "ID {}",
                id
            );
            prop_assert_eq!(
                luhn::validate_card(&card).is_ok(),
                reference_card(&card),
                "card {}",
                card
            );
            let cert = format!("{holder}{cl}{suffix}");
            prop_assert_eq!(
                CertificateNo::parse(&cert).is_ok(),
                reference_cert(&cert),
                "certificate {}",
                cert
            );
            // The error texts never hold the number.
            if let Err(e) = ResidentId::parse(&id) {
                no_personal(&e.to_string())?;
            }
            if let Err(e) = CertificateNo::parse(&cert) {
                no_personal(&e.to_string())?;
            }
            Ok(())
        },
    );
}

// ------------------------------------------------ what the targets found
//
// Each was found by the target named, shrunk, fixed, and is kept here as
// it was found (the seeds are in tests/fuzz/regressions/ too).

const ID: &str = "110105199003070017";

/// json_intake: a decode error quoted the value it refused, and with it an
/// ID number run into other text (`"110105199003070017DIBAO" is not one of
/// NONE, DIBAO, …`), into the quarantine reason.
#[test]
fn found_json_intake_quoting_an_id_number_in_a_decode_error() {
    let p =
        tongban::pipeline::Pipeline::new(shipped(), "provincial_platform.applications").unwrap();
    let line = lines("tests/data/applications.jsonl").remove(0);
    let text = String::from_utf8(line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dibao = v["dibao"].as_str().unwrap().to_string();
    let bad = text.replacen(
        &format!("\"dibao\": \"{dibao}\""),
        &format!("\"dibao\": \"{ID}DIBAO\""),
        1,
    );
    assert_ne!(bad, text, "the sample has a dibao field");
    let ingest = p.record_as(bad.as_bytes(), None, None);
    assert!(!ingest.quarantine.is_empty());
    for q in &ingest.quarantine {
        assert!(q.reason.contains("110105********0017DIBAO"), "{}", q.reason);
        assert_eq!(personal_in(&q.reason), None, "{}", q.reason);
    }
}

/// layout_results: a layout line's error quoted the field it found
/// (`found "110105199003070017HDR"`).
#[test]
fn found_a_layout_error_quoting_an_id_number() {
    let l = tongban::formats::layout::Layout::load(
        &support::root().join("layouts/bank_delimited_utf8.toml"),
    )
    .unwrap();
    let file = format!("{ID}HDR|2026-12-102100099996-001|ACCEPTED|AC04\nTRL|0|0\n");
    let e = l.read_file(&l.results, file.as_bytes()).unwrap_err();
    assert!(e.contains("110105********0017HDR"), "{e}");
    assert_eq!(personal_in(&e), None, "{e}");
}

/// pain002_read and pain001_read: the XML parser's message quoted a tag
/// with an ID number in it; and pain.001's reader called the file it read
/// a status report.
#[test]
fn found_bank_file_errors_quoting_an_id_number_and_misnaming_the_file() {
    use tongban::formats::pain::{read_pain001, read_pain002};
    let doc = format!("<Document><GrpHdr><MsgId>x</{ID}/MsgId></GrpHdr></Document>");
    let e = read_pain002(doc.as_bytes(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("the status report cannot be read"), "{e}");
    assert_eq!(personal_in(&e), None, "{e}");
    let e = read_pain001(doc.as_bytes(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("the payment file cannot be read"), "{e}");
    assert!(e.contains("110105********0017"), "{e}");
}

/// xml_records: the same in an XML record's error, with a certificate
/// number (`expected </sc:processed_at>, but </43010419850512003041…`).
#[test]
fn found_an_xml_record_error_quoting_a_certificate_number() {
    let ty = shipped()
        .mappings
        .values()
        .find(|m| m.from.to_string() == "sscard.results")
        .unwrap()
        .source_type()
        .clone();
    let doc = "<?xml version=\"1.0\"?><a><b>1</43010419850512003041></a>";
    let e = tongban::formats::xml::document_to_json(doc, &ty)
        .unwrap_err()
        .to_string();
    assert!(e.contains("430104**********3041"), "{e}");
    assert_eq!(personal_in(&e), None, "{e}");
}

/// validators: a certificate number with a character of several bytes
/// across its 18th byte made the parser cut the text inside the character
/// and panic (a record could stop its source this way).
#[test]
fn found_a_certificate_number_with_a_wide_character_panicking_the_parser() {
    let e = tongban::domain::CertificateNo::parse("11010519900307001中12").unwrap_err();
    assert_eq!(
        e.to_string(),
        "embedded ID number is invalid: character 18 is not a digit"
    );
}
