//! The admin REST API: a drop-in for Prosody's mod_admin_rest, mounted under `admin_rest_base`.
//!
//! Every request goes through [`entry`], in mod_admin_rest's order: resolve the host (`?host=`,
//! else the `Host` header if it names a served host, else the first host) → allowlist (client
//! address, `X-Forwarded-For` only from trusted proxies) → HTTPS requirement → the module is
//! loaded on the host → authentication (Basic for admins, Bearer API tokens) → route. Handlers,
//! one file per resource, call the same managers as the XMPP side. Responses are
//! `{"result": …}`; failures add a machine-readable `"error"` ([`ApiError`]). Every
//! state-changing call is logged with tracing target `audit`.
//!
//! The route table ([`ROUTES`]) is declared once; it builds the router and is checked against
//! `openapi/admin_rest.yaml` by a test, so the spec and the server cannot drift.

pub mod auth;
pub mod data;
pub mod error;
pub mod groups;
pub mod messages;
pub mod modules;
pub mod openapi;
pub mod params;
pub mod reload;
pub mod roster;
pub mod users;
pub mod vcards;
pub mod whitelist;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Extension, Router};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

pub use error::ApiError;

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
    /// The authenticated caller (`None` on the public routes `/ping` and `/openapi.json`).
    pub principal: Option<Principal>,
    /// The client address (after trusted-proxy resolution).
    pub ip: IpAddr,
    /// The base path the API is mounted under.
    pub base: String,
}

/// The admin API's state shared by all listeners of one server.
pub struct AdminState {
    /// Credential checks, cache and throttling.
    pub auth: Authenticator,
    /// Serialises allowlist edits (read-modify-write of the stored delta).
    pub whitelist_lock: tokio::sync::Mutex<()>,
    router: Router,
}

impl AdminState {
    /// The state and route table for `core`.
    pub fn new(core: Arc<Core>) -> Self {
        AdminState {
            auth: Authenticator::new(),
            whitelist_lock: tokio::sync::Mutex::new(()),
            router: build_router()
                .fallback(invalid_path)
                .method_not_allowed_fallback(invalid_method)
                .with_state(core),
        }
    }
}

macro_rules! routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route of the API as (method, path relative to the base), in OpenAPI path syntax.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn build_router() -> Router<Arc<Core>> {
            let router = Router::new();
            $(let router = router.route($path, on(MethodFilter::$method, $handler));)*
            router
        }
    };
}

routes! {
    GET "/ping" => openapi::ping,
    GET "/openapi.json" => openapi::spec,
    GET "/user/{name}" => users::get_user,
    POST "/user/{name}" => users::add_user,
    DELETE "/user/{name}" => users::delete_user,
    PATCH "/user/{name}/{attribute}" => users::patch_user,
    GET "/user/{name}/connected" => users::user_connected,
    GET "/user_connected/{name}" => users::user_connected_alias,
    GET "/users" => users::connected_users,
    GET "/users/count" => users::connected_count,
    GET "/all-users" => users::all_users,
    GET "/roster/{name}" => roster::get_roster,
    POST "/roster/{name}" => roster::add_contact,
    DELETE "/roster/{name}" => roster::remove_contact,
    POST "/message/{name}" => messages::send_message,
    POST "/message" => messages::multicast,
    POST "/broadcast" => messages::broadcast,
    GET "/modules" => modules::list,
    GET "/modules/count" => modules::count,
    GET "/module/{name}" => modules::get,
    PUT "/module/{name}" => modules::load,
    DELETE "/module/{name}" => modules::unload,
    GET "/whitelist" => whitelist::list,
    PUT "/whitelist" => whitelist::missing_ip,
    DELETE "/whitelist" => whitelist::missing_ip,
    PUT "/whitelist/{ip}" => whitelist::add,
    DELETE "/whitelist/{ip}" => whitelist::remove,
    PUT "/reload" => reload::reload,
    PUT "/groups" => groups::create,
    PUT "/groups/{id}" => groups::create_with_id,
    DELETE "/groups/{id}" => groups::delete,
    PUT "/groups/{id}/members/{member}" => groups::add_member,
    DELETE "/groups/{id}/members/{member}" => groups::remove_member,
    POST "/groups/{id}/sync" => groups::sync,
    GET "/vcards/{name}" => vcards::get,
    PUT "/vcards/{name}" => vcards::set,
    DELETE "/vcards/{name}" => vcards::delete,
    DELETE "/data" => data::delete_data,
    DELETE "/certs" => data::delete_certs,
}

/// Routes answered without credentials (the allowlist still applies).
const PUBLIC: &[&str] = &["/ping", "/openapi.json"];

async fn invalid_path() -> ApiError {
    ApiError::InvalidPath
}

async fn invalid_method() -> ApiError {
    ApiError::InvalidMethod
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

/// Decodes `%XX` escapes and `+` (query strings).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    Ok(from_header.unwrap_or_else(|| cfg.default_host().to_string()))
}

/// The effective allowlist of `host`: the configured entries plus those added over the API,
/// minus those removed over the API (the delta is kept in the store, so it survives restarts).
pub async fn effective_whitelist(
    core: &Core,
    host: &str,
    opts: &AdminRestOptions,
) -> Result<Vec<ipnet::IpNet>, ApiError> {
    let delta = whitelist::load_delta(core, host).await?;
    let mut out: Vec<ipnet::IpNet> = Vec::new();
    for s in opts.whitelist.iter().chain(delta.added.iter()) {
        if let Some(n) = crate::modules::admin_rest::parse_net(s)
            && !delta.removed.contains(&n.to_string())
            && !out.contains(&n)
        {
            out.push(n);
        }
    }
    Ok(out)
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
    match effective_whitelist(&core, &opts_host, &opts).await {
        Ok(list) if list.iter().any(|n| n.contains(&ip)) => {}
        Ok(_) => {
            tracing::warn!(target: "audit", %ip, method = %parts.method, path = %path, "refused: address not on the admin_rest allowlist");
            return ApiError::IpNotAllowed(ip.to_string()).into_response();
        }
        Err(e) => return e.into_response(),
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
    while rest.len() > 1 && rest.ends_with('/') {
        rest.pop();
    }
    // 4. Authentication (everything but the public routes).
    let public = parts.method == Method::GET && PUBLIC.contains(&rest.as_str());
    let principal = if public {
        None
    } else {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        match state
            .auth
            .authenticate(&core, &host, ip, authorization, &opts)
            .await
        {
            Ok(p) => Some(p),
            Err(e) => {
                if !matches!(e, ApiError::MissingAuth) {
                    tracing::warn!(target: "audit", %ip, method = %parts.method, path = %path, error = e.code(), "refused: authentication");
                }
                return e.into_response();
            }
        }
    };
    // 5. Route, with a bounded body.
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::BodyTooLarge.into_response(),
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
            who = principal.as_ref().map(Principal::who).unwrap_or_default(),
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
    }

    #[test]
    fn routes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r), "duplicate route {r:?}");
        }
    }
}
