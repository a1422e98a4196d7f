//! Bulk replays: made by filter with a cap, steered (pause, resume,
//! cancel), run by the hub's task worker.

use super::*;

/// The most a bulk replay may take on, and its default.
pub const TASK_CAP: (i64, i64) = (100_000, 10_000);

#[derive(Deserialize, Default)]
pub(super) struct NewTask {
    #[serde(default)]
    filter: MessageFilter,
    cap: Option<i64>,
    #[serde(default)]
    reason: String,
}

/// A task as JSON, its filter's key masked.
pub(super) fn task_json(t: &crate::store::TaskRow) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(k) = t.filter.key.as_deref() {
        v["filter"]["key"] = mask::text(k).into();
    }
    v
}

pub(super) async fn create_task(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    raw: axum::body::Bytes,
) -> Reply {
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

pub(super) async fn tasks(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Viewer).await?;
    let rows = a.store.tasks().await.map_err(store_error)?;
    Ok(Json(json!({ "items": rows.iter().map(task_json).collect::<Vec<_>>() })).into_response())
}

pub(super) async fn task(State(a): State<Arc<Admin>>, h: HeaderMap, Path(id): Path<i64>) -> Reply {
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
pub(super) async fn steer_task(
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
