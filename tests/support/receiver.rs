//! An HTTP receiver on 127.0.0.1 for dispatcher tests: records every
//! delivery (idempotency key, body) and answers as told: accept, 503,
//! 429 with Retry-After, and 422 for bodies with `"poison":true` while
//! poison is refused. It stops when the test's runtime ends.

use axum::{
    body::Bytes, extract::State, http::HeaderMap, http::StatusCode, response::IntoResponse,
    routing::post, Router,
};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// How the receiver answers.
pub const ACCEPT: u8 = 0;
/// 503 Service Unavailable.
pub const UNAVAILABLE: u8 = 1;
/// 429 with `Retry-After: 1`.
pub const TOO_MANY: u8 = 2;

#[derive(Default)]
pub struct Receiver {
    pub mode: AtomicU8,
    /// When set, requests without exactly this `Authorization` get 401.
    pub authorization: Mutex<Option<String>>,
    /// Accepted deliveries per User-Agent (each hub process has its own).
    pub agents: Mutex<std::collections::HashMap<String, u64>>,
    /// Idempotency keys being handled right now, and how often one arrived
    /// while it was already in flight.
    pub in_flight: Mutex<std::collections::HashSet<String>>,
    pub overlaps: AtomicU64,
    pub refuse_poison: AtomicBool,
    pub requests: AtomicU64,
    /// Accepted deliveries in arrival order: (idempotency key, body).
    pub accepted: Mutex<Vec<(String, String)>>,
    /// Sizes of the batch requests accepted.
    pub batches: Mutex<Vec<usize>>,
}

/// Starts a receiver; returns its state and its URL.
pub async fn start(refuse_poison: bool, mode: u8) -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver::default());
    state.mode.store(mode, Ordering::SeqCst);
    state.refuse_poison.store(refuse_poison, Ordering::SeqCst);
    let app = Router::new()
        .route("/deliver", post(handle))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/deliver", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url)
}

async fn handle(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let body = String::from_utf8_lossy(&body).into_owned();
    let wanted = r.authorization.lock().unwrap().clone();
    if let Some(w) = wanted {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(w.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [("retry-after", "")],
                "bad credentials".to_string(),
            );
        }
    }
    match r.mode.load(Ordering::SeqCst) {
        UNAVAILABLE => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "")],
                "down for maintenance".to_string(),
            )
        }
        TOO_MANY => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down".to_string(),
            )
        }
        _ => {}
    }
    if body.contains("\"poison\":true") && r.refuse_poison.load(Ordering::SeqCst) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            [("retry-after", "")],
            "unknown person 110105199003070017".to_string(),
        );
    }
    if headers.contains_key("x-tongban-batch-size") {
        // A batch: each item carries its own idempotency key.
        let v: serde_json::Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    [("retry-after", "")],
                    e.to_string(),
                )
            }
        };
        let items = v["items"].as_array().cloned().unwrap_or_default();
        r.batches.lock().unwrap().push(items.len());
        let mut acc = r.accepted.lock().unwrap();
        for it in items {
            acc.push((
                it["idempotency_key"].as_str().unwrap_or("").to_string(),
                it["record"].to_string(),
            ));
        }
        return (StatusCode::OK, [("retry-after", "")], "ok".to_string());
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !r.in_flight.lock().unwrap().insert(key.clone()) {
        r.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    // Hold the request a moment, so that a concurrent duplicate would overlap.
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    r.in_flight.lock().unwrap().remove(&key);
    let agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    *r.agents.lock().unwrap().entry(agent).or_default() += 1;
    r.accepted.lock().unwrap().push((key, body));
    (StatusCode::OK, [("retry-after", "")], "ok".to_string())
}

impl Receiver {
    /// How many different idempotency keys were accepted.
    pub fn distinct(&self) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}
