//! XEP-0156 discovery: `/.well-known/host-meta` (XRD) and `/.well-known/host-meta.json` list the
//! WebSocket and BOSH endpoints, as reached through the URL the client used.

use std::sync::Arc;

use axum::Extension;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Web, WebPeer};
use crate::xmpp::element::escape;
use crate::xmpp::ns;

/// The link relation of a BOSH endpoint (XEP-0156 §3).
pub const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";
/// The link relation of a WebSocket endpoint (XEP-0156 §3).
pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";

/// The endpoints to list for this request: (relation, URL).
fn links(web: &Web, req: &Request) -> Vec<(&'static str, String)> {
    let cfg = web.core.config.load();
    let headers = req.headers();
    let secure = WebPeer::of(&web.core, req.extensions(), headers).secure;
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_authority(h))
        .map(str::to_string)
        .or_else(|| cfg.http.listen.first().map(|a| a.to_string()))
        .unwrap_or_else(|| cfg.default_host().to_string());
    let (http, ws) = if secure {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let mut out = Vec::new();
    if cfg.web.bosh {
        out.push((REL_BOSH, format!("{http}://{authority}/http-bind")));
    }
    if cfg.web.websocket {
        out.push((REL_WEBSOCKET, format!("{ws}://{authority}/xmpp-websocket")));
    }
    out
}

/// A `Host` header we are willing to echo into a URL: a host name or address and a port.
fn valid_authority(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// `GET /.well-known/host-meta`: the XRD document.
pub async fn host_meta_xml(Extension(web): Extension<Arc<Web>>, req: Request) -> Response {
    let mut xml = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{}'>\n",
        ns::XRD
    );
    for (rel, href) in links(&web, &req) {
        xml.push_str(&format!(
            "  <Link rel=\"{rel}\" href=\"{}\"/>\n",
            escape(&href, true)
        ));
    }
    xml.push_str("</XRD>\n");
    let mut resp = xml.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xrd+xml; charset=utf-8"),
    );
    resp
}

/// `GET /.well-known/host-meta.json`: the JRD document.
pub async fn host_meta_json(Extension(web): Extension<Arc<Web>>, req: Request) -> Response {
    let links: Vec<_> = links(&web, &req)
        .into_iter()
        .map(|(rel, href)| json!({ "rel": rel, "href": href }))
        .collect();
    axum::Json(json!({ "links": links })).into_response()
}

/// Which `Host` headers are echoed.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_authorities_are_echoed() {
        assert!(valid_authority("chat.example.com:5280"));
        assert!(valid_authority("[::1]:5280"));
        assert!(!valid_authority("evil\"><x"));
        assert!(!valid_authority("a/b"));
        assert!(!valid_authority(""));
    }
}
