//! Simulators of the systems the hub connects, for tests, benchmarks,
//! `tongban demo`, and for a data office rehearsing a feed before going
//! live: `tongban sim <system> --listen 127.0.0.1:PORT`.
//!
//! Each is an axum server with the system's API and rules (DOMAIN.md), a
//! ledger of its effects, deduplicated by idempotency key, at
//! `GET /_ledger`, and fault switches at `GET|POST /_faults`: an error rate
//! (503), added latency, a rate of 429 with `Retry-After`, a rate of
//! requests that hang, a crash at the n-th request (the process exits, or
//! in-process the server stops answering), and whether records that break
//! the system's rules are refused with 422 (default: yes).
//!
//! Rates are in per mille (‰): integers, like every number here.

pub mod bank;
pub mod cert;
pub mod platform;
pub mod referral;
pub mod sscard;
pub mod subsidies;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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

/// One effect a simulator applied, copied out of its [`Ledger`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effect {
    /// What was done (`card_loaded`, `eligibility`, `status`, …).
    pub kind: &'static str,
    subject: String,
    detail: String,
    /// When, ms since the epoch.
    pub at: i64,
}

impl Effect {
    /// An effect of `kind` for `subject`.
    pub fn new(kind: &'static str, subject: &str, detail: &str, at: i64) -> Effect {
        Effect {
            kind,
            subject: subject.to_string(),
            detail: detail.to_string(),
            at,
        }
    }

    /// Who it was for (ID number) or what it is about (application id).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A short description.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// The ledger: effects in order, and how many requests repeated one.
///
/// A demo of 100,000 people keeps about a million effects, so they are
/// kept in two arrays rather than one allocation each: a fixed-size entry
/// per effect and one text holding every subject and detail.
#[derive(Default)]
pub struct Ledger {
    entries: Vec<Entry>,
    /// Subjects and details, one after the other.
    text: String,
    /// The kinds seen, indexed by [`Entry::kind`].
    kinds: Vec<&'static str>,
    /// Idempotency keys applied, as 64-bit hashes (a ledger of millions of
    /// keys stays small; a collision would need 2^32 keys).
    keys: std::collections::HashSet<u64>,
    /// Effects per kind.
    counts: HashMap<&'static str, u64>,
    /// Requests that carried an idempotency key already applied.
    pub repeats: u64,
}

/// One effect in a [`Ledger`]: its subject and detail are `text[start..]`.
struct Entry {
    at: i64,
    start: u64,
    subject_len: u32,
    detail_len: u32,
    kind: u8,
}

impl Ledger {
    /// Records an effect once per idempotency key (deduplicated, so a
    /// delivery retried by the hub counts once); false if it was a repeat.
    pub fn apply(
        &mut self,
        idem_key: &str,
        kind: &'static str,
        subject: &str,
        detail: &str,
        at: i64,
    ) -> bool {
        if !idem_key.is_empty() && !self.keys.insert(key_hash(idem_key)) {
            self.repeats += 1;
            return false;
        }
        *self.counts.entry(kind).or_default() += 1;
        let k = match self.kinds.iter().position(|k| *k == kind) {
            Some(k) => k,
            None => {
                self.kinds.push(kind);
                self.kinds.len() - 1
            }
        };
        self.entries.push(Entry {
            at,
            start: self.text.len() as u64,
            subject_len: subject.len() as u32,
            detail_len: detail.len() as u32,
            kind: u8::try_from(k).expect("fewer than 256 kinds of effect"),
        });
        self.text.push_str(subject);
        self.text.push_str(detail);
        true
    }

    /// How many effects of a kind.
    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }

    /// How many effects in all.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every effect, in order, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = EffectRef<'_>> {
        self.entries.iter().map(|e| {
            let s = e.start as usize;
            let d = s + e.subject_len as usize;
            EffectRef {
                kind: self.kinds[e.kind as usize],
                at: e.at,
                subject: &self.text[s..d],
                detail: &self.text[d..d + e.detail_len as usize],
            }
        })
    }

    /// Every effect, in order (copies).
    pub fn effects(&self) -> Vec<Effect> {
        self.iter().map(|e| e.to_owned()).collect()
    }
}

/// An effect as a [`Ledger`] keeps it, borrowed (`/_ledger` writes it as
/// [`Effect`] is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EffectRef<'a> {
    /// What was done.
    pub kind: &'static str,
    subject: &'a str,
    detail: &'a str,
    /// When, ms since the epoch.
    pub at: i64,
}

impl<'a> EffectRef<'a> {
    /// Who it was for (ID number) or what it is about (application id).
    pub fn subject(&self) -> &'a str {
        self.subject
    }

    /// A short description.
    pub fn detail(&self) -> &'a str {
        self.detail
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Effect {
        Effect::new(self.kind, self.subject, self.detail, self.at)
    }
}

/// A 64-bit hash of an idempotency key (FNV-1a then a final mix).
fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h.wrapping_mul(0xff51_afd7_ed55_8ccd)
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
        self.ledger
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.to_owned())
            .collect()
    }

    /// Calls `f` with each effect of one kind, in order (nothing copied).
    pub fn for_each(&self, kind: &str, mut f: impl FnMut(&EffectRef)) {
        for e in self.ledger.lock().unwrap().iter() {
            if e.kind == kind {
                f(&e);
            }
        }
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
    next_at: usize,
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

/// An append-only feed of documents (JSON or XML), read by position in
/// pages: a simulator's event feed, filed forms, results. Every
/// [`Feed::BLOCK`] documents are sealed into one LZ4-compressed block, so
/// that a feed of 100,000 documents of about 800 bytes takes a few MB rather
/// than 80; the documents after the last full block are kept as they are.
#[derive(Default)]
pub struct Feed {
    /// Full blocks: each document as a 4-byte little-endian length and its
    /// bytes, compressed.
    sealed: Vec<Box<[u8]>>,
    /// The documents after the sealed blocks.
    tail: Vec<Box<[u8]>>,
}

impl Feed {
    /// Documents per sealed block.
    pub const BLOCK: usize = 256;

    /// Appends a document; returns the feed's length.
    pub fn push(&mut self, doc: &[u8]) -> usize {
        self.tail.push(doc.into());
        if self.tail.len() == Self::BLOCK {
            let size = self.tail.iter().map(|d| d.len() + 4).sum();
            let mut raw = Vec::with_capacity(size);
            for d in self.tail.drain(..) {
                raw.extend_from_slice(&(d.len() as u32).to_le_bytes());
                raw.extend_from_slice(&d);
            }
            self.sealed
                .push(lz4_flex::compress_prepend_size(&raw).into_boxed_slice());
        }
        self.len()
    }

    /// Documents in the feed.
    pub fn len(&self) -> usize {
        self.sealed.len() * Self::BLOCK + self.tail.len()
    }

    /// Whether the feed is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A page from position `from`, as [`json_page`] writes it.
    pub fn page(&self, from: usize, page: usize, format: (&str, &str, bool)) -> Vec<u8> {
        self.read(from, page, |docs, next_at| {
            page_body(docs.iter().copied(), next_at, format)
        })
    }

    /// Calls `f` with the documents from position `from`, at most `page` of
    /// them, and the position after them.
    pub fn read<R>(&self, from: usize, page: usize, f: impl FnOnce(&[&[u8]], usize) -> R) -> R {
        let to = (from + page).min(self.len());
        let next_at = to.max(from);
        let from = from.min(to);
        // The sealed blocks the page touches, decompressed and split.
        let sealed_to = to.min(self.sealed.len() * Self::BLOCK);
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        if from < sealed_to {
            for b in from / Self::BLOCK..=(sealed_to - 1) / Self::BLOCK {
                blocks.push(
                    lz4_flex::decompress_size_prepended(&self.sealed[b])
                        .expect("a block this feed compressed"),
                );
            }
        }
        let mut docs: Vec<&[u8]> = Vec::with_capacity(to - from);
        let first = from / Self::BLOCK;
        for (i, raw) in blocks.iter().enumerate() {
            let base = (first + i) * Self::BLOCK;
            let mut at = 0;
            for n in base..base + Self::BLOCK {
                let len = u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes")) as usize;
                let doc = &raw[at + 4..at + 4 + len];
                at += 4 + len;
                if (from..to).contains(&n) {
                    docs.push(doc);
                }
            }
        }
        let tail_from = from.max(self.sealed.len() * Self::BLOCK);
        for n in tail_from..to {
            docs.push(&self.tail[n - self.sealed.len() * Self::BLOCK]);
        }
        f(&docs, next_at)
    }
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

/// `GET /_ledger`.
pub async fn ledger(State(c): State<Arc<Common>>) -> Json<serde_json::Value> {
    let l = c.ledger.lock().unwrap();
    Json(serde_json::json!({
        "system": c.name,
        "requests": c.requests.load(Ordering::Relaxed),
        "faulted": c.faulted.load(Ordering::Relaxed),
        "repeats": l.repeats,
        "effects": l.iter().collect::<Vec<_>>(),
    }))
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
    fn the_ledger_applies_each_idempotency_key_once() {
        let mut l = Ledger::default();
        assert!(l.apply("a", "k", "1", "", 0));
        assert!(!l.apply("a", "k", "1", "", 0));
        assert!(l.apply("b", "k", "2", "", 0));
        assert_eq!(l.effects().len(), 2);
        assert_eq!(
            serde_json::to_value(Effect::new("status", "A-1", "APPROVED", 7)).unwrap(),
            serde_json::json!({"kind": "status", "subject": "A-1", "detail": "APPROVED", "at": 7})
        );
        assert_eq!(l.effects()[1].subject(), "2");
        assert_eq!(l.repeats, 1);
        // Effects of several kinds, with details, read back in order.
        assert!(l.apply("c", "status", "A-1", "APPROVED", 7));
        assert!(l.apply("", "card_loaded", "110105", "", 8));
        let all: Vec<(&str, &str, &str, i64)> = l
            .iter()
            .map(|e| (e.kind, e.subject(), e.detail(), e.at))
            .collect();
        assert_eq!(
            all,
            [
                ("k", "1", "", 0),
                ("k", "2", "", 0),
                ("status", "A-1", "APPROVED", 7),
                ("card_loaded", "110105", "", 8)
            ]
        );
        assert_eq!((l.len(), l.count("k"), l.count("status")), (4, 2, 1));
        assert_eq!(
            serde_json::to_value(l.iter().nth(2).unwrap()).unwrap(),
            serde_json::json!({"kind": "status", "subject": "A-1", "detail": "APPROVED", "at": 7})
        );
    }

    #[test]
    fn permille_is_spread_over_0_to_999() {
        let hits = (0..10_000u64).filter(|n| permille(*n) < 100).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }

    #[test]
    fn a_feed_pages_across_sealed_blocks_and_its_tail_as_a_list_does() {
        let docs: Vec<Vec<u8>> = (0..Feed::BLOCK * 3 + 17)
            .map(|i| {
                format!(
                    "{{\"n\":{i},\"text\":\"line\\nbreak {}\"}}",
                    "x".repeat(i % 40)
                )
                .into_bytes()
            })
            .collect();
        let mut feed = Feed::default();
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(feed.push(d), i + 1);
        }
        assert_eq!(feed.len(), docs.len());
        assert_eq!(feed.sealed.len(), 3, "three full blocks are compressed");
        let f = ("events", "next", false);
        for (from, page) in [
            (0, 500),
            (250, 10),
            (255, 2),
            (500, 500),
            (700, 100),
            (780, 5),
            (9999, 5),
        ] {
            assert_eq!(
                String::from_utf8(feed.page(from, page, f)).unwrap(),
                String::from_utf8(json_page(&docs, from, page, f)).unwrap(),
                "page at {from} of {page}"
            );
        }
        let sealed: usize = feed.sealed.iter().map(|b| b.len()).sum();
        let raw: usize = docs[..Feed::BLOCK * 3].iter().map(|d| d.len()).sum();
        assert!(sealed * 3 < raw, "{sealed} bytes compressed for {raw}");
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
