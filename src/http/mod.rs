//! The HTTP face: an axum router over the same managers (the admin REST API grows here).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::core::Core;

/// The HTTP router.
pub fn router(core: Arc<Core>) -> Router {
    Router::new().route("/health", get(health)).with_state(core)
}

/// `GET /health`: liveness plus a little state, for load balancers and dashboards.
async fn health(State(core): State<Arc<Core>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": core.sessions.count(),
    }))
}

/// Serves HTTP on `listener` until shutdown.
pub async fn serve(core: Arc<Core>, listener: TcpListener) {
    let shutdown = core.shutdown.clone();
    let app = router(core).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}
