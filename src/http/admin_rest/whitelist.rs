//! The allowlist: list, add, remove. Entries are addresses or CIDR ranges.
//!
//! The configured `admin_rest_whitelist` stays the base; what the API adds or removes is kept as
//! a delta in the store (`admin_rest/whitelist` of the host), so it survives restarts and a
//! later change of the configured list still takes effect.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::params::Params;
use super::{AdminState, ApiError, Ctx, effective_whitelist, ok};
use crate::core::Core;
use crate::modules::admin_rest::{AdminRestOptions, parse_net};

/// The keyval store of the admin API's own data.
pub const STORE: &str = "admin_rest";
/// The key of the allowlist delta in [`STORE`].
const KEY: &str = "whitelist";

/// What the API changed relative to the configured allowlist (normalised CIDR strings).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Entries added over the API.
    #[serde(default)]
    pub added: Vec<String>,
    /// Configured entries removed over the API.
    #[serde(default)]
    pub removed: Vec<String>,
}

/// Reads the stored delta of `host`.
pub async fn load_delta(core: &Core, host: &str) -> Result<Delta, ApiError> {
    let v = core
        .store
        .keyval(host, STORE)
        .get(KEY)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

async fn save_delta(core: &Core, host: &str, delta: &Delta) -> Result<(), ApiError> {
    let v = serde_json::to_value(delta).map_err(|e| ApiError::Internal(e.to_string()))?;
    core.store
        .keyval(host, STORE)
        .set(KEY, Some(v))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// An entry as shown: a plain address for single hosts, CIDR otherwise.
pub fn display(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn parse(ip: &str) -> Result<IpNet, ApiError> {
    parse_net(ip).ok_or_else(|| {
        ApiError::other(
            StatusCode::BAD_REQUEST,
            "invalid_ip",
            format!("Not an IP address or CIDR range: {ip}"),
        )
    })
}

/// `GET /whitelist`: `{"whitelist": [entries], "count": n}`.
pub async fn list(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    let opts = AdminRestOptions::for_host(&core.config.load(), &ctx.host);
    let list: Vec<String> = effective_whitelist(&core, &ctx.host, &opts)
        .await?
        .iter()
        .map(display)
        .collect();
    Ok(ok(json!({ "count": list.len(), "whitelist": list })))
}

/// `PUT /whitelist` or `DELETE /whitelist` without an address: 400.
pub async fn missing_ip() -> ApiError {
    ApiError::other(
        StatusCode::BAD_REQUEST,
        "missing_ip",
        "Missing IP address in path",
    )
}

/// `PUT /whitelist/{ip}`: 200 `"IP added to whitelist: IP"`.
pub async fn add(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Extension(state): Extension<Arc<AdminState>>,
    Params(ip): Params<String>,
) -> Result<Response, ApiError> {
    let net = parse(&ip)?;
    let key = net.to_string();
    let _guard = state.whitelist_lock.lock().await;
    let opts = AdminRestOptions::for_host(&core.config.load(), &ctx.host);
    let mut delta = load_delta(&core, &ctx.host).await?;
    delta.removed.retain(|r| *r != key);
    let configured = opts
        .whitelist
        .iter()
        .filter_map(|s| parse_net(s))
        .any(|n| n == net);
    if !configured && !delta.added.contains(&key) {
        delta.added.push(key);
    }
    save_delta(&core, &ctx.host, &delta).await?;
    tracing::warn!(target: "audit", host = %ctx.host, entry = %display(&net), "admin_rest allowlist entry added");
    Ok(ok(format!("IP added to whitelist: {ip}")))
}

/// `DELETE /whitelist/{ip}`: 200 `"IP removed from whtielist: IP"` (mod_admin_rest's spelling,
/// kept for compatibility), 404 when the entry is not on the list.
pub async fn remove(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Extension(state): Extension<Arc<AdminState>>,
    Params(ip): Params<String>,
) -> Result<Response, ApiError> {
    let net = parse(&ip)?;
    let key = net.to_string();
    let _guard = state.whitelist_lock.lock().await;
    let opts = AdminRestOptions::for_host(&core.config.load(), &ctx.host);
    if !effective_whitelist(&core, &ctx.host, &opts)
        .await?
        .contains(&net)
    {
        return Err(ApiError::other(
            StatusCode::NOT_FOUND,
            "not_whitelisted",
            format!("IP is not whitelisted: {ip}"),
        ));
    }
    let mut delta = load_delta(&core, &ctx.host).await?;
    delta.added.retain(|a| *a != key);
    let configured = opts
        .whitelist
        .iter()
        .filter_map(|s| parse_net(s))
        .any(|n| n == net);
    if configured && !delta.removed.contains(&key) {
        delta.removed.push(key);
    }
    save_delta(&core, &ctx.host, &delta).await?;
    tracing::warn!(target: "audit", host = %ctx.host, entry = %display(&net), "admin_rest allowlist entry removed");
    Ok(ok(format!("IP removed from whtielist: {ip}")))
}
