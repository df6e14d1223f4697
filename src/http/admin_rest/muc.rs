//! Group chat rooms (`/muc…`): list, inspect, create and destroy rooms, set and read
//! affiliations, read roles — through the MUC manager ([`crate::modules::muc::service`]), the
//! same operations the XMPP side and the shell use.
//!
//! A `{room}` is `node@service`, or a bare node on the host's first MUC component.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, Ctx, ok, parse_body, reply};
use crate::core::Core;
use crate::modules::muc::room::Affiliation;
use crate::modules::muc::service::{MucError, MucService};
use crate::modules::muc::{self as muc_module, LocateError};
use crate::xmpp::Jid;

fn muc_error(e: MucError) -> ApiError {
    match e {
        MucError::NotFound => ApiError::other(
            StatusCode::NOT_FOUND,
            "room_not_found",
            "Room does not exist",
        ),
        MucError::Exists => ApiError::other(StatusCode::CONFLICT, "conflict", e.to_string()),
        MucError::Invalid(m) => ApiError::other(StatusCode::BAD_REQUEST, "invalid_room", m),
        MucError::Storage(e) => e.into(),
        // The REST API acts as the server, which is never refused; kept for completeness.
        MucError::Refused(m) => ApiError::other(StatusCode::FORBIDDEN, "forbidden", m),
        // In a cluster, the room lives on the node that holds its lease: ask that node.
        MucError::Elsewhere(_) => {
            ApiError::other(StatusCode::CONFLICT, "room_on_other_node", e.to_string())
        }
        MucError::Unreachable => ApiError::other(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            e.to_string(),
        ),
    }
}

fn no_service() -> ApiError {
    ApiError::other(
        StatusCode::NOT_FOUND,
        "muc_not_found",
        "No group chat service on this host",
    )
}

/// The MUC services listed under the request's host.
fn services(core: &Core, host: &str) -> Vec<Arc<MucService>> {
    core.components_of(host)
        .iter()
        .filter_map(|c| muc_module::service(core, &c.name))
        .collect()
}

/// The service and room node named by `room`.
fn locate(core: &Core, host: &str, room: &str) -> Result<(Arc<MucService>, String), ApiError> {
    muc_module::locate(services(core, host), room).map_err(|e| match e {
        LocateError::NoService => no_service(),
        LocateError::Invalid => {
            ApiError::other(StatusCode::BAD_REQUEST, "invalid_room", "Invalid room JID")
        }
    })
}

fn bad_body(message: &str) -> ApiError {
    ApiError::other(StatusCode::BAD_REQUEST, "invalid_body", message.to_string())
}

/// `GET /muc`: `{"count", "rooms": [{jid, name, occupants, persistent, public}]}`.
pub async fn list(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    let mut rooms = Vec::new();
    for svc in services(&core, &ctx.host) {
        rooms.extend(svc.list().await.map_err(muc_error)?);
    }
    Ok(ok(json!({ "count": rooms.len(), "rooms": rooms })))
}

/// `GET /muc/{room}`: the room's config, subject, occupants and affiliations.
pub async fn get(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(room): Params<String>,
) -> Result<Response, ApiError> {
    let (svc, node) = locate(&core, &ctx.host, &room)?;
    Ok(ok(svc.describe(&node).await.map_err(muc_error)?))
}

/// `PUT /muc/{room}` `{"owner"?, config fields…}`: 201, or 409 if it (or its tombstone) exists.
pub async fn create(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(room): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (svc, node) = locate(&core, &ctx.host, &room)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(&headers, &body)?
    };
    let (owner, config) = muc_module::creation_options(body).map_err(|m| bad_body(&m))?;
    let room = svc
        .create(&node, owner.as_ref(), config, false)
        .await
        .map_err(muc_error)?;
    let jid = crate::modules::muc::service::lock(&room).jid.to_string();
    Ok(reply(StatusCode::CREATED, format!("Room created: {jid}")))
}

/// `DELETE /muc/{room}` `{"reason"?, "alternate"?}`: destroys the room (leaving a tombstone),
/// or removes the tombstone of a destroyed room.
pub async fn destroy(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(room): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (svc, node) = locate(&core, &ctx.host, &room)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(&headers, &body)?
    };
    svc.destroy(&node, body["reason"].as_str(), body["alternate"].as_str())
        .await
        .map_err(muc_error)?;
    Ok(ok(format!("Room destroyed: {node}@{}", svc.host)))
}

/// `GET /muc/{room}/affiliation/{jid}`: `{"affiliation"}`.
pub async fn get_affiliation(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((room, jid)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let (svc, node) = locate(&core, &ctx.host, &room)?;
    let jid = Jid::parse(&jid).map_err(|_| ApiError::InvalidUser)?;
    let a = svc.get_affiliation(&node, &jid).await.map_err(muc_error)?;
    Ok(ok(json!({ "affiliation": a.as_str() })))
}

/// `PUT /muc/{room}/affiliation/{jid}` `{"affiliation", "reason"?}`: occupants' roles follow.
pub async fn set_affiliation(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((room, jid)): Params<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (svc, node) = locate(&core, &ctx.host, &room)?;
    let jid = Jid::parse(&jid).map_err(|_| ApiError::InvalidUser)?;
    let body = parse_body(&headers, &body)?;
    let a = body["affiliation"]
        .as_str()
        .and_then(Affiliation::parse)
        .ok_or_else(|| {
            bad_body("`affiliation` must be one of owner, admin, member, outcast, none")
        })?;
    svc.set_affiliation(&node, &jid, a, body["reason"].as_str())
        .await
        .map_err(muc_error)?;
    Ok(ok(format!(
        "Affiliation of {} set to {}",
        jid.bare(),
        a.as_str()
    )))
}

/// `GET /muc/{room}/role/{nick}`: `{"role"}` (`none` when the nick is not present).
pub async fn get_role(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((room, nick)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let (svc, node) = locate(&core, &ctx.host, &room)?;
    let role = svc.get_role(&node, &nick).await.map_err(muc_error)?;
    Ok(ok(json!({ "role": role.as_str() })))
}
