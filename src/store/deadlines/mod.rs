//! The deadline register: the stages each certificate application has
//! entered, each with the instant it is due (its limit in working days,
//! counted when it was recorded) and the instant the next stage ended it.

mod postgres;
mod sqlite;

use super::*;

/// One stage of one application.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StageRow {
    /// The one-application case.
    pub application_id: String,
    /// `RECEIVED`, `ASSESSOR_NAMED`, …
    pub stage: String,
    /// Its place in the order of stages.
    pub stage_rank: i64,
    /// ID number of the applicant.
    pub holder_id: String,
    /// The county office the stage is with.
    pub office_region: String,
    /// When it began, ms.
    pub entered_ms: i64,
    /// When it is due (the end of its last working day), ms; none for a
    /// stage without a limit.
    pub due_ms: Option<i64>,
    /// When the next stage began, ms; none while it is open.
    pub done_ms: Option<i64>,
}

impl StageRow {
    /// Whether the stage missed its deadline by `now_ms`: still open after
    /// it, or ended after it.
    pub fn breached(&self, now_ms: i64) -> bool {
        self.due_ms
            .is_some_and(|due| self.done_ms.unwrap_or(now_ms) > due)
    }
}

/// Open and late stages of one stage name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageCount {
    /// The stage.
    pub stage: String,
    /// Open, with a deadline.
    pub open: i64,
    /// Open and past their deadline.
    pub overdue: i64,
    /// Open, due by the end of the next working day and not yet overdue.
    pub due_soon: i64,
    /// Ended after their deadline.
    pub late: i64,
}

impl Store {
    /// Records stages (one already there, same application and stage, is
    /// left as it is), and ends each application's earlier open stages at
    /// the later stage's start, in one transaction. Returns how many are new.
    pub async fn record_stages(&self, rows: Vec<StageRow>) -> Result<usize, StoreError> {
        both!(self, s => s.record_stages(rows).await)
    }

    /// Open stages due from `from_ms` to `until_ms`, the earliest due
    /// first, at most `limit`.
    pub async fn open_stages_due_between(
        &self,
        from_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<StageRow>, StoreError> {
        both!(self, s => s.open_stages_due_between(from_ms, until_ms, limit).await)
    }

    /// Stages that ended after their deadline, the latest first, at most `limit`.
    pub async fn late_stages(&self, limit: usize) -> Result<Vec<StageRow>, StoreError> {
        both!(self, s => s.late_stages(limit).await)
    }

    /// Per stage: open, overdue at `now_ms`, due by `soon_ms`, and late.
    pub async fn stage_counts(
        &self,
        now_ms: i64,
        soon_ms: i64,
    ) -> Result<Vec<StageCount>, StoreError> {
        both!(self, s => s.stage_counts(now_ms, soon_ms).await)
    }

    /// The stages of one application, in order.
    pub async fn application_stages(
        &self,
        application_id: &str,
    ) -> Result<Vec<StageRow>, StoreError> {
        both!(self, s => s.application_stages(application_id).await)
    }
}

/// Merges the open and late counts, in stage order of their names.
pub(in crate::store) fn merge_counts(
    open: Vec<(String, i64, i64, i64)>,
    late: Vec<(String, i64)>,
) -> Vec<StageCount> {
    let mut by: std::collections::BTreeMap<String, StageCount> = Default::default();
    for (stage, open, overdue, due_soon) in open {
        by.insert(
            stage.clone(),
            StageCount {
                stage,
                open,
                overdue,
                due_soon,
                late: 0,
            },
        );
    }
    for (stage, late) in late {
        by.entry(stage.clone())
            .or_insert_with(|| StageCount {
                stage,
                ..Default::default()
            })
            .late = late;
    }
    by.into_values().collect()
}
