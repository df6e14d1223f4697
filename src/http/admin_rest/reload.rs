//! `PUT /reload`: re-read the configuration file and bring the modules in line
//! ([`Core::reload_config`], shared with the console's `config:reload`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use super::{ApiError, nodes};
use crate::core::Core;
use crate::core::admin_ops::AdminOp;

/// `PUT /reload`: 200 with the report; 409 (running configuration kept) when the file is invalid.
/// In a cluster, on every node (or the one `?node=` names), each node's outcome in `nodes`.
pub async fn reload(State(core): State<Arc<Core>>, uri: Uri) -> Result<Response, ApiError> {
    let c = core.clone();
    let local = async move {
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
        Ok(json!({
            "result": "Config file reloaded. Modules were loaded, unloaded or reloaded to match it.",
            "report": report,
        }))
    };
    nodes::across(&core, &uri, AdminOp::ConfigReload, local).await
}
