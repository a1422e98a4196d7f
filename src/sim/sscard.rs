//! The social security card system (社会保障卡), an XML API.
//!
//! - `POST /sscard/v1/certificate/load` and `/unload` (bearer token): a
//!   `CardCertificateRequest` document. Refused with 422: a person without
//!   a card (unknown ID number), a certificate number that is not the
//!   holder's (its first 18 characters must be the ID number), unloading a
//!   card that carries no certificate. Rate-limited: over `per_second`
//!   requests a second are answered 429 with `Retry-After: 1`. Each
//!   idempotency key is applied once.
//! - Each card has a financial account (社保卡金融账户): seeded with
//!   [`Sscard::issue_card_with_account`], or [`card_account`]. A load's
//!   result carries it (`bank_account_no`, `bank_code`).
//! - `GET /sscard/v1/certificate/results?since=N`: the results of requests,
//!   `<CertificateResults xmlns="…"><CertificateResult>…</CertificateResult>…<next>N'</next></CertificateResults>`.

use super::{bearer_ok, header, with_common, Common};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

/// The XML namespace of the card system's documents.
pub const NS: &str = "urn:cn:gov:mohrss:sscard:certificate:1";

type Limiter = governor::DefaultDirectRateLimiter;

#[derive(Default)]
struct Cards {
    /// Card holders, when seeded; `None`: everyone with a valid ID number.
    holders: Option<HashSet<String>>,
    /// The financial account of each card (社保卡金融账户), when seeded:
    /// account number and its bank's CNAPS code; otherwise [`card_account`].
    accounts: HashMap<String, (String, String)>,
    /// The certificate loaded on each card: its number and valid-until
    /// date (`YYYYMMDD`, as the load gave it).
    loaded: HashMap<String, (String, String)>,
    /// When the certificate event behind each card's last change happened
    /// (ms): an older request that arrives later changes nothing.
    changed_at: HashMap<String, i64>,
    /// Results, as XML elements, in order.
    results: super::Feed,
}

impl Cards {
    /// The financial account of a person's card: seeded, or derived.
    fn account(&self, id_no: &str) -> (String, String) {
        self.accounts
            .get(id_no)
            .cloned()
            .unwrap_or_else(|| card_account(id_no))
    }
}

/// The card system's state.
pub struct Sscard {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    token: Option<String>,
    cards: Mutex<Cards>,
    limiter: Option<Limiter>,
}

impl Sscard {
    /// A card system wanting `token` (if given), allowing `per_second`
    /// requests a second (if given).
    pub fn new(token: Option<&str>, per_second: Option<u32>) -> Arc<Sscard> {
        Arc::new(Sscard {
            common: Common::new("sscard"),
            token: token.map(str::to_string),
            cards: Mutex::new(Cards::default()),
            limiter: per_second
                .and_then(NonZeroU32::new)
                .map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r))),
        })
    }

    /// Issues a card to a person (once any is issued, only card holders are known).
    pub fn issue_card(&self, id_no: &str) {
        self.cards
            .lock()
            .unwrap()
            .holders
            .get_or_insert_with(HashSet::new)
            .insert(id_no.to_string());
    }

    /// Issues a card whose financial account is `account` at `bank_code`.
    pub fn issue_card_with_account(&self, id_no: &str, account: &str, bank_code: &str) {
        self.issue_card(id_no);
        self.cards.lock().unwrap().accounts.insert(
            id_no.to_string(),
            (account.to_string(), bank_code.to_string()),
        );
    }

    /// The financial account of a person's card: account number and bank.
    pub fn account_of(&self, id_no: &str) -> (String, String) {
        self.cards.lock().unwrap().account(id_no)
    }

    /// The certificate loaded on one person's card, if any.
    pub fn loaded_on(&self, id_no: &str) -> Option<String> {
        self.certificate_function(id_no).map(|c| c.0)
    }

    /// The certificate function of one person's card, if loaded: the
    /// certificate number and its valid-until date (`YYYYMMDD`).
    pub fn certificate_function(&self, id_no: &str) -> Option<(String, String)> {
        self.cards.lock().unwrap().loaded.get(id_no).cloned()
    }

    /// The simulator's routes, with `/_ledger` and `/_faults`.
    pub fn router(self: &Arc<Self>) -> Router {
        let app = Router::new()
            .route("/sscard/v1/certificate/load", post(load))
            .route("/sscard/v1/certificate/unload", post(unload))
            .route("/sscard/v1/certificate/results", get(results))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }

    fn handle(&self, h: &HeaderMap, body: &[u8], load: bool) -> Response {
        if let Some(t) = &self.token {
            if !bearer_ok(h, t) {
                return xml_error(StatusCode::UNAUTHORIZED, "bad credentials");
            }
        }
        if let Some(l) = &self.limiter {
            if l.check().is_err() {
                let mut r = xml_error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
                r.headers_mut().insert("retry-after", "1".parse().unwrap());
                return r;
            }
        }
        let f = match fields(body) {
            Ok(f) => f,
            Err(e) => {
                return xml_error(
                    StatusCode::BAD_REQUEST,
                    &format!("not a readable document: {e}"),
                )
            }
        };
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let (id, cert, request_id) = (
            get("social_security_no"),
            get("certificate_no"),
            get("request_id"),
        );
        let mut cards = self.cards.lock().unwrap();
        // Loads and unloads of one card travel apart (two operations): they
        // are applied in the order of the events behind them, and an older
        // one that arrives after a newer changes nothing.
        let at = chrono::DateTime::parse_from_rfc3339(get("occurred_at"))
            .map_or_else(|_| super::clock::now_ms(), |t| t.timestamp_millis());
        if cards.changed_at.get(id).is_some_and(|last| at < *last) {
            self.common.apply(
                header(h, "idempotency-key"),
                "card_superseded",
                id,
                String::new(),
            );
            drop(cards);
            return ok_response();
        }
        let known = match &cards.holders {
            Some(h) => h.contains(id),
            None => crate::domain::ResidentId::parse(id).is_ok(),
        };
        let refusal = if !known {
            Some("unknown person: no social security card for this ID number".to_string())
        } else if !cert.starts_with(id) || cert.len() < 20 {
            Some("the certificate number is not the card holder's".to_string())
        } else if !load && cards.loaded.get(id).map(|c| c.0.as_str()) != Some(cert) {
            Some("the card does not carry this certificate".to_string())
        } else {
            None
        };
        let now = super::clock::china_now().to_rfc3339();
        if let Some(why) = refusal {
            if self.common.refuses_bad() {
                drop(cards);
                return xml_error(StatusCode::UNPROCESSABLE_ENTITY, &why);
            }
        }
        let idem = header(h, "idempotency-key");
        let kind = if load { "card_loaded" } else { "card_unloaded" };
        if self
            .common
            .apply(idem, kind, id, crate::domain::mask::id_number(cert))
        {
            cards.changed_at.insert(id.to_string(), at);
            if load {
                cards.loaded.insert(
                    id.to_string(),
                    (cert.to_string(), get("valid_until").to_string()),
                );
            } else {
                cards.loaded.remove(id);
            }
            let app = match get("application_id") {
                "" => String::new(),
                a => format!("<application_id>{}</application_id>", esc(a)),
            };
            // A load says which financial account the card has: where a
            // province pays through the card, subsidies go there only.
            let account = match load {
                true => {
                    let (no, bank) = cards.account(id);
                    format!(
                        "<bank_account_no>{}</bank_account_no><bank_code>{}</bank_code>",
                        esc(&no),
                        esc(&bank)
                    )
                }
                false => String::new(),
            };
            let r = format!(
                "<CertificateResult><request_id>{}</request_id>{app}<social_security_no>{}</social_security_no><certificate_no>{}</certificate_no><status>{}</status><card_no>A{:08}</card_no>{account}<processed_at>{now}</processed_at></CertificateResult>",
                esc(request_id),
                esc(id),
                esc(cert),
                if load { "LOADED" } else { "UNLOADED" },
                cards.results.len() + 1
            );
            cards.results.push(r.as_bytes());
        }
        drop(cards);
        ok_response()
    }
}

/// The financial account of a card not seeded with one: a Luhn-valid
/// 19-digit number on one of the card banks' prefixes, the same for the
/// same person every time.
pub fn card_account(id_no: &str) -> (String, String) {
    let h = id_no.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    });
    let banks = crate::synth::BANKS;
    let (bin, bank) = banks[(h % banks.len() as u64) as usize];
    let body = format!("{:012}", (h >> 8) % 1_000_000_000_000);
    (
        crate::synth::luhn_complete(&format!("{bin}{body}")),
        bank.to_string(),
    )
}

fn ok_response() -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response xmlns=\"{NS}\"><code>0</code><message>OK</message></Response>"),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn xml_error(status: StatusCode, why: &str) -> Response {
    (
        status,
        [("content-type", "application/xml; charset=utf-8")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response xmlns=\"{NS}\"><code>{}</code><message>{}</message></Response>",
            status.as_u16(),
            esc(why)
        ),
    )
        .into_response()
}

/// The text of each child element of the root, by local name. Documents
/// with a DTD are refused.
fn fields(body: &[u8]) -> Result<HashMap<String, String>, String> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut r = quick_xml::Reader::from_str(text);
    let (mut depth, mut name, mut out) = (0, String::new(), HashMap::new());
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::DocType(_) => return Err("a DOCTYPE is not accepted".into()),
            Event::Start(e) => {
                depth += 1;
                if depth == 2 {
                    name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                }
            }
            Event::Text(t) if depth == 2 => {
                let s = t.decode().map_err(|e| e.to_string())?;
                let s = quick_xml::escape::unescape(&s).map_err(|e| e.to_string())?;
                out.entry(name.clone())
                    .or_insert_with(String::new)
                    .push_str(&s);
            }
            Event::GeneralRef(g) if depth == 2 => {
                let c = match &*g {
                    b"lt" => '<',
                    b"gt" => '>',
                    b"amp" => '&',
                    b"apos" => '\'',
                    b"quot" => '"',
                    _ => match g.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => return Err("unknown entity".into()),
                    },
                };
                out.entry(name.clone()).or_insert_with(String::new).push(c);
            }
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("the document ends inside an element".into());
    }
    Ok(out)
}

async fn load(State(s): State<Arc<Sscard>>, h: HeaderMap, body: Bytes) -> Response {
    s.handle(&h, &body, true)
}

async fn unload(State(s): State<Arc<Sscard>>, h: HeaderMap, body: Bytes) -> Response {
    s.handle(&h, &body, false)
}

async fn results(
    State(s): State<Arc<Sscard>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(t) = &s.token {
        if !bearer_ok(&h, t) {
            return xml_error(StatusCode::UNAUTHORIZED, "bad credentials");
        }
    }
    let from: usize = q.get("since").and_then(|c| c.parse().ok()).unwrap_or(0);
    let cards = s.cards.lock().unwrap();
    let body = cards.results.read(from, 500, |results, next| {
        let mut body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CertificateResults xmlns=\"{NS}\">"
        );
        for r in results {
            body.push_str(std::str::from_utf8(r).expect("results are written as text"));
        }
        body.push_str(&format!("<next>{next}</next></CertificateResults>"));
        body
    });
    drop(cards);
    (
        StatusCode::OK,
        [("content-type", "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_namespaced_documents_and_refuse_dtds() {
        let f = fields(
            "<?xml version=\"1.0\"?><r:Req xmlns:r=\"urn:x\"><r:name>张&amp;三</r:name><r:level>1</r:level></r:Req>"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(f["name"], "张&三");
        assert_eq!(f["level"], "1");
        assert!(fields(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x><y>&a;</y></x>").is_err());
        assert!(fields(b"<x><y>1</y>").is_err());
    }
}
