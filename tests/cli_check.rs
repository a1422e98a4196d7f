//! `tongban check` and `tongban test`: every configuration error is a
//! diagnostic with file:line:column, all of them reported in one run, exit
//! status 2, never a panic.

mod support;

use support::{copy_config, edit, text};

fn check(dir: &std::path::Path) -> (i32, String) {
    let o = support::run(&["check", "--config", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap_or(-1), out + &err)
}

#[test]
fn shipped_config_checks_clean() {
    let o = support::run(&["check"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("configuration OK: 23 schemas, 10 connectors, 27 mappings"),
        "{out}"
    );
    assert!(!out.contains("error:"), "{out}");
}

#[test]
fn all_errors_of_a_run_are_reported_with_positions() {
    let dir = copy_config();
    let d = dir.path();
    // Seven different mistakes in five files.
    edit(
        d,
        "mappings/certificate_issued_to_card_load.toml",
        "\"event.holder_name.trim()\"",
        "\"event.holdr_name.trim()\"",
    );
    edit(
        d,
        "mappings/certificate_issued_to_card_load.toml",
        "'RENEWED', 'REISSUED'",
        "'RENEWED', 'REISUED'",
    );
    edit(
        d,
        "mappings/certificate_issued_to_subsidy_eligibility.toml",
        "\"event.application.needs_long_term_care\"",
        "\"1\"",
    );
    edit(
        d,
        "mappings/payout_to_payment_instruction.toml",
        "lookup('subsidy_type'",
        "lookup('subsidy_types'",
    );
    edit(
        d,
        "connectors/pension.toml",
        "path = \"/api/pension/v1/enrolments\"",
        "path = \"/api/pension/v1/enrolments\"\nretries = 3",
    );
    edit(
        d,
        "connectors/employment.toml",
        "schema = \"EmploymentReferral\"",
        "schema = \"EmploymentReferal\"",
    );
    edit(
        d,
        "mappings/tables/disability_category.csv",
        "7,多重,multiple",
        "7,多重,multiple\n4,肢体,again",
    );
    let (code, out) = check(d);
    assert_eq!(code, 2, "{out}");
    let expect = [
        "mappings/certificate_issued_to_card_load.toml:23:29: error: field `name`: event: record CertificateEvent has no field `holdr_name` (did you mean `holder_name`?)",
        "mappings/certificate_issued_to_card_load.toml:14:74: error: `when`: \"REISUED\" is not a value of enum CertificateEventKind",
        "mappings/certificate_issued_to_subsidy_eligibility.toml:27:25: error: field `needs_long_term_care`: `needs_long_term_care` is bool in the target schema, but the expression gives int",
        "no table \"subsidy_types\" in mappings/tables/",
        "connectors/pension.toml:17:1: error: unknown field `retries`",
        "connectors/employment.toml:13:10: error: operation referral: no schema \"EmploymentReferal\" in schemas/",
        "mappings/tables/disability_category.csv:9:1: error: key \"4\" appears twice",
        "connector \"pension\" has errors (above)",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // Eight mistakes; the broken pension connector also holds back the
    // three feeds to and from it (each one error).
    assert!(
        out.contains("configuration has problems: 10 errors"),
        "{out}"
    );
}

#[test]
fn broken_files_never_panic() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "tongban.toml",
            "[store]",
            "[store\n",
            "tongban.toml:4:7: error: unclosed table, expected `]`",
        ),
        (
            "tongban.toml",
            "url = \"sqlite://var/tongban.db\"",
            "url = \"mysql://x\"",
            "must start with sqlite:// or postgres://",
        ),
        (
            "tongban.toml",
            "url = \"sqlite://var/tongban.db\"",
            "url = \"sqlite://var/tongban.db?cache_mb=16\"",
            "unknown option \"cache_mb=16\"",
        ),
        (
            "schemas/PayoutRecord.avsc",
            "\"long\"",
            "\"double\"",
            "floating point is not allowed",
        ),
        (
            "schemas/PayoutRecord.avsc",
            "{",
            "{{",
            "schemas/PayoutRecord.avsc:1:2: error: invalid JSON",
        ),
        (
            "schemas/SubsidyStop.avsc",
            "\"format\": \"period\"",
            "\"format\": \"month\"",
            "unknown format \"month\"",
        ),
        (
            "mappings/payout_to_payment_instruction.toml",
            "from = \"subsidies.payout_list\"",
            "from = \"subsidies.stop\"",
            "subsidies.stop is a sink operation and cannot be used as `from`",
        ),
        (
            "mappings/payout_to_payment_instruction.toml",
            "key  = \"p.holder_id\"",
            "key  = \"p.holder_id +\"",
            "syntax error",
        ),
        (
            "mappings/payout_to_payment_instruction.toml",
            "[[test]]\nname   = \"care subsidy, November\"",
            "[[test]]\nname   = \"care subsidy, November\"\nreject = \"x\"",
            "needs exactly one of expect, reject or filtered",
        ),
        (
            "mappings/payout_to_payment_instruction.toml",
            "amount_fen = 23000, currency",
            "amount_fen = \"23000\", currency",
            "`expect` does not fit PaymentInstruction: amount_fen: expected int, found a string",
        ),
        (
            "mappings/death_to_subsidy_stop.toml",
            "idempotency_key = \"concat('stop:DECEASED:', ev.id_no)\"",
            "idempotency_key = \"ev.date_of_death\"",
            "mappings/death_to_subsidy_stop.toml:12:20: error: `idempotency_key`: `idempotency_key` must be a string, found optional date",
        ),
        (
            "connectors/bank.toml",
            "directory = \"var/bank\"",
            "",
            "a file connector needs directory",
        ),
        (
            "connectors/subsidies.toml",
            "password = \"${env:SUBSIDIES_PASSWORD}\"",
            "password = \"hunter2\"",
            "secrets must be references",
        ),
    ];
    for (file, from, to, want) in cases {
        let dir = copy_config();
        edit(dir.path(), file, from, to);
        let (code, out) = check(dir.path());
        assert_eq!(code, 2, "{file}: {out}");
        assert!(out.contains(want), "{file}: want {want:?} in:\n{out}");
    }
}

#[test]
fn an_empty_directory_says_what_it_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(dir.path());
    assert_eq!(code, 2);
    assert!(
        out.contains("is not a tongban configuration directory (no tongban.toml)"),
        "{out}"
    );
}

#[test]
fn a_failing_mapping_test_prints_a_diff_and_exits_1() {
    let dir = copy_config();
    edit(
        dir.path(),
        "mappings/certificate_issued_to_card_load.toml",
        "category_name = \"肢体\", level = 1",
        "category_name = \"视力\", level = 1",
    );
    let o = support::run(&[
        "test",
        "--config",
        dir.path().to_str().unwrap(),
        "--mapping",
        "certificate_issued_to_card_load",
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "FAIL  physical disability, level 1 (mappings/certificate_issued_to_card_load.toml:31)"
        ),
        "{out}"
    );
    assert!(
        out.contains("category_name: expected \"视力\", got \"肢体\""),
        "{out}"
    );
    assert!(out.contains("8 passed, 1 failed"), "{out}");
    let o = support::run(&["test"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
}

/// A provincial hub's own jurisdiction table leaves the shipped cases
/// passing (each runs as a hub of every province, or of the provinces it
/// names); a case naming a province that does not exist is an error, and a
/// case whose expectation needs another province fails.
#[test]
fn test_cases_run_as_the_provinces_they_name() {
    let dir = copy_config();
    let d = dir.path();
    std::fs::write(
        d.join("mappings/tables/jurisdiction.csv"),
        "province,name\n37,山东省\n",
    )
    .unwrap();
    let o = support::run(&["test", "--config", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
    // The migration out of Shanxi run as Shandong's hub: not unloaded here.
    edit(
        d,
        "mappings/certificate_cancelled_to_card_unload.toml",
        "serves = [\"14\"]",
        "serves = [\"37\"]",
    );
    let o = support::run(&["test", "--config", d.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  migrated to another province: unloaded here"),
        "{out}"
    );
    edit(
        d,
        "mappings/certificate_cancelled_to_card_unload.toml",
        "serves = [\"37\"]",
        "serves = [\"99\"]",
    );
    let (code, out) = check(d);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("serves lists provinces by the two digits of GB/T 2260"),
        "{out}"
    );
}

/// The hub settings of docker/compose.yaml, with the shipped connectors,
/// mappings and schemas, pass `tongban check`.
#[test]
fn the_docker_compose_settings_check() {
    let dir = support::copy_config();
    std::fs::copy(
        support::root().join("docker/tongban.compose.toml"),
        dir.path().join("tongban.toml"),
    )
    .unwrap();
    let o = support::run(&["check", "--config", dir.path().to_str().unwrap()]);
    let (out, err) = support::text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("0 errors"), "{out}");
}

/// `check` makes the settings `run` makes: an operation the hub would
/// refuse (here Avro bodies over HTTP) is an error at its operation, not an
/// OK followed by a hub that leaves its messages waiting; and `run` refuses
/// it with the same words before it starts anything.
#[test]
fn a_target_run_would_refuse_is_an_error_of_check_and_run_refuses_it() {
    let dir = copy_config();
    let d = dir.path();
    edit(
        d,
        "connectors/employment.toml",
        "schema = \"EmploymentReferral\"",
        "schema = \"EmploymentReferral\"\nformat = \"avro\"",
    );
    let (code, out) = check(d);
    assert_eq!(code, 2, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Avro bodies over HTTP are not built"))
        .unwrap_or_else(|| panic!("no refusal in:\n{out}"));
    assert!(
        line.starts_with("connectors/employment.toml:11:1: error: operation referral: "),
        "{line}"
    );
    assert!(out.contains("configuration has problems: 1 error"), "{out}");
    let o = support::run(&["run", "--config", d.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains(line), "run says why, as check does:\n{err}");
}

/// A connector's operations take the settings of its kind only: a Kafka
/// topic in an HTTP connector, or a file setting misplaced in it, is an
/// error at the operation instead of a setting silently ignored.
#[test]
fn a_setting_of_another_kind_is_an_error_at_its_operation() {
    let dir = copy_config();
    let d = dir.path();
    edit(
        d,
        "connectors/employment.toml",
        "path = \"/api/employment/v1/referrals\"",
        "path = \"/api/employment/v1/referrals\"\ntopic = \"referrals\"\nsettle_time = \"5s\"",
    );
    let (code, out) = check(d);
    assert_eq!(code, 2, "{out}");
    for field in ["topic", "settle_time"] {
        let want = format!(
            "connectors/employment.toml:11:1: error: operation referral: {field} is not a setting of http operations"
        );
        assert!(out.contains(&want), "want {want:?} in:\n{out}");
    }
    assert!(
        out.contains("configuration has problems: 2 errors"),
        "{out}"
    );
}

/// TLS files are read and made into a client as `run` makes it, without
/// connecting: a CA file that is not a certificate fails `check`.
#[test]
fn a_tls_file_run_could_not_use_fails_check() {
    let dir = copy_config();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), "not a certificate\n").unwrap();
    edit(
        d,
        "connectors/employment.toml",
        "[auth]",
        "[tls]\nca_file = \"ca.pem\"\n\n[auth]",
    );
    let (code, out) = check(d);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("connectors/employment.toml:1:1: error: tls.ca_file holds no PEM certificate"),
        "{out}"
    );
    std::fs::remove_file(d.join("ca.pem")).unwrap();
    let (code, out) = check(d);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("tls: cannot read ca.pem"), "{out}");
}
