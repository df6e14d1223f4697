//! Hosts: `GET /hosts` (configured, and whether active), `PUT /hosts/{host}` (activate) and
//! `DELETE /hosts/{host}` (deactivate: sessions closed with `<host-gone/>`, data kept), over
//! [`Core::host_list`], [`Core::activate_host`] and [`Core::deactivate_host`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, nodes, ok};
use crate::core::Core;
use crate::core::admin_ops::AdminOp;

/// `GET /hosts`: `{"hosts": [{host, configured, active, modules, sessions}]}`.
pub async fn list(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    let hosts = core.host_list();
    Ok(ok(json!({ "count": hosts.len(), "hosts": hosts })))
}

/// `PUT /hosts/{host}`: starts serving a configured host; `{"host", "loaded": [modules]}`.
/// In a cluster, on every node (or the one `?node=` names), each node's outcome in `nodes`.
pub async fn activate(
    State(core): State<Arc<Core>>,
    uri: Uri,
    Params(host): Params<String>,
) -> Result<Response, ApiError> {
    let op = AdminOp::HostActivate { host: host.clone() };
    let local = async {
        let loaded = core.activate_host(&host)?;
        Ok(json!({ "result": { "host": host, "active": true, "loaded": loaded } }))
    };
    nodes::across(&core, &uri, op, local).await
}

/// `DELETE /hosts/{host}`: stops serving a host; `{"host", "closed": sessions}`.
/// In a cluster, on every node (or the one `?node=` names), each node's outcome in `nodes`.
pub async fn deactivate(
    State(core): State<Arc<Core>>,
    uri: Uri,
    Params(host): Params<String>,
) -> Result<Response, ApiError> {
    let op = AdminOp::HostDeactivate { host: host.clone() };
    let local = async {
        let closed = core.deactivate_host(&host)?;
        Ok(json!({ "result": { "host": host, "active": false, "closed": closed } }))
    };
    nodes::across(&core, &uri, op, local).await
}
