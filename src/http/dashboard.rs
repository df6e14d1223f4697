//! The web dashboard at `GET /admin/`: static files from `web/admin/`, embedded in the binary,
//! served to the addresses on the admin API's allowlist (of the default host). The page talks
//! only to the admin REST API, with credentials it keeps in memory; it adds no operation of its
//! own. Vendored JavaScript (uPlot) comes from `scripts/vendor-dashboard`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::admin_rest::{auth, configured_allowlist};
use super::{ClientAddr, Transport};
use crate::core::Core;
use crate::modules::admin_rest::AdminRestOptions;

/// Where the dashboard is served.
pub const PREFIX: &str = "/admin";

/// The page's Content-Security-Policy: its own files only, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The embedded files, by path under `/admin/`, with their content types.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/admin/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/admin/app.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/admin/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/admin/vendor/uPlot.min.css"),
    ),
];

/// The page, with `{{API_BASE}}` standing for the admin API's base path.
const INDEX: &str = include_str!("../../web/admin/index.html");

/// The file served for `path` (relative to `/admin/`), if there is one.
fn file(path: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, body)| (*t, *body))
}

/// Escapes text for an HTML attribute value.
fn attr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Answers `GET /admin`, `/admin/` and the files under it; `None` for other paths.
pub async fn serve(core: &Arc<Core>, req: Request) -> Option<Response> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix(PREFIX)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let cfg = core.config.load_full();
    let opts = AdminRestOptions::for_host(&cfg, cfg.default_host());
    let peer = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let ip = auth::client_ip(peer, forwarded, &opts.trusted_proxies);
    let secure = req
        .extensions()
        .get::<Transport>()
        .is_some_and(|t| t.secure);
    drop(req);
    match core
        .allowlists
        .allows(cfg.default_host(), &configured_allowlist(&opts), ip)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(target: "audit", %ip, %path, "refused: address not on the admin_rest allowlist (dashboard)");
            return Some(plain(
                StatusCode::FORBIDDEN,
                "this address is not on the admin API allowlist",
            ));
        }
        Err(_) => {
            return Some(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the allowlist cannot be read",
            ));
        }
    }
    if opts.secure && !secure && !opts.trusted_proxies.iter().any(|n| n.contains(&peer)) {
        return Some(plain(
            StatusCode::FORBIDDEN,
            "the admin API needs HTTPS here (admin_rest_secure); open the dashboard over HTTPS",
        ));
    }
    let (ctype, body) = match rest {
        "" => {
            let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/admin/"));
            return Some(resp);
        }
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            INDEX
                .replace("{{API_BASE}}", &attr_escape(&opts.base))
                .into_bytes(),
        ),
        other => match file(other.trim_start_matches('/')) {
            Some((t, body)) => (t, body.to_vec()),
            None => return Some(plain(StatusCode::NOT_FOUND, "not found")),
        },
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(resp)
}

/// The handler of `GET /admin`, `/admin/` and `/admin/{*file}`.
pub async fn page(State(core): State<Arc<Core>>, req: Request) -> Response {
    match serve(&core, req).await {
        Some(resp) => resp,
        None => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        for name in [
            "app.js",
            "app.css",
            "vendor/uPlot.iife.min.js",
            "vendor/uPlot.min.css",
        ] {
            assert!(
                INDEX.contains(&format!("\"{name}\"")),
                "{name} not in index.html"
            );
            assert!(file(name).is_some_and(|(_, b)| !b.is_empty()), "{name}");
        }
        assert!(INDEX.contains("{{API_BASE}}"));
        assert!(!INDEX.contains("<script>"), "no inline script (CSP)");
        assert_eq!(file("../Cargo.toml"), None);
        assert_eq!(attr_escape("/a\"b<"), "/a&quot;b&lt;");
    }
}
