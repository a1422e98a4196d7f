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

pub mod metrics;

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
}

impl Admin {
    /// The API's state over a store and the targets served.
    pub fn new(store: Arc<Store>, cfg: &'static Config, served: crate::hub::Served) -> Self {
        Admin {
            store,
            cfg,
            served,
            rates: Default::default(),
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
        let Some((name, role)) = self
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

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn targets(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let rows = a.store.targets().await.map_err(store_error)?;
    let now = crate::store::now_ms();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        let stats = a
            .served
            .iter()
            .find(|(t, _)| t.to_string() == r.target)
            .map(|(_, s)| s.clone());
        seen.insert(r.target.clone());
        out.push(target_json(&r, stats.as_deref(), a.rate(&r.target), now));
    }
    for (t, s) in &a.served {
        if !seen.contains(&t.to_string()) {
            let r = crate::store::TargetRow {
                target: t.to_string(),
                ..Default::default()
            };
            out.push(target_json(&r, Some(s), a.rate(&r.target), now));
        }
    }
    Ok(Json(json!({ "targets": out })).into_response())
}

fn target_json(
    r: &crate::store::TargetRow,
    s: Option<&crate::dispatch::TargetStats>,
    rate: Option<f64>,
    now: i64,
) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "target": r.target,
        "pending": r.pending,
        "delivered": r.delivered,
        "dead": r.dead,
        "skipped": r.skipped,
        "oldest_pending_age_s": r.oldest_pending_at.map(|t| (now - t).max(0) / 1000),
        "paused": r.paused,
        "served_here": s.is_some(),
        "breaker": s.map(|s| match s.breaker.load(Relaxed) { 0 => "closed", 1 => "open", _ => "half-open" }),
        "requests": s.map(|s| s.requests.load(Relaxed)),
        "delivered_here": s.map(|s| s.delivered.load(Relaxed)),
        "retried_here": s.map(|s| s.retried.load(Relaxed)),
        "delivered_per_s": rate.map(|r| (r * 10.0).round() / 10.0),
    })
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

/// `POST /api/targets/{target}/pause|resume`.
async fn set_paused(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path((target, action)): Path<(String, String)>,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no target action {other:?}: pause or resume"),
            ))
        }
    };
    let reason = given_reason(&raw)?;
    a.store
        .set_paused(&target, paused, &c.name, &reason)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "target": target, "paused": paused })).into_response())
}

/// `GET /api/messages` query.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    target: Option<String>,
    status: Option<String>,
    key: Option<String>,
    error_class: Option<String>,
    /// ms since the epoch.
    since: Option<i64>,
    /// ms since the epoch.
    until: Option<i64>,
    text: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// A status by name.
pub fn status_code(s: &str) -> Result<crate::store::Status, String> {
    crate::store::Status::parse(s)
}

fn summary(m: &MessageRow) -> Value {
    json!({
        "id": m.id,
        "target": m.target,
        "key": mask::text(&m.key),
        "mapping": m.mapping,
        "status": crate::store::status_name(m.status),
        "attempts": m.attempts,
        "last_error": m.last_error.as_deref().map(mask::text),
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    })
}

async fn list(State(a): State<Arc<Admin>>, h: HeaderMap, Query(q): Query<ListQuery>) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let status = q
        .status
        .as_deref()
        .map(status_code)
        .transpose()
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = MessageFilter {
        target: q.target,
        status,
        key: q.key,
        error_class: q.error_class,
        since: q.since,
        until: q.until,
        text: q.text,
        after: q.after,
    };
    let mut rows = a
        .store
        .find_messages(&filter, limit + 1)
        .await
        .map_err(store_error)?;
    let next = (rows.len() > limit).then(|| rows[limit - 1].id);
    rows.truncate(limit);
    Ok(Json(json!({
        "items": rows.iter().map(summary).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    #[serde(default)]
    unmasked: bool,
    #[serde(default)]
    reason: String,
}

/// A payload as JSON: masked, or as it is.
fn payload_json(bytes: &[u8], unmasked: bool) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            if !unmasked {
                mask::json(&mut v);
            }
            v
        }
        Err(_) => {
            let t = String::from_utf8_lossy(bytes);
            Value::String(if unmasked {
                t.into_owned()
            } else {
                mask::text(&t)
            })
        }
    }
}

async fn show(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<ShowQuery>,
) -> Reply {
    let need = if q.unmasked {
        Role::Operator
    } else {
        Role::Viewer
    };
    let c = a.caller(&h, need).await?;
    let reason = if q.unmasked {
        Some(reason_of(&q.reason)?)
    } else {
        None
    };
    let v = message_detail(&a.store, id, q.unmasked)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("there is no message {id}")))?;
    if let Some(reason) = reason {
        a.store
            .note(&c.name, "view_unmasked", &format!("message {id}"), reason)
            .await
            .map_err(store_error)?;
    }
    Ok(Json(v).into_response())
}

/// One message in full: its summary, source record, payload and attempts,
/// masked unless `unmasked`.
pub async fn message_detail(
    store: &Store,
    id: i64,
    unmasked: bool,
) -> Result<Option<Value>, crate::store::StoreError> {
    let Some(m) = store.message(id).await? else {
        return Ok(None);
    };
    let source = store.source_of(id).await?;
    let attempts = store.attempts(id).await?;
    let text = |s: &str| {
        if unmasked {
            s.to_string()
        } else {
            mask::text(s)
        }
    };
    let mut v = summary(&m);
    if unmasked {
        v["key"] = m.key.clone().into();
        v["last_error"] = m.last_error.clone().into();
    }
    v["idempotency_key"] = m.idem_key.clone().into();
    v["payload"] = payload_json(&m.payload, unmasked);
    v["source"] = match source {
        Some((src, record)) => json!({ "source": src, "record": payload_json(&record, unmasked) }),
        None => Value::Null,
    };
    v["attempts"] = attempts
        .iter()
        .map(|t| {
            json!({
                "at": t.at,
                "duration_ms": t.duration_ms,
                "status_code": t.status_code,
                "error_class": t.error_class,
                "excerpt": t.excerpt.as_deref().map(text),
            })
        })
        .collect();
    v["masked"] = (!unmasked).into();
    Ok(Some(v))
}

#[derive(Deserialize, Default)]
struct ReplayBody {
    #[serde(default)]
    reason: String,
    /// Re-map from the stored source record with the current mapping.
    #[serde(default)]
    remap: bool,
    /// Show what would change; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// The fields whose values differ between two JSON objects (masked).
pub fn diff(before: &[u8], after: &[u8]) -> Vec<Value> {
    let parse = |b: &[u8]| {
        let mut v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
        mask::json(&mut v);
        v
    };
    let (b, a) = (parse(before), parse(after));
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let (bo, ao) = (
        b.as_object().unwrap_or(&empty),
        a.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = bo.keys().chain(ao.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (x, y) = (bo.get(k), ao.get(k));
        if x != y {
            out.push(json!({ "field": k, "before": x, "after": y }));
        }
    }
    out
}

async fn replay(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(id): Path<i64>,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let b: ReplayBody = body(&raw)?;
    if b.remap || b.dry_run {
        let (msg, payload) = crate::pipeline::remap(a.cfg, &a.store, id)
            .await
            .map_err(conflict)?;
        let changes = diff(&msg.payload, &payload);
        if b.dry_run {
            return Ok(
                Json(json!({ "id": id, "dry_run": true, "changes": changes })).into_response(),
            );
        }
        let reason = reason_of(&b.reason)?;
        a.store
            .replay(id, Some(payload), &c.name, reason)
            .await
            .map_err(conflict)?;
        return Ok(
            Json(json!({ "id": id, "replayed": "remapped", "changes": changes })).into_response(),
        );
    }
    let reason = reason_of(&b.reason)?;
    a.store
        .replay(id, None, &c.name, reason)
        .await
        .map_err(conflict)?;
    Ok(Json(json!({ "id": id, "replayed": "as is" })).into_response())
}

async fn skip(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(id): Path<i64>,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let reason = given_reason(&raw)?;
    a.store.skip(id, &c.name, &reason).await.map_err(conflict)?;
    Ok(Json(json!({ "id": id, "skipped": true })).into_response())
}

#[derive(Deserialize, Default)]
struct QuarantineQuery {
    source: Option<String>,
    mapping: Option<String>,
    limit: Option<usize>,
}

async fn quarantine(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Query(q): Query<QuarantineQuery>,
) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let rows = a
        .store
        .quarantined(
            q.source.as_deref(),
            q.mapping.as_deref(),
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "items": rows.iter().map(|r| json!({
            "id": r.id, "source": r.source, "mapping": r.mapping,
            "part": r.part, "reason": mask::text(&r.reason),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
struct RemapBody {
    source: Option<String>,
    mapping: Option<String>,
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
    #[serde(default)]
    reason: String,
}

/// `POST /api/quarantine/remap`: the quarantined records mapped again with
/// the feeds this hub loaded (restart it after a mapping fix).
async fn remap_quarantine(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let b: RemapBody = body(&raw)?;
    let reason = if b.dry_run {
        b.reason.trim()
    } else {
        reason_of(&b.reason)?
    };
    let r = crate::pipeline::remap_quarantine(
        a.cfg,
        &a.store,
        b.source.as_deref(),
        b.mapping.as_deref(),
        b.limit.unwrap_or(10_000).clamp(1, 100_000),
        (!b.dry_run).then_some((c.name.as_str(), reason)),
    )
    .await
    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({
        "dry_run": b.dry_run,
        "mapped": r.mapped,
        "filtered": r.filtered,
        "resolved": r.resolved,
        "failing": r.failing.iter().map(|(id, why)| json!({ "id": id, "reason": mask::text(why) })).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn audit(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Admin).await?;
    let rows = a.store.audit().await.map_err(store_error)?;
    Ok(Json(json!({
        "items": rows.iter().map(|r| json!({
            "at": r.at, "actor": r.actor, "action": r.action,
            "subject": r.subject, "reason": r.reason,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn tokens(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Admin).await?;
    let rows = a.store.tokens().await.map_err(store_error)?;
    Ok(Json(json!({
        "items": rows.iter().map(|t| json!({
            "name": t.name, "role": t.role,
            "created_at": t.created_at, "revoked_at": t.revoked_at,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
struct NewToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

async fn create_token(State(a): State<Arc<Admin>>, h: HeaderMap, raw: axum::body::Bytes) -> Reply {
    let c = a.caller(&h, Role::Admin).await?;
    let b: NewToken = body(&raw)?;
    Role::parse(&b.role).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let name = b.name.trim();
    if name.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "a token needs a name"));
    }
    let (token, hash) = new_token().map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    a.store
        .create_token(name, &b.role, &hash, &c.name)
        .await
        .map_err(conflict)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "role": b.role, "token": token })),
    )
        .into_response())
}

async fn revoke_token(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Admin).await?;
    let reason = given_reason(&raw)?;
    if a.store
        .revoke_token(&name, &c.name, &reason)
        .await
        .map_err(store_error)?
    {
        Ok(Json(json!({ "name": name, "revoked": true })).into_response())
    } else {
        Err(error(
            StatusCode::NOT_FOUND,
            format!("no live token {name:?}"),
        ))
    }
}

/// The most a bulk replay may take on, and its default.
pub const TASK_CAP: (i64, i64) = (100_000, 10_000);

#[derive(Deserialize, Default)]
struct NewTask {
    #[serde(default)]
    filter: MessageFilter,
    cap: Option<i64>,
    #[serde(default)]
    reason: String,
}

/// A task as JSON, its filter's key masked.
fn task_json(t: &crate::store::TaskRow) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(k) = t.filter.key.as_deref() {
        v["filter"]["key"] = mask::text(k).into();
    }
    v
}

async fn create_task(State(a): State<Arc<Admin>>, h: HeaderMap, raw: axum::body::Bytes) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let b: NewTask = body(&raw)?;
    let reason = reason_of(&b.reason)?;
    let cap = b.cap.unwrap_or(TASK_CAP.1);
    if !(1..=TASK_CAP.0).contains(&cap) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("cap must be 1 to {}", TASK_CAP.0),
        ));
    }
    let t = a
        .store
        .create_task(&b.filter, cap, &c.name, reason)
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(task_json(&t))).into_response())
}

async fn tasks(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let rows = a.store.tasks().await.map_err(store_error)?;
    Ok(Json(json!({ "items": rows.iter().map(task_json).collect::<Vec<_>>() })).into_response())
}

async fn task(State(a): State<Arc<Admin>>, h: HeaderMap, Path(id): Path<i64>) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let t = a
        .store
        .task(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("there is no task {id}")))?;
    Ok(Json(task_json(&t)).into_response())
}

/// What steering a bulk replay does: the states it may be in, and the
/// state it goes to.
pub fn task_transition(action: &str) -> Option<(&'static [&'static str], &'static str)> {
    match action {
        "pause" => Some((&["running"], "paused")),
        "resume" => Some((&["paused"], "running")),
        "cancel" => Some((&["running", "paused"], "cancelled")),
        _ => None,
    }
}

/// `POST /api/tasks/{id}/pause|resume|cancel`.
async fn steer_task(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let (from, to) = task_transition(&action).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no task action {action:?}: pause, resume or cancel"),
        )
    })?;
    let reason = given_reason(&raw)?;
    if !a
        .store
        .set_task_status(id, from, to, &c.name, &reason)
        .await
        .map_err(store_error)?
    {
        return Err(conflict(format!("task {id} is not {}", from.join(" or "))));
    }
    let t = a.store.task(id).await.map_err(store_error)?;
    Ok(Json(t.as_ref().map(task_json)).into_response())
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
