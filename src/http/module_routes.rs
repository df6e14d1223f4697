//! The HTTP face of module routes ([`crate::core::module_api::http`]): a middleware that
//! answers a request a module serves, and passes every other request on. Exact routes get the
//! body buffered; streaming routes get it chunk by chunk while the module reads it.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ClientAddr;
use crate::core::Core;
use crate::core::module_api::http::{
    HttpBody, HttpBodyError, HttpBodySender, HttpFile, HttpRequest, HttpResponse,
};

/// The largest request body a module route is given.
pub const MAX_BODY: usize = 1 << 20;

/// Body chunks read ahead of a streaming route.
const STREAM_DEPTH: usize = 4;

/// Hands requests for a module route to the module; everything else goes on.
pub async fn module_routes(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().as_str(), req.uri().path());
    if let Some(handler) = core.http_routes.find(method, path) {
        let peer = peer_of(&req);
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        let mut request = request_of(&parts, peer);
        request.body = body.to_vec();
        return respond(handler(request).await).await;
    }
    if let Some(handler) = core.http_routes.find_stream(method, path) {
        let peer = peer_of(&req);
        let (parts, body) = req.into_parts();
        let (tx, stream) = HttpBody::channel(STREAM_DEPTH);
        let (_, answer) = tokio::join!(pump(body, tx), handler(request_of(&parts, peer), stream));
        return respond(answer).await;
    }
    next.run(req).await
}

fn peer_of(req: &Request) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(a))| *a)
}

fn request_of(parts: &Parts, peer: Option<std::net::SocketAddr>) -> HttpRequest {
    HttpRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        peer,
        body: Vec::new(),
    }
}

/// Feeds the request body to a streaming route until it ends or the route stops reading.
async fn pump(mut body: Body, tx: HttpBodySender) {
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let chunk = match frame {
            None => return,
            Some(Err(e)) => Err(HttpBodyError(e.to_string())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Ok(data.to_vec()),
                Err(_) => continue,
            },
        };
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// Renders a module's answer: status, content type, its headers, and its body or file part.
async fn respond(answer: HttpResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match &answer.file {
        Some(file) => match file_body(file).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %file.path.display(), error = %e, "cannot send a file");
                return StatusCode::NOT_FOUND.into_response();
            }
        },
        None => Body::from(answer.body),
    };
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&answer.content_type) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    resp
}

async fn file_body(file: &HttpFile) -> std::io::Result<Body> {
    let mut f = tokio::fs::File::open(&file.path).await?;
    f.seek(SeekFrom::Start(file.offset)).await?;
    Ok(Body::from_stream(tokio_util::io::ReaderStream::new(
        f.take(file.len),
    )))
}
