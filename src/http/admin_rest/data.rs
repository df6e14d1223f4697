//! Factory reset: `DELETE /data` (every stored item) and `DELETE /certs` (the generated
//! certificate). Both exist only when `admin_rest_allow_destructive = true`; otherwise 403.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{ApiError, Ctx, ok};
use crate::core::Core;
use crate::modules::admin_rest::AdminRestOptions;
use crate::xmpp::error::{StreamError, StreamErrorCondition};

fn allowed(core: &Core, ctx: &Ctx) -> Result<(), ApiError> {
    if AdminRestOptions::for_host(&core.config.load(), &ctx.host).allow_destructive {
        Ok(())
    } else {
        Err(ApiError::other(
            StatusCode::FORBIDDEN,
            "destructive_disabled",
            "Destructive operations are disabled (admin_rest_allow_destructive = false)",
        ))
    }
}

/// `DELETE /data`: deletes every stored item (accounts, rosters, …) and closes every session.
pub async fn delete_data(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    allowed(&core, &ctx)?;
    let removed = core.store.wipe().await?;
    core.allowlists.reset().await;
    core.sessions.close_all(StreamError::with_text(
        StreamErrorCondition::NotAuthorized,
        "server data deleted",
    ));
    tracing::warn!(target: "audit", items = removed, "all server data deleted over admin_rest");
    Ok(ok("Server data deleted successfully."))
}

/// `DELETE /certs`: deletes the generated self-signed certificate (a new one is made at the next
/// start); configured certificates are never touched (409).
pub async fn delete_certs(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    allowed(&core, &ctx)?;
    let cfg = core.config.load();
    if cfg.tls.certificate.is_some() {
        return Err(ApiError::other(
            StatusCode::CONFLICT,
            "configured_certificates",
            "The configured certificate files are not deleted",
        ));
    }
    let dir = cfg.data_dir.join("tls");
    for f in ["cert.pem", "key.pem"] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "{}: {e}",
                    dir.join(f).display()
                )));
            }
        }
    }
    Ok(ok("Certificates deleted successfully."))
}
