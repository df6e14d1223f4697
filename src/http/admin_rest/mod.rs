//! The admin REST API: a drop-in for Prosody's mod_admin_rest, mounted under `admin_rest_base`.
//!
//! Every request goes through [`entry`], in mod_admin_rest's order: resolve the host (`?host=`,
//! else the `Host` header if it names a served host, else the first host) → allowlist (client
//! address, `X-Forwarded-For` only from trusted proxies) → HTTPS requirement → the module is
//! loaded on the host → authentication (Basic for admins, Bearer API tokens; every path under the
//! base, `/ping` included) → the route family's path and method rule ([`routes::check`]: 404
//! `Invalid request path`, 405 `Invalid request method`) → route. Handlers,
//! one file per resource, call the same managers as the XMPP side. Responses are
//! `{"result": …}`; failures add a machine-readable `"error"` ([`ApiError`]). Every
//! state-changing call is logged with tracing target `audit`.
//!
//! The route table ([`ROUTES`], in [`routes`]) is declared once; it builds the router and is checked against
//! `openapi/admin_rest.yaml` by a test, so the spec and the server cannot drift.

pub mod auth;
pub mod body;
pub mod clients;
pub mod data;
pub mod error;
pub mod groups;
pub mod hosts;
pub mod messages;
pub mod modules;
pub mod muc;
pub mod nodes;
pub mod openapi;
pub mod params;
pub mod reload;
pub mod roster;
pub mod routes;
pub mod s2s;
pub mod server;
pub mod sessions;
pub mod users;
pub mod vcards;
pub mod whitelist;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

pub use error::ApiError;
pub use routes::ROUTES;

use crate::core::Core;
use crate::modules::admin_rest::AdminRestOptions;
use crate::xmpp::Jid;
use auth::{Authenticator, Principal};

use super::{ClientAddr, Transport};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// What a handler knows about the call besides its path and body.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The host the request acts on.
    pub host: String,
    /// The authenticated caller.
    pub principal: Principal,
    /// The client address (after trusted-proxy resolution).
    pub ip: IpAddr,
    /// The base path the API is mounted under.
    pub base: String,
}

/// The admin API's state shared by all listeners of one server.
pub struct AdminState {
    /// Credential checks, cache and throttling.
    pub auth: Authenticator,
    router: Router,
}

impl AdminState {
    /// The state and route table for `core`.
    pub fn new(core: Arc<Core>) -> Self {
        AdminState {
            auth: Authenticator::new(),
            router: routes::build_router().with_state(core),
        }
    }
}

/// A JSON response with `Content-Type: application/json` (no charset, as mod_admin_rest).
pub fn json_response(body: Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"result": result}` with `status`.
pub fn reply(status: StatusCode, result: impl Into<Value>) -> Response {
    (status, json_response(json!({ "result": result.into() }))).into_response()
}

/// `200 {"result": result}`.
pub fn ok(result: impl Into<Value>) -> Response {
    reply(StatusCode::OK, result)
}

/// The request body as JSON, mod_admin_rest style: parsed when the content type is JSON or the
/// body looks like JSON (contains `{` or `[`); anything else is a 400.
pub fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json") || v.to_ascii_lowercase().ends_with("+json")
        });
    let looks_json = body.iter().any(|b| *b == b'{' || *b == b'[');
    if body.is_empty() || !(is_json || looks_json) {
        return Err(ApiError::InvalidBody);
    }
    serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)
}

/// The body as a JSON object (see [`parse_body`]).
pub fn body_object(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match parse_body(headers, body)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::InvalidBody),
    }
}

/// Like [`body_object`], but an empty body is an empty object.
pub fn optional_body_object(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    body_object(headers, body)
}

/// A required non-empty string field of a body object.
pub fn string_field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::InvalidBody)
}

/// Resolves a user named in a path: a bare username (on the request's host) or a full
/// `user@host` JID (URL-encoded), which must be on a served host.
pub fn user_jid(core: &Core, host: &str, name: &str) -> Result<Jid, ApiError> {
    let jid = if name.contains('@') {
        Jid::parse(name).map_err(|_| ApiError::InvalidUser)?
    } else {
        Jid::new(Some(name), host, None).map_err(|_| ApiError::InvalidUser)?
    };
    if jid.node().is_none() || jid.resource().is_some() {
        return Err(ApiError::InvalidUser);
    }
    if core.host(jid.domain()).is_none() {
        return Err(ApiError::UnknownHost);
    }
    Ok(jid)
}

/// Like [`user_jid`], and the account must exist (404 `User does not exist: JID` otherwise).
pub async fn existing_user(core: &Core, host: &str, name: &str) -> Result<Jid, ApiError> {
    let jid = user_jid(core, host, name)?;
    if !core.accounts.exists(&jid).await? {
        return Err(ApiError::UserNotFound(jid.to_string()));
    }
    Ok(jid)
}

/// The value of the `host` query parameter, if any.
fn query_host(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == "host").then(|| percent_decode(v))
    })
}

/// Decodes a query-string value: `+` is a space, then `%XX` escapes (invalid ones stay as written).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The host a request acts on: `Err` when `?host=` names a host not served here.
fn request_host(core: &Core, uri: &Uri, headers: &HeaderMap) -> Result<String, ()> {
    let cfg = core.config.load();
    if let Some(h) = query_host(uri) {
        return crate::xmpp::jid::normalize_domain(&h)
            .ok()
            .filter(|h| core.host(h).is_some())
            .ok_or(());
    }
    let from_header = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| {
            // Strip a port (but not from a bracketed IPv6 literal, which is no host anyway).
            match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => h,
            }
        })
        .and_then(|h| crate::xmpp::jid::normalize_domain(h).ok())
        .filter(|h| core.host(h).is_some());
    // The first host still served (a host switched off by `host:deactivate` is skipped).
    let first_active = || core.hosts().first().map(|h| h.name.clone());
    Ok(from_header
        .or_else(first_active)
        .unwrap_or_else(|| cfg.default_host().to_string()))
}

/// The configured allowlist of a host (`admin_rest_whitelist`), parsed; unparsable entries are
/// refused when the configuration is validated.
pub fn configured_allowlist(opts: &AdminRestOptions) -> Vec<ipnet::IpNet> {
    opts.whitelist
        .iter()
        .filter_map(|s| crate::modules::admin_rest::parse_net(s))
        .collect()
}

/// Every admin API request enters here (the HTTP router's fallback).
pub async fn entry(
    State(core): State<Arc<Core>>,
    Extension(state): Extension<Arc<AdminState>>,
    Extension(transport): Extension<Transport>,
    req: Request,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let host = request_host(&core, &parts.uri, &parts.headers);
    let cfg = core.config.load_full();
    let opts_host = host
        .clone()
        .unwrap_or_else(|_| cfg.default_host().to_string());
    let opts = AdminRestOptions::for_host(&cfg, &opts_host);

    let path = parts.uri.path().to_string();
    if path == opts.base {
        let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("{}/", opts.base)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let Some(rest) = path
        .strip_prefix(&opts.base)
        .filter(|r| r.starts_with('/'))
        .map(str::to_string)
    else {
        return ApiError::other(StatusCode::NOT_FOUND, "not_found", "Not found").into_response();
    };

    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let ip = auth::client_ip(peer, forwarded, &opts.trusted_proxies);
    let peer_c = peer.to_canonical();
    let via_trusted_proxy = opts.trusted_proxies.iter().any(|n| n.contains(&peer_c));
    let secure = transport.secure
        || (via_trusted_proxy
            && parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https")));

    // 1. Allowlist, before anything else.
    match core
        .allowlists
        .allows(&opts_host, &configured_allowlist(&opts), ip)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(target: "audit", %ip, method = %parts.method, path = %path, "refused: address not on the admin_rest allowlist");
            return ApiError::IpNotAllowed(ip.to_string()).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    // A body declared too large is refused before anything reads it (and before
    // authentication, so the client reads the 413 instead of a reset connection).
    if body::declared_too_large(&parts.headers, MAX_BODY) {
        return body::refuse(&parts.headers, body).await.into_response();
    }
    // 2. Plain HTTP refused when the API must be secure.
    if opts.secure && !secure {
        return ApiError::HttpsRequired.into_response();
    }
    // 3. The host exists and runs the module.
    let Ok(host) = host else {
        return ApiError::UnknownHost.into_response();
    };
    if !core.host(&host).is_some_and(|h| h.is_loaded("admin_rest")) {
        return ApiError::other(
            StatusCode::NOT_FOUND,
            "module_not_loaded",
            "Invalid request path",
        )
        .into_response();
    }
    // Trailing slashes are ignored.
    let mut rest = rest;
    let trailing_slash = rest.len() > 1 && rest.ends_with('/');
    while rest.len() > 1 && rest.ends_with('/') {
        rest.pop();
    }
    // 4. Authentication, for every route.
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match state
        .auth
        .authenticate(&core, &host, ip, authorization, &opts)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            if !matches!(e, ApiError::MissingAuth) {
                tracing::warn!(target: "audit", %ip, method = %parts.method, path = %path, error = e.code(), "refused: authentication");
            }
            return e.into_response();
        }
    };
    // 5. The route family knows the path and the method (404 / 405), in one place.
    if let Err(e) = routes::check(&parts.method, &rest, trailing_slash) {
        return e.into_response();
    }
    // 6. Route, with a bounded body.
    let bytes = match body::read(&parts.headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let new_uri = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.clone(),
    };
    let Ok(uri) = new_uri.parse::<Uri>() else {
        return ApiError::InvalidPath.into_response();
    };
    parts.uri = uri;
    let method = parts.method.clone();
    parts.extensions.insert(Ctx {
        host: host.clone(),
        principal: principal.clone(),
        ip,
        base: opts.base.clone(),
    });
    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = match state.router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let status = resp.status();
        tracing::info!(
            target: "audit",
            who = principal.who(),
            %ip,
            %host,
            method = %method,
            path = %rest,
            status = status.as_u16(),
            outcome = if status.is_success() { "ok" } else { "failed" },
            "admin_rest call"
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_parsed_like_mod_admin_rest() {
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let none = HeaderMap::new();
        let obj =
            |h: &HeaderMap, b: &'static str| body_object(h, &Bytes::from_static(b.as_bytes()));
        assert!(obj(&json, "{\"a\":1}").is_ok());
        assert!(
            obj(&none, "{\"a\":1}").is_ok(),
            "looks like JSON without the type"
        );
        assert!(matches!(
            obj(&none, "password=x"),
            Err(ApiError::InvalidBody)
        ));
        assert!(matches!(obj(&json, "{bad"), Err(ApiError::InvalidBody)));
        assert!(matches!(obj(&json, "null"), Err(ApiError::InvalidBody)));
        assert!(matches!(obj(&json, "\"str\""), Err(ApiError::InvalidBody)));
        assert!(matches!(obj(&json, ""), Err(ApiError::InvalidBody)));
    }

    #[test]
    fn query_host_is_decoded() {
        let uri: Uri = "/x?a=1&host=ex%41mple.org".parse().unwrap();
        assert_eq!(query_host(&uri).as_deref(), Some("exAmple.org"));
        let uri: Uri = "/x?hostile=1".parse().unwrap();
        assert_eq!(query_host(&uri), None);
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
    }
}
