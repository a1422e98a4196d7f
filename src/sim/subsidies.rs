//! The national two-subsidies system (全国残疾人两项补贴信息系统).
//!
//! - `POST /api/subsidy/v1/eligibility` (basic auth): a
//!   `SubsidyEligibilityRequest`. Refused with 422: an invalid ID number, a
//!   certificate that is not the holder's, a bank card failing its check
//!   digit, a person on 特困供养 (destitute support). Otherwise the rules of
//!   [`entitlement`] decide the living and the care subsidy, paid from
//!   `start_month`. One record per holder; each idempotency key applied once.
//! - `GET /api/subsidy/v1/decisions?after=N`: its decision on each
//!   eligibility application it took (`SubsidyDecision`: eligible or not,
//!   the amounts, the start month, the application id), for the feedback
//!   to the applicant.
//! - `POST /api/subsidy/v1/accounts`: a `SubsidyAccount`, the financial
//!   account of a person's social security card ([`account`]); where the
//!   province pays through the card ([`Rates::pay_to_card_account`], on by
//!   default), payments go there only, and a person's wait until it is known.
//! - `POST /api/subsidy/v1/stops`: a `SubsidyStop`: nothing is paid for
//!   `effective_month` and after (until a later decision).
//! - `POST /api/subsidy/v1/reassessments`: a `SubsidyReassessment` (a
//!   re-assessed level or category, an unfreeze, a reissued number): see
//!   [`reassess`].
//! - `GET /api/subsidy/v1/payouts?cursor=YYYY-MM:N[&period=YYYY-MM]`: the
//!   month's payout list (`PayoutRecord`s; `payout_id` =
//!   type-holder-period), 500 a page; the period defaults to
//!   [`Subsidies::period`], and a cursor of an earlier month starts the
//!   current month's list from its beginning ([`payout_cursor`]).
//! - `POST /api/subsidy/v1/payout-results`: the banks' results (`PayoutResult`).

use super::{basic_ok, header, refuse, with_common, Common};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Amounts (fen a month) and the province's switches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    /// Living subsidy, 低保 households.
    pub living_dibao_fen: i64,
    /// Living subsidy, near-低保 households (低保边缘), where the province
    /// pays them a standard of their own.
    pub living_near_dibao_fen: i64,
    /// Whether the province extends the living subsidy to near-低保 households.
    pub near_dibao_living: bool,
    /// Whether it pays them at the 低保 standard (Shanxi 2022-53: yes).
    pub near_dibao_at_dibao_standard: bool,
    /// Whether people on destitute support (特困供养) are excluded from both
    /// subsidies: a local rule, not in the Shanxi notice (default: no).
    pub exclude_tekun: bool,
    /// Care subsidy, level 1.
    pub care_level1_fen: i64,
    /// Care subsidy, level 2.
    pub care_level2_fen: i64,
    /// Whether the province extends the care subsidy to levels 3–4 of
    /// intellectual (5) and mental (6) disability.
    pub care_intellectual_mental_3_4: bool,
    /// Their rate, in percent of the level 2 amount (Shanxi: 50).
    pub care_3_4_percent: i64,
    /// Whether the province pays through the social security card: each
    /// payment to the card's financial account as the card system reported
    /// it (Zichuan: 待遇领取只使用实体卡银行账户), and none to a person whose
    /// card account is not known yet (their payments wait for it); else to
    /// the account the application gave.
    pub pay_to_card_account: bool,
}

impl Default for Rates {
    fn default() -> Self {
        // Shanghai 2021 amounts and Shanxi's rules (docs/domain.md §5).
        Rates {
            living_dibao_fen: 41_000,
            living_near_dibao_fen: 29_000,
            near_dibao_living: true,
            near_dibao_at_dibao_standard: true,
            exclude_tekun: false,
            care_level1_fen: 30_000,
            care_level2_fen: 15_000,
            care_intellectual_mental_3_4: true,
            care_3_4_percent: 50,
            pay_to_card_account: true,
        }
    }
}

/// The monthly living and care subsidy of a person, in fen (0: none).
/// `dibao` is `NONE`, `DIBAO`, `NEAR_DIBAO` or `TEKUN`; `includes_im`: a
/// multiple disability (7) that includes an intellectual or mental one.
pub fn entitlement(
    r: &Rates,
    category: u8,
    level: u8,
    dibao: &str,
    needs_long_term_care: bool,
    includes_im: bool,
) -> (i64, i64) {
    if dibao == "TEKUN" && r.exclude_tekun {
        return (0, 0);
    }
    // The living subsidy is for 低保 households (and near-低保 where the
    // province extends it); a person on destitute support is not one, and
    // may still have the care subsidy.
    let living = match dibao {
        "DIBAO" => r.living_dibao_fen,
        "NEAR_DIBAO" if r.near_dibao_living && r.near_dibao_at_dibao_standard => r.living_dibao_fen,
        "NEAR_DIBAO" if r.near_dibao_living => r.living_near_dibao_fen,
        _ => 0,
    };
    let care = match level {
        1 if needs_long_term_care => r.care_level1_fen,
        2 if needs_long_term_care => r.care_level2_fen,
        3 | 4
            if r.care_intellectual_mental_3_4
                && (matches!(category, 5 | 6) || (category == 7 && includes_im)) =>
        {
            r.care_level2_fen * r.care_3_4_percent / 100
        }
        _ => 0,
    };
    (living, care)
}

/// A person receiving subsidies, in one allocation for the text: a list of
/// millions of them stays small (ten `String`s each took about 500 bytes a
/// person).
#[derive(Clone, Debug)]
struct Recipient {
    /// The [`Field`]s in their order, each ended by [`SEP`].
    text: Box<str>,
    /// What is paid from which month on, in month order: (month index,
    /// living, care). A stop is a segment of zeros; a later decision (a
    /// level change, an unfreeze) is a segment of its own, so each month
    /// is paid as the decisions in force then say.
    /// (month, when decided in ms, living, care), in (month, when) order:
    /// two decisions for one month apply in the order they were made in
    /// the systems that made them, whatever order they arrived in.
    segments: Vec<(u32, i64, i64, i64)>,
}

/// What a [`Recipient`] keeps, in this order.
#[derive(Clone, Copy)]
enum Field {
    Name,
    CertificateNo,
    RegionCode,
    BankAccountNo,
    BankCode,
    AccountName,
    /// `NONE`, `DIBAO`, `NEAR_DIBAO` (as applied for).
    Dibao,
    /// `1` if the person needs long-term care.
    NeedsCare,
    /// `1` if a multiple disability includes an intellectual or mental one.
    IncludesIm,
}

/// Ends each field of a [`Recipient`] (ASCII unit separator; removed from
/// the values).
const SEP: char = '\u{1f}';

/// A `YYYY-MM` month as a count of months (year × 12 + month − 1).
pub fn month_index(period: &str) -> Option<u32> {
    let (y, m) = period.split_once('-')?;
    let (y, m): (u32, u32) = (y.parse().ok()?, m.parse().ok()?);
    (y >= 1900 && (1..=12).contains(&m) && period.len() == 7).then_some(y * 12 + m - 1)
}

impl Recipient {
    fn new(fields: [&str; 9], start: u32, living_fen: i64, care_fen: i64) -> Self {
        let mut r = Recipient {
            text: "".into(),
            segments: vec![(start, 0, living_fen, care_fen)],
        };
        r.set_fields(fields);
        r
    }

    fn set_fields(&mut self, fields: [&str; 9]) {
        let mut text = String::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
        for f in fields {
            text.extend(f.chars().filter(|c| *c != SEP));
            text.push(SEP);
        }
        self.text = text.into_boxed_str();
    }

    fn get(&self, f: Field) -> &str {
        self.text.split(SEP).nth(f as usize).unwrap_or_default()
    }

    fn set(&mut self, f: Field, value: &str) {
        let mut fields: Vec<&str> = self.text.split(SEP).take(9).collect();
        fields.resize(9, "");
        fields[f as usize] = value;
        let fields: [&str; 9] = fields.try_into().unwrap_or_default();
        let mut r = Recipient {
            text: "".into(),
            segments: Vec::new(),
        };
        r.set_fields(fields);
        self.text = r.text;
    }

    /// What is paid in a month: (living, care).
    fn amounts(&self, month: u32) -> (i64, i64) {
        let i = self.segments.partition_point(|s| s.0 <= month);
        i.checked_sub(1)
            .map_or((0, 0), |i| (self.segments[i].2, self.segments[i].3))
    }

    /// A decision in force from `month` on (until a later one).
    fn decide_from(&mut self, month: u32, at: i64, living_fen: i64, care_fen: i64) {
        let i = self.segments.partition_point(|s| (s.0, s.1) <= (month, at));
        self.segments.insert(i, (month, at, living_fen, care_fen));
    }
}

/// One payment of a payout list: the person (their place in the
/// eligibility order) and which subsidy. Its record is written when served.
#[derive(Clone, Copy)]
struct Slot {
    person: u32,
    care: bool,
}

/// A payout list as served, kept up to date as people become eligible.
struct CachedList {
    period: String,
    /// [`Subsidies::rewrites`] when the list was made.
    rewrites: u64,
    /// How many people of the eligibility order it has taken in.
    seen: usize,
    /// Each payment, its record written when asked for.
    items: Vec<Slot>,
}

/// The subsidies system's state.
pub struct Subsidies {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    credentials: Option<(String, String)>,
    /// Amounts and switches.
    pub rates: Rates,
    /// The month whose payout list is served by default.
    pub period: Mutex<String>,
    /// The payable people in the order they became payable (the payout
    /// lists' order), and every recipient.
    people: Mutex<(Vec<String>, HashMap<String, Recipient>)>,
    /// Bumped when someone already in `people` changes (a new decision, a
    /// stop): the list is then made again. New people are only appended.
    rewrites: std::sync::atomic::AtomicU64,
    /// The last list served.
    cache: Mutex<Option<CachedList>>,
    /// Its decisions on eligibility applications, as `SubsidyDecision`s.
    decisions: Mutex<super::Feed>,
    /// The financial account of each person's social security card, as
    /// the card system reported it: account number and bank.
    card_accounts: Mutex<HashMap<String, (String, String)>>,
}

impl Subsidies {
    /// A subsidies system wanting basic auth `credentials` (if given).
    pub fn new(credentials: Option<(&str, &str)>, rates: Rates) -> Arc<Subsidies> {
        Arc::new(Subsidies {
            common: Common::new("subsidies"),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            rates,
            period: Mutex::new(super::clock::period()),
            people: Mutex::new((Vec::new(), HashMap::new())),
            rewrites: std::sync::atomic::AtomicU64::new(0),
            cache: Mutex::new(None),
            decisions: Mutex::new(super::Feed::default()),
            card_accounts: Mutex::new(HashMap::new()),
        })
    }

    /// The simulator's routes, with `/_ledger` and `/_faults`.
    pub fn router(self: &Arc<Self>) -> Router {
        let app = Router::new()
            .route("/api/subsidy/v1/eligibility", post(eligibility))
            .route("/api/subsidy/v1/stops", post(stop))
            .route("/api/subsidy/v1/reassessments", post(reassess))
            .route("/api/subsidy/v1/accounts", post(account))
            .route("/api/subsidy/v1/payouts", get(payouts))
            .route("/api/subsidy/v1/decisions", get(decisions))
            .route("/api/subsidy/v1/payout-results", post(results))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }

    /// The payout list of a month, as `PayoutRecord` JSON values, in the
    /// order people became eligible.
    pub fn payout_list(&self, period: &str) -> Vec<Value> {
        self.parsed_list(period)
    }

    /// Calls `f` with each payment of a month's payout list, in order, as
    /// its served record says it (each record parsed in turn; nothing is
    /// kept, so a list of millions takes no memory to check).
    pub fn for_each_payout(&self, period: &str, mut f: impl FnMut(PayoutItem)) {
        self.with_list(period, |items, record| {
            for s in items {
                if let Ok(item) = serde_json::from_slice(&record(*s)) {
                    f(item);
                }
            }
        })
    }

    fn parsed_list<T: serde::de::DeserializeOwned>(&self, period: &str) -> Vec<T> {
        self.with_list(period, |items, record| {
            items
                .iter()
                .filter_map(|s| serde_json::from_slice(&record(*s)).ok())
                .collect()
        })
    }

    /// Calls `f` with the month's payout list, brought up to date, and a
    /// function writing a payment's record (JSON): payments of people who
    /// became eligible since are appended; the list is made again only for
    /// another month or when someone already on it changed.
    fn with_list<R>(
        &self,
        period: &str,
        f: impl FnOnce(&[Slot], &dyn Fn(Slot) -> Vec<u8>) -> R,
    ) -> R {
        use std::sync::atomic::Ordering;
        let people = self.people.lock().unwrap();
        let rewrites = self.rewrites.load(Ordering::SeqCst);
        let mut cache = self.cache.lock().unwrap();
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.period == period && c.rewrites == rewrites);
        if !fresh {
            *cache = Some(CachedList {
                period: period.to_string(),
                rewrites,
                seen: 0,
                items: Vec::new(),
            });
        }
        let c = cache.as_mut().expect("just set");
        let cards = self.card_accounts.lock().unwrap();
        let by_card = self.rates.pay_to_card_account;
        for (i, id) in people.0.iter().enumerate().skip(c.seen) {
            push_slots(&mut c.items, i as u32, &people.1[id], period);
        }
        c.seen = people.0.len();
        let record = |s: Slot| {
            let id = &people.0[s.person as usize];
            let card = by_card.then(|| cards.get(id)).flatten();
            record(id, &people.1[id], period, s.care, card)
        };
        f(&c.items, &record)
    }

    /// A request's JSON body, if its credentials hold and it is JSON; the
    /// answer to send otherwise.
    fn request(&self, h: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
        if !self.authorised(h) {
            return Err(Box::new(refuse(
                StatusCode::UNAUTHORIZED,
                "bad credentials",
            )));
        }
        serde_json::from_slice(body)
            .map_err(|e| Box::new(refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}"))))
    }

    fn authorised(&self, h: &HeaderMap) -> bool {
        self.credentials
            .as_ref()
            .is_none_or(|(u, p)| basic_ok(h, u, p))
    }
}

/// One payment of the payout list, as the checks of a rehearsal need it.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
pub struct PayoutItem {
    /// ID number of the holder.
    pub holder_id: String,
    /// The certificate paid against.
    pub certificate_no: String,
    /// `LIVING` or `CARE`.
    pub subsidy_type: String,
    /// The amount, in fen.
    pub amount_fen: i64,
    /// The account paid into.
    pub bank_account_no: String,
    /// The name on that account.
    pub account_name: String,
}

/// A person's payments on a month's payout list.
fn push_slots(out: &mut Vec<Slot>, person: u32, r: &Recipient, period: &str) {
    let Some(month) = month_index(period) else {
        return;
    };
    let (living, care) = r.amounts(month);
    for (care, fen) in [(false, living), (true, care)] {
        if fen > 0 {
            out.push(Slot { person, care });
        }
    }
}

/// A payment's record on a month's payout list (`PayoutRecord` JSON): to
/// the card's account when given, else to the application's.
fn record(
    id: &str,
    r: &Recipient,
    period: &str,
    care: bool,
    card: Option<&(String, String)>,
) -> Vec<u8> {
    let (living, care_fen) = month_index(period).map_or((0, 0), |m| r.amounts(m));
    let (ty, fen) = match care {
        false => ("LIVING", living),
        true => ("CARE", care_fen),
    };
    let v = json!({
        "payout_id": format!("{ty}-{id}-{period}"),
        "subsidy_type": ty,
        "holder_id": id,
        "name": r.get(Field::Name),
        "certificate_no": r.get(Field::CertificateNo),
        "period": period,
        "amount_fen": fen,
        "bank_account_no": card.map_or(r.get(Field::BankAccountNo), |c| c.0.as_str()),
        "bank_code": card.map_or(r.get(Field::BankCode), |c| c.1.as_str()),
        "account_name": if card.is_some() { r.get(Field::Name) } else { r.get(Field::AccountName) },
        "account_source": if card.is_some() { "SSCARD" } else { "APPLICATION" },
        "region_code": r.get(Field::RegionCode),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn eligibility(State(s): State<Arc<Subsidies>>, h: HeaderMap, body: Bytes) -> Response {
    let v = match s.request(&h, &body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let g = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let (id, cert, card) = (g("holder_id"), g("certificate_no"), g("bank_account_no"));
    if s.common.refuses_bad() {
        let why = if let Err(e) = crate::domain::ResidentId::parse(&id) {
            Some(format!("invalid ID number: {e}"))
        } else if !cert.starts_with(&id) {
            Some("the certificate is not the holder's".into())
        } else if let Err(e) = crate::domain::luhn::validate_card(&card) {
            Some(format!(
                "bank account {}: {e}",
                crate::domain::mask::bank_card(&card)
            ))
        } else if g("dibao") == "TEKUN" && s.rates.exclude_tekun {
            Some("not eligible: the person receives destitute support (特困供养)".into())
        } else {
            None
        };
        if let Some(why) = why {
            return refuse(StatusCode::UNPROCESSABLE_ENTITY, why);
        }
    }
    let includes_im = v["includes_intellectual_or_mental"]
        .as_bool()
        .unwrap_or(false);
    let (living, care) = entitlement(
        &s.rates,
        v["category"].as_i64().unwrap_or(0) as u8,
        v["level"].as_i64().unwrap_or(0) as u8,
        &g("dibao"),
        v["needs_long_term_care"].as_bool().unwrap_or(false),
        includes_im,
    );
    let idem = header(&h, "idempotency-key").to_string();
    let mut people = s.people.lock().unwrap();
    let first = s.common.apply(
        &idem,
        "eligibility",
        &id,
        format!("living {living} care {care}"),
    );
    if first {
        let mut feed = s.decisions.lock().unwrap();
        let n = feed.len() + 1;
        let decision = json!({
            "decision_id": format!("SD-{n:09}"),
            "request_id": g("request_id"),
            "application_id": v["application_id"],
            "holder_id": id,
            "eligible": living > 0 || care > 0,
            "living_fen": living,
            "care_fen": care,
            "start_month": g("start_month"),
            "decided_at": super::clock::china_now().to_rfc3339(),
        });
        feed.push(&serde_json::to_vec(&decision).unwrap_or_default());
    }
    if first && (living > 0 || care > 0) {
        // The payout lists take people in the order they became payable
        // (a recipient, and where the province pays through the card, with
        // the card's account known), so that a list read by cursor while
        // it grows misses no one: a person already on it is made again.
        let payable =
            !s.rates.pay_to_card_account || s.card_accounts.lock().unwrap().contains_key(&id);
        if people.1.contains_key(&id) && payable {
            s.rewrites.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        } else if payable {
            people.0.push(id.clone());
        }
        let needs_care = v["needs_long_term_care"].as_bool().unwrap_or(false);
        people.1.insert(
            id.clone(),
            Recipient::new(
                [
                    &g("name"),
                    &cert,
                    &g("region_code"),
                    &card,
                    &g("bank_code"),
                    &g("account_name"),
                    &g("dibao"),
                    if needs_care { "1" } else { "" },
                    if includes_im { "1" } else { "" },
                ],
                month_index(&g("start_month")).unwrap_or(0),
                living,
                care,
            ),
        );
    }
    drop(people);
    Json(json!({ "eligible": living > 0 || care > 0, "living_fen": living, "care_fen": care }))
        .into_response()
}

async fn stop(State(s): State<Arc<Subsidies>>, h: HeaderMap, body: Bytes) -> Response {
    let v = match s.request(&h, &body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let id = v["holder_id"].as_str().unwrap_or("").to_string();
    let month = v["effective_month"].as_str().unwrap_or("").to_string();
    let Some(from) = month_index(&month) else {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("effective_month {month:?} is not YYYY-MM"),
        );
    };
    let reason = v["reason"].as_str().unwrap_or("");
    let idem = header(&h, "idempotency-key").to_string();
    if s.common
        .apply(&idem, "stop", &id, format!("from {month} ({reason})"))
    {
        if let Some(r) = s.people.lock().unwrap().1.get_mut(&id) {
            r.decide_from(from, occurred_ms(&v), 0, 0);
        }
        s.rewrites.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    Json(json!({ "ok": true })).into_response()
}

/// A `SubsidyReassessment`: the certificate changed. A reissue only
/// changes the number paid against; a re-assessment (level or category)
/// or an unfreeze is decided again by [`entitlement`] with the new
/// category and level and the household's 低保 status and care need as
/// applied for, in force from `effective_month`: the amount changes, or
/// both subsidies stop (nothing is due any more), or they resume.
async fn reassess(State(s): State<Arc<Subsidies>>, h: HeaderMap, body: Bytes) -> Response {
    let v = match s.request(&h, &body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let g = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let (id, cert, reason, month) = (
        g("holder_id"),
        g("certificate_no"),
        g("reason"),
        g("effective_month"),
    );
    let Some(from) = month_index(&month) else {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("effective_month {month:?} is not YYYY-MM"),
        );
    };
    let household = reason == "DIBAO_CHANGED";
    if !household && !cert.starts_with(&id) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the certificate is not the holder's",
        );
    }
    if ![
        "REISSUED",
        "LEVEL_CHANGED",
        "CATEGORY_CHANGED",
        "UNFROZEN",
        "DIBAO_CHANGED",
    ]
    .contains(&reason.as_str())
    {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reason {reason:?}: REISSUED, LEVEL_CHANGED, CATEGORY_CHANGED, UNFROZEN or DIBAO_CHANGED"),
        );
    }
    let dibao = g("dibao");
    if household && !["NONE", "DIBAO", "NEAR_DIBAO", "TEKUN"].contains(&dibao.as_str()) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DIBAO_CHANGED needs dibao: NONE, DIBAO, NEAR_DIBAO or TEKUN",
        );
    }
    let idem = header(&h, "idempotency-key").to_string();
    let mut people = s.people.lock().unwrap();
    let Some(r) = people.1.get_mut(&id) else {
        drop(people);
        s.common.apply(
            &idem,
            "reassessment",
            &id,
            format!("{reason}: not a recipient"),
        );
        return Json(json!({ "recipient": false })).into_response();
    };
    // A household change keeps the certificate (its category and level
    // are the 19th and 20th characters of the number paid against).
    let held = r.get(Field::CertificateNo).as_bytes();
    let digit = |i: usize| held.get(i).map_or(0, |b| b.wrapping_sub(b'0'));
    let (category, level) = match household {
        true => (digit(18), digit(19)),
        false => (
            v["category"].as_i64().unwrap_or(0) as u8,
            v["level"].as_i64().unwrap_or(0) as u8,
        ),
    };
    let dibao = if household {
        dibao
    } else {
        r.get(Field::Dibao).to_string()
    };
    // A re-assessment says anew what a multiple disability includes; an
    // unfreeze or a household change keeps what was known.
    let includes_im = match reason.as_str() {
        "LEVEL_CHANGED" | "CATEGORY_CHANGED" => v["includes_intellectual_or_mental"]
            .as_bool()
            .unwrap_or(false),
        _ => r.get(Field::IncludesIm) == "1",
    };
    let decided = match reason.as_str() {
        "REISSUED" => None,
        _ => Some(entitlement(
            &s.rates,
            category,
            level,
            &dibao,
            r.get(Field::NeedsCare) == "1",
            includes_im,
        )),
    };
    let detail = match decided {
        None => format!("{reason}: paid against the new number"),
        Some((0, 0)) => format!("{reason}: nothing due from {month}; stopped"),
        Some((l, c)) => format!("{reason}: from {month} living {l} care {c}"),
    };
    if s.common.apply(&idem, "reassessment", &id, detail) {
        if household {
            r.set(Field::Dibao, &dibao);
        } else {
            r.set(Field::CertificateNo, &cert);
            r.set(Field::IncludesIm, if includes_im { "1" } else { "" });
        }
        if let Some((l, c)) = decided {
            r.decide_from(from, occurred_ms(&v), l, c);
        }
        s.rewrites.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let (living, care) = r.amounts(from);
    drop(people);
    Json(json!({ "recipient": true, "living_fen": living, "care_fen": care })).into_response()
}

/// `POST /api/subsidy/v1/accounts`: a `SubsidyAccount`, the financial
/// account of a person's social security card as the card system reported
/// it on a load. Refused (422): an invalid ID number, an account failing
/// its check digit, a bank code that is not 12 digits. The latest account
/// reported for a person is paid into (where the province pays through
/// the card), from the next list made.
async fn account(State(s): State<Arc<Subsidies>>, h: HeaderMap, body: Bytes) -> Response {
    let v = match s.request(&h, &body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let g = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let (id, no, bank) = (g("holder_id"), g("bank_account_no"), g("bank_code"));
    let why = if let Err(e) = crate::domain::ResidentId::parse(&id) {
        Some(format!("invalid ID number: {e}"))
    } else if let Err(e) = crate::domain::luhn::validate_card(&no) {
        Some(format!(
            "bank account {}: {e}",
            crate::domain::mask::bank_card(&no)
        ))
    } else if bank.len() != 12 || !bank.bytes().all(|b| b.is_ascii_digit()) {
        Some(format!("bank_code {bank:?} is not a 12-digit CNAPS code"))
    } else {
        None
    };
    if let Some(why) = why {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let idem = header(&h, "idempotency-key").to_string();
    let mut people = s.people.lock().unwrap();
    if s.common.apply(
        &idem,
        "card_account",
        &id,
        crate::domain::mask::bank_card(&no),
    ) {
        let recipient = people.1.contains_key(&id);
        let had = s
            .card_accounts
            .lock()
            .unwrap()
            .insert(id.clone(), (no, bank))
            .is_some();
        if recipient && s.rates.pay_to_card_account && !had {
            // Payable from now on: appended to the lists.
            people.0.push(id);
        } else if recipient {
            s.rewrites.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    drop(people);
    Json(json!({ "ok": true })).into_response()
}

/// When the change a request carries happened (`occurred_at`, ms), or now
/// if it does not say.
fn occurred_ms(v: &Value) -> i64 {
    v["occurred_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(crate::store::now_ms, |t| t.timestamp_millis())
}

/// `GET /api/subsidy/v1/decisions?after=N`: up to 500 decisions after
/// position N, `{"decisions": […], "next": N'}`.
async fn decisions(
    State(s): State<Arc<Subsidies>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !s.authorised(&h) {
        return refuse(StatusCode::UNAUTHORIZED, "bad credentials");
    }
    super::feed_page(&s.decisions, &q, ("decisions", "next"))
}

/// Where a read of the payout list goes on: the month and the position in
/// its list. A cursor is `YYYY-MM:N` (N payments of that month's list
/// read); one of another month starts `period`'s list from its beginning,
/// so a reader polling with the cursor it was last given takes each
/// month's list whole, month after month. A bare number is a position in
/// `period`'s list.
fn payout_cursor(period: String, cursor: Option<&str>) -> (String, usize) {
    let from = match cursor.map(|c| c.split_once(':').unwrap_or(("", c))) {
        Some(("", n)) => n.parse().unwrap_or(0),
        Some((p, n)) if p == period => n.parse().unwrap_or(0),
        _ => 0,
    };
    (period, from)
}

async fn payouts(
    State(s): State<Arc<Subsidies>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !s.authorised(&h) {
        return refuse(StatusCode::UNAUTHORIZED, "bad credentials");
    }
    let (period, from) = payout_cursor(
        q.get("period")
            .cloned()
            .unwrap_or_else(|| s.period.lock().unwrap().clone()),
        q.get("cursor").map(String::as_str),
    );
    let body = s.with_list(&period, |list, record| {
        let to = (from + 500).min(list.len());
        let page: Vec<Vec<u8>> = list[from.min(to)..to].iter().map(|s| record(*s)).collect();
        super::page_body(
            page.iter().map(Vec::as_slice),
            format!("{period}:{}", to.max(from)),
            ("items", "next_cursor", true),
        )
    });
    ([("content-type", "application/json")], body).into_response()
}

async fn results(State(s): State<Arc<Subsidies>>, h: HeaderMap, body: Bytes) -> Response {
    let v = match s.request(&h, &body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let idem = header(&h, "idempotency-key").to_string();
    s.common.apply(
        &idem,
        "payout_result",
        v["payment_id"].as_str().unwrap_or(""),
        v["status"].as_str().unwrap_or("").to_string(),
    );
    Json(json!({ "ok": true })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payout_cursor_of_an_earlier_month_starts_the_new_list() {
        let at = |c: Option<&str>| payout_cursor("2027-01".into(), c).1;
        assert_eq!(at(None), 0);
        assert_eq!(at(Some("2027-01:1500")), 1500);
        assert_eq!(at(Some("2026-12:20000")), 0);
        assert_eq!(at(Some("700")), 700);
        assert_eq!(at(Some("2027-01:x")), 0);
    }

    #[test]
    fn a_recipient_keeps_each_field_and_each_decision_from_its_month() {
        let m = |p: &str| month_index(p).unwrap();
        let mut r = Recipient::new(
            [
                "张三",
                "C1",
                "110105",
                "621700\u{1f}0004",
                "105",
                "张三",
                "DIBAO",
                "1",
                "",
            ],
            m("2026-11"),
            41_000,
            30_000,
        );
        assert_eq!(r.get(Field::Name), "张三");
        assert_eq!(
            r.get(Field::BankAccountNo),
            "6217000004",
            "the separator is removed"
        );
        assert_eq!(r.get(Field::Dibao), "DIBAO");
        // Not before the start month; stopped from February; a level
        // change in force from April that keeps only the living subsidy.
        r.decide_from(m("2027-04"), 2, 41_000, 0);
        r.decide_from(m("2027-02"), 1, 0, 0);
        // Two decisions for one month: the later made wins, whatever order
        // they come in (a resume decided after a stop).
        r.decide_from(m("2027-06"), 20, 41_000, 0);
        r.decide_from(m("2027-06"), 10, 0, 0);
        r.set(Field::CertificateNo, "C1B1");
        assert_eq!(r.get(Field::CertificateNo), "C1B1");
        assert_eq!(r.get(Field::AccountName), "张三");
        assert_eq!(r.get(Field::NeedsCare), "1");
        let paid: Vec<(i64, i64)> = [
            "2026-10", "2026-11", "2027-01", "2027-02", "2027-03", "2027-04", "2027-09",
        ]
        .iter()
        .map(|p| r.amounts(m(p)))
        .collect();
        assert_eq!(
            paid,
            [
                (0, 0),
                (41_000, 30_000),
                (41_000, 30_000),
                (0, 0),
                (0, 0),
                (41_000, 0),
                (41_000, 0)
            ]
        );
        let mut slots = Vec::new();
        for period in ["2026-10", "2026-11", "2027-02", "2027-04"] {
            push_slots(&mut slots, 0, &r, period);
        }
        assert_eq!(slots.len(), 3, "two in November, one in April");
        let v: Value =
            serde_json::from_slice(&record("110105X", &r, "2027-04", false, None)).unwrap();
        assert_eq!(v["payout_id"], "LIVING-110105X-2027-04");
        assert_eq!(v["amount_fen"], 41_000);
        assert_eq!(v["certificate_no"], "C1B1");
        assert_eq!(v["bank_account_no"], "6217000004");
        assert_eq!(v["account_source"], "APPLICATION");
        // Paid through the card: its account, in the holder's name.
        let card = (
            "6228480012345678903".to_string(),
            "103100000026".to_string(),
        );
        let v: Value =
            serde_json::from_slice(&record("110105X", &r, "2027-04", false, Some(&card))).unwrap();
        assert_eq!(v["bank_account_no"], "6228480012345678903");
        assert_eq!(v["bank_code"], "103100000026");
        assert_eq!(v["account_source"], "SSCARD");
        assert_eq!(month_index("2027-13"), None);
        assert_eq!(month_index("2027-1"), None);
    }

    #[test]
    fn entitlements_follow_the_rules() {
        let r = Rates::default();
        // 低保, level 1 needing care: both.
        assert_eq!(
            entitlement(&r, 4, 1, "DIBAO", true, false),
            (41_000, 30_000)
        );
        // Near-低保 level 2 without long-term care: living only.
        assert_eq!(
            entitlement(&r, 4, 2, "NEAR_DIBAO", false, false),
            (41_000, 0),
            "at the 低保 standard"
        );
        let own = Rates {
            near_dibao_at_dibao_standard: false,
            ..Rates::default()
        };
        assert_eq!(
            entitlement(&own, 4, 2, "NEAR_DIBAO", false, false),
            (29_000, 0)
        );
        // Level 3 intellectual: care at 50 % of level 2.
        assert_eq!(entitlement(&r, 5, 3, "NONE", false, false), (0, 7_500));
        // Level 3 physical: nothing.
        assert_eq!(entitlement(&r, 4, 3, "NONE", false, false), (0, 0));
        // A multiple disability at level 3: at 50 % only if it includes an
        // intellectual or mental one.
        assert_eq!(entitlement(&r, 7, 3, "NONE", false, true), (0, 7_500));
        assert_eq!(entitlement(&r, 7, 3, "NONE", false, false), (0, 0));
        // 特困供养: nothing.
        // 特困供养: the care subsidy, not the living subsidy; nothing at all
        // where the province excludes them.
        assert_eq!(entitlement(&r, 4, 1, "TEKUN", true, false), (0, 30_000));
        let excluding = Rates {
            exclude_tekun: true,
            ..Rates::default()
        };
        assert_eq!(entitlement(&excluding, 4, 1, "TEKUN", true, false), (0, 0));
        // A province without the extensions.
        let strict = Rates {
            near_dibao_living: false,
            care_intellectual_mental_3_4: false,
            ..Rates::default()
        };
        assert_eq!(
            entitlement(&strict, 5, 3, "NEAR_DIBAO", true, false),
            (0, 0)
        );
    }
}
