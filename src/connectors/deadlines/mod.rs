//! `kind = "deadlines"`: the hub's own deadline register as a target. A
//! feed maps the certificate system's progress into `ApplicationStage`
//! records; delivering one records the stage in the store with the
//! instant it is due: the end of the day `working_days` working days
//! after the day it began (China time), on the connector's calendar. The
//! next stage of the same application ends it. The outbox carries the
//! records like any other target's: in order per person, each once.

pub mod report;
pub mod settings;

use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::domain::workdays::{china_day, end_of_day_ms};
use crate::store::{Claimed, StageRow, Store};
use futures::future::BoxFuture;
use settings::{DeadlineSettings, STAGES};
use std::sync::Arc;

/// Records stages in the deadline register.
pub struct DeadlineSink {
    store: Arc<Store>,
    settings: DeadlineSettings,
}

impl DeadlineSink {
    /// A sink writing into `store`'s register with `settings`' limits.
    pub fn new(store: Arc<Store>, settings: DeadlineSettings) -> Self {
        DeadlineSink { store, settings }
    }

    async fn record(&self, ms: &[Claimed]) -> Result<Delivered, DeliveryError> {
        let mut rows = Vec::with_capacity(ms.len());
        for m in ms {
            rows.push(stage_row(&self.settings, &m.payload).map_err(DeliveryError::Request)?);
        }
        let n = self
            .store
            .record_stages(rows)
            .await
            .map_err(|e| DeliveryError::Io(format!("the deadline register: {e}")))?;
        Ok(Delivered {
            status_code: None,
            excerpt: Some(format!("{n} new in the deadline register")),
            response_sha256: None,
        })
    }
}

/// An `ApplicationStage` record (JSON) as a register row, due by its
/// stage's limit.
pub fn stage_row(s: &DeadlineSettings, record: &[u8]) -> Result<StageRow, String> {
    let v: serde_json::Value =
        serde_json::from_slice(record).map_err(|e| format!("the stage record is not JSON: {e}"))?;
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the stage record has no {k}"))
    };
    let stage = text("stage")?;
    let rank = STAGES
        .iter()
        .position(|s| *s == stage)
        .ok_or_else(|| format!("stage {stage:?} is not one of {}", STAGES.join(", ")))?;
    let entered_ms = match &v["entered_at"] {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(t) => crate::schema::parse_timestamp(t),
        _ => None,
    }
    .ok_or("the stage record has no entered_at timestamp")?;
    Ok(StageRow {
        application_id: text("application_id")?,
        stage_rank: rank as i64,
        holder_id: text("holder_id")?,
        office_region: text("office_region")?,
        entered_ms,
        due_ms: due_ms(s, &stage, entered_ms),
        done_ms: None,
        stage,
    })
}

/// When a stage begun at `entered_ms` is due, if it has a limit.
pub fn due_ms(s: &DeadlineSettings, stage: &str, entered_ms: i64) -> Option<i64> {
    let rule = s.rules.get(stage)?;
    let last = s
        .calendar
        .add_working_days(china_day(entered_ms), rule.working_days);
    Some(end_of_day_ms(last))
}

/// The end of the next working day after today (China time): stages due
/// by then are due within one working day.
pub fn soon_ms(s: &DeadlineSettings, now_ms: i64) -> i64 {
    end_of_day_ms(s.calendar.add_working_days(china_day(now_ms), 1))
}

impl Sink for DeadlineSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.record(std::slice::from_ref(m)))
    }

    fn max_batch(&self) -> usize {
        1000
    }

    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.record(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::workdays::Calendar;

    fn settings() -> DeadlineSettings {
        let mut c = Calendar::default();
        c.parse_year(include_str!("../../../calendar/cn-2026.toml"))
            .unwrap();
        let rules = [("RECEIVED", 3), ("ASSESSOR_NAMED", 10)]
            .into_iter()
            .map(|(s, n)| {
                (
                    s.to_string(),
                    settings::Rule {
                        working_days: n,
                        awaits: String::new(),
                        office: String::new(),
                    },
                )
            })
            .collect();
        DeadlineSettings {
            calendar: Arc::new(c),
            rules: Arc::new(rules),
            operations: vec!["stages".into()],
        }
    }

    #[test]
    fn a_stage_is_due_at_the_end_of_its_last_working_day_in_china() {
        let s = settings();
        // Accepted at 23:30 on Tuesday 29 September 2026 (Beijing): 30
        // September, then 8 and 9 October after the holiday.
        let rec = br#"{"application_id":"SX-1","holder_id":"110105199003070017","stage":"RECEIVED","office_region":"110105","entered_at":"2026-09-29T23:30:00+08:00"}"#;
        let row = stage_row(&s, rec).unwrap();
        let due = crate::domain::workdays::end_of_day_ms(
            chrono::NaiveDate::from_ymd_opt(2026, 10, 9).unwrap(),
        );
        assert_eq!(row.due_ms, Some(due));
        assert_eq!(row.stage_rank, 0);
        // A stage without a limit is tracked, not due.
        let done = br#"{"application_id":"SX-1","holder_id":"110105199003070017","stage":"DECIDED","office_region":"110105","entered_at":1790000000000}"#;
        let row = stage_row(&s, done).unwrap();
        assert_eq!(
            (row.due_ms, row.stage_rank, row.entered_ms),
            (None, 4, 1_790_000_000_000)
        );
        // Friday 2026-12-04: due soon means by the end of Monday 7th.
        let friday = chrono::NaiveDate::from_ymd_opt(2026, 12, 4)
            .unwrap()
            .and_hms_opt(2, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(
            crate::domain::workdays::china_day(soon_ms(&s, friday) - 1),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()
        );
    }

    #[test]
    fn a_record_the_register_cannot_read_says_why() {
        let s = settings();
        let e = stage_row(&s, br#"{"application_id":"SX-1","holder_id":"1","stage":"LOST","office_region":"1","entered_at":1}"#).unwrap_err();
        assert!(
            e.starts_with("stage \"LOST\" is not one of RECEIVED"),
            "{e}"
        );
        let e = stage_row(
            &s,
            br#"{"application_id":"SX-1","holder_id":"1","stage":"RECEIVED","office_region":"1"}"#,
        )
        .unwrap_err();
        assert_eq!(e, "the stage record has no entered_at timestamp");
    }
}
