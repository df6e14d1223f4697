//! The server itself: `GET /server` (version, uptime, memory, counts) and
//! `POST /server/shutdown {"reason"}` (403 unless `admin_rest_allow_shutdown = true`), over
//! [`Core::server_info`] and [`Core::request_shutdown`]; and how an [`AdminError`] answers.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{ApiError, Ctx, ok, parse_body};
use crate::core::Core;
use crate::core::admin::AdminError;
use crate::modules::admin_rest::AdminRestOptions;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::UnknownHost(_) => ApiError::UnknownHost,
            AdminError::InvalidJid(_) => ApiError::InvalidUser,
            AdminError::Account(a) => a.into(),
            e @ AdminError::NoSession(_) => {
                ApiError::other(StatusCode::NOT_FOUND, "no_session", e.to_string())
            }
            e @ AdminError::NoKey(_) => {
                ApiError::other(StatusCode::NOT_FOUND, "no_key", e.to_string())
            }
            e @ AdminError::HostState(..) => {
                ApiError::other(StatusCode::CONFLICT, "host_state", e.to_string())
            }
            e @ AdminError::UnknownRole(_) => {
                ApiError::other(StatusCode::BAD_REQUEST, "unknown_role", e.to_string())
            }
            e @ AdminError::Module(_) => {
                ApiError::other(StatusCode::CONFLICT, "module_error", e.to_string())
            }
        }
    }
}

/// `GET /server`: `{name, version, uptime_secs, memory: {rss_bytes, heap_bytes (jemalloc's count; null: unknown), sessions, queued_stanzas}, hosts_active}`.
pub async fn info(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    Ok(ok(json!(core.server_info())))
}

/// `POST /server/shutdown {"reason"}`: 202; every session gets `<system-shutdown/>` with the
/// reason, connections drain and the process exits 0.
pub async fn shutdown(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !AdminRestOptions::for_host(&core.config.load(), &ctx.host).allow_shutdown {
        return Err(ApiError::other(
            StatusCode::FORBIDDEN,
            "shutdown_disabled",
            "Shutting down over the API is disabled (admin_rest_allow_shutdown = false)",
        ));
    }
    let reason = if body.is_empty() {
        String::new()
    } else {
        let v = parse_body(&headers, &body)?;
        match v.get("reason") {
            None => String::new(),
            Some(r) => r.as_str().ok_or(ApiError::InvalidBody)?.to_string(),
        }
    };
    core.request_shutdown(&reason);
    Ok(super::reply(
        StatusCode::ACCEPTED,
        json!({ "shutdown": true, "reason": reason }),
    ))
}
