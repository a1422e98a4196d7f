//! Inbound webhooks: systems push records to the hub at
//! `POST /ingest/<connector>/<operation>`.
//!
//! A request is answered `202 Accepted` only once its record is durable in
//! the inbox (with its messages and quarantine rows): a hub killed right
//! after answering still delivers it. Before that, in this order:
//! - an unknown connector or operation, or one that is not a webhook source: 404;
//! - a body over the limit: 413;
//! - when the connector signs (`[auth] type = "hmac"`): a missing or wrong
//!   signature, unknown app key, or a timestamp outside the window: 401;
//! - a nonce already seen within the window: 409 (a replayed request). Nonces
//!   are kept in the store, so a replay after a restart, or to another hub on
//!   the same PostgreSQL, is refused too;
//! - a record that no feed can read: it is kept in the quarantine, and the
//!   answer is 422 with the reason, so the sender knows to fix it.
//!
//! The store being unreachable answers 503, so the sender tries again.
//! Requests that arrive together share one transaction ([`GroupCommit`]).

use super::sign::Signer;
use crate::connectors::intake::{GroupCommit, IngestError, Intake};
use crate::store::NonceUse;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One webhook source operation.
pub struct WebhookOp {
    /// Its way into the store.
    pub intake: Intake,
    /// Verifies signed requests; `None` when the connector does not sign.
    pub signer: Option<Signer>,
}

/// The limits of the webhook endpoint.
#[derive(Clone, Copy, Debug)]
pub struct WebhookLimits {
    /// Largest body accepted, in bytes.
    pub max_body: usize,
    /// How far a request's timestamp may be from now.
    pub window: Duration,
}

struct Hooks {
    ops: HashMap<(String, String), WebhookOp>,
    commit: GroupCommit,
    limits: WebhookLimits,
}

/// The router of the webhook endpoint for these operations, keyed by
/// (connector, operation).
pub fn router(
    ops: HashMap<(String, String), WebhookOp>,
    commit: GroupCommit,
    limits: WebhookLimits,
) -> Router {
    let hooks = Arc::new(Hooks {
        ops,
        commit,
        limits,
    });
    Router::new()
        .route("/ingest/{connector}/{operation}", post(ingest))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .with_state(hooks)
}

fn answer(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": error.into() }))).into_response()
}

async fn ingest(
    State(h): State<Arc<Hooks>>,
    Path((connector, operation)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(op) = h.ops.get(&(connector.clone(), operation.clone())) else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("no webhook source {connector}.{operation}"),
        );
    };
    let now = crate::store::now_ms();
    let window_ms = h.limits.window.as_millis() as i64;
    let nonce = if let Some(signer) = &op.signer {
        let path = uri
            .path_and_query()
            .map_or(uri.path(), |pq| pq.as_str())
            .to_string();
        let verified = signer.verify(
            "POST",
            &path,
            &body,
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            now,
            window_ms,
        );
        match verified {
            Err(e) => {
                tracing::warn!(source = %op.intake.source(), reason = %e, "Webhook refused: not authenticated");
                return answer(StatusCode::UNAUTHORIZED, e.to_string());
            }
            Ok(nonce) => Some(NonceUse {
                connector: connector.clone(),
                nonce,
            }),
        }
    } else {
        None
    };
    let ingest = op.intake.prepare(&body, None, None);
    let unreadable = ingest.messages.is_empty()
        && !ingest.quarantine.is_empty()
        && ingest
            .quarantine
            .iter()
            .all(|q| q.reason.starts_with("input"));
    let reason = ingest.quarantine.first().map(|q| q.reason.clone());
    let source_id = ingest.source_id.clone();
    let messages = ingest.messages.len();
    match h.commit.commit(ingest, nonce).await {
        Err(IngestError::Replayed) => {
            tracing::warn!(source = %op.intake.source(), "Webhook refused: replayed nonce");
            answer(StatusCode::CONFLICT, IngestError::Replayed.to_string())
        }
        Err(e) => {
            tracing::error!(source = %op.intake.source(), error = %e, "Webhook record not stored");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the record could not be stored; try again",
            )
        }
        Ok(_) if unreadable => answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the record cannot be read (kept in quarantine): {}",
                reason.unwrap_or_default()
            ),
        ),
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "source_id": source_id, "messages": messages })),
        )
            .into_response(),
    }
}
