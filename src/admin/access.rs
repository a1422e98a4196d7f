//! The audit and API tokens (admin only).

use super::*;

pub(super) async fn audit(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
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

pub(super) async fn tokens(State(a): State<Arc<Admin>>, h: HeaderMap) -> Reply {
    a.caller(&h, Role::Admin).await?;
    let rows = a.store.tokens().await.map_err(store_error)?;
    Ok(Json(json!({
        "items": rows.iter().map(|t| json!({
            "name": t.name, "role": t.role,
            "created_at": t.created_at, "revoked_at": t.revoked_at,
            "expires_at": t.expires_at,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct NewToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// How long it lets anyone in (`90d`, `12h`); without it, until revoked.
    #[serde(default)]
    expires_in: Option<String>,
}

pub(super) async fn create_token(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    raw: axum::body::Bytes,
) -> Reply {
    let c = a.caller(&h, Role::Admin).await?;
    let b: NewToken = body(&raw)?;
    Role::parse(&b.role).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let name = b.name.trim();
    if name.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "a token needs a name"));
    }
    let expires_at = match &b.expires_in {
        None => None,
        Some(d) => Some(
            crate::store::now_ms()
                + humantime::parse_duration(d)
                    .map_err(|e| {
                        error(
                            StatusCode::BAD_REQUEST,
                            format!("expires_in {d:?} is not a duration like 90d or 12h: {e}"),
                        )
                    })?
                    .as_millis() as i64,
        ),
    };
    let (token, hash) = new_token().map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    a.store
        .create_token(name, &b.role, &hash, expires_at, &c.name)
        .await
        .map_err(conflict)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "role": b.role, "token": token, "expires_at": expires_at })),
    )
        .into_response())
}

pub(super) async fn revoke_token(
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
