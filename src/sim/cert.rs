//! The national disability-certificate system (全国残疾人证管理系统).
//!
//! - `POST /api/cert/v3/applications` (HMAC-SM3 signed, app key
//!   `tongban-hub`): a certificate application (`CertificateApplication`).
//!   The holder's ID number must be valid and the name present (else 422).
//!   Each application id is handled once. It then goes through assessment
//!   (评定), public notice (公示) and approval (审批), each taking its
//!   configured delay (`POST /_stages {"assessment_ms", "notice_ms",
//!   "approval_ms"}`; all 0 by default) and each recorded in the ledger, and
//!   the certificate event follows: 新办 NEW → `ISSUED` with a 20-character number (ID
//!   number + category + level, from the person's assessment), valid 10
//!   years; 换领 RENEW → `RENEWED` (in the last year of the validity, with a
//!   new ten years; or, `renewal_reason` DAMAGED, at any time, keeping the
//!   issue date and validity); 挂失补办 REISSUE → `REISSUED` with the next
//!   `B1`, `B2`… suffix; 迁移 MIGRATE → `MIGRATED`; 注销 CANCEL → `CANCELLED`;
//!   CHANGE → `LEVEL_CHANGED` (re-assessed). A NEW for a holder who has a
//!   certificate, or another kind for one who has none, is refused (422).
//!   A NEW whose assessment finds an intellectual or mental disability
//!   (or a multiple one that includes one) without a guardian on the
//!   application is `REJECTED` with the reason.
//! - `POST /_actions`: what the county federation does in the system
//!   itself ([`Action`]): freeze (`FROZEN`), unfreeze (`UNFROZEN`),
//!   re-assess (`LEVEL_CHANGED` or `CATEGORY_CHANGED`, a new number),
//!   cancel with a reason (`CANCELLED`, e.g. `DECEASED`).
//! - `GET /api/cert/v3/events?after=N`: up to 500 events after position N,
//!   `{"events": […], "next": N'}`. With `&province=14` (or `14,37`) only
//!   what concerns that province (what a provincial hub reads): the events
//!   of certificates of its counties, those of applications filed on its
//!   platform (the application's `filed_in_region_code` there: 跨省通办),
//!   and the migrations out of its counties (`MIGRATED` with
//!   `previous_region_code` there, without the application of the province
//!   applied in). `GET …/progress` takes the same filter: the steps of the
//!   applications filed in the province.
//! - `GET /api/cert/v3/progress?after=N`: the steps of each application
//!   (`ApplicationProgress`): `ACCEPTED`; for NEW and CHANGE
//!   `ASSESSOR_ASSIGNED` and `NOTICE_COMPLETED`; then `COMPLETED` or
//!   `REJECTED`. Each is taken at once, or at the times a [`Pace`] set for
//!   the application gives (an application whose pace stops at a step
//!   waits there, undecided).
//!
//! Assessments come from [`Cert::assess`] (the demo seeds the people it
//! made), or else are derived from the ID number, so the same person always
//! gets the same category and level.

use super::{refuse, with_common, Common};
use crate::config::connector::MacAlgorithm;
use crate::connectors::http::sign::Signer;
use crate::domain::ResidentId;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Events per page.
pub const PAGE: usize = 500;

/// Records a province's page looks at, at most (the book is locked while
/// it does).
pub const SCAN: usize = 20 * PAGE;

#[derive(Default)]
struct Book {
    /// Assessments seeded: ID number → (category, level).
    assessed: HashMap<String, (u8, u8)>,
    /// Holders whose multiple disability (7) includes an intellectual or
    /// mental one.
    multiple_im: std::collections::HashSet<String>,
    /// People whose assessment finds no disability that qualifies.
    failing: std::collections::HashSet<String>,
    /// When each cancellation at the holder's request was made.
    cancelled_on: HashMap<String, chrono::NaiveDate>,
    /// The time of the last event, ms: events are stamped in strictly
    /// increasing time, as a system's feed orders them.
    last_ms: i64,
    /// Current certificate per holder.
    certs: HashMap<String, String>,
    /// Per holder: name, region, issued on, valid until, frozen.
    holders: HashMap<String, Holder>,
    /// Events, in order, as JSON.
    events: super::Feed,
    /// Progress of applications (`ApplicationProgress`), in order, as JSON.
    progress: super::Feed,
    /// How the county offices pace each application, by application id.
    paces: HashMap<String, Pace>,
}

/// When the county offices take the steps of one application (ms since
/// the epoch), set by a rehearsal so that some applications are late: a
/// step without a time is not taken yet, and the application waits there.
/// Without a pace every step is taken at once, when the application comes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pace {
    /// 受理: the residence county accepted the complete application.
    pub accepted_ms: i64,
    /// 指定评定机构: the assessment institution named (NEW and CHANGE).
    pub assigned_ms: Option<i64>,
    /// 公示完毕: the result entered and its public notice completed (NEW
    /// and CHANGE); the registration county has the materials.
    pub noticed_ms: Option<i64>,
    /// Whether the registration county decides (approves, makes and posts,
    /// or refuses) when the earlier steps are taken, stamped then.
    pub decided: bool,
}

impl Book {
    /// The time of a new event (China time, ms), later than the last one.
    fn stamp(&mut self) -> String {
        self.last_ms = super::clock::now_ms().max(self.last_ms + 1);
        chrono::DateTime::from_timestamp_millis(self.last_ms)
            .unwrap_or_default()
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
    }
}

/// What the system knows of a holder besides the number.
#[derive(Clone, Debug)]
struct Holder {
    name: String,
    region: String,
    issued_on: String,
    valid_until: String,
    frozen: bool,
}

/// What the county federation does to a certificate in the national
/// system itself, not on an application: each gives its event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// 冻结: the certificate is frozen (`FROZEN`).
    Freeze,
    /// The freeze is lifted (`UNFROZEN`).
    Unfreeze,
    /// A re-assessment (`LEVEL_CHANGED`, or `CATEGORY_CHANGED` if the
    /// category changed): a new certificate with the new category and
    /// level, valid ten years from today.
    Reassess {
        /// Category 1–7.
        category: u8,
        /// Level 1–4.
        level: u8,
    },
    /// 注销部分残疾类别: the other categories of a multiple disability (7)
    /// cancelled, `keep` remaining. The old certificate is `CANCELLED`
    /// with reason `CATEGORY`, and the new one, with the remaining category
    /// at the same level and valid ten years from today, follows as
    /// `CATEGORY_CHANGED` (its `previous_certificate_no` the old one).
    CancelCategories {
        /// The category that remains, 1–6.
        keep: u8,
    },
    /// 注销 (`CANCELLED`) with its reason: `DECEASED`, `HUKOU_MOVED`,
    /// `EXPIRED`, `REQUESTED`.
    Cancel {
        /// The reason.
        reason: String,
    },
}

/// The certificate system's state.
pub struct Cert {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    signer: Option<Signer>,
    book: Mutex<Book>,
    /// The stages' delays, in ms.
    stages: Mutex<Stages>,
}

/// How long each stage of a certificate application takes.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Stages {
    /// Assessment of category and level (评定).
    pub assessment_ms: u64,
    /// Public notice of the result (公示).
    pub notice_ms: u64,
    /// Approval by the home county (审批).
    pub approval_ms: u64,
}

impl Cert {
    /// A certificate system checking HMAC-SM3 signatures with `secret`, if given.
    pub fn new(secret: Option<&str>) -> Arc<Cert> {
        Arc::new(Cert {
            common: Common::new("national_cert"),
            signer: secret.map(|s| Signer::new("tongban-hub", s.as_bytes(), MacAlgorithm::HmacSm3)),
            book: Mutex::new(Book::default()),
            stages: Mutex::new(Stages::default()),
        })
    }

    /// Sets the stages' delays.
    pub fn set_stages(&self, s: Stages) {
        *self.stages.lock().unwrap() = s;
    }

    /// Seeds a person's assessment (category 1–7, level 1–4).
    pub fn assess(&self, id_no: &str, category: u8, level: u8) {
        self.assess_multiple(id_no, category, level, false);
    }

    /// Seeds a person's assessment; for a multiple disability (7), whether
    /// it includes an intellectual or mental one.
    pub fn assess_multiple(&self, id_no: &str, category: u8, level: u8, includes_im: bool) {
        let mut book = self.book.lock().unwrap();
        book.assessed.insert(id_no.to_string(), (category, level));
        if includes_im && category == 7 {
            book.multiple_im.insert(id_no.to_string());
        } else {
            book.multiple_im.remove(id_no);
        }
    }

    /// Seeds an assessment that finds no disability qualifying for a
    /// certificate: a NEW application is then refused (`REJECTED`).
    pub fn assess_fails(&self, id_no: &str) {
        self.book.lock().unwrap().failing.insert(id_no.to_string());
    }

    /// Moves a holder's certificate `days` into the past (its issue date
    /// and validity), as if it had been issued that long ago: for the
    /// rehearsal of renewals at the end of the ten years.
    pub fn backdate(&self, id_no: &str, days: u64) {
        let mut book = self.book.lock().unwrap();
        if let Some(h) = book.holders.get_mut(id_no) {
            let shift = |d: &str| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.checked_sub_days(chrono::Days::new(days)))
                    .map_or(d.to_string(), |d| d.to_string())
            };
            h.issued_on = shift(&h.issued_on);
            h.valid_until = shift(&h.valid_until);
        }
    }

    /// Sets how the county offices pace an application (by its id), before
    /// it comes.
    pub fn pace(&self, application_id: &str, pace: Pace) {
        self.book
            .lock()
            .unwrap()
            .paces
            .insert(application_id.to_string(), pace);
    }

    /// Appends a step of an application to the progress feed, dated `at`
    /// (ms) or now.
    fn progress(&self, app: &Value, step: &str, at: Option<i64>) {
        let s = |k: &str| app[k].as_str().unwrap_or("");
        let mut book = self.book.lock().unwrap();
        let when = match at {
            Some(ms) => chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .with_timezone(&crate::domain::china_tz())
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            None => book.stamp(),
        };
        let n = book.progress.len() + 1;
        let record = json!({
            "progress_id": format!("CP-{n:09}"),
            "application_id": s("application_id"),
            "holder_id": s("id_no"),
            "application_kind": s("kind"),
            "step": step,
            "region_code": s("region_code"),
            "filed_in_region_code": app["context"]["filed_in_region_code"],
            "occurred_at": when,
        });
        book.progress
            .push(&serde_json::to_vec(&record).unwrap_or_default());
    }

    /// A person's assessment: seeded, or derived from the ID number.
    pub fn assessment(&self, id_no: &str) -> (u8, u8) {
        if let Some(a) = self.book.lock().unwrap().assessed.get(id_no) {
            return *a;
        }
        let h = id_no
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        ((h % 7) as u8 + 1, ((h / 7) % 4) as u8 + 1)
    }

    /// Events so far.
    pub fn events(&self) -> usize {
        self.book.lock().unwrap().events.len()
    }

    /// How many holders have a certificate.
    pub fn holders(&self) -> usize {
        self.book.lock().unwrap().certs.len()
    }

    /// The current certificate of each holder.
    pub fn certificates(&self) -> HashMap<String, String> {
        self.book.lock().unwrap().certs.clone()
    }

    /// The simulator's routes, with `/_ledger` and `/_faults`.
    pub fn router(self: &Arc<Self>) -> Router {
        let app = Router::new()
            .route("/api/cert/v3/applications", post(apply))
            .route("/api/cert/v3/events", get(events))
            .route("/api/cert/v3/progress", get(progress))
            .route("/_stages", get(get_stages).post(set_stages))
            .route("/api/cert/v3/cancellations", post(cancellation))
            .route("/_actions", post(action))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }

    /// Decides an application and appends its event: `COMPLETED`, or
    /// `REJECTED` after the assessment; Err is the refusal.
    fn decide(&self, app: &Value) -> Result<&'static str, String> {
        let s = |k: &str| app[k].as_str().unwrap_or("").to_string();
        let id = s("id_no");
        let kind = s("kind");
        // A damaged certificate (损毁) is renewed at any time, and keeps its
        // issue date and validity.
        let damaged = kind == "RENEW" && app["renewal_reason"] == "DAMAGED";
        let today = super::clock::today();
        let mut book = self.book.lock().unwrap();
        let current = book.certs.get(&id).cloned();
        let (event_kind, number, previous, region) = match (kind.as_str(), current) {
            ("NEW", Some(c)) => {
                return Err(format!(
                    "the holder already has certificate {}",
                    crate::domain::mask::id_number(&c)
                ))
            }
            ("NEW", None) => {
                let within_a_year = book
                    .cancelled_on
                    .get(&id)
                    .is_some_and(|d| today < *d + chrono::Days::new(365));
                if book.failing.contains(&id) {
                    return self.reject(book, app, String::new(), "the assessment finds no disability that qualifies for a certificate (评定不符合)");
                }
                if within_a_year {
                    return self.reject(book, app, String::new(), "no new application within a year of a cancellation at the holder's request (注销后一年内不得重新申请)");
                }
                drop(book);
                let (cat, lvl) = self.assessment(&id);
                book = self.book.lock().unwrap();
                let im = cat == 5 || cat == 6 || (cat == 7 && book.multiple_im.contains(&id));
                if im && app["guardian"].is_null() {
                    return self.reject(book, app, String::new(), "a person with an intellectual or mental disability applies through a guardian (智力、精神残疾人由监护人代为申请)");
                }
                ("ISSUED", format!("{id}{cat}{lvl}"), None, s("region_code"))
            }
            (_, None) => return Err(format!("{kind}: the holder has no certificate")),
            ("RENEW", Some(c)) => {
                let last_year = book.holders.get(&id).and_then(|h| {
                    chrono::NaiveDate::parse_from_str(&h.valid_until, "%Y-%m-%d").ok()
                });
                if !damaged && last_year.is_some_and(|v| today + chrono::Days::new(365) < v) {
                    return self.reject(book, app, c, "a certificate is renewed only in the last year of its ten-year validity (有效期满前一年内换领)");
                }
                ("RENEWED", c, None, s("region_code"))
            }
            ("REISSUE", Some(c)) => {
                let base = &c[..20];
                let n: u32 = c.get(21..).and_then(|n| n.parse().ok()).unwrap_or(0);
                (
                    "REISSUED",
                    format!("{base}B{}", n + 1),
                    Some(c),
                    s("region_code"),
                )
            }
            ("MIGRATE", Some(c)) => (
                "MIGRATED",
                c,
                None,
                app["target_region_code"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| s("region_code")),
            ),
            ("CANCEL", Some(c)) => ("CANCELLED", c, None, s("region_code")),
            ("CHANGE", Some(c)) => {
                let lvl = (c.as_bytes()[19] - b'0') % 4 + 1;
                let number = format!("{}{lvl}", &c[..19]);
                ("LEVEL_CHANGED", number, Some(c), s("region_code"))
            }
            (other, _) => return Err(format!("unknown application kind {other:?}")),
        };
        // A new, renewed or re-assessed certificate is valid ten years from
        // today; a reissued one (made today), a migrated one and one renewed
        // because it was damaged keep the validity of the certificate they
        // replace (a damaged one keeps its original issue date too).
        let ten_years = today
            .checked_add_months(chrono::Months::new(120))
            .unwrap_or(today)
            .to_string();
        let kept = book.holders.get(&id).cloned();
        let holder = match (event_kind, kept) {
            ("REISSUED", Some(h)) => Holder {
                name: s("name"),
                region,
                issued_on: today.to_string(),
                ..h
            },
            ("RENEWED", Some(h)) if damaged => Holder {
                name: s("name"),
                region,
                ..h
            },
            ("MIGRATED" | "CANCELLED", Some(h)) => Holder {
                name: s("name"),
                region,
                ..h
            },
            _ => Holder {
                name: s("name"),
                region,
                issued_on: today.to_string(),
                valid_until: ten_years,
                frozen: false,
            },
        };
        let cancel = (event_kind == "CANCELLED").then_some("REQUESTED");
        self.emit(
            book,
            event_kind,
            &id,
            number,
            previous,
            holder,
            cancel,
            &app["context"],
        );
        Ok("COMPLETED")
    }

    /// Refuses an application after it was received (不予办理): a
    /// `REJECTED` event with the reason and the application's context, so
    /// the applicant hears it through the platform.
    fn reject(
        &self,
        mut book: std::sync::MutexGuard<'_, Book>,
        app: &Value,
        current: String,
        reason: &str,
    ) -> Result<&'static str, String> {
        let s = |k: &str| app[k].as_str().unwrap_or("").to_string();
        let id = s("id_no");
        let n = book.events.len() + 1;
        let today = super::clock::today().to_string();
        let holder = book.holders.get(&id).cloned();
        let event = json!({
            "event_id": format!("CE-{n:09}"),
            "kind": "REJECTED",
            "certificate_no": current,
            "previous_certificate_no": null,
            "holder_id": id,
            "holder_name": s("name"),
            "region_code": s("region_code"),
            "issued_on": holder.as_ref().map_or(today.clone(), |h| h.issued_on.clone()),
            "valid_until": holder.as_ref().map_or(today, |h| h.valid_until.clone()),
            "occurred_at": book.stamp(),
            "cancel_reason": null,
            "rejection_reason": reason,
            "application": app["context"],
        });
        book.events
            .push(&serde_json::to_vec(&event).unwrap_or_default());
        drop(book);
        self.common.apply("", "rejected", &id, reason.to_string());
        Ok("REJECTED")
    }

    /// Checks a signed request (when the system wants signatures): the
    /// answer to send if it fails.
    fn verified(&self, uri: &Uri, h: &HeaderMap, body: &[u8]) -> Result<(), Box<Response>> {
        let Some(s) = &self.signer else {
            return Ok(());
        };
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        s.verify(
            "POST",
            path,
            body,
            |n| h.get(n).and_then(|v| v.to_str().ok()),
            crate::store::now_ms(),
            300_000,
        )
        .map(|_| ())
        .map_err(|e| Box::new(refuse(StatusCode::UNAUTHORIZED, e.to_string())))
    }

    /// A federation's action on a holder's certificate; Err is why it
    /// cannot be done (no certificate, not frozen, already frozen).
    pub fn act(&self, id: &str, action: Action) -> Result<(), String> {
        if let Action::CancelCategories { keep } = action {
            return self.cancel_categories(id, keep);
        }
        let mut book = self.book.lock().unwrap();
        let (Some(number), Some(mut holder)) =
            (book.certs.get(id).cloned(), book.holders.get(id).cloned())
        else {
            return Err("the holder has no certificate".into());
        };
        let today = super::clock::today();
        let (kind, new_number, previous, cancel) = match &action {
            Action::Freeze if holder.frozen => {
                return Err("the certificate is frozen already".into())
            }
            Action::Freeze => {
                holder.frozen = true;
                ("FROZEN", number, None, None)
            }
            Action::Unfreeze if !holder.frozen => {
                return Err("the certificate is not frozen".into())
            }
            Action::Unfreeze => {
                holder.frozen = false;
                ("UNFROZEN", number, None, None)
            }
            Action::Reassess { category, level } => {
                if !(1..=7).contains(category) || !(1..=4).contains(level) {
                    return Err(format!("no category {category} level {level}"));
                }
                let kind = if number.as_bytes().get(18) == Some(&(b'0' + category)) {
                    "LEVEL_CHANGED"
                } else {
                    "CATEGORY_CHANGED"
                };
                holder.issued_on = today.to_string();
                holder.valid_until = today
                    .checked_add_months(chrono::Months::new(120))
                    .unwrap_or(today)
                    .to_string();
                book.assessed.insert(id.to_string(), (*category, *level));
                (kind, format!("{id}{category}{level}"), Some(number), None)
            }
            Action::Cancel { reason } => ("CANCELLED", number, None, Some(reason.as_str())),
            Action::CancelCategories { .. } => unreachable!("handled above"),
        };
        let cancel = cancel.map(str::to_string);
        self.emit(
            book,
            kind,
            id,
            new_number,
            previous,
            holder,
            cancel.as_deref(),
            &Value::Null,
        );
        Ok(())
    }

    /// [`Action::CancelCategories`]: the old certificate cancelled, then
    /// the new one with the category that remains.
    fn cancel_categories(&self, id: &str, keep: u8) -> Result<(), String> {
        let book = self.book.lock().unwrap();
        let (Some(number), Some(holder)) =
            (book.certs.get(id).cloned(), book.holders.get(id).cloned())
        else {
            return Err("the holder has no certificate".into());
        };
        if number.as_bytes().get(18) != Some(&b'7') {
            return Err(
                "only a certificate of multiple disabilities (7) has categories to cancel".into(),
            );
        }
        if !(1..=6).contains(&keep) {
            return Err(format!("no single category {keep} to keep"));
        }
        if holder.frozen {
            return Err("the certificate is frozen".into());
        }
        let level = number.as_bytes()[19] - b'0';
        self.emit(
            book,
            "CANCELLED",
            id,
            number.clone(),
            None,
            holder.clone(),
            Some("CATEGORY"),
            &Value::Null,
        );
        let today = super::clock::today();
        let mut book = self.book.lock().unwrap();
        book.assessed.insert(id.to_string(), (keep, level));
        let holder = Holder {
            issued_on: today.to_string(),
            valid_until: today
                .checked_add_months(chrono::Months::new(120))
                .unwrap_or(today)
                .to_string(),
            ..holder
        };
        self.emit(
            book,
            "CATEGORY_CHANGED",
            id,
            format!("{id}{keep}{level}"),
            Some(number),
            holder,
            None,
            &Value::Null,
        );
        Ok(())
    }

    /// Records the holder's new state and appends the event.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        mut book: std::sync::MutexGuard<'_, Book>,
        kind: &str,
        id: &str,
        number: String,
        previous: Option<String>,
        holder: Holder,
        cancel_reason: Option<&str>,
        context: &Value,
    ) {
        if kind == "CANCELLED" {
            book.certs.remove(id);
            book.holders.remove(id);
            if cancel_reason.is_none_or(|r| r == "REQUESTED") {
                let today = super::clock::today();
                book.cancelled_on.insert(id.to_string(), today);
            }
        } else {
            book.certs.insert(id.to_string(), number.clone());
        }
        let n = book.events.len() + 1;
        let includes_im = number.as_bytes().get(18) == Some(&b'7') && book.multiple_im.contains(id);
        // A migration names the county it moved from (迁出地): the
        // province the certificate leaves unloads the card and stops the
        // subsidies, the one it enters loads and starts them.
        let moved_from = match kind {
            "MIGRATED" => book.holders.get(id).map(|h| h.region.clone()),
            _ => None,
        };
        let event = json!({
            "event_id": format!("CE-{n:09}"),
            "kind": kind,
            "certificate_no": number,
            "previous_certificate_no": previous,
            "holder_id": id,
            "holder_name": holder.name,
            "region_code": holder.region,
            "previous_region_code": moved_from,
            "issued_on": holder.issued_on,
            "valid_until": holder.valid_until,
            "includes_intellectual_or_mental": includes_im,
            "occurred_at": book.stamp(),
            "cancel_reason": cancel_reason,
            "application": context,
        });
        if kind != "CANCELLED" {
            book.holders.insert(id.to_string(), holder);
        }
        book.events
            .push(&serde_json::to_vec(&event).unwrap_or_default());
        drop(book);
        self.common.apply(
            "",
            "certificate",
            id,
            format!("{kind} {}", crate::domain::mask::id_number(&number)),
        );
    }
}

async fn apply(State(c): State<Arc<Cert>>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = c.verified(&uri, &h, &body) {
        return *refused;
    }
    let app: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    let id = app["id_no"].as_str().unwrap_or("");
    let name = app["name"].as_str().unwrap_or("").trim();
    let application_id = app["application_id"].as_str().unwrap_or("").to_string();
    if c.common.refuses_bad() {
        if let Err(e) = ResidentId::parse(id) {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "invalid ID number {}: {e}",
                    crate::domain::mask::id_number(id)
                ),
            );
        }
        if name.is_empty() || application_id.is_empty() {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "name and application_id are required",
            );
        }
    }
    // Each application is decided once, whatever its idempotency key.
    let key = format!("app:{application_id}");
    let first = c.common.apply(
        &key,
        "application",
        id,
        format!("{} {}", app["kind"].as_str().unwrap_or(""), application_id),
    );
    if !first {
        return (
            StatusCode::OK,
            Json(json!({ "status": "already received" })),
        )
            .into_response();
    }
    let assessed = matches!(app["kind"].as_str(), Some("NEW" | "CHANGE"));
    let pace = c.book.lock().unwrap().paces.remove(&application_id);
    c.progress(&app, "ACCEPTED", pace.map(|p| p.accepted_ms));
    let stages = *c.stages.lock().unwrap();
    if let Some(p) = pace {
        // Dated steps: each taken at its time, the application waiting at
        // the first one not taken.
        if assessed {
            for (step, at) in [
                ("ASSESSOR_ASSIGNED", p.assigned_ms),
                ("NOTICE_COMPLETED", p.noticed_ms),
            ] {
                let Some(at) = at else {
                    return (StatusCode::ACCEPTED, Json(json!({ "status": "received" })))
                        .into_response();
                };
                c.progress(&app, step, Some(at));
            }
        }
        if !p.decided {
            return (StatusCode::ACCEPTED, Json(json!({ "status": "received" }))).into_response();
        }
    } else if assessed {
        c.progress(&app, "ASSESSOR_ASSIGNED", None);
    }
    if stages == Stages::default() || pace.is_some() {
        if pace.is_none() && assessed {
            c.progress(&app, "NOTICE_COMPLETED", None);
        }
        match c.decide(&app) {
            Ok(step) => c.progress(&app, step, None),
            Err(why) => {
                c.progress(&app, "REJECTED", None);
                return refuse(StatusCode::UNPROCESSABLE_ENTITY, why);
            }
        }
    } else {
        let c = c.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            for (stage, ms) in [
                ("assessed", stages.assessment_ms),
                ("noticed", stages.notice_ms),
                ("approved", stages.approval_ms),
            ] {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                c.common.apply("", stage, &id, String::new());
                if stage == "noticed" && assessed {
                    c.progress(&app, "NOTICE_COMPLETED", None);
                }
            }
            match c.decide(&app) {
                Ok(step) => c.progress(&app, step, None),
                Err(why) => {
                    c.progress(&app, "REJECTED", None);
                    c.common.apply("", "refused", &id, why);
                }
            }
        });
    }
    (StatusCode::ACCEPTED, Json(json!({ "status": "received" }))).into_response()
}

/// `POST /api/cert/v3/cancellations` (signed like applications): a
/// `CertificateCancellation` on a death registered elsewhere; each request
/// id once. A holder without a certificate (cancelled already, or never
/// issued one) is answered `nothing to cancel`, not refused.
async fn cancellation(State(c): State<Arc<Cert>>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = c.verified(&uri, &h, &body) {
        return *refused;
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    let id = v["id_no"].as_str().unwrap_or("");
    let key = format!("cancel:{}", v["request_id"].as_str().unwrap_or(""));
    if !c.common.apply(&key, "cancellation", id, String::new()) {
        return Json(json!({ "status": "already received" })).into_response();
    }
    let reason = v["reason"].as_str().unwrap_or("DECEASED").to_string();
    match c.act(id, Action::Cancel { reason }) {
        Ok(()) => Json(json!({ "status": "cancelled" })).into_response(),
        Err(_) => Json(json!({ "status": "nothing to cancel" })).into_response(),
    }
}

/// `POST /_actions {"holder_id", "action": "FREEZE" | "UNFREEZE" |
/// "REASSESS" | "CANCEL", "category", "level", "reason"}`: what the county
/// federation does in the national system (see [`Action`]).
async fn action(State(c): State<Arc<Cert>>, Json(v): Json<Value>) -> Response {
    let id = v["holder_id"].as_str().unwrap_or("");
    let n = |k: &str| v[k].as_u64().unwrap_or(0) as u8;
    let action = match v["action"].as_str().unwrap_or("") {
        "FREEZE" => Action::Freeze,
        "UNFREEZE" => Action::Unfreeze,
        "REASSESS" => Action::Reassess {
            category: n("category"),
            level: n("level"),
        },
        "CANCEL" => Action::Cancel {
            reason: v["reason"].as_str().unwrap_or("REQUESTED").to_string(),
        },
        "CANCEL_CATEGORIES" => Action::CancelCategories { keep: n("keep") },
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "action {other:?}: FREEZE, UNFREEZE, REASSESS, CANCEL or CANCEL_CATEGORIES"
                ),
            )
        }
    };
    match c.act(id, action) {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(why) => refuse(StatusCode::UNPROCESSABLE_ENTITY, why),
    }
}

/// `GET /api/cert/v3/progress?after=N`: up to 500 progress records after
/// position N, `{"progress": […], "next": N'}`.
async fn progress(
    State(c): State<Arc<Cert>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let from: usize = q.get("after").and_then(|c| c.parse().ok()).unwrap_or(0);
    let book = c.book.lock().unwrap();
    let body = match provinces(&q) {
        None => book.progress.page(from, PAGE, ("progress", "next", false)),
        Some(p) => province_page(&book.progress, from, ("progress", "next", false), |v| {
            let filed = &v["filed_in_region_code"];
            let office = if filed.is_null() {
                &v["region_code"]
            } else {
                filed
            };
            of(&p, office).then_some(false)
        }),
    };
    drop(book);
    ([("content-type", "application/json")], body).into_response()
}

async fn get_stages(State(c): State<Arc<Cert>>) -> Json<Stages> {
    Json(*c.stages.lock().unwrap())
}

async fn set_stages(State(c): State<Arc<Cert>>, Json(s): Json<Stages>) -> Json<Stages> {
    c.set_stages(s);
    Json(s)
}

async fn events(State(c): State<Arc<Cert>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let from: usize = q.get("after").and_then(|c| c.parse().ok()).unwrap_or(0);
    let book = c.book.lock().unwrap();
    let body = match provinces(&q) {
        None => book.events.page(from, PAGE, ("events", "next", false)),
        Some(p) => province_page(&book.events, from, ("events", "next", false), |v| {
            let ours = |k: &Value| of(&p, k);
            if ours(&v["region_code"]) || ours(&v["application"]["filed_in_region_code"]) {
                Some(false)
            } else {
                ours(&v["previous_region_code"]).then_some(true)
            }
        }),
    };
    drop(book);
    ([("content-type", "application/json")], body).into_response()
}

/// The provinces a caller asks for (`province=14` or `province=14,37`: the
/// first two digits of a region code), if it asks for some.
fn provinces(q: &HashMap<String, String>) -> Option<Vec<String>> {
    q.get("province").map(|p| {
        p.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Whether a region code (a JSON string) is of one of the provinces `p`.
fn of(p: &[String], code: &Value) -> bool {
    code.as_str()
        .is_some_and(|c| p.iter().any(|p| c.starts_with(p.as_str())))
}

/// A page of the records of `feed` that concern a province, read from
/// position `from`: `pick` says of each record whether it does (`Some`),
/// and whether its application is to be left out (`Some(true)`: a
/// migration out of the province, whose application belongs to the
/// province applied in). At most [`PAGE`] records, and at most
/// [`SCAN`] records looked at: the next position is after the last record
/// given when the page is full, else after the last record looked at
/// (with none of the province's among them, a caller that stores it is
/// not sent over the same records again), so that a province's cursor
/// never passes a record of its own.
fn province_page(
    feed: &super::Feed,
    from: usize,
    format: (&str, &str, bool),
    pick: impl Fn(&Value) -> Option<bool>,
) -> Vec<u8> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let (mut at, mut next) = (from, from);
    while out.len() < PAGE && at < feed.len() && at - from < SCAN {
        at = feed.read(at, PAGE, |docs, after| {
            let first = after - docs.len();
            for (i, d) in docs.iter().enumerate() {
                if out.len() == PAGE {
                    break;
                }
                let Ok(mut v) = serde_json::from_slice::<Value>(d) else {
                    continue;
                };
                match pick(&v) {
                    None => continue,
                    Some(false) => out.push(d.to_vec()),
                    Some(true) => {
                        v["application"] = Value::Null;
                        out.push(serde_json::to_vec(&v).unwrap_or_default());
                    }
                }
                next = first + i + 1;
            }
            after
        });
    }
    if out.len() < PAGE {
        // Every record up to `at` was looked at.
        next = at.max(from);
    }
    super::page_body(out.iter().map(Vec::as_slice), next, format)
}
