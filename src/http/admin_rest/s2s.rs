//! Federation streams: list them, close those between two domains (the s2s manager's
//! operations, reached through [`crate::core::remote::Federation`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, ok};
use crate::core::Core;

fn no_federation() -> ApiError {
    ApiError::other(
        StatusCode::NOT_FOUND,
        "no_s2s",
        "This server does not federate",
    )
}

/// `GET /s2s`: `{"count": n, "s2s": [streams]}`, both directions, every local domain.
pub async fn list(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    let streams = core
        .federation
        .get()
        .map(|f| f.streams())
        .unwrap_or_default();
    Ok(ok(json!({ "count": streams.len(), "s2s": streams })))
}

/// `DELETE /s2s/{local}/{remote}`: closes every stream between the two domains (404 if none).
pub async fn close(
    State(core): State<Arc<Core>>,
    Params((local, remote)): Params<(String, String)>,
) -> Result<Response, ApiError> {
    let f = core.federation.get().ok_or_else(no_federation)?;
    let local = local.to_ascii_lowercase();
    let remote = remote.to_ascii_lowercase();
    match f.close(&local, &remote) {
        0 => Err(ApiError::other(
            StatusCode::NOT_FOUND,
            "no_s2s_stream",
            format!("No s2s stream between {local} and {remote}"),
        )),
        n => Ok(ok(format!(
            "Closed {n} s2s stream(s) between {local} and {remote}"
        ))),
    }
}
