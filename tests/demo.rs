//! `tongban demo` end to end: the simulated systems with faults on, the hub
//! on the embedded store, a few hundred applicants (some bad): exit 0,
//! every invariant of report.json true, every feed moving, every rejected
//! record explained, and no unmasked ID or bank card number in the log.

mod support;

#[test]
fn the_demo_runs_the_whole_chain_and_its_invariants_hold() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::tongban()
        .args(["demo", "--people", "600", "--timeout", "180s", "--workdir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = support::text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["people"], 600);
    let inv = report["invariants"].as_object().unwrap();
    assert!(inv.len() >= 6, "{inv:?}");
    for (name, ok) in inv {
        assert_eq!(ok, true, "invariant {name}: {stdout}");
    }
    let feed = |name: &str| {
        report["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feed"] == name)
            .cloned()
            .unwrap()
    };
    assert!(
        feed("certificate_issued_to_card_load")["delivered_to_target"]
            .as_i64()
            .unwrap()
            > 500
    );
    assert!(
        feed("application_to_cert_application")["quarantined"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert!(report["payout_list"]["items"].as_i64().unwrap() > 0);
    // The bank leg: each month paid, the closed accounts re-issued, none twice.
    for inv in [
        "each_month_paid_exactly_what_the_rules_give",
        "each_month_payout_list_follows_the_rules",
        "no_payment_paid_twice",
    ] {
        assert!(report["invariants"].get(inv).is_some(), "missing {inv}");
    }
    let bank = &report["bank"];
    assert!(bank["batches"].as_u64().unwrap() >= 2, "{bank}");
    assert!(bank["paid"].as_u64().unwrap() > 0, "{bank}");
    assert_eq!(bank["rejected_first"], bank["reissued"], "{bank}");
    assert_eq!(bank["paid_twice"], 0);
    let pain_files = walk(&dir.path().join("var"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .count();
    assert!(
        pain_files >= 2,
        "batch files under the workdir: {pain_files}"
    );
    assert!(!report["rejected"].as_object().unwrap().is_empty());
    // Faults were injected and survived.
    let injected: u64 = report["simulators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["faults_injected"].as_u64().unwrap())
        .sum();
    assert!(injected > 0);

    // Personal data stays masked in the log and in the report.
    let id_or_card = regex::Regex::new(r"\d{17}[\dX]|\d{16,19}").unwrap();
    for file in ["hub.log", "report.json"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(!text.is_empty() || file == "hub.log");
        if let Some(m) = id_or_card.find(&text) {
            panic!(
                "{file} has an unmasked number: …{}…",
                &text[m.start().saturating_sub(80)..m.end()]
            );
        }
    }
    assert!(stdout.contains("each_eligible_card_loaded_exactly_once"));

    // Deadlines: some applications overdue, some due soon, some late, each
    // one as the model says (the invariant).
    let d = &report["deadlines"];
    for k in ["overdue", "due_soon", "late"] {
        assert!(d[k].as_i64().unwrap() > 0, "{k}: {d}");
    }
    assert_eq!(d["breaches_reported"], d["breaches_in_the_model"], "{d}");
    assert!(inv.contains_key("every_deadline_breach_reported_and_real"));

    // Three months by default, and the month after them listed: each
    // month's changes made (the second month's include lifting the first
    // month's freezes), each month's payments made.
    let months = report["months"].as_array().unwrap();
    let periods: Vec<&str> = months
        .iter()
        .map(|m| m["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods.len(), 4, "{periods:?}");
    for w in periods.windows(2) {
        let next = chrono::NaiveDate::parse_from_str(&format!("{}-01", w[0]), "%Y-%m-%d")
            .unwrap()
            .checked_add_months(chrono::Months::new(1))
            .unwrap();
        assert_eq!(next.format("%Y-%m").to_string(), w[1]);
    }
    for m in &months[..3] {
        assert_eq!(m["paid_as_the_rules_give"], true, "{m}");
        assert!(m["listed"].as_u64().unwrap() > 0, "{m}");
        for kind in [
            "died (registered)",
            "frozen",
            "re-assessed",
            "lost and reissued",
            "低保 changed",
        ] {
            assert!(
                m["changes_after_the_payouts"][kind].as_u64().unwrap() > 0,
                "{kind}: {m}"
            );
        }
    }
    assert!(
        months[1]["changes_after_the_payouts"]["unfrozen"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(months[3].get("batches").is_none(), "{}", months[3]);
    // Two provinces by default: Shandong's own hub and systems beside the
    // main one's, people moving there every month, each month paid by the
    // person's province (the old one in the month of the move).
    assert_eq!(report["provinces"], serde_json::json!(["main", "Shandong"]));
    assert_eq!(inv["each_month_paid_by_the_persons_province"], true);
    for m in &months[..3] {
        assert!(
            m["changes_after_the_payouts"]["moved to Shandong (migrated)"]
                .as_u64()
                .unwrap()
                > 0,
            "{m}"
        );
    }
    let shandong = |m: &serde_json::Value| m["by_province"][1]["listed"].as_u64().unwrap();
    assert_eq!(months[0]["by_province"][1]["province"], "Shandong");
    assert!(shandong(&months[0]) > 0);
    let later = report["later_applications"]["filed"].as_u64().unwrap();
    assert!(later > 0);
    // People died and were frozen: the lists shrink.
    assert!(months[3]["listed"].as_u64() < months[0]["listed"].as_u64());
}

/// Runs the demo on an edited copy of the shipped configuration (`edit`
/// changes it in place) for `months` months; asserts that it fails, and
/// returns the invariants that failed, its report and its output.
fn failing_demo(
    months: &str,
    edit: impl FnOnce(&std::path::Path),
) -> (Vec<String>, serde_json::Value, String) {
    let config = support::copy_config();
    edit(config.path());
    let dir = tempfile::tempdir().unwrap();
    let out = support::tongban()
        .args(["demo", "--people", "300", "--months", months])
        .args(["--timeout", "180s", "--workdir"])
        .arg(dir.path())
        .arg("--config")
        .arg(config.path())
        .output()
        .unwrap();
    let (stdout, stderr) = support::text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let failed = report["invariants"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| **v != true)
        .map(|(k, _)| k.clone())
        .collect();
    (failed, report, stdout)
}

/// A deadline set wrong on purpose (3 working days made 30): the hub's
/// register no longer reports the breaches the rules give, and the demo
/// fails on that invariant.
#[test]
fn the_demo_fails_when_a_deadline_is_set_wrong() {
    let (failed, _, stdout) = failing_demo("1", |dir| {
        support::edit(
            dir,
            "connectors/deadlines.toml",
            "[stages.RECEIVED]\nworking_days = 3",
            "[stages.RECEIVED]\nworking_days = 30",
        )
    });
    assert!(
        stdout.contains("FAIL every_deadline_breach_reported_and_real"),
        "{stdout}"
    );
    assert_eq!(
        failed,
        ["every_deadline_breach_reported_and_real"],
        "{stdout}"
    );
}

/// Without the feed that holds a dead person's payments in the payout
/// register, the payments made after a death registered late raise no
/// alarm, and the demo fails on that invariant alone.
#[test]
fn the_demo_fails_when_late_deaths_are_not_held() {
    let (failed, report, stdout) = failing_demo("2", |dir| {
        std::fs::remove_file(dir.join("mappings/death_to_payout_hold.toml")).unwrap()
    });
    assert_eq!(
        failed,
        ["every_payment_after_a_death_alarmed_for_recovery"],
        "{stdout}"
    );
    assert!(
        report["months"][1]["paid_after_a_death_registered_late"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// A stop edited to take effect in the month of the freeze or the
/// cancellation instead of the next (于次月取消补贴发放): the months
/// already paid are taken back from the lists, and the demo fails on the
/// payout invariants, and only on those.
#[test]
fn the_demo_fails_when_subsidies_stop_in_the_same_month() {
    let (failed, _, stdout) = failing_demo("2", |dir| {
        support::edit(
            dir,
            "mappings/certificate_cancelled_to_subsidy_stop.toml",
            "effective_month = \"period(add_months(first_of_month(date(event.occurred_at)), 1))\"",
            "effective_month = \"period(date(event.occurred_at))\"",
        )
    });
    assert_eq!(
        failed,
        [
            "each_month_paid_exactly_what_the_rules_give",
            "each_month_payout_list_follows_the_rules"
        ],
        "{stdout}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The new province made to pay from the month of the move, not the next:
/// the month of the move is then listed by both provinces (twice what the
/// rules give), and the demo fails on the lists and on the province
/// invariant.
#[test]
fn the_demo_fails_when_a_move_is_paid_by_both_provinces() {
    let (failed, _, stdout) = failing_demo("2", |dir| {
        support::edit(
            dir,
            "mappings/certificate_issued_to_subsidy_eligibility.toml",
            "period(add_months(first_of_month(date(event.occurred_at)), 1))",
            "period(date(event.occurred_at))",
        )
    });
    assert_eq!(
        failed,
        [
            "each_month_paid_by_the_persons_province",
            "each_month_paid_exactly_what_the_rules_give",
            "each_month_payout_list_follows_the_rules"
        ],
        "{stdout}"
    );
}

/// The certificate's status sent to every platform the event reaches, not
/// only to the one the form was filed on: the household province's
/// platform hears of applications filed in Zichuan (跨省通办) that it never
/// had, and the demo fails on the status invariant alone.
#[test]
fn the_demo_fails_when_answers_go_to_the_wrong_platform() {
    let (failed, report, stdout) = failing_demo("1", |dir| {
        support::edit(
            dir,
            "mappings/certificate_event_to_application_status.toml",
            " && serves(coalesce(event.application.filed_in_region_code, event.region_code))",
            "",
        )
    });
    assert!(report["filed_in_another_province"].as_u64().unwrap() > 0);
    assert_eq!(
        failed,
        ["every_certified_applicant_sees_the_status"],
        "{stdout}"
    );
}
