//! The operations API, served by `tongban run` on `[admin] listen`: targets
//! with their backlog, failed messages found by filter, one message in full
//! with its attempts, replay (as is, or re-mapped with a dry run first),
//! skip, pause and resume, the quarantine, the audit, API tokens, and
//! Prometheus metrics.
//!
//! Every endpoint but `/api/openapi.json` wants `Authorization: Bearer
//! <token>`: 401 without a live token, 403 when its role is too low.
//! Tokens are stored as SHA-256 digests only. Roles: `viewer` reads, with
//! personal data masked; `operator` also acts (replay, skip, pause) and may
//! see a message unmasked, giving a reason; `admin` also reads the audit and
//! manages tokens. Every action and every unmasked view writes an audit row
//! with the token's name as the actor.
//!
//! Files: `messages.rs` (targets, messages, replay, skip, quarantine),
//! `tasks.rs` (bulk replays), `access.rs` (audit, tokens), `metrics.rs`;
//! this file holds roles, authentication, errors and the router.
//!
//! Layer 9: uses the hub (the targets it serves), the store, the
//! dispatcher's counters, the pipeline (re-mapping) and the domain's
//! masking; nothing uses it but the CLI.

mod access;
mod messages;
pub mod metrics;
mod tasks;

use access::*;
pub use messages::*;
pub use tasks::*;

use crate::config::Config;
use crate::domain::mask;
use crate::store::{MessageFilter, MessageRow, Store};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// A role, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads, masked.
    Viewer,
    /// Reads, replays, skips, pauses.
    Operator,
    /// All of that, the audit and the tokens.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("no role {other:?}: viewer, operator or admin")),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A new random API token (`tb_` and 64 hex digits) and its SHA-256.
pub fn new_token() -> Result<(String, String), String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("no randomness for a token: {e}"))?;
    let token = format!("tb_{}", crate::connectors::http::sign::hex(&bytes));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// What is stored of a token.
pub fn token_hash(token: &str) -> String {
    crate::connectors::file::sha256_hex(token.as_bytes())
}

/// The API's state.
pub struct Admin {
    /// The store.
    pub store: Arc<Store>,
    /// The configuration (feeds, for replays re-mapped).
    pub cfg: &'static Config,
    /// The targets this process serves, with their counters.
    pub served: crate::hub::Served,
    /// Deliveries counted every few seconds per target.
    pub rates: std::sync::Mutex<Rates>,
    /// The deadline register's calendar and limits, if configured.
    pub deadlines: Option<crate::connectors::deadlines::settings::DeadlineSettings>,
}

impl Admin {
    /// The API's state over a store and the targets served.
    pub fn new(store: Arc<Store>, cfg: &'static Config, served: crate::hub::Served) -> Self {
        Admin {
            store,
            cfg,
            served,
            rates: Default::default(),
            deadlines: crate::connectors::deadlines::report::settings(cfg),
        }
    }

    /// Counts each served target's deliveries now.
    fn sample(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::Instant::now();
        let mut r = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        for (t, st) in &self.served {
            r.sample(&t.to_string(), now, st.delivered.load(Relaxed));
        }
    }

    fn rate(&self, target: &str) -> Option<f64> {
        self.rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate(target)
    }
}

/// Delivery counts sampled per target, kept for about a minute: the rate
/// over the last minute.
#[derive(Debug, Default)]
pub struct Rates(
    std::collections::HashMap<String, std::collections::VecDeque<(std::time::Instant, u64)>>,
);

impl Rates {
    /// Records `target`'s count at `now`; forgets samples over a minute old
    /// (keeping two at least).
    pub fn sample(&mut self, target: &str, now: std::time::Instant, delivered: u64) {
        let q = self.0.entry(target.to_string()).or_default();
        q.push_back((now, delivered));
        while q.len() > 2 && now.duration_since(q[0].0) > std::time::Duration::from_secs(60) {
            q.pop_front();
        }
    }

    /// Deliveries per second between the oldest and newest samples kept.
    pub fn rate(&self, target: &str) -> Option<f64> {
        let q = self.0.get(target)?;
        let (first, last) = (q.front()?, q.back()?);
        let secs = last.0.duration_since(first.0).as_secs_f64();
        (secs > 0.0).then(|| last.1.saturating_sub(first.1) as f64 / secs)
    }
}

/// Who called: the token's name and role.
struct Caller {
    name: String,
    role: Role,
}

/// An error answer: `{"error": "…"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    why: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.why }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// What a handler answers.
type Reply = Result<Response, ApiError>;

fn error(status: StatusCode, why: impl Into<String>) -> ApiError {
    ApiError {
        status,
        why: why.into(),
    }
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "Store error in the operations API");
    error(StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}"))
}

fn conflict(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::CONFLICT, e.to_string())
}

impl Admin {
    /// The caller, if its token is live and its role at least `need`.
    async fn caller(&self, h: &HeaderMap, need: Role) -> Result<Caller, ApiError> {
        let token = h
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let unauthorized = |why: &str| error(StatusCode::UNAUTHORIZED, why);
        let Some(token) = token else {
            return Err(unauthorized(
                "an API token is needed: Authorization: Bearer <token>",
            ));
        };
        let Some(crate::store::TokenHolder { name, role }) = self
            .store
            .token(&token_hash(token))
            .await
            .map_err(store_error)?
        else {
            return Err(unauthorized("unknown or revoked token"));
        };
        let role = Role::parse(&role).map_err(|e| error(StatusCode::FORBIDDEN, e))?;
        if role < need {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!("{name} is a {}; this needs {}", role.name(), need.name()),
            ));
        }
        Ok(Caller { name, role })
    }
}

/// The API's routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/console", get(console))
        .route("/api/openapi.json", get(openapi))
        .route("/api/whoami", get(whoami))
        .route("/api/targets", get(targets))
        .route("/api/targets/{target}/{action}", post(set_paused))
        .route("/api/messages", get(list))
        .route("/api/messages/{id}", get(show))
        .route("/api/messages/{id}/replay", post(replay))
        .route("/api/messages/{id}/skip", post(skip))
        .route("/api/quarantine", get(quarantine))
        .route("/api/quarantine/remap", post(remap_quarantine))
        .route("/api/audit", get(audit))
        .route("/api/deadlines", get(deadlines))
        .route("/api/tokens", get(tokens).post(create_token))
        .route("/api/tokens/{name}/revoke", post(revoke_token))
        .route("/api/tasks", get(tasks).post(create_task))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/{action}", post(steer_task))
        .route("/metrics", get(metrics::serve))
        .with_state(admin)
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let sampler = admin.clone();
    tokio::spawn(async move {
        loop {
            sampler.sample();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = stop.changed() => return,
            }
        }
    });
    if let Err(e) = axum::serve(listener, router(admin))
        .with_graceful_shutdown(crate::hub::stopped(shutdown))
        .await
    {
        tracing::error!(error = %e, "Operations API failed");
    }
}

/// The web console: one page, no build step, nothing from elsewhere; it
/// holds no data until signed in with a token.
async fn console() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("console.html"),
    )
        .into_response()
}

async fn whoami(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    let c = a.caller(&h, Role::Viewer).await?;
    Ok(Json(json!({ "name": c.name, "role": c.role.name() })).into_response())
}

/// `GET /api/deadlines`: the deadline register's report now (holders
/// masked, for every role); `{"configured": false}` without a deadlines
/// connector.
async fn deadlines(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let Some(s) = &a.deadlines else {
        return Ok(Json(json!({ "configured": false })).into_response());
    };
    let r = crate::connectors::deadlines::report::report(s, &a.store, crate::store::now_ms())
        .await
        .map_err(store_error)?;
    Ok(Json(r).into_response())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// A request body as `T`, after the caller is known (so a caller without a
/// token gets 401, not a complaint about the body); an empty body is
/// `T::default()`.
fn body<T: serde::de::DeserializeOwned + Default>(b: &[u8]) -> Result<T, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("the request body: {e}")))
}

#[derive(Deserialize, Default)]
struct Reason {
    #[serde(default)]
    reason: String,
}

/// The reason a body `{"reason": …}` gives, which must not be empty.
fn given_reason(raw: &[u8]) -> Result<String, ApiError> {
    let b: Reason = body(raw)?;
    reason_of(&b.reason).map(str::to_string)
}

fn reason_of(r: &str) -> Result<&str, ApiError> {
    let r = r.trim();
    if r.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a reason is needed (it goes into the audit)",
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_rate_is_over_the_last_minute() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        r.sample("a", t0, 0);
        assert_eq!(r.rate("a"), None, "one sample gives no rate");
        r.sample("a", t0 + Duration::from_secs(10), 500);
        assert_eq!(r.rate("a"), Some(50.0));
        // A minute later the first samples are forgotten: 100/s lately.
        r.sample("a", t0 + Duration::from_secs(70), 500);
        r.sample("a", t0 + Duration::from_secs(80), 1500);
        assert_eq!(r.rate("a"), Some(100.0));
        assert_eq!(r.rate("b"), None);
    }

    #[test]
    fn task_actions_move_between_the_right_states() {
        assert_eq!(task_transition("pause"), Some((&["running"][..], "paused")));
        assert_eq!(
            task_transition("resume"),
            Some((&["paused"][..], "running"))
        );
        assert_eq!(
            task_transition("cancel"),
            Some((&["running", "paused"][..], "cancelled"))
        );
        assert_eq!(task_transition("delete"), None);
    }
}
