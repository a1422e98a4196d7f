//! The shipped configuration: it loads without errors, every feed's test
//! cases pass, every feed has cases of both kinds, and every sample maps.

mod support;

use tongban::config::{Config, Expect};
use tongban::mapping::Outcome;

#[test]
fn shipped_config_loads_and_every_mapping_test_case_passes() {
    let (cfg, diags) = tongban::hub::load(&support::root());
    let cfg = cfg.unwrap_or_else(|| panic!("shipped config has errors:\n{diags}"));
    assert!(cfg.mappings.len() >= 10, "the reference feeds are shipped");
    let mut failures = Vec::new();
    for m in cfg.mappings.values() {
        assert!(
            m.tests
                .iter()
                .any(|t| matches!(t.expect, Expect::Output(_))),
            "{}: no expected-output case",
            m.name
        );
        for r in m.run_tests() {
            if let Some(f) = r.failure {
                failures.push(format!(
                    "{} ({}:{}): {}\n{f}",
                    r.name,
                    m.file.display(),
                    r.line,
                    m.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reference_feeds_reject_what_the_issue_names() {
    let (cfg, _) = Config::load(&support::root());
    let cfg = cfg.unwrap();
    let rejects: Vec<(String, String)> = cfg
        .mappings
        .values()
        .flat_map(|m| {
            m.tests.iter().filter_map(move |t| match &t.expect {
                Expect::Reject { part, .. } => Some((m.name.clone(), format!("{} {part}", t.name))),
                _ => None,
            })
        })
        .collect();
    let has = |needle: &str| {
        rejects
            .iter()
            .any(|(_, t)| t.to_lowercase().contains(needle))
    };
    assert!(
        has("check digit") || has("checksum"),
        "a bad ID checksum case: {rejects:?}"
    );
    assert!(
        has("certificate number"),
        "an invalid certificate number case"
    );
    assert!(has("bank card") || has("luhn"), "a bad bank card case");
    assert!(
        has("missing required field"),
        "a missing required field case"
    );
}

#[test]
fn every_sample_maps_without_rejections() {
    let (cfg, _) = Config::load(&support::root());
    let cfg = cfg.unwrap();
    // Every feed of every source must be exercised by a sample.
    let samples = [
        ("applications.jsonl", "provincial_platform.applications"),
        ("certificate_events.jsonl", "national_cert.events"),
        ("payouts.jsonl", "subsidies.payout_list"),
        ("payment_results.jsonl", "bank.payment_results"),
        ("civil_events.jsonl", "civil_affairs.events"),
        ("subsidy_decisions.jsonl", "subsidies.decisions"),
        ("pension_decisions.jsonl", "pension.decisions"),
        ("employment_decisions.jsonl", "employment.decisions"),
    ];
    for (file, op) in samples {
        let text = std::fs::read_to_string(support::root().join("tests/data").join(file)).unwrap();
        let feeds: Vec<_> = cfg
            .mappings
            .values()
            .filter(|m| m.from.to_string() == op)
            .collect();
        assert!(!feeds.is_empty(), "no feed reads {op}");
        for m in feeds {
            let mut mapped = 0;
            for (i, line) in text.lines().enumerate() {
                match m.decode_json(line.as_bytes()).and_then(|d| m.apply(&d)) {
                    Ok(Outcome::Mapped { .. }) => mapped += 1,
                    Ok(Outcome::Filtered) => {}
                    Err(e) => panic!("{file}:{}: {}: {e}", i + 1, m.name),
                }
            }
            assert!(mapped > 0, "{}: no sample record maps", m.name);
        }
    }
}
