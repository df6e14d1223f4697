//! Web client transports on the HTTP listeners: XMPP over WebSocket (RFC 7395,
//! [`websocket`]) and BOSH (XEP-0124/0206, [`bosh`]), their discovery (XEP-0156 host-meta,
//! [`discovery`]) and CORS for browser pages ([`cors`]).
//!
//! A transport owns framing and I/O only: each client stream runs the one c2s negotiation and
//! session ([`crate::c2s::duplex`]) over an in-memory duplex, which the transport feeds with the
//! client's XML and drains of the server's, cut back into whole elements ([`framing`]).

pub mod bosh;
pub mod cors;
pub mod discovery;
pub mod framing;
pub mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use axum::routing::get;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::c2s::duplex::Carrier;
use crate::core::Core;
use crate::core::sessions::Transport;
use crate::http::ClientAddr;

/// The state the web transports share on one server: its core, the BOSH sessions and the
/// connection budget (`c2s.max_connections`, counted apart from TCP).
pub struct Web {
    /// The server.
    pub core: Arc<Core>,
    /// Live BOSH sessions by `sid`.
    pub bosh: bosh::Sessions,
    slots: Arc<Semaphore>,
}

impl Web {
    /// The web transports of `core`.
    pub fn new(core: Arc<Core>) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(core.config.load().c2s.max_connections));
        Arc::new(Web {
            core,
            bosh: bosh::Sessions::default(),
            slots,
        })
    }

    /// A connection slot, or `None` when `c2s.max_connections` web streams are open.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// The routes of the web transports, for [`crate::http::Http::with_routes`].
pub fn routes(core: Arc<Core>) -> Router<Arc<Core>> {
    let web = Web::new(core.clone());
    let cors = axum::middleware::from_fn_with_state(core, cors::cors);
    Router::new()
        .route(
            "/http-bind",
            axum::routing::post(bosh::request)
                .get(bosh::info)
                .options(cors::preflight),
        )
        .route(
            "/.well-known/host-meta",
            get(discovery::host_meta_xml).options(cors::preflight),
        )
        .route(
            "/.well-known/host-meta.json",
            get(discovery::host_meta_json).options(cors::preflight),
        )
        .route_layer(cors)
        .route("/xmpp-websocket", get(websocket::upgrade))
        .layer(axum::Extension(web))
}

/// Where an HTTP request really comes from and whether it is encrypted: our TLS listener, or a
/// trusted proxy (`http.trusted_proxies`, [`crate::config::Config::trusted_proxies`]) forwarding for a client and saying `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebPeer {
    /// The client's address (from `X-Forwarded-For` when the peer is a trusted proxy).
    pub client: SocketAddr,
    /// Whether the client's connection is encrypted end to the proxy or to us.
    pub secure: bool,
}

impl WebPeer {
    /// Reads the origin of a request from its extensions (peer address, listener) and headers.
    pub fn of(core: &Core, extensions: &Extensions, headers: &HeaderMap) -> Self {
        let peer = extensions
            .get::<ConnectInfo<ClientAddr>>()
            .map(|c| c.0.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let listener_tls = extensions
            .get::<crate::http::Transport>()
            .is_some_and(|t| t.secure);
        Self::resolve(core, peer, listener_tls, headers)
    }

    /// Resolves `peer` through the trusted proxies.
    pub fn resolve(core: &Core, peer: SocketAddr, listener_tls: bool, headers: &HeaderMap) -> Self {
        let cfg = core.config.load();
        let trusted = &cfg.trusted_proxies(None);
        let peer_ip = peer.ip().to_canonical();
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let ip: IpAddr = crate::http::admin_rest::auth::client_ip(peer_ip, forwarded, trusted);
        let via_proxy = trusted.iter().any(|n| n.contains(&peer_ip));
        let proxied_https = via_proxy
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        let port = if ip == peer_ip { peer.port() } else { 0 };
        WebPeer {
            client: SocketAddr::new(ip, port),
            secure: listener_tls || proxied_https,
        }
    }

    /// What the c2s negotiation needs to know about a stream from this origin.
    pub fn carrier(&self, transport: Transport) -> Carrier {
        Carrier {
            transport,
            peer: self.client.to_string(),
            secure: self.secure,
            tls: None,
            loopback: self.client.ip().is_loopback(),
        }
    }
}
