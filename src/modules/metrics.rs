//! `metrics`: a global module (Prosody's `mod_http_openmetrics`) serving `GET /metrics` — every
//! metric family, OpenMetrics text when the scraper accepts it (as Prometheus does), else the
//! Prometheus text format — to the addresses in `http.metrics_allow` (loopback by default).
//! Unloaded, `/metrics` answers 404.

use std::sync::{Arc, Weak};

use serde_json::json;

use crate::core::Core;
use crate::core::metrics::Format;
use crate::core::module_api::http::{HttpRequest, HttpResponse, http_handler};
use crate::core::modules::{LoadError, Module, ModuleContext};

/// The OpenMetrics content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The path served.
pub const PATH: &str = "/metrics";

/// The `metrics` module.
pub struct Metrics;

impl Module for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn global(&self) -> bool {
        true
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let core = ctx.core();
        ctx.add_http_route(
            "GET",
            PATH,
            http_handler(move |req| {
                let core = core.clone();
                async move { scrape(&core, &req) }
            }),
        )
        .map_err(|e| LoadError::Unavailable(e.to_string()))
    }
}

/// Answers one scrape.
fn scrape(core: &Weak<Core>, req: &HttpRequest) -> HttpResponse {
    let Some(core) = core.upgrade() else {
        return HttpResponse::new(503, "text/plain", "shutting down");
    };
    let allowed = req.peer.is_some_and(|addr| {
        core.config
            .load()
            .http
            .metrics_allow
            .iter()
            .any(|net| net.contains(&addr.ip()))
    });
    if !allowed {
        let body = json!({
            "error": "forbidden",
            "message": "metrics are not open to this address (http.metrics_allow)",
        });
        return HttpResponse::new(403, "application/json", body.to_string());
    }
    refresh(&core);
    let open = req
        .header("accept")
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (format, ctype) = if open {
        (Format::OpenMetrics, CONTENT_TYPE)
    } else {
        (Format::Prometheus, PROMETHEUS_CONTENT_TYPE)
    };
    HttpResponse::new(200, ctype, core.metrics.render_as(format))
}

/// Brings the gauges read at scrape time up to date.
fn refresh(core: &Arc<Core>) {
    for host in core.hosts() {
        let n = core.sessions.all(Some(&host.name)).len();
        core.core_metrics.sessions.with(&[&host.name]).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::Store;

    fn request(peer: &str, accept: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: PATH.into(),
            headers: vec![("accept".into(), accept.into())],
            peer: Some(peer.parse().unwrap()),
            ..HttpRequest::default()
        }
    }

    #[tokio::test]
    async fn loads_once_globally_and_serves_the_route_until_unloaded() {
        let cfg = Config::parse(
            "modules_enabled = [\"metrics\"]\n[[host]]\nname = \"a.example\"\n[[host]]\nname = \"b.example\"\n",
        )
        .unwrap();
        let core = Core::new(cfg, Store::memory(), super::super::BUILTIN).unwrap();
        assert!(core.global_host().is_loaded("metrics"));
        assert!(!core.host("a.example").unwrap().is_loaded("metrics"));
        let h = core.http_routes.find("GET", PATH).expect("route");
        let r = h(request("127.0.0.1:9", "application/openmetrics-text")).await;
        assert_eq!((r.status, r.content_type.as_str()), (200, CONTENT_TYPE));
        assert!(String::from_utf8_lossy(&r.body).ends_with("# EOF\n"));
        let r = h(request("127.0.0.1:9", "text/plain")).await;
        assert_eq!(r.content_type, PROMETHEUS_CONTENT_TYPE);
        assert_eq!(h(request("192.0.2.1:9", "")).await.status, 403);
        core.unload_module("*", "metrics").unwrap();
        assert!(core.http_routes.find("GET", PATH).is_none());
        core.load_module("*", "metrics").unwrap();
        assert!(core.http_routes.find("GET", PATH).is_some(), "loads again");
    }
}
