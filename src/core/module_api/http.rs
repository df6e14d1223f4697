//! HTTP routes served by modules (Prosody's `module:provides("http", { route = … })`): a
//! module adds a route by method and path; the HTTP face looks it up before its own routes.
//! Paths are server-wide, so the routes of global modules are the natural use; a route is
//! removed when its module unloads.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

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
}

impl HttpResponse {
    /// A response with `status`, `content_type` and `body`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
        }
    }
}

/// A boxed route future.
pub type HttpFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;
/// A route handler.
pub type HttpHandler = Arc<dyn Fn(HttpRequest) -> HttpFuture + Send + Sync>;

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
    /// The path does not start with `/`.
    #[error("route path {0} must start with /")]
    BadPath(String),
}

/// The server-wide table of module routes, by method and path.
#[derive(Default)]
pub struct HttpRoutes {
    routes: RwLock<HashMap<(String, String), (String, HttpHandler)>>,
}

impl HttpRoutes {
    /// The handler for `method` and `path`, if a module serves it.
    pub fn find(&self, method: &str, path: &str) -> Option<HttpHandler> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes
            .get(&(method.to_string(), path.to_string()))
            .map(|(_, h)| h.clone())
    }

    /// Number of routes served (for tests and status).
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).len()
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

    fn remove(&self, key: &(String, String)) {
        self.routes
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

    /// Removes the module's routes (at unload).
    pub(super) fn remove_routes(&self, routes: Vec<(String, String)>) {
        if let Some(core) = self.core.upgrade() {
            for key in &routes {
                core.http_routes.remove(key);
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
}
