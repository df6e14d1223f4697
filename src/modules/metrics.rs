//! `metrics`: a global module (Prosody's `mod_http_openmetrics`) serving `GET /metrics` — every
//! metric family, OpenMetrics text when the scraper accepts it (as Prometheus does), else the
//! Prometheus text format — to the addresses in `http.metrics_allow` (loopback by default).
//! Unloaded, `/metrics` answers 404.
//!
//! Gauges of live state (sessions, queue drops, the `process_*` families) are read at each
//! scrape; those that need the store (accounts, offline and archived messages, rooms) are
//! recounted by the first scrape after [`STORE_REFRESH`] has passed. Every per-host series exists, at zero, from the
//! moment the module loads, so that rates and alerts work on an idle server.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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
/// How often the store-derived gauges (accounts, offline and archived messages, rooms) are recounted.
pub const STORE_REFRESH: Duration = Duration::from_secs(60);

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
        if let Some(c) = core.upgrade() {
            seed(&c);
        }
        // When the store-derived gauges were last counted (None: not yet).
        let counted: Arc<Mutex<Option<Instant>>> = Arc::default();
        ctx.add_http_route(
            "GET",
            PATH,
            http_handler(move |req| {
                let (core, counted) = (core.clone(), counted.clone());
                async move { scrape(&core, &req, &counted).await }
            }),
        )
        .map_err(|e| LoadError::Unavailable(e.to_string()))
    }
}

/// Whether the store-derived gauges are due for a recount; if so, marks them counted now.
fn recount_due(counted: &Mutex<Option<Instant>>) -> bool {
    let mut last = counted.lock().unwrap_or_else(|e| e.into_inner());
    let due = last.is_none_or(|t| t.elapsed() >= STORE_REFRESH);
    if due {
        *last = Some(Instant::now());
    }
    due
}

/// Answers one scrape.
async fn scrape(
    core: &Weak<Core>,
    req: &HttpRequest,
    counted: &Mutex<Option<Instant>>,
) -> HttpResponse {
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
    if recount_due(counted) {
        count_stored(&core).await;
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

/// Creates, at zero, the series of every configured mechanism and group chat service (the
/// per-host series are created by the core when a host starts, [`crate::core::metrics::CoreMetrics::seed_host`]).
fn seed(core: &Core) {
    let m = &core.core_metrics;
    let cfg = core.config.load();
    for mech in &cfg.c2s.sasl_mechanisms {
        for result in ["success", "failure"] {
            m.auth.with(&[mech, result]);
        }
    }
    for c in cfg.components().iter().filter(|c| c.module == "muc") {
        m.rooms.with(&[&c.name]);
        m.room_occupants.with(&[&c.name]);
    }
}

/// Brings the gauges read at scrape time up to date.
fn refresh(core: &Arc<Core>) {
    let m = &core.core_metrics;
    m.sessions_by_transport.reset();
    for host in core.hosts() {
        let sessions = core.sessions.all(Some(&host.name));
        m.sessions.with(&[&host.name]).set(sessions.len() as f64);
        for s in &sessions {
            let tls = if s.conn.secure { "true" } else { "false" };
            m.sessions_by_transport
                .with(&[&host.name, s.conn.transport.as_str(), tls])
                .inc();
        }
    }
    m.queue_drops
        .with(&[])
        .set(core.sessions.queue_drops() as f64);
    m.refresh_process();
}

/// Recounts what lives in the store: accounts, offline and archived messages per host, and
/// the rooms and occupants of each group chat service. A count that fails keeps its last value.
async fn count_stored(core: &Arc<Core>) {
    let m = &core.core_metrics;
    for host in core.hosts() {
        let host = host.name.as_str();
        if let Ok(users) = core.accounts.list(host).await {
            m.accounts.with(&[host]).set(users.len() as f64);
        }
        for (family, store) in [
            (&m.offline_messages, super::offline::STORE),
            (&m.archive_messages, super::mam::STORE),
        ] {
            if let Some(n) = archive_items(core, host, store).await {
                family.with(&[host]).set(n as f64);
            }
        }
    }
    for svc in super::muc::services(core) {
        if let Ok(rooms) = svc.list().await {
            let occupants: usize = rooms.iter().map(|r| r.occupants).sum();
            m.rooms.with(&[&svc.host]).set(rooms.len() as f64);
            m.room_occupants.with(&[&svc.host]).set(occupants as f64);
        }
    }
}

/// Items in archive store `store` of `host`, over all its users.
async fn archive_items(core: &Core, host: &str, store: &str) -> Option<usize> {
    let archive = core.store.archive(host, store);
    let mut total = 0usize;
    for user in archive.users().await.ok()? {
        total = total.saturating_add(archive.count(&user).await.ok()?);
    }
    Some(total)
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

    #[tokio::test]
    async fn an_idle_server_exports_every_family_with_zeros_and_process_metrics() {
        let cfg = Config::parse(
            "modules_enabled = [\"metrics\"]\n[[host]]\nname = \"a.example\"\n[[host]]\nname = \"b.example\"\n",
        )
        .unwrap();
        let core = Core::new(cfg, Store::memory(), super::super::BUILTIN).unwrap();
        let jid = crate::xmpp::Jid::parse("alice@a.example").unwrap();
        core.accounts.create(&jid, "pw").await.unwrap();
        // The first scrape counts the store.
        let h = core.http_routes.find("GET", PATH).expect("route");
        let r = h(request("127.0.0.1:9", "text/plain")).await;
        let out = String::from_utf8_lossy(&r.body).into_owned();
        for line in [
            "oxpecker_accounts{host=\"a.example\"} 1\n",
            "oxpecker_accounts{host=\"b.example\"} 0\n",
            "oxpecker_sessions{host=\"b.example\"} 0\n",
            "oxpecker_sessions_by_transport{host=\"a.example\",transport=\"tcp\",tls=\"true\"} 0\n",
            "oxpecker_sessions_by_transport{host=\"a.example\",transport=\"websocket\",tls=\"false\"} 0\n",
            "oxpecker_sessions_by_transport{host=\"a.example\",transport=\"bosh\",tls=\"true\"} 0\n",
            "oxpecker_stanzas_total{host=\"b.example\",kind=\"message\",direction=\"out\"} 0\n",
            "oxpecker_stream_errors_total{listener=\"s2s\",condition=\"host-unknown\"} 0\n",
            "oxpecker_auth_total{mechanism=\"PLAIN\",result=\"failure\"} 0\n",
            "oxpecker_offline_messages{host=\"a.example\"} 0\n",
            "oxpecker_archive_messages{host=\"b.example\"} 0\n",
            "oxpecker_muc_rooms{host=\"conference.a.example\"} 0\n",
            "oxpecker_queue_drops_total 0\n",
            "oxpecker_storage_write_seconds_count ",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        let build = format!(
            "oxpecker_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(out.contains(&build), "{out}");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                out.contains(&format!("\n{name}")),
                "missing {name} in\n{out}"
            );
        }
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{out}"
        );
    }
}
