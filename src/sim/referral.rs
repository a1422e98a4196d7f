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
    let id = v["holder_id"].as_str().unwrap_or("");
    if r.common.refuses_bad() {
        if let Err(e) = crate::domain::ResidentId::parse(id) {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid ID number: {e}"),
            );
        }
        if r.kind == Kind::Pension && before_sixteen(&v) {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the residents' pension starts at 16 at the earliest: start_month is before the month of the 16th birthday",
            );
        }
        let ok = match r.kind {
            Kind::Pension => v["level"].as_i64().is_some_and(|l| (1..=2).contains(&l)),
            Kind::Employment => {
                v["wants_employment"].as_bool() == Some(true)
                    || v["wants_training"].as_bool() == Some(true)
            }
        };
        if !ok {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                match r.kind {
                    Kind::Pension => {
                        "only levels 1 and 2 are enrolled with government-paid premiums"
                    }
                    Kind::Employment => "the person asked for neither work nor training",
                },
            );
        }
    }
    let kind = match r.kind {
        Kind::Pension => "enrolled",
        Kind::Employment => "referred",
    };
    let first = r.common.apply(
        header(&h, "idempotency-key"),
        kind,
        id,
        v["request_id"].as_str().unwrap_or("").to_string(),
    );
    if first {
        let mut feed = r.decisions.lock().unwrap();
        let n = feed.len() + 1;
        let (department, status) = match r.kind {
            Kind::Pension => ("PENSION", "ENROLLED"),
            Kind::Employment => ("EMPLOYMENT", "REFERRED"),
        };
        let decision = serde_json::json!({
            "decision_id": format!("{}-{n:09}", &department[..1]),
            "request_id": v["request_id"],
            "application_id": v["application_id"],
            "holder_id": id,
            "department": department,
            "status": status,
            "start_month": v["start_month"],
            "decided_at": super::clock::china_now().to_rfc3339(),
        });
        feed.push(&serde_json::to_vec(&decision).unwrap_or_default());
    }
    Json(serde_json::json!({ "ok": true })).into_response()
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
