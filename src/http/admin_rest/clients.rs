//! The clients with access to an account (client management): `GET /user/{name}/clients` and
//! `DELETE /user/{name}/clients/{id}`, over [`Core::list_clients`] and [`Core::revoke_client`],
//! the operations the manage-clients IQ and the shell's `user:clients` call too.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, Ctx, existing_user, ok};
use crate::core::Core;
use crate::core::grants::{RevokeError, full_id};

/// `GET /user/{name}/clients`: `{"count": n, "clients": [...]}`.
pub async fn list(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let clients = core.list_clients(&jid).await?;
    Ok(ok(json!({ "count": clients.len(), "clients": clients })))
}

/// `DELETE /user/{name}/clients/{id}`: revokes the client and closes its sessions; 404 for an
/// unknown id, 409 for a client that only ever used the password.
pub async fn revoke(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((name, id)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let id = full_id(&id);
    match core.revoke_client(&jid, &id).await {
        Ok(closed) => Ok(ok(json!({ "revoked": id, "closed": closed }))),
        Err(RevokeError::NotFound) => Err(ApiError::other(
            StatusCode::NOT_FOUND,
            "client_not_found",
            format!("No such client: {id}"),
        )),
        Err(RevokeError::PasswordResetRequired) => Err(ApiError::other(
            StatusCode::CONFLICT,
            "password_reset_required",
            "This client authenticated with the password; change the password to revoke it",
        )),
        Err(RevokeError::Account(e)) => Err(e.into()),
    }
}
