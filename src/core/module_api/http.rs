//! HTTP routes served by modules (Prosody's `module:provides("http", { route = … })`): a
//! module adds a route by method and path; the HTTP face looks it up before its own routes.
//! Paths are server-wide, so the routes of global modules are the natural use; a route is
//! removed when its module unloads. A streaming route ([`ModuleHandle::add_http_stream_route`])
//! serves every path under a prefix and reads its request body chunk by chunk ([`HttpBody`]);
//! any answer may carry extra headers and a file body ([`HttpFile`]) the HTTP face streams.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::ModuleHandle;

/// An HTTP request as a module route sees it.
#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The body (bounded by the HTTP face).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A module route's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// Further headers (name, value).
    pub headers: Vec<(String, String)>,
    /// A file part sent as the body instead of `body`, streamed by the HTTP face.
    pub file: Option<HttpFile>,
}

/// A byte range of a file, sent as a response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpFile {
    /// The file.
    pub path: PathBuf,
    /// The first byte sent.
    pub offset: u64,
    /// How many bytes are sent.
    pub len: u64,
}

impl HttpResponse {
    /// A response with `status`, `content_type` and `body`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
            headers: Vec::new(),
            file: None,
        }
    }

    /// Adds header `name: value`.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sends `len` bytes of the file at `path` from `offset` as the body.
    pub fn file(mut self, path: PathBuf, offset: u64, len: u64) -> Self {
        self.file = Some(HttpFile { path, offset, len });
        self
    }
}

/// Why a streamed request body could not be read to its end.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("request body: {0}")]
pub struct HttpBodyError(pub String);

/// A request body read chunk by chunk (the body of a streaming route); dropping it stops the
/// HTTP face reading.
pub struct HttpBody {
    rx: mpsc::Receiver<Result<Vec<u8>, HttpBodyError>>,
}

/// The HTTP face's end of an [`HttpBody`].
pub type HttpBodySender = mpsc::Sender<Result<Vec<u8>, HttpBodyError>>;

impl HttpBody {
    /// A body fed through the returned sender, holding at most `depth` chunks in flight.
    pub fn channel(depth: usize) -> (HttpBodySender, HttpBody) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (tx, HttpBody { rx })
    }

    /// The next chunk; `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, HttpBodyError> {
        self.rx.recv().await.transpose()
    }
}

/// A boxed route future.
pub type HttpFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;
/// A route handler.
pub type HttpHandler = Arc<dyn Fn(HttpRequest) -> HttpFuture + Send + Sync>;

/// A streaming route handler: the request (with an empty `body`) and its body stream.
pub type HttpStreamHandler = Arc<dyn Fn(HttpRequest, HttpBody) -> HttpFuture + Send + Sync>;

/// Wraps an async closure as an [`HttpStreamHandler`].
pub fn http_stream_handler<F, Fut>(f: F) -> HttpStreamHandler
where
    F: Fn(HttpRequest, HttpBody) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    Arc::new(move |req, body| Box::pin(f(req, body)))
}

/// Wraps an async closure as an [`HttpHandler`].
pub fn http_handler<F, Fut>(f: F) -> HttpHandler
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// Why a route could not be added.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Another module serves this method and path.
    #[error("{method} {path} is already served by module {owner}")]
    Taken {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The module serving it.
        owner: String,
    },
    /// The path does not start with `/` (or a prefix does not end with `/`).
    #[error("route path {0} must start with / (and a prefix end with /)")]
    BadPath(String),
}

/// The server-wide table of module routes, by method and path.
#[derive(Default)]
pub struct HttpRoutes {
    routes: RwLock<HashMap<(String, String), (String, HttpHandler)>>,
    prefixes: RwLock<HashMap<(String, String), (String, HttpStreamHandler)>>,
}

impl HttpRoutes {
    /// The handler for `method` and `path`, if a module serves it.
    pub fn find(&self, method: &str, path: &str) -> Option<HttpHandler> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes
            .get(&(method.to_string(), path.to_string()))
            .map(|(_, h)| h.clone())
    }

    /// The streaming handler whose prefix is the longest one `path` starts with, for `method`.
    pub fn find_stream(&self, method: &str, path: &str) -> Option<HttpStreamHandler> {
        let prefixes = self.prefixes.read().unwrap_or_else(|e| e.into_inner());
        prefixes
            .iter()
            .filter(|((m, p), _)| m == method && path.starts_with(p.as_str()))
            .max_by_key(|((_, p), _)| p.len())
            .map(|(_, (_, h))| h.clone())
    }

    /// Number of routes served (for tests and status).
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).len()
            + self
                .prefixes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len()
    }

    /// Whether no module serves a route.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(
        &self,
        key: (String, String),
        owner: String,
        h: HttpHandler,
    ) -> Result<(), RouteError> {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some((other, _)) = routes.get(&key) {
            return Err(RouteError::Taken {
                method: key.0,
                path: key.1,
                owner: other.clone(),
            });
        }
        routes.insert(key, (owner, h));
        Ok(())
    }

    fn insert_prefix(
        &self,
        key: (String, String),
        owner: String,
        h: HttpStreamHandler,
    ) -> Result<(), RouteError> {
        let mut prefixes = self.prefixes.write().unwrap_or_else(|e| e.into_inner());
        if let Some((other, _)) = prefixes.get(&key) {
            return Err(RouteError::Taken {
                method: key.0,
                path: key.1,
                owner: other.clone(),
            });
        }
        prefixes.insert(key, (owner, h));
        Ok(())
    }

    fn remove(&self, key: &(String, String)) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn remove_prefix(&self, key: &(String, String)) {
        self.prefixes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

impl ModuleHandle {
    /// Serves `method` `path` (exact match) with `handler` until the module unloads.
    pub fn add_http_route(
        &self,
        method: &str,
        path: &str,
        handler: HttpHandler,
    ) -> Result<(), RouteError> {
        if !path.starts_with('/') {
            return Err(RouteError::BadPath(path.to_string()));
        }
        let Some(core) = self.core.upgrade() else {
            return Ok(());
        };
        let key = (method.to_ascii_uppercase(), path.to_string());
        let owner = format!("{} on {}", self.name, self.host.name);
        core.http_routes.insert(key.clone(), owner, handler)?;
        self.reg().routes.push(key);
        Ok(())
    }

    /// Serves `method` for every path under `prefix` (which starts and ends with `/`) with
    /// `handler`, which reads the request body as a stream, until the module unloads.
    pub fn add_http_stream_route(
        &self,
        method: &str,
        prefix: &str,
        handler: HttpStreamHandler,
    ) -> Result<(), RouteError> {
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(RouteError::BadPath(prefix.to_string()));
        }
        let Some(core) = self.core.upgrade() else {
            return Ok(());
        };
        let key = (method.to_ascii_uppercase(), prefix.to_string());
        let owner = format!("{} on {}", self.name, self.host.name);
        core.http_routes
            .insert_prefix(key.clone(), owner, handler)?;
        self.reg().prefix_routes.push(key);
        Ok(())
    }

    /// Removes the module's routes (at unload).
    pub(super) fn remove_routes(
        &self,
        routes: Vec<(String, String)>,
        prefixes: Vec<(String, String)>,
    ) {
        if let Some(core) = self.core.upgrade() {
            for key in &routes {
                core.http_routes.remove(key);
            }
            for key in &prefixes {
                core.http_routes.remove_prefix(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::module_api::probe::{core, load, load_on};

    #[tokio::test]
    async fn routes_are_served_exclusively_and_removed_on_unload() {
        let core = core();
        load_on(&core, "*", |ctx| {
            let ok = http_handler(|req: HttpRequest| async move {
                HttpResponse::new(
                    200,
                    "text/plain",
                    format!("hi {}", req.header("X-N").unwrap_or("")),
                )
            });
            ctx.add_http_route("get", "/hello", ok.clone()).unwrap();
            assert!(matches!(
                ctx.add_http_route("GET", "hello", ok),
                Err(RouteError::BadPath(_))
            ));
            Ok(())
        })
        .unwrap();
        let taken = load(&core, |ctx| {
            let h = http_handler(|_| async { HttpResponse::new(500, "text/plain", "") });
            ctx.add_http_route("GET", "/hello", h)
                .map_err(|e| crate::core::modules::LoadError::Unavailable(e.to_string()))
        });
        assert!(taken.is_err(), "the path is taken");
        let h = core.http_routes.find("GET", "/hello").unwrap();
        let req = HttpRequest {
            headers: vec![("x-n".into(), "there".into())],
            ..HttpRequest::default()
        };
        assert_eq!(h(req).await.body, b"hi there");
        assert!(core.http_routes.find("POST", "/hello").is_none());
        core.unload_module("*", "probe").unwrap();
        assert!(core.http_routes.is_empty());
    }

    #[tokio::test]
    async fn stream_routes_match_the_longest_prefix_and_read_the_body_in_chunks() {
        let core = core();
        load_on(&core, "*", |ctx| {
            let count = |tag: &'static str| {
                http_stream_handler(move |_req, mut body: HttpBody| async move {
                    let mut n = 0;
                    while let Ok(Some(c)) = body.chunk().await {
                        n += c.len();
                    }
                    HttpResponse::new(200, "text/plain", format!("{tag} {n}")).header("x-t", tag)
                })
            };
            ctx.add_http_stream_route("put", "/files/", count("short"))
                .unwrap();
            ctx.add_http_stream_route("PUT", "/files/big/", count("long"))
                .unwrap();
            assert!(matches!(
                ctx.add_http_stream_route("PUT", "/files", count("x")),
                Err(RouteError::BadPath(_))
            ));
            assert!(matches!(
                ctx.add_http_stream_route("PUT", "/files/", count("x")),
                Err(RouteError::Taken { .. })
            ));
            Ok(())
        })
        .unwrap();
        assert!(core.http_routes.find_stream("GET", "/files/a").is_none());
        assert!(core.http_routes.find_stream("PUT", "/other/a").is_none());
        let h = core.http_routes.find_stream("PUT", "/files/big/a").unwrap();
        let (tx, body) = HttpBody::channel(2);
        tokio::spawn(async move {
            for c in [&b"abc"[..], b"de"] {
                tx.send(Ok(c.to_vec())).await.unwrap();
            }
        });
        let answer = h(HttpRequest::default(), body).await;
        assert_eq!(answer.body, b"long 5");
        assert_eq!(
            answer.headers,
            vec![("x-t".to_string(), "long".to_string())]
        );
        let h = core.http_routes.find_stream("PUT", "/files/a").unwrap();
        let (tx, body) = HttpBody::channel(1);
        drop(tx);
        assert_eq!(h(HttpRequest::default(), body).await.body, b"short 0");
        core.unload_module("*", "probe").unwrap();
        assert!(core.http_routes.is_empty());
    }
}
