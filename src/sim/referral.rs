//! The residents' pension system (城乡居民基本养老保险) and the employment
//! service platform: each takes one kind of record by `POST` with a bearer
//! token and applies each idempotency key once.
//!
//! - pension: `POST /api/pension/v1/enrolments` (`PensionEnrolment`): refused
//!   with 422 when the level is above 2 or the holder's ID number is invalid.
//! - employment: `POST /api/employment/v1/referrals` (`EmploymentReferral`):
//!   refused with 422 when the person wants neither work nor training.
//! - each: `GET …/decisions?after=N` (`/api/pension/v1/decisions`,
//!   `/api/employment/v1/decisions`): a `ReferralDecision` for each record
//!   taken (enrolled, or referred), with the application id it came with,
//!   for the feedback to the applicant.

use super::{bearer_ok, header, refuse, with_common, Common};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use std::sync::Arc;

/// Which system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Pension enrolments.
    Pension,
    /// Employment and training referrals.
    Employment,
}

/// A pension or employment system.
pub struct Referral {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    kind: Kind,
    token: Option<String>,
    decisions: std::sync::Mutex<super::Feed>,
    decided: std::sync::atomic::AtomicU64,
}

impl Referral {
    /// The system of `kind`, wanting `token` if given.
    pub fn new(kind: Kind, token: Option<&str>) -> Arc<Referral> {
        Arc::new(Referral {
            common: Common::new(match kind {
                Kind::Pension => "pension",
                Kind::Employment => "employment",
            }),
            kind,
            token: token.map(str::to_string),
            decisions: std::sync::Mutex::new(super::Feed::default()),
            decided: Default::default(),
        })
    }

    /// The simulator's routes, with `/_ledger` and `/_faults`.
    pub fn router(self: &Arc<Self>) -> Router {
        let (path, decided) = match self.kind {
            Kind::Pension => ("/api/pension/v1/enrolments", "/api/pension/v1/decisions"),
            Kind::Employment => (
                "/api/employment/v1/referrals",
                "/api/employment/v1/decisions",
            ),
        };
        let app = Router::new()
            .route(path, post(receive))
            .route(decided, axum::routing::get(decisions))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }
}

/// Whether a pension enrolment starts before the month of the person's
/// 16th birthday (`birth_date` YYYY-MM-DD, `start_month` YYYY-MM).
fn before_sixteen(v: &Value) -> bool {
    let birth = v["birth_date"]
        .as_str()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let start = v["start_month"].as_str().unwrap_or("");
    birth
        .and_then(|b| b.checked_add_months(chrono::Months::new(16 * 12)))
        .is_some_and(|sixteen| start < sixteen.format("%Y-%m").to_string().as_str())
}

async fn receive(State(r): State<Arc<Referral>>, h: HeaderMap, body: Bytes) -> Response {
    if let Some(t) = &r.token {
        if !bearer_ok(&h, t) {
            return refuse(StatusCode::UNAUTHORIZED, "bad credentials");
        }
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    match r.take(header(&h, "idempotency-key"), &v) {
        Err(why) => refuse(StatusCode::UNPROCESSABLE_ENTITY, why),
        Ok(decision) => {
            if let Some(d) = decision {
                r.decisions
                    .lock()
                    .unwrap()
                    .push(&serde_json::to_vec(&d).unwrap_or_default());
            }
            Json(serde_json::json!({ "ok": true })).into_response()
        }
    }
}

impl Referral {
    /// Takes one record (once per idempotency key): its decision the first
    /// time, `None` for a repeat, or why it is refused.
    fn take(&self, idem: &str, v: &Value) -> Result<Option<Value>, String> {
        let id = v["holder_id"].as_str().unwrap_or("");
        if self.common.refuses_bad() {
            if let Err(e) = crate::domain::ResidentId::parse(id) {
                return Err(format!("invalid ID number: {e}"));
            }
            if self.kind == Kind::Pension && before_sixteen(v) {
                return Err("the residents' pension starts at 16 at the earliest: start_month is before the month of the 16th birthday".into());
            }
            let ok = match self.kind {
                Kind::Pension => v["level"].as_i64().is_some_and(|l| (1..=2).contains(&l)),
                Kind::Employment => {
                    v["wants_employment"].as_bool() == Some(true)
                        || v["wants_training"].as_bool() == Some(true)
                }
            };
            if !ok {
                return Err(match self.kind {
                    Kind::Pension => {
                        "only levels 1 and 2 are enrolled with government-paid premiums"
                    }
                    Kind::Employment => "the person asked for neither work nor training",
                }
                .into());
            }
        }
        let kind = match self.kind {
            Kind::Pension => "enrolled",
            Kind::Employment => "referred",
        };
        let first = self.common.apply(
            idem,
            kind,
            id,
            v["request_id"].as_str().unwrap_or("").to_string(),
        );
        if !first {
            return Ok(None);
        }
        let n = self
            .decided
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let (department, status) = match self.kind {
            Kind::Pension => ("PENSION", "ENROLLED"),
            Kind::Employment => ("EMPLOYMENT", "REFERRED"),
        };
        Ok(Some(serde_json::json!({
            "decision_id": format!("{}-{n:09}", &department[..1]),
            "request_id": v["request_id"],
            "application_id": v["application_id"],
            "holder_id": id,
            "department": department,
            "status": status,
            "start_month": v["start_month"],
            "decided_at": super::clock::china_now().to_rfc3339(),
        })))
    }

    /// Table exchange (库表交换) instead of HTTP: takes the records the hub
    /// writes into the front-end table `inbox` (read against `record`, in
    /// id order), decides as over HTTP, and writes each decision into
    /// `outbox` (text columns). A refused record is logged (a table has no
    /// answer to give). Runs until the process ends.
    pub async fn serve_tables(
        self: Arc<Self>,
        db: crate::connectors::database::engine::Db,
        inbox: String,
        outbox: String,
        record: Arc<crate::schema::RecordType>,
    ) {
        use crate::connectors::database::value;
        let zone = chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00");
        let from = db.quote(&inbox);
        let mut last = 0i64;
        let mut plan = None;
        let cols = "decision_id, request_id, application_id, holder_id, department, status, start_month, decided_at";
        let marks = if db.mysql() {
            "?, ?, ?, ?, ?, ?, ?, ?".to_string()
        } else {
            "$1, $2, $3, $4, $5, $6, $7, $8".to_string()
        };
        let insert = format!(
            "INSERT INTO {} ({cols}) VALUES ({marks})",
            db.quote(&outbox)
        );
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if plan.is_none() {
                match db.columns(&from).await {
                    Ok(c) => plan = Some(c),
                    Err(e) => {
                        tracing::warn!(table = %inbox, error = %e, "The simulator cannot read its table");
                        continue;
                    }
                }
            }
            let columns = plan.as_ref().expect("made above");
            let idx = |n: &str| value::column_of(columns, n);
            let (Some(id_col), Some(key_col)) = (idx("id"), idx("idempotency_key")) else {
                tracing::warn!(table = %inbox, "The simulator's table needs id and idempotency_key");
                return;
            };
            let fields: Vec<_> = record
                .fields
                .iter()
                .filter_map(|f| idx(&f.name).map(|c| (c, f)))
                .collect();
            let list: Vec<String> = columns
                .iter()
                .map(|c| match db.mysql() {
                    true => db.quote(&c.name),
                    false => format!("{}::text", db.quote(&c.name)),
                })
                .collect();
            let after = if db.mysql() {
                "?"
            } else {
                "CAST($1::text AS bigint)"
            };
            let sql = format!(
                "SELECT {} FROM {from} WHERE id > {after} ORDER BY id LIMIT 500",
                list.join(", ")
            );
            let rows = match db.rows(&sql, &[last.to_string()], columns.len()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(table = %inbox, error = %e, "The simulator cannot read its table");
                    continue;
                }
            };
            for row in rows {
                let v = value::read_row(columns, &fields, &row, &zone)
                    .map_err(|e| e.to_string())
                    .and_then(|j| serde_json::from_slice::<Value>(&j).map_err(|e| e.to_string()));
                let taken = v.and_then(|v| self.take(row[key_col].as_deref().unwrap_or(""), &v));
                match taken {
                    Ok(Some(d)) => {
                        let text = |k: &str| match &d[k] {
                            Value::String(s) => Some(s.clone()),
                            Value::Null => None,
                            v => Some(v.to_string()),
                        };
                        let params: Vec<Option<String>> = cols.split(", ").map(text).collect();
                        if let Err(e) = db.execute(&insert, &params).await {
                            tracing::warn!(table = %outbox, error = %e, "The simulator cannot write its decision; it reads the row again");
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(why) => {
                        tracing::info!(table = %inbox, reason = %why, "The simulator refuses a row")
                    }
                }
                last = row[id_col]
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(last);
            }
        }
    }
}

async fn decisions(
    State(r): State<Arc<Referral>>,
    h: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(t) = &r.token {
        if !bearer_ok(&h, t) {
            return refuse(StatusCode::UNAUTHORIZED, "bad credentials");
        }
    }
    super::feed_page(&r.decisions, &q, ("decisions", "next"))
}
