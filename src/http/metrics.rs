//! `GET /metrics`: every metric family in the OpenMetrics text format, for Prometheus and
//! friends; open to the addresses in `http.metrics_allow` (loopback by default). Also the
//! middleware counting HTTP requests by route and status.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ClientAddr;
use crate::core::Core;
use crate::core::metrics::Format;

/// The OpenMetrics content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the metrics to allowed addresses (others get 403): OpenMetrics when the scraper
/// accepts it (as Prometheus does), else the Prometheus text format.
pub async fn metrics(
    State(core): State<Arc<Core>>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Response {
    let allowed = core
        .config
        .load()
        .http
        .metrics_allow
        .iter()
        .any(|net| net.contains(&addr.ip()));
    if !allowed {
        let body = axum::Json(serde_json::json!({
            "error": "forbidden",
            "message": "metrics are not open to this address (http.metrics_allow)",
        }));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    for host in core.hosts() {
        let n = core.sessions.all(Some(&host.name)).len();
        core.core_metrics.sessions.with(&[&host.name]).set(n as f64);
    }
    let open = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (format, ctype) = if open {
        (Format::OpenMetrics, CONTENT_TYPE)
    } else {
        (Format::Prometheus, PROMETHEUS_CONTENT_TYPE)
    };
    let mut resp = core.metrics.render_as(format).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// The route label of a path: its first two segments, so names in paths never make new series.
pub fn route_label(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).take(2).collect();
    format!("/{}", segs.join("/"))
}

/// Counts every request by route and status.
pub async fn count_requests(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    core.core_metrics
        .http_requests
        .with(&[&route, &status])
        .inc();
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
