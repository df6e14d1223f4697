//! Rosters: list, add a mutual contact, remove a contact — through the roster manager the XMPP
//! side uses (so online clients get roster pushes and presence).

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::Params;
use super::users::roster_json;
use super::{ApiError, Ctx, existing_user, ok, optional_body_object, user_jid};
use crate::core::Core;
use crate::core::roster::RosterError;
use crate::xmpp::Jid;

/// `GET /roster/{name}`: `{"roster": [["item", {...}], ...], "count": n}`.
pub async fn get_roster(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let roster = roster_json(&core, &jid).await?;
    Ok(ok(json!({ "count": roster.len(), "roster": roster })))
}

/// The `contact` of a roster body: a local account (bare name or JID), or a remote account's
/// bare JID when the server federates (remote contacts are refused otherwise).
async fn contact(core: &Core, host: &str, body: Option<&Value>) -> Result<Jid, ApiError> {
    let name = body
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::InvalidContact)?;
    let jid = match user_jid(core, host, name) {
        Ok(j) => j,
        Err(ApiError::UnknownHost) if core.federation.get().is_some() => {
            Jid::parse(name).map_err(|_| ApiError::InvalidContact)?
        }
        Err(ApiError::UnknownHost) => {
            return Err(ApiError::other(
                StatusCode::BAD_REQUEST,
                "remote_contact",
                format!("Remote contacts are not supported: {name}"),
            ));
        }
        Err(_) => return Err(ApiError::InvalidContact),
    };
    Ok(jid)
}

fn roster_error(e: RosterError) -> ApiError {
    match e {
        RosterError::InvalidContact(c) => ApiError::other(
            StatusCode::BAD_REQUEST,
            "invalid_contact",
            format!("Invalid contact: {c}"),
        ),
        RosterError::Full(n) => ApiError::other(
            StatusCode::CONFLICT,
            "roster_full",
            format!("The roster is full ({n} items)"),
        ),
        RosterError::Storage(e) => e.into(),
        e => ApiError::Internal(e.to_string()),
    }
}

/// `POST /roster/{name}` `{"contact"}`: both users get each other with subscription `both`;
/// a remote contact is sent the user's subscription request instead.
pub async fn add_contact(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = optional_body_object(&headers, &body)?;
    let contact = contact(&core, &ctx.host, body.get("contact")).await?;
    let jid = existing_user(&core, &ctx.host, &name).await?;
    if core.host(contact.domain()).is_none() {
        // A remote contact: ask it, as the user's client would; the answer completes the roster.
        crate::modules::presence::request_subscription(&core, &jid, &contact).await;
        return Ok(ok(format!("Subscription requested: {jid} to {contact}")));
    }
    if !core.accounts.exists(&contact).await? {
        return Err(ApiError::InvalidContact);
    }
    core.add_mutual(&jid, &contact)
        .await
        .map_err(roster_error)?;
    Ok(ok(format!("Roster registered: {jid} and {contact}")))
}

/// `DELETE /roster/{name}` `{"contact"}`: removes the contact from the user's roster (RFC 6121 §2.5).
pub async fn remove_contact(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let body = optional_body_object(&headers, &body)?;
    let contact = contact(&core, &ctx.host, body.get("contact")).await?;
    core.roster_remove(&jid, &contact)
        .await
        .map_err(roster_error)?;
    Ok(ok(format!("Roster deleted: {jid} and {contact}")))
}
