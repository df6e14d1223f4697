//! `PUT /reload`: re-read the configuration file and bring the modules in line
//! ([`Core::reload_config`], shared with the console's `config:reload`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, json_response};
use crate::core::Core;

/// `PUT /reload`: 200 with the report; 409 (running configuration kept) when the file is invalid.
pub async fn reload(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    let c = core.clone();
    let report = tokio::task::spawn_blocking(move || c.reload_config())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            ApiError::other(
                StatusCode::CONFLICT,
                "invalid_config",
                format!("Configuration not reloaded: {e}"),
            )
        })?;
    let body = json!({
        "result": "Config file reloaded. Modules were loaded, unloaded or reloaded to match it.",
        "report": report,
    });
    Ok((StatusCode::OK, json_response(body)).into_response())
}
