//! CORS for browser pages calling BOSH and host-meta from another origin: `http.cors_origins`
//! lists the origins allowed (`*` = any); by default none is.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::core::Core;

/// Seconds a browser may cache a preflight answer.
const MAX_AGE: &str = "86400";

/// Whether `origin` may call us according to `allowed` (`http.cors_origins`).
pub fn allows(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Adds the CORS headers for an allowed `Origin` to every answer of the routes it wraps.
pub async fn cors(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| allows(&core.config.load().http.cors_origins, o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let mut resp = next.run(req).await;
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
    }
    vary_origin(resp.headers_mut());
    resp
}

fn vary_origin(h: &mut HeaderMap) {
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// `OPTIONS` on a web route: the preflight answer (its CORS headers come from [`cors`]).
pub async fn preflight() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Which origins `http.cors_origins` lets in.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_or_a_star_are_allowed() {
        let list = vec!["https://chat.example".to_string()];
        assert!(allows(&list, "https://chat.example"));
        assert!(allows(&list, "HTTPS://CHAT.EXAMPLE"));
        assert!(!allows(&list, "https://evil.example"));
        assert!(!allows(&[], "https://chat.example"));
        assert!(allows(&["*".to_string()], "https://any.example"));
    }
}
