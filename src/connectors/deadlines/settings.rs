//! The settings of a `kind = "deadlines"` connector: the working-day
//! calendar (a directory of year tables), each stage's time limit, and its
//! one kind of operation, a sink of `ApplicationStage` records.

use crate::config::ConnectorSpec;
use crate::connectors::settings::Problems;
use crate::diag::Problem;
use crate::domain::workdays::Calendar;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The stages of the register (the `ApplicationStage` schema's symbols);
/// every one but the last can have a time limit.
pub const STAGES: [&str; 5] = [
    "RECEIVED",
    "ASSESSOR_NAMED",
    "NOTICE_COMPLETED",
    "MATERIALS_RECEIVED",
    "DECIDED",
];

/// The schema of the records a deadlines sink takes.
pub const SCHEMA: &str = "ApplicationStage";

/// How long an application may stay in a stage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Working days after the day the stage began.
    pub working_days: u32,
    /// What the stage waits for.
    pub awaits: String,
    /// The office it is with.
    pub office: String,
}

/// A deadlines connector.
#[derive(Clone, Debug)]
pub struct DeadlineSettings {
    /// The working-day calendar.
    pub calendar: Arc<Calendar>,
    /// Each stage's limit, by stage.
    pub rules: Arc<BTreeMap<String, Rule>>,
    /// The sink operations, by name.
    pub operations: Vec<String>,
}

impl DeadlineSettings {
    /// The settings a connector file gives, or every problem in it;
    /// `calendar` starts from `dir`, the configuration directory.
    pub fn of(spec: &ConnectorSpec, dir: &Path) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        if spec.base_url.is_some() || spec.brokers.is_some() || spec.directory.is_some() {
            p.connector(
                None,
                "base_url, brokers and directory are settings of http, kafka and file connectors; a deadlines connector has calendar and stages",
            );
        }
        let calendar_dir = dir.join(spec.calendar.as_deref().unwrap_or("calendar"));
        let calendar = match read_calendar(&calendar_dir) {
            Ok(c) => c,
            Err(why) => {
                p.connector(None, why);
                Calendar::default()
            }
        };
        let mut rules = BTreeMap::new();
        for (stage, rule) in &spec.stages {
            let at = Some(rule.span().start);
            let r = rule.get_ref();
            if !STAGES[..STAGES.len() - 1].contains(&stage.as_str()) {
                p.connector(
                    at,
                    format!(
                        "stage {stage}: not a stage with a time limit ({})",
                        STAGES[..STAGES.len() - 1].join(", ")
                    ),
                );
                continue;
            }
            if r.working_days == 0 || r.working_days > 250 {
                p.connector(
                    at,
                    format!(
                        "stage {stage}: working_days must be 1 to 250, not {}",
                        r.working_days
                    ),
                );
                continue;
            }
            rules.insert(
                stage.clone(),
                Rule {
                    working_days: r.working_days,
                    awaits: r.awaits.clone(),
                    office: r.office.clone(),
                },
            );
        }
        let operations = p.register_sinks(spec, "deadlines", "the deadline register", SCHEMA);
        p.or(DeadlineSettings {
            calendar: Arc::new(calendar),
            rules: Arc::new(rules),
            operations,
        })
    }
}

/// Reads every `*.toml` year table of a calendar directory.
pub fn read_calendar(dir: &Path) -> Result<Calendar, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("calendar {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "calendar {}: no year tables (cn-YYYY.toml)",
            dir.display()
        ));
    }
    let mut c = Calendar::default();
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("calendar {}: {e}", f.display()))?;
        c.parse_year(&text)
            .map_err(|e| format!("calendar {}: {e}", f.display()))?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Result<DeadlineSettings, Vec<String>> {
        let spec: ConnectorSpec = toml::from_str(text).unwrap();
        DeadlineSettings::of(&spec, Path::new(env!("CARGO_MANIFEST_DIR")))
            .map_err(|ps| ps.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn the_shipped_register_has_the_limits_of_cdpf_2021_10() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors/deadlines.toml"
        ))
        .unwrap();
        let s = of(&text).unwrap();
        let days: Vec<(&str, u32)> = s
            .rules
            .iter()
            .map(|(k, r)| (k.as_str(), r.working_days))
            .collect();
        assert_eq!(
            days,
            [
                ("ASSESSOR_NAMED", 10),
                ("MATERIALS_RECEIVED", 7),
                ("NOTICE_COMPLETED", 7),
                ("RECEIVED", 3)
            ]
        );
        assert!(s.calendar.covers(2026));
        assert_eq!(s.operations, ["stages"]);
    }

    #[test]
    fn every_problem_is_named() {
        let e = of(r#"
kind = "deadlines"
calendar = "no/such/dir"
directory = "x"
[stages.WAITING]
working_days = 3
awaits = "a"
office = "b"
[stages.RECEIVED]
working_days = 0
awaits = "a"
office = "b"
[operations.stages]
direction = "source"
schema = "ApplicationStage"
[operations.other]
direction = "sink"
schema = "CertificateEvent"
[operations.third]
direction = "sink"
schema = "ApplicationStage"
path = "/x"
"#)
        .unwrap_err();
        let all = e.join("\n");
        for want in [
            "base_url, brokers and directory are settings of http, kafka and file connectors",
            "calendar ",
            "stage WAITING: not a stage with a time limit (RECEIVED, ASSESSOR_NAMED, NOTICE_COMPLETED, MATERIALS_RECEIVED)",
            "stage RECEIVED: working_days must be 1 to 250, not 0",
            "operation stages: a deadlines connector only takes records (direction = \"sink\")",
            "operation other: the deadline register takes ApplicationStage records, not CertificateEvent",
            "operation third: path is not a setting of deadlines operations",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
    }
}
