//! What the deadline register says today: per stage, how many
//! applications are open, overdue, due within one working day and were
//! late; and the overdue and soon-due applications themselves. Shared by
//! `tongban deadlines`, the operations API and the metrics.

use super::settings::{DeadlineSettings, Rule};
use crate::config::Config;
use crate::connectors::settings::Settings;
use crate::domain::workdays::china_day;
use crate::store::{StageCount, StageRow, Store, StoreError};

/// Applications listed per kind at most.
pub const LIMIT: usize = 1000;

/// The register's report at an instant.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Always true: the configuration has a deadline register.
    pub configured: bool,
    /// The day it is for (China time), `YYYY-MM-DD`.
    pub today: String,
    /// Whether that day is a working day.
    pub working_day: bool,
    /// The end of the next working day: stages due by then are due soon.
    pub due_soon_until: String,
    /// Per stage.
    pub stages: Vec<StageCount>,
    /// Open stages past their deadline, the earliest due first.
    pub overdue: Vec<Entry>,
    /// Open stages due by the end of the next working day.
    pub due_soon: Vec<Entry>,
}

/// One application's open stage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// The one-application case.
    pub application_id: String,
    /// The stage it is in.
    pub stage: String,
    /// ID number of the applicant, masked.
    pub holder: String,
    /// The county office it is with.
    pub office_region: String,
    /// Which office that is, and what it owes.
    pub office: String,
    /// What the stage waits for.
    pub awaits: String,
    /// When it began (RFC 3339, China time).
    pub entered_at: String,
    /// The last day of its limit, `YYYY-MM-DD`.
    pub due_on: String,
    /// Working days past that day (0 when not overdue).
    pub working_days_over: u32,
}

/// The deadlines connector's settings, if the configuration has one.
pub fn settings(cfg: &Config) -> Option<DeadlineSettings> {
    cfg.connectors.values().find_map(
        |c| match crate::connectors::settings::of(&c.spec, &cfg.dir) {
            Ok(Settings::Deadlines(d)) => Some(d),
            _ => None,
        },
    )
}

/// The report at `now_ms`.
pub async fn report(
    s: &DeadlineSettings,
    store: &Store,
    now_ms: i64,
) -> Result<Report, StoreError> {
    let soon = super::soon_ms(s, now_ms);
    let today = china_day(now_ms);
    let stages = store.stage_counts(now_ms, soon).await?;
    // Each list read on its own: a long overdue list must not crowd out
    // the applications still due in time.
    let overdue = store
        .open_stages_due_between(i64::MIN, now_ms - 1, LIMIT)
        .await?
        .iter()
        .map(|r| entry(s, r, today))
        .collect();
    let due_soon = store
        .open_stages_due_between(now_ms, soon, LIMIT)
        .await?
        .iter()
        .map(|r| entry(s, r, today))
        .collect();
    Ok(Report {
        configured: true,
        today: today.to_string(),
        working_day: s.calendar.is_working(today),
        due_soon_until: china_day(soon - 1).to_string(),
        stages,
        overdue,
        due_soon,
    })
}

/// A register row as people read it.
pub fn entry(s: &DeadlineSettings, r: &StageRow, today: chrono::NaiveDate) -> Entry {
    let rule = s.rules.get(&r.stage).cloned().unwrap_or(Rule {
        working_days: 0,
        awaits: String::new(),
        office: String::new(),
    });
    let due_day = r.due_ms.map(|d| china_day(d - 1));
    Entry {
        application_id: r.application_id.clone(),
        stage: r.stage.clone(),
        holder: crate::domain::mask::id_number(&r.holder_id),
        office_region: r.office_region.clone(),
        office: rule.office,
        awaits: rule.awaits,
        entered_at: chrono::DateTime::from_timestamp_millis(r.entered_ms)
            .unwrap_or_default()
            .with_timezone(&crate::domain::china_tz())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        due_on: due_day.map(|d| d.to_string()).unwrap_or_default(),
        working_days_over: due_day.map_or(0, |d| s.calendar.working_days_between(d, today)),
    }
}
