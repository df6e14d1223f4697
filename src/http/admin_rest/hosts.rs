//! Hosts: `GET /hosts` (configured, and whether active), `PUT /hosts/{host}` (activate) and
//! `DELETE /hosts/{host}` (deactivate: sessions closed with `<host-gone/>`, data kept), over
//! [`Core::host_list`], [`Core::activate_host`] and [`Core::deactivate_host`].

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, ok};
use crate::core::Core;

/// `GET /hosts`: `{"hosts": [{host, configured, active, modules, sessions}]}`.
pub async fn list(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    let hosts = core.host_list();
    Ok(ok(json!({ "count": hosts.len(), "hosts": hosts })))
}

/// `PUT /hosts/{host}`: starts serving a configured host; `{"host", "loaded": [modules]}`.
pub async fn activate(
    State(core): State<Arc<Core>>,
    Params(host): Params<String>,
) -> Result<Response, ApiError> {
    let loaded = core.activate_host(&host)?;
    Ok(ok(
        json!({ "host": host, "active": true, "loaded": loaded }),
    ))
}

/// `DELETE /hosts/{host}`: stops serving a host; `{"host", "closed": sessions}`.
pub async fn deactivate(
    State(core): State<Arc<Core>>,
    Params(host): Params<String>,
) -> Result<Response, ApiError> {
    let closed = core.deactivate_host(&host)?;
    Ok(ok(
        json!({ "host": host, "active": false, "closed": closed }),
    ))
}
