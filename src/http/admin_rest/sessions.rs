//! Client sessions: `GET /sessions` (filters `host`, `secure`) and `DELETE /sessions/{jid}`
//! (bare JID: every session of the account; full JID: that one), over [`Core::session_list`]
//! and [`Core::close_sessions`], the operations the shell's `c2s:*` commands call.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, ok};
use crate::core::Core;
use crate::xmpp::error::StreamErrorCondition;

/// `GET /sessions?host=H&secure=true|false`: `{"sessions": [...], "count": n}`.
pub async fn list(
    State(core): State<Arc<Core>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let host = q.get("host").map(String::as_str);
    if let Some(h) = host
        && core.host(h).is_none()
    {
        return Err(ApiError::UnknownHost);
    }
    let secure = match q.get("secure").map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(_) => return Err(ApiError::InvalidBody),
    };
    let sessions = core.session_list(host, secure);
    Ok(ok(json!({ "count": sessions.len(), "sessions": sessions })))
}

/// `DELETE /sessions/{jid}`: closes the sessions with `<policy-violation/>` and a text; 404
/// when none matches.
pub async fn close(
    State(core): State<Arc<Core>>,
    Params(jid): Params<String>,
) -> Result<Response, ApiError> {
    let closed = core
        .close_sessions_everywhere(
            &jid,
            StreamErrorCondition::PolicyViolation,
            "session closed by an administrator",
        )
        .await?;
    Ok(ok(json!({ "closed": closed, "count": closed.len() })))
}
