//! Shared-roster groups (Prosody's mod_groups_internal): list (an Oxpecker extension), create,
//! delete, add and remove members, sync — through the group manager, so members see each other
//! in their rosters at once.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::Params;
use super::{ApiError, Ctx, existing_user, ok, parse_body};
use crate::core::Core;
use crate::core::groups::GroupError;
use crate::core::roster::RosterError;

fn group_error(e: GroupError) -> ApiError {
    match e {
        GroupError::Exists(_) => ApiError::other(StatusCode::CONFLICT, "conflict", "conflict"),
        GroupError::NotFound(_) => {
            ApiError::other(StatusCode::NOT_FOUND, "group_not_found", "group-not-found")
        }
        GroupError::Invalid(m) => ApiError::other(StatusCode::BAD_REQUEST, "invalid_group", m),
        GroupError::Storage(e) | GroupError::Roster(RosterError::Storage(e)) => e.into(),
        e => ApiError::Internal(e.to_string()),
    }
}

async fn create_group(
    core: &Core,
    host: &str,
    path_id: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let no_name = || {
        ApiError::other(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "Body must contain a `name` key",
        )
    };
    let body = match parse_body(headers, body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(no_name()),
    };
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(no_name)?;
    let id = path_id.or_else(|| {
        body.get("group_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let id = core
        .groups
        .create(host, id.as_deref(), name)
        .await
        .map_err(group_error)?;
    // `create_default_muc`: a members-only persistent room named after the group.
    if body.get("create_default_muc").and_then(Value::as_bool) == Some(true) {
        // The group exists either way; a room that cannot be made is reported beside its id.
        return Ok(ok(
            match crate::modules::muc::create_group_room(core, host, &id, name).await {
                Ok(room) => json!({ "group_id": id, "muc_jid": room.as_str() }),
                Err(e) => json!({ "group_id": id, "muc_error": e.to_string() }),
            },
        ));
    }
    Ok(ok(json!({ "group_id": id })))
}

/// `GET /groups` (an extension: mod_admin_rest lists none): `{"count", "groups": [{"id", "name",
/// "members": [usernames]}]}`, sorted by id, members sorted.
pub async fn list(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    let mut groups = core.groups.list(&ctx.host).await.map_err(group_error)?;
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut members = core
            .groups
            .members(&ctx.host, &g.id)
            .await
            .map_err(group_error)?;
        members.sort();
        out.push(json!({ "id": g.id, "name": g.name, "members": members }));
    }
    Ok(ok(json!({ "count": out.len(), "groups": out })))
}

/// `PUT /groups` `{"name", "group_id"?, "create_default_muc"?}`: 200 `{"group_id"}`, 409 `"conflict"`.
pub async fn create(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create_group(&core, &ctx.host, None, &headers, &body).await
}

/// `PUT /groups/{id}` `{"name"}`: like `PUT /groups`, the path's id wins over `group_id`.
pub async fn create_with_id(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(id): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create_group(&core, &ctx.host, Some(id), &headers, &body).await
}

/// `DELETE /groups/{id}`: 200 `"Group 'ID' deleted successfully."`, also when it did not exist.
pub async fn delete(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(id): Params<String>,
) -> Result<Response, ApiError> {
    core.group_delete(&ctx.host, &id)
        .await
        .map_err(group_error)?;
    Ok(ok(format!("Group '{id}' deleted successfully.")))
}

/// `PUT /groups/{id}/members/{member}` `[{"delay_update"}]`: adds an existing account.
pub async fn add_member(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((id, member)): Params<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The optional body (`delay_update`) only has to be well-formed: updates are always immediate.
    if !body.iter().all(u8::is_ascii_whitespace) {
        parse_body(&headers, &body)?;
    }
    if core
        .groups
        .get(&ctx.host, &id)
        .await
        .map_err(group_error)?
        .is_none()
    {
        return Err(group_error(GroupError::NotFound(id)));
    }
    let jid = existing_user(&core, &ctx.host, &member).await?;
    core.group_add_member(&ctx.host, &id, &jid)
        .await
        .map_err(group_error)?;
    crate::modules::muc::group_membership(&core, &ctx.host, &id, &jid, true).await;
    Ok(ok(format!(
        "Member '{member}' successfully added to group '{id}'."
    )))
}

/// `DELETE /groups/{id}/members/{member}`: 200, or 404 `"group-not-found"`.
pub async fn remove_member(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((id, member)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let jid = super::user_jid(&core, &ctx.host, &member)?;
    core.group_remove_member(&ctx.host, &id, &jid)
        .await
        .map_err(group_error)?;
    crate::modules::muc::group_membership(&core, &ctx.host, &id, &jid, false).await;
    Ok(ok(format!(
        "Member '{member}' successfully removed from group '{id}'."
    )))
}

/// `POST /groups/{id}/sync`: re-sends the shared items to online members.
pub async fn sync(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(id): Params<String>,
) -> Result<Response, ApiError> {
    core.group_sync(&ctx.host, &id).await.map_err(group_error)?;
    Ok(ok(format!(
        "Successfully did group subscriptions for group '{id}'."
    )))
}
