//! Civil affairs (民政) and public security (公安): the data comparison that
//! tells the disability services of deaths and of households whose 低保
//! status changed.
//!
//! - `GET /api/civil/v1/events?after=N` (bearer token): up to 500
//!   `CivilEvent`s after position N, `{"events": […], "next": N'}`.
//! - `POST /_deaths {"id_no", "name", "date_of_death"}` and
//!   `POST /_dibao {"id_no", "name", "dibao"}`: what the registries record
//!   (the demo and the tests play them); each becomes one event.

use super::{bearer_ok, refuse, with_common, Common};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The civil registries' feed.
pub struct Civil {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    token: Option<String>,
    events: Mutex<super::Feed>,
}

impl Civil {
    /// A feed wanting `token`, if given.
    pub fn new(token: Option<&str>) -> Arc<Civil> {
        Arc::new(Civil {
            common: Common::new("civil_affairs"),
            token: token.map(str::to_string),
            events: Mutex::new(super::Feed::default()),
        })
    }

    /// Registers a death (`date_of_death` as `YYYY-MM-DD`, or none).
    pub fn report_death(&self, id_no: &str, name: &str, date_of_death: Option<&str>) {
        self.push(
            "DEATH",
            id_no,
            name,
            json!({ "date_of_death": date_of_death, "dibao": null }),
        );
    }

    /// Registers a household's new 低保 status (`NONE`, `DIBAO`,
    /// `NEAR_DIBAO`, `TEKUN`).
    pub fn change_dibao(&self, id_no: &str, name: &str, dibao: &str) {
        self.push(
            "DIBAO_CHANGED",
            id_no,
            name,
            json!({ "date_of_death": null, "dibao": dibao }),
        );
    }

    /// Events so far.
    pub fn events(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    fn push(&self, kind: &'static str, id_no: &str, name: &str, extra: Value) {
        let mut feed = self.events.lock().unwrap();
        let n = feed.len() + 1;
        let mut event = json!({
            "event_id": format!("CV-{n:09}"),
            "kind": kind,
            "id_no": id_no,
            "name": name,
            "reported_by": if kind == "DEATH" { "PUBLIC_SECURITY" } else { "CIVIL_AFFAIRS" },
            "occurred_at": super::clock::china_now().to_rfc3339(),
        });
        if let (Some(e), Some(x)) = (event.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        feed.push(&serde_json::to_vec(&event).unwrap_or_default());
        drop(feed);
        self.common.apply("", "registered", id_no, kind.to_string());
    }

    /// The simulator's routes, with `/_ledger` and `/_faults`.
    pub fn router(self: &Arc<Self>) -> Router {
        let app = Router::new()
            .route("/api/civil/v1/events", get(events))
            .route("/_deaths", post(death))
            .route("/_dibao", post(dibao))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }
}

async fn events(
    State(c): State<Arc<Civil>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if c.token.as_ref().is_some_and(|t| !bearer_ok(&h, t)) {
        return refuse(StatusCode::UNAUTHORIZED, "bad token");
    }
    super::feed_page(&c.events, &q, ("events", "next"))
}

async fn death(State(c): State<Arc<Civil>>, Json(v): Json<Value>) -> Response {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    if crate::domain::ResidentId::parse(&s("id_no")).is_err() {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid ID number");
    }
    c.report_death(&s("id_no"), &s("name"), v["date_of_death"].as_str());
    Json(json!({ "ok": true })).into_response()
}

async fn dibao(State(c): State<Arc<Civil>>, Json(v): Json<Value>) -> Response {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    if crate::domain::ResidentId::parse(&s("id_no")).is_err() {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid ID number");
    }
    if !["NONE", "DIBAO", "NEAR_DIBAO", "TEKUN"].contains(&s("dibao").as_str()) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "dibao: NONE, DIBAO, NEAR_DIBAO or TEKUN",
        );
    }
    c.change_dibao(&s("id_no"), &s("name"), &s("dibao"));
    Json(json!({ "ok": true })).into_response()
}
