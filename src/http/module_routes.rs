//! The HTTP face of module routes ([`crate::core::module_api::http`]): a middleware that
//! answers a request a module serves, and passes every other request on.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ClientAddr;
use crate::core::Core;
use crate::core::module_api::http::HttpRequest;

/// The largest request body a module route is given.
pub const MAX_BODY: usize = 1 << 20;

/// Hands requests for a module route to the module; everything else goes on.
pub async fn module_routes(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let Some(handler) = core
        .http_routes
        .find(req.method().as_str(), req.uri().path())
    else {
        return next.run(req).await;
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(a))| *a);
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        peer,
        body: body.to_vec(),
    };
    let answer = handler(request).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Body::from(answer.body)).into_response();
    if let Ok(ct) = HeaderValue::from_str(&answer.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}
