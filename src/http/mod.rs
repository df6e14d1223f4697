//! The HTTP face: an axum router over the same managers — `/health`, the routes modules serve
//! ([`module_routes`], e.g. `/metrics` of the global `metrics` module) and the admin REST API
//! ([`admin_rest`], mounted under `admin_rest_base`) — served on plain HTTP (`http.listen`) and
//! HTTPS (`http.tls_listen`, the c2s certificate).

pub mod admin_rest;
pub mod dashboard;
pub mod metrics;
pub mod module_routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::connect_info::Connected;
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::core::Core;

/// The socket address of an HTTP client (axum `ConnectInfo`), for plain and TLS listeners alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// How a request reached us (a request extension set per listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// Whether the connection is TLS.
    pub secure: bool,
}

/// The HTTP face of one server: the state shared by all its HTTP and HTTPS listeners.
#[derive(Clone)]
pub struct Http {
    core: Arc<Core>,
    admin: Arc<admin_rest::AdminState>,
    extra: Router<Arc<Core>>,
}

impl Http {
    /// The HTTP face for `core`.
    pub fn new(core: Arc<Core>) -> Self {
        let admin = Arc::new(admin_rest::AdminState::new(core.clone()));
        Http {
            core,
            admin,
            extra: Router::new(),
        }
    }

    /// Adds routes served by a face above this one (the web transports), before the admin fallback.
    pub fn with_routes(mut self, routes: Router<Arc<Core>>) -> Self {
        self.extra = self.extra.merge(routes);
        self
    }

    /// The router for a plain (`secure = false`) or TLS listener.
    pub fn router(&self, secure: bool) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/admin", get(dashboard::page))
            .route("/admin/", get(dashboard::page))
            .route("/admin/{*file}", get(dashboard::page))
            .merge(self.extra.clone())
            .fallback(admin_rest::entry)
            .layer(Extension(self.admin.clone()))
            .layer(Extension(Transport { secure }))
            .layer(axum::middleware::from_fn_with_state(
                self.core.clone(),
                module_routes::module_routes,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.core.clone(),
                metrics::count_requests,
            ))
            .with_state(self.core.clone())
    }

    /// Serves plain HTTP on `listener` until shutdown.
    pub async fn serve(self, listener: TcpListener) {
        let shutdown = self.core.shutdown.clone();
        let app = self
            .router(false)
            .into_make_service_with_connect_info::<ClientAddr>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "http server failed");
        }
    }

    /// Serves HTTPS on `listener` with `acceptor` until shutdown.
    pub async fn serve_tls(self, listener: TcpListener, acceptor: TlsAcceptor) {
        let shutdown = self.core.shutdown.clone();
        let tls = TlsListener::new(listener, acceptor, shutdown.clone());
        let app = self
            .router(true)
            .into_make_service_with_connect_info::<ClientAddr>();
        if let Err(e) = axum::serve(tls, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "https server failed");
        }
    }
}

/// The HTTP router of `core` for a plain listener (a fresh [`Http`]; servers share one via [`Http::new`]).
pub fn router(core: Arc<Core>) -> Router {
    Http::new(core).router(false)
}

/// Serves plain HTTP on `listener` until shutdown.
pub async fn serve(core: Arc<Core>, listener: TcpListener) {
    Http::new(core).serve(listener).await
}

/// `GET /health`: liveness plus a little state, for load balancers and dashboards.
async fn health(State(core): State<Arc<Core>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": core.sessions.count(),
    }))
}

/// Seconds a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes finished but not yet picked up by the server loop.
const HANDSHAKE_BACKLOG: usize = 64;

/// A listener yielding TLS streams: handshakes run in their own tasks, so a slow client never
/// holds up the others.
pub struct TlsListener {
    local: std::io::Result<SocketAddr>,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `listener`; stops when `shutdown` is cancelled.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let local = listener.local_addr();
        let (tx, rx) = mpsc::channel(HANDSHAKE_BACKLOG);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "https accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https handshake failed"),
                        Err(_) => tracing::debug!(%peer, "https handshake timed out"),
                    }
                });
            }
        });
        TlsListener { local, rx }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): never yield again; graceful shutdown ends serve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
