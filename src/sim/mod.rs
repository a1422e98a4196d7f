//! Simulators of the systems the hub connects, for tests, benchmarks,
//! `tongban demo`, and for a data office rehearsing a feed before going
//! live: `tongban sim <system> --listen 127.0.0.1:PORT`.
//!
//! Each is an axum server with the system's API and rules (docs/domain.md), a
//! ledger of its effects, deduplicated by idempotency key, at
//! `GET /_ledger`, and fault switches at `GET|POST /_faults`: an error rate
//! (503), added latency, a rate of 429 with `Retry-After`, a rate of
//! requests that hang, a crash at the n-th request (the process exits, or
//! in-process the server stops answering), and whether records that break
//! the system's rules are refused with 422 (default: yes).
//!
//! Rates are in per mille (‰): integers, like every number here.
//!
//! Layer 7: simulators use the configuration types (signing algorithms),
//! the connectors' signer and file placement, the formats and the domain;
//! the hub never uses them.

pub mod bank;
pub mod cert;
pub mod civil;
pub mod clock;
mod ledger;
pub mod platform;
pub mod referral;
pub mod sscard;
pub mod sshd;
pub mod subsidies;

pub use ledger::{Effect, EffectRef, Feed, Ledger};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The fault switches of a simulator.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Requests answered 503, per mille.
    pub error_permille: u32,
    /// Delay added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Requests answered 429 with `Retry-After`, per mille.
    pub throttle_permille: u32,
    /// The `Retry-After` of a 429, in seconds.
    pub retry_after_s: u32,
    /// Requests that never get an answer, per mille.
    pub hang_permille: u32,
    /// Crash at this request (counting from 1); 0: never.
    pub crash_at: u64,
    /// Accept records that break the system's rules instead of refusing
    /// them with 422.
    pub accept_bad: bool,
}

/// What every simulator shares: its name, faults, ledger and counters.
pub struct Common {
    /// The system's name.
    pub name: &'static str,
    faults: Mutex<Faults>,
    /// Effects.
    pub ledger: Mutex<Ledger>,
    /// Requests received (except `/_…`).
    pub requests: AtomicU64,
    /// Requests answered with a fault.
    pub faulted: AtomicU64,
    /// Exit the process at `crash_at` (standalone), or stop answering.
    pub exit_on_crash: AtomicBool,
    crashed: AtomicBool,
}

impl Common {
    /// A simulator's common part.
    pub fn new(name: &'static str) -> Arc<Common> {
        Arc::new(Common {
            name,
            faults: Mutex::new(Faults::default()),
            ledger: Mutex::new(Ledger::default()),
            requests: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            exit_on_crash: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
        })
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap().clone()
    }

    /// Switches faults.
    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    /// Records an effect (see [`Ledger::apply`]).
    pub fn apply(&self, idem_key: &str, kind: &'static str, subject: &str, detail: String) -> bool {
        self.ledger
            .lock()
            .unwrap()
            .apply(idem_key, kind, subject, &detail, crate::store::now_ms())
    }

    /// Effects of one kind.
    pub fn effects(&self, kind: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        self.for_each(kind, |e| out.push(e.to_owned()));
        out
    }

    /// Calls `f` with each effect of one kind, in order (nothing copied).
    pub fn for_each(&self, kind: &str, mut f: impl FnMut(&EffectRef)) {
        self.ledger.lock().unwrap().for_each(|e| {
            if e.kind == kind {
                f(&e);
            }
        });
    }

    /// How many effects of one kind (cheap: for progress).
    pub fn count(&self, kind: &str) -> u64 {
        self.ledger.lock().unwrap().count(kind)
    }

    /// Whether records breaking the rules are refused.
    pub fn refuses_bad(&self) -> bool {
        !self.faults.lock().unwrap().accept_bad
    }
}

/// A page of JSON documents from position `from`, at most `page` of them:
/// `{"<list>": [...], "<next>": N}` (N in quotes when `quoted`), where N is
/// the position after the page.
pub fn json_page<T: AsRef<[u8]>>(
    items: &[T],
    from: usize,
    page: usize,
    format: (&str, &str, bool),
) -> Vec<u8> {
    let to = (from + page).min(items.len());
    let slice = &items[from.min(to)..to];
    page_body(slice.iter().map(|i| i.as_ref()), to.max(from), format)
}

/// `{"<list>": [items], "<next>": next}`.
fn page_body<'a>(
    items: impl Iterator<Item = &'a [u8]>,
    next_at: impl std::fmt::Display,
    (list, next, quoted): (&str, &str, bool),
) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(format!("{{\"{list}\":[").as_bytes());
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    let n = if quoted {
        format!("\"{next_at}\"")
    } else {
        next_at.to_string()
    };
    body.extend_from_slice(format!("],\"{next}\":{n}}}").as_bytes());
    body
}

/// A JSON error answer.
pub fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": why.into() }))).into_response()
}

/// A cheap per-request random number in 0..1000 (no floating point).
fn permille(n: u64) -> u32 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ crate::store::now_ms() as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 1000) as u32
}

/// The fault layer: applied before every route but `/_ledger` and `/_faults`.
pub async fn fault_layer(State(c): State<Arc<Common>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_") {
        return next.run(req).await;
    }
    let n = c.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let f = c.faults();
    if c.crashed.load(Ordering::Relaxed) || (f.crash_at > 0 && n >= f.crash_at) {
        c.crashed.store(true, Ordering::Relaxed);
        if c.exit_on_crash.load(Ordering::Relaxed) {
            eprintln!("{}: crashing at request {n}, as told", c.name);
            std::process::exit(70);
        }
        // In process: never answer again (the client times out).
        std::future::pending::<()>().await;
    }
    if f.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
    }
    let r = permille(n);
    if r < f.hang_permille {
        c.faulted.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }
    let r = permille(n.wrapping_add(7));
    if r < f.error_permille {
        c.faulted.fetch_add(1, Ordering::Relaxed);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "simulated outage");
    }
    let r = permille(n.wrapping_add(13));
    if r < f.throttle_permille {
        c.faulted.fetch_add(1, Ordering::Relaxed);
        let mut resp = refuse(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        resp.headers_mut().insert(
            "retry-after",
            f.retry_after_s.max(1).to_string().parse().unwrap(),
        );
        return resp;
    }
    next.run(req).await
}

/// `GET /_ledger`: `{"system", "requests", "faulted", "repeats",
/// "effects": [{"kind", "subject", "detail", "at"}, …]}`, written as the
/// ledger is read (no copy of its effects).
pub async fn ledger(State(c): State<Arc<Common>>) -> Response {
    let l = c.ledger.lock().unwrap();
    let mut body = serde_json::to_vec(&serde_json::json!({
        "system": c.name,
        "requests": c.requests.load(Ordering::Relaxed),
        "faulted": c.faulted.load(Ordering::Relaxed),
        "repeats": l.repeats,
    }))
    .unwrap_or_default();
    // The object above with its closing brace replaced by the effects.
    body.pop();
    body.extend_from_slice(b",\"effects\":[");
    let mut first = true;
    l.for_each(|e| {
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &e).unwrap_or_default();
    });
    drop(l);
    body.extend_from_slice(b"]}");
    ([("content-type", "application/json")], body).into_response()
}

/// `GET /_faults`.
pub async fn get_faults(State(c): State<Arc<Common>>) -> Json<Faults> {
    Json(c.faults())
}

/// `POST /_faults` with a [`Faults`] object.
pub async fn set_faults(State(c): State<Arc<Common>>, Json(f): Json<Faults>) -> Json<Faults> {
    c.set_faults(f.clone());
    Json(f)
}

/// The `/_ledger` and `/_faults` routes and the fault layer around `app`.
pub fn with_common(app: axum::Router, c: Arc<Common>) -> axum::Router {
    app.merge(
        axum::Router::new()
            .route("/_ledger", axum::routing::get(ledger))
            .route("/_faults", axum::routing::get(get_faults).post(set_faults))
            .with_state(c.clone()),
    )
    .layer(axum::middleware::from_fn_with_state(c, fault_layer))
}

/// The value of a header.
pub fn header<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Checks `Authorization: Bearer <token>`.
pub fn bearer_ok(h: &HeaderMap, token: &str) -> bool {
    header(h, "authorization") == format!("Bearer {token}")
}

/// Checks HTTP basic authentication.
pub fn basic_ok(h: &HeaderMap, user: &str, password: &str) -> bool {
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    header(h, "authorization") == format!("Basic {want}")
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("simulator stopped: {e}");
    }
}

/// A page of a feed after the query's `after` position (500 documents at
/// most), as `{"<items>": […], "<next>": N}`.
pub fn feed_page(
    feed: &std::sync::Mutex<Feed>,
    q: &std::collections::HashMap<String, String>,
    names: (&str, &str),
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let from: usize = q.get("after").and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = feed
        .lock()
        .unwrap()
        .page(from, 500, (names.0, names.1, false));
    ([("content-type", "application/json")], body).into_response()
}

/// The period (`YYYY-MM`) of a time in ms since the epoch (UTC+8, as the
/// systems keep it).
pub fn period_of(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000).unwrap_or_default();
    t.format("%Y-%m").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permille_is_spread_over_0_to_999() {
        let hits = (0..10_000u64).filter(|n| permille(*n) < 100).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }

    #[test]
    fn pages_of_json_documents() {
        let items: Vec<&[u8]> = vec![b"1", b"{\"a\":2}", b"3"];
        let page = |from, f| String::from_utf8(json_page(&items, from, 2, f)).unwrap();
        let cursor = ("items", "next_cursor", true);
        assert_eq!(
            page(0, cursor),
            r#"{"items":[1,{"a":2}],"next_cursor":"2"}"#
        );
        assert_eq!(page(2, cursor), r#"{"items":[3],"next_cursor":"3"}"#);
        // Past the end: nothing, and the cursor stays.
        assert_eq!(page(5, cursor), r#"{"items":[],"next_cursor":"5"}"#);
        assert_eq!(
            page(1, ("events", "next", false)),
            r#"{"events":[{"a":2},3],"next":3}"#
        );
    }
}
