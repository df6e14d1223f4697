//! The middleware counting HTTP requests by route and status and timing them by route.
//! (`GET /metrics` itself is served by the global `metrics` module, [`crate::modules::metrics`].)

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::core::Core;

/// The route label of a path: its first two segments, so names in paths never make new series.
/// Requests answered 404 are counted under one label, `unmatched`, so that scanning random
/// paths makes no new series either.
pub fn route_label(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).take(2).collect();
    format!("/{}", segs.join("/"))
}

/// Counts every request by route and status.
pub async fn count_requests(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut route = route_label(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if status == axum::http::StatusCode::NOT_FOUND {
        route = "unmatched".into();
    }
    let m = &core.core_metrics;
    m.http_requests
        .with(&[&route, &status.as_u16().to_string()])
        .inc();
    m.http_latency
        .observe(&[&route], started.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_drop_names() {
        assert_eq!(
            super::route_label("/admin_rest/user/alice"),
            "/admin_rest/user"
        );
        assert_eq!(super::route_label("/metrics"), "/metrics");
        assert_eq!(super::route_label("/"), "/");
    }
}
