//! Targets and messages: backlog, pause and resume, messages found by
//! filter, one message in full, replay (as is or re-mapped), skip, and the
//! quarantine.

use super::*;

pub(super) async fn targets(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
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

pub(super) fn target_json(
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

/// `POST /api/targets/{target}/pause|resume`.
pub(super) async fn set_paused(
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
    crate::store::Status::parse(s).map_err(|e| e.to_string())
}

pub(super) fn summary(m: &MessageRow) -> Value {
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

pub(super) async fn list(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Reply {
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
pub(super) struct ShowQuery {
    #[serde(default)]
    unmasked: bool,
    #[serde(default)]
    reason: String,
}

/// A payload as JSON: masked, or as it is.
pub(super) fn payload_json(bytes: &[u8], unmasked: bool) -> Value {
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

pub(super) async fn show(
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
        Some(s) => json!({ "source": s.source, "record": payload_json(&s.record, unmasked) }),
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
pub(super) struct ReplayBody {
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

pub(super) async fn replay(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(id): Path<i64>,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Operator).await?;
    let b: ReplayBody = body(&raw)?;
    if b.remap || b.dry_run {
        let (msg, payload) =
            crate::pipeline::remap(a.cfg, &a.store, id)
                .await
                .map_err(|e| match e {
                    crate::pipeline::PipelineError::Store(e) => store_error(e),
                    crate::pipeline::PipelineError::NoMessage(_) => {
                        error(StatusCode::NOT_FOUND, e.to_string())
                    }
                    e => conflict(e),
                })?;
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

pub(super) async fn skip(
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
pub(super) struct QuarantineQuery {
    source: Option<String>,
    mapping: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn quarantine(
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
pub(super) struct RemapBody {
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
pub(super) async fn remap_quarantine(
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
    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({
        "dry_run": b.dry_run,
        "mapped": r.mapped,
        "filtered": r.filtered,
        "resolved": r.resolved,
        "failing": r.failing.iter().map(|(id, why)| json!({ "id": id, "reason": mask::text(why) })).collect::<Vec<_>>(),
    }))
    .into_response())
}
