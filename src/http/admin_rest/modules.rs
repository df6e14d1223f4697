//! Modules of the host: list, status, load (or reload), unload — on the real module registry.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{ApiError, Ctx, nodes, ok};
use crate::core::Core;
use crate::core::admin_ops::AdminOp;
use crate::core::modules::{Host, ModuleError};

fn host(core: &Core, ctx: &Ctx) -> Result<Arc<Host>, ApiError> {
    core.host(&ctx.host).cloned().ok_or(ApiError::UnknownHost)
}

/// `GET /modules`: `{"modules": [names], "count": n}`.
pub async fn list(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    let modules = host(&core, &ctx)?.modules();
    Ok(ok(json!({ "count": modules.len(), "modules": modules })))
}

/// `GET /modules/count`: `{"count": n}`.
pub async fn count(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    Ok(ok(json!({ "count": host(&core, &ctx)?.modules().len() })))
}

/// `GET /module/{name}`: 200 loaded / 404 not loaded, `{"module", "loaded", "status"}` either way.
pub async fn get(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let h = host(&core, &ctx)?;
    let result = json!({
        "module": name,
        "loaded": h.is_loaded(&name),
        "status": h.module_status(&name),
    });
    if result["loaded"] == true {
        Ok(ok(result))
    } else {
        Err(ApiError::WithResult {
            status: StatusCode::NOT_FOUND,
            code: "module_not_loaded",
            result,
        })
    }
}

fn unknown_module(name: &str) -> ApiError {
    ApiError::other(
        StatusCode::NOT_FOUND,
        "unknown_module",
        format!("Module does not exist: {name}"),
    )
}

/// `PUT /module/{name}`: loads the module, or reloads it if loaded; 200 `"Module loaded: NAME"`.
/// In a cluster, on every node (or the one `?node=` names), each node's outcome in `nodes`.
pub async fn load(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    uri: Uri,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let h = host(&core, &ctx)?;
    if core.modules.get(&name).is_none() {
        return Err(unknown_module(&name));
    }
    let op = AdminOp::ModuleReload {
        module: name.clone(),
        host: Some(ctx.host.clone()),
    };
    let local = async {
        if h.is_loaded(&name) {
            core.unload_module(&ctx.host, &name)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        match core.load_module(&ctx.host, &name) {
            Ok(()) | Err(ModuleError::AlreadyLoaded(_)) => {
                Ok(json!({ "result": format!("Module loaded: {name}") }))
            }
            Err(ModuleError::Unknown(_)) => Err(unknown_module(&name)),
            Err(e @ ModuleError::LoadFailed { .. }) => Err(ApiError::other(
                StatusCode::INTERNAL_SERVER_ERROR,
                "module_load_failed",
                format!("Internal server error: {e}"),
            )),
            Err(e) => Err(ApiError::Internal(e.to_string())),
        }
    };
    nodes::across(&core, &uri, op, local).await
}

/// `DELETE /module/{name}`: 200 `"Module unloaded: NAME"`, 404 `"Module is not loaded:NAME"`.
/// In a cluster, on every node (or the one `?node=` names), each node's outcome in `nodes`.
pub async fn unload(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    uri: Uri,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    host(&core, &ctx)?;
    let op = AdminOp::ModuleUnload {
        module: name.clone(),
        host: Some(ctx.host.clone()),
    };
    let local = async {
        match core.unload_module(&ctx.host, &name) {
            Ok(()) => Ok(json!({ "result": format!("Module unloaded: {name}") })),
            Err(ModuleError::NotLoaded(_)) => Err(ApiError::other(
                StatusCode::NOT_FOUND,
                "module_not_loaded",
                format!("Module is not loaded:{name}"),
            )),
            Err(e) => Err(ApiError::Internal(e.to_string())),
        }
    };
    nodes::across(&core, &uri, op, local).await
}
