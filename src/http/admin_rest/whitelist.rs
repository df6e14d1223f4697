//! The allowlist: list, add, remove. Entries are addresses or CIDR ranges; the edits live in
//! [`crate::core::allowlist::Allowlists`] (in memory, persisted on change).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ipnet::IpNet;
use serde_json::json;

use super::params::Params;
use super::{ApiError, Ctx, configured_allowlist, ok};
use crate::core::Core;
use crate::modules::admin_rest::{AdminRestOptions, parse_net};

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

/// The configured allowlist of the request's host.
fn configured(core: &Core, ctx: &Ctx) -> Vec<IpNet> {
    configured_allowlist(&AdminRestOptions::for_host(&core.config.load(), &ctx.host))
}

/// `GET /whitelist`: `{"whitelist": [entries], "count": n}`.
pub async fn list(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    let list: Vec<String> = core
        .allowlists
        .effective(&ctx.host, &configured(&core, &ctx))
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
    Params(ip): Params<String>,
) -> Result<Response, ApiError> {
    let net = parse(&ip)?;
    core.allowlists
        .add(&ctx.host, &configured(&core, &ctx), net)
        .await?;
    tracing::warn!(target: "audit", host = %ctx.host, entry = %display(&net), "admin_rest allowlist entry added");
    Ok(ok(format!("IP added to whitelist: {ip}")))
}

/// `DELETE /whitelist/{ip}`: 200 `"IP removed from whtielist: IP"` (mod_admin_rest's spelling,
/// kept for compatibility), 404 when the entry is not on the list.
pub async fn remove(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(ip): Params<String>,
) -> Result<Response, ApiError> {
    let net = parse(&ip)?;
    if !core
        .allowlists
        .remove(&ctx.host, &configured(&core, &ctx), net)
        .await?
    {
        return Err(ApiError::other(
            StatusCode::NOT_FOUND,
            "not_whitelisted",
            format!("IP is not whitelisted: {ip}"),
        ));
    }
    tracing::warn!(target: "audit", host = %ctx.host, entry = %display(&net), "admin_rest allowlist entry removed");
    Ok(ok(format!("IP removed from whtielist: {ip}")))
}
