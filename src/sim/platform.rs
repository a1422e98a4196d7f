//! The provincial government-services platform (一体化政务服务平台): citizens
//! file one-application forms (一张表单) here; the hub pulls them by cursor
//! (or the platform pushes each to the hub's webhook, signed), and sends
//! back the status of each application.
//!
//! - `POST /api/v1/applications`: file a form (JSON `OneApplication`); 201
//!   with its cursor position. A form without `application_id` is refused.
//! - `GET /api/v1/applications?cursor=N`: up to 500 forms after position N,
//!   `{"items": […], "next_cursor": "…"}`; requests signed with HMAC-SHA256
//!   when a secret is set.
//! - `POST /api/v1/applications/status`: a status update (`ApplicationStatus`),
//!   signed, its idempotency key in the `Idempotency-Key` header; or a batch,
//!   `{"items": [{"idempotency_key": "…", "record": {…}}, …]}`, refused
//!   whole (422, naming the update) if any update lacks its fields; each
//!   idempotency key applied once.
//!
//! With a topic ([`Platform::publishing`], `tongban sim platform
//! --kafka-brokers …`), every filed form is also produced to a Kafka topic,
//! as the form's JSON keyed by the applicant's ID number (so one person's
//! forms keep their order), by an idempotent producer.

use super::{header, refuse, with_common, Common};
use crate::config::connector::MacAlgorithm;
use crate::connectors::http::sign::Signer;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Forms per page.
pub const PAGE: usize = 500;

/// The platform's state.
pub struct Platform {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    forms: Mutex<super::Feed>,
    signer: Option<Signer>,
    /// Push each filed form to this webhook URL (signed), if set.
    push: Option<(String, Signer)>,
    client: reqwest::Client,
    /// Publish each filed form to this topic, if set.
    topic: Option<(rdkafka::producer::FutureProducer, String)>,
    /// Forms the topic acknowledged, and forms it did not take.
    pub published: (AtomicU64, AtomicU64),
}

impl Platform {
    /// A platform whose API checks HMAC-SHA256 signatures with `secret`
    /// (app key `tongban-hub`), if given.
    pub fn new(secret: Option<&str>) -> Arc<Platform> {
        Arc::new(Platform {
            common: Common::new("provincial_platform"),
            forms: Mutex::new(super::Feed::default()),
            signer: secret
                .map(|s| Signer::new("tongban-hub", s.as_bytes(), MacAlgorithm::HmacSha256)),
            push: None,
            client: reqwest::Client::new(),
            topic: None,
            published: (AtomicU64::new(0), AtomicU64::new(0)),
        })
    }

    /// A platform that also produces every filed form to a Kafka `topic`
    /// on `brokers` (idempotent producer, `acks=all`).
    pub fn publishing(
        secret: Option<&str>,
        brokers: &str,
        topic: &str,
    ) -> Result<Arc<Platform>, String> {
        let producer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(|e| format!("a Kafka producer for {brokers}: {e}"))?;
        let mut p = Arc::into_inner(Platform::new(secret)).expect("new");
        p.topic = Some((producer, topic.to_string()));
        Ok(Arc::new(p))
    }

    /// A platform that also pushes every form to a hub webhook, signing with
    /// app key `provincial-platform`.
    pub fn pushing(secret: Option<&str>, url: &str, hook_secret: &str) -> Arc<Platform> {
        let mut p = Arc::into_inner(Platform::new(secret)).expect("new");
        p.push = Some((
            url.to_string(),
            Signer::new(
                "provincial-platform",
                hook_secret.as_bytes(),
                MacAlgorithm::HmacSha256,
            ),
        ));
        Arc::new(p)
    }

    /// Files a form; returns its position.
    pub fn file(self: &Arc<Self>, form: &[u8]) -> usize {
        let n = self.forms.lock().unwrap().push(form);
        if let Some((producer, topic)) = &self.topic {
            let v: serde_json::Value = serde_json::from_slice(form).unwrap_or_default();
            let key = v["applicant"]["id_no"]
                .as_str()
                .or(v["application_id"].as_str())
                .unwrap_or("")
                .trim()
                .to_string();
            let record = rdkafka::producer::FutureRecord::to(topic)
                .key(&key)
                .payload(form);
            match producer.send_result(record) {
                Ok(delivery) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        match delivery.await {
                            Ok(Ok(_)) => me.published.0.fetch_add(1, Ordering::Relaxed),
                            Ok(Err((e, _))) => {
                                tracing::warn!(error = %e, "The topic did not take a form");
                                me.published.1.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(_) => me.published.1.fetch_add(1, Ordering::Relaxed),
                        };
                    });
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, "A form could not be queued for the topic");
                    self.published.1.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some((url, signer)) = &self.push {
            let (url, signer, client, body) = (
                url.clone(),
                signer.clone(),
                self.client.clone(),
                form.to_vec(),
            );
            tokio::spawn(async move {
                let path = reqwest::Url::parse(&url)
                    .map(|u| u.path().to_string())
                    .unwrap_or_default();
                // Retried a few times, as a platform would.
                for _ in 0..5 {
                    let mut req = client.post(&url).body(body.clone());
                    for (k, v) in signer.sign("POST", &path, &body, crate::store::now_ms()) {
                        req = req.header(k, v);
                    }
                    if let Ok(r) = req.send().await {
                        if r.status().is_success() || r.status().is_client_error() {
                            return;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            });
        }
        n
    }

    /// Forms filed so far.
    pub fn filed(&self) -> usize {
        self.forms.lock().unwrap().len()
    }

    /// The departments' decisions per application id, in order
    /// (`DEPARTMENT STATUS: message`).
    pub fn feedback(&self, application_id: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.common.for_each("feedback", |e| {
            if e.subject() == application_id {
                out.push(e.detail().to_string());
            }
        });
        out
    }

    /// Latest status per application id.
    pub fn statuses(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        self.common.for_each("status", |e| {
            out.insert(e.subject().to_string(), e.detail().to_string());
        });
        out
    }

    fn verify(&self, method: &str, uri: &Uri, h: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let Some(s) = &self.signer else { return Ok(()) };
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        s.verify(
            method,
            path,
            body,
            |n| h.get(n).and_then(|v| v.to_str().ok()),
            crate::store::now_ms(),
            300_000,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// The simulator's routes, with `/_ledger` and `/_faults`.
    pub fn router(self: &Arc<Self>) -> Router {
        let app = Router::new()
            .route("/api/v1/applications", post(file).get(pull))
            .route("/api/v1/applications/status", post(status))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }
}

async fn file(State(p): State<Arc<Platform>>, body: Bytes) -> Response {
    let ok = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("application_id")
                .and_then(|a| a.as_str().map(str::to_string))
        });
    match ok {
        None => refuse(StatusCode::BAD_REQUEST, "a form needs an application_id"),
        Some(_) => {
            let n = p.file(&body);
            (
                StatusCode::CREATED,
                Json(serde_json::json!({ "cursor": n })),
            )
                .into_response()
        }
    }
}

async fn pull(
    State(p): State<Arc<Platform>>,
    uri: Uri,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = p.verify("GET", &uri, &h, b"") {
        return refuse(StatusCode::UNAUTHORIZED, e);
    }
    let from: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let forms = p.forms.lock().unwrap();
    let body = forms.page(from, PAGE, ("items", "next_cursor", true));
    drop(forms);
    ([("content-type", "application/json")], body).into_response()
}

async fn status(State(p): State<Arc<Platform>>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = p.verify("POST", &uri, &h, &body) {
        return refuse(StatusCode::UNAUTHORIZED, e);
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    // One update, its idempotency key in the header; or a batch, each
    // update with its own key, checked whole before any is applied.
    let single = [(header(&h, "idempotency-key"), &v)];
    let batch: Vec<(&str, &serde_json::Value)> = match v.get("items").and_then(|i| i.as_array()) {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i["idempotency_key"].as_str().unwrap_or_default(),
                    &i["record"],
                )
            })
            .collect(),
        None => single.to_vec(),
    };
    let mut updates = Vec::with_capacity(batch.len());
    for (n, (key, u)) in batch.into_iter().enumerate() {
        let (Some(app), Some(st)) = (u["application_id"].as_str(), u["status"].as_str()) else {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("update {n}: a status update needs application_id and status"),
            );
        };
        let department = u["department"].as_str().unwrap_or("");
        let message = u["message"].as_str().unwrap_or("");
        updates.push((key, app, st, department, message));
    }
    let n = updates.len();
    for (key, app, st, department, message) in updates {
        // A department's own decision (统一反馈) is kept beside the case's
        // state, not in its place.
        match department {
            "SUBSIDIES" | "PENSION" | "EMPLOYMENT" => p.common.apply(
                key,
                "feedback",
                app,
                format!("{department} {st}: {message}"),
            ),
            _ => p.common.apply(key, "status", app, st.to_string()),
        };
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({ "ok": true, "applied": n })),
    )
        .into_response()
}
