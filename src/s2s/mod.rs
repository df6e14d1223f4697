//! Server-to-server federation (RFC 6120): the listeners, the outgoing pool with one stream per
//! (local domain, remote domain), Server Dialback (XEP-0220) over STARTTLS, and the
//! [`Federation`] the router sends stanzas for other domains through.
//!
//! Stanzas from an authenticated incoming stream enter [`Core::route`] with
//! [`Origin::Remote`](crate::core::events::Origin::Remote); nothing above the router knows
//! whether a JID is local or remote.

pub mod cert;
pub mod dialback;
mod inbound;
mod outbound;
pub mod resolve;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::core::metrics::Family;
use crate::core::remote::{Federation, StreamInfo};
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::{Element, Jid};

/// The s2s manager: one per server, installed as the core's [`Federation`].
pub struct S2s {
    core: Weak<Core>,
    me: Weak<S2s>,
    /// The dialback secret; a cluster swaps in the one its nodes share.
    secret: Mutex<Arc<dialback::Secret>>,
    tls_client: Arc<rustls::ClientConfig>,
    /// Where remote domains are found ([`resolve`]).
    dns: resolve::Dns,
    tls_server: TlsAcceptor,
    /// The trust anchors for peer certificates and the configuration they were loaded from;
    /// rebuilt for new streams once a reload swapped the configuration.
    trust: Mutex<(Arc<crate::config::Config>, Arc<cert::Trust>)>,
    outgoing: Mutex<HashMap<(String, String), Outgoing>>,
    incoming: Mutex<HashMap<u64, Arc<StreamState>>>,
    next_id: AtomicU64,
    metrics: S2sMetrics,
}

/// A domain pair in the outgoing pool: its queue and its state. Pairs multiplexed over
/// another pair's connection have a queue of their own that feeds that connection's.
struct Outgoing {
    id: u64,
    tx: mpsc::Sender<outbound::Out>,
    state: Arc<StreamState>,
    /// Set once the pair's own connection is authenticated and the peer accepts further
    /// dialback requests on it (XEP-0220 §2.4 errors feature, piggybacking per §2.5).
    link: Option<Arc<outbound::Link>>,
}

/// What the admin surfaces show of a stream, and the token that closes it.
pub(crate) struct StreamState {
    info: Mutex<StreamInfo>,
    last: Mutex<Instant>,
    cancel: CancellationToken,
}

impl StreamState {
    fn new(direction: &'static str, local: &str, remote: &str) -> Arc<StreamState> {
        Arc::new(StreamState {
            info: Mutex::new(StreamInfo {
                direction,
                local: local.to_string(),
                remote: remote.to_string(),
                auth: "none",
                tls: false,
                tls_version: None,
                cipher: None,
                cert_valid: false,
                idle_secs: 0,
                queued: 0,
            }),
            last: Mutex::new(Instant::now()),
            cancel: CancellationToken::new(),
        })
    }

    /// Records that the stream is now encrypted with `info`'s parameters.
    fn secured(&self, info: Option<crate::core::sessions::TlsInfo>) {
        self.update(|i| {
            i.tls = true;
            i.tls_version = info.as_ref().map(|t| t.version.clone());
            i.cipher = info.map(|t| t.cipher);
        });
    }

    fn update(&self, f: impl FnOnce(&mut StreamInfo)) {
        if let Ok(mut i) = self.info.lock() {
            f(&mut i);
        }
    }

    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }

    fn snapshot(&self) -> Option<StreamInfo> {
        let mut info = self.info.lock().ok()?.clone();
        info.idle_secs = self.last.lock().ok()?.elapsed().as_secs();
        Some(info)
    }
}

/// The s2s metric families.
struct S2sMetrics {
    connections: Arc<Family>,
    stanzas: Arc<Family>,
    failed: Arc<Family>,
    queued: Arc<Family>,
}

impl S2sMetrics {
    fn new(core: &Core) -> S2sMetrics {
        let m = &core.metrics;
        S2sMetrics {
            connections: m.gauge(
                "oxpecker_s2s_connections",
                "Authenticated server-to-server streams",
                &["direction", "auth"],
            ),
            stanzas: m.counter(
                "oxpecker_s2s_stanzas",
                "Stanzas carried over server-to-server streams",
                &["direction"],
            ),
            failed: m.counter(
                "oxpecker_s2s_failed_connects",
                "Outgoing server-to-server streams that failed to establish",
                &["reason"],
            ),
            queued: m.gauge(
                "oxpecker_s2s_queued",
                "Stanzas waiting in outgoing server-to-server queues",
                &[],
            ),
        }
    }
}

/// Counts an authenticated stream in `oxpecker_s2s_connections` while it lives.
struct Counted {
    family: Arc<Family>,
    labels: [&'static str; 2],
}

impl Counted {
    fn new(family: &Arc<Family>, direction: &'static str, auth: &'static str) -> Counted {
        family.with(&[direction, auth]).inc();
        Counted {
            family: family.clone(),
            labels: [direction, auth],
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.family.with(&self.labels).dec();
    }
}

impl S2s {
    /// Builds the manager for `core`, with the server's certificate for both TLS roles and
    /// `trust` for peer certificates.
    pub fn new(
        core: &Arc<Core>,
        cert: &crate::tls::CertPaths,
        trust: cert::Trust,
    ) -> Result<Arc<S2s>, crate::tls::TlsError> {
        let tls_client = stream::client_config(cert)?;
        let tls_server = TlsAcceptor::from(stream::server_config(cert)?);
        let trust = Mutex::new((core.config.load_full(), Arc::new(trust)));
        Ok(Arc::new_cyclic(|me| S2s {
            core: Arc::downgrade(core),
            me: me.clone(),
            secret: Mutex::new(Arc::new(dialback::Secret::generate())),
            tls_client,
            dns: resolve::Dns::default(),
            tls_server,
            trust,
            outgoing: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics: S2sMetrics::new(core),
        }))
    }

    /// Accepts server connections on `listener` until shutdown; `direct_tls` selects XEP-0368.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, direct_tls: bool) {
        inbound::serve(self, listener, direct_tls).await;
    }

    /// The trust anchors for a new stream: reloaded from `s2s.system_roots`/`s2s.ca_files`
    /// when the configuration was swapped (by a reload) since they were last loaded; if the
    /// new files do not load, the previous anchors stay (logged once per reload).
    fn trust(&self) -> Arc<cert::Trust> {
        let mut cached = self.trust.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(core) = self.core.upgrade() {
            let cfg = core.config.load_full();
            if !Arc::ptr_eq(&cached.0, &cfg) {
                match cert::Trust::load(&cfg.s2s) {
                    Ok(t) => cached.1 = Arc::new(t),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "s2s trust anchors not reloaded; keeping the previous ones"
                    ),
                }
                cached.0 = cfg;
            }
        }
        cached.1.clone()
    }

    /// The dialback secret now in use.
    fn secret(&self) -> Arc<dialback::Secret> {
        self.secret
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn register_incoming(&self, state: Arc<StreamState>) -> u64 {
        let id = self.next_id();
        if let Ok(mut m) = self.incoming.lock() {
            m.insert(id, state);
        }
        id
    }

    fn unregister_incoming(&self, id: u64) {
        if let Ok(mut m) = self.incoming.lock() {
            m.remove(&id);
        }
    }

    /// An authenticated connection that can carry `key` = (local, remote) as well, with the
    /// peer certificate's validity for `remote`: to the same remote domain, or to another one
    /// the same server is known to serve (the same `[s2s.hosts]` address, or a certificate
    /// that names it), and only where policy would let `remote` authenticate by dialback on it.
    fn host_for(
        &self,
        pool: &HashMap<(String, String), Outgoing>,
        cfg: &crate::config::Config,
        key: &(String, String),
    ) -> Option<(Arc<outbound::Link>, bool)> {
        let remote = key.1.as_str();
        if !cfg.s2s.permits(remote) {
            return None;
        }
        let trust = self.trust();
        pool.values()
            .filter_map(|o| o.link.as_ref())
            .filter(|l| !l.closed())
            .find_map(|l| {
                let cert_valid = l.tls && trust.valid_for(&l.chain, remote);
                let same_address = cfg
                    .s2s
                    .hosts
                    .get(remote)
                    .is_some_and(|a| cfg.s2s.hosts.get(&l.remote) == Some(a));
                let same_server = l.remote == remote || same_address || cert_valid;
                let allowed = cert_valid || !cfg.s2s.requires_certificate(remote);
                (same_server && allowed).then(|| (l.clone(), cert_valid))
            })
    }

    /// Marks `key`'s connection `id` as able to carry further domain pairs over `link`.
    fn offer_link(
        &self,
        key: &(String, String),
        id: u64,
        link: impl FnOnce(mpsc::Sender<outbound::Out>) -> outbound::Link,
    ) {
        if let Ok(mut pool) = self.outgoing.lock()
            && let Some(o) = pool.get_mut(key).filter(|o| o.id == id)
        {
            o.link = Some(Arc::new(link(o.tx.clone())));
        }
    }

    /// Removes the pool entry for `key` if it is still stream `id`.
    fn remove_outgoing(&self, key: &(String, String), id: u64) {
        if let Ok(mut pool) = self.outgoing.lock()
            && pool.get(key).is_some_and(|o| o.id == id)
        {
            pool.remove(key);
            drop(pool);
            if let Some(c) = self.core.upgrade().as_ref().and_then(|c| c.cluster()) {
                c.outgoing_closed(&key.0, &key.1);
            }
        }
    }

    /// Bounces `stanzas` with `condition`, in a task (callers may hold no async context).
    fn bounce_later(&self, stanzas: Vec<Element>, condition: C) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        if stanzas.is_empty() {
            return;
        }
        let c = core.clone();
        core.tasks.spawn(async move {
            for s in stanzas {
                c.bounce(&s, condition).await;
            }
        });
    }
}

impl Federation for S2s {
    fn send(&self, from: Jid, to: Jid, stanza: Element) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        if core.budget.is_spent() {
            // The global queue budget is spent (core::budget): bounce rather than queue more.
            self.bounce_later(vec![stanza], C::ResourceConstraint);
            return;
        }
        let key = (from.domain().to_string(), to.domain().to_string());
        let mut stanza = stanza;
        let Ok(mut pool) = self.outgoing.lock() else {
            return;
        };
        if let Some(o) = pool.get(&key) {
            match o.tx.try_send(outbound::Out::Stanza(stanza)) {
                Ok(()) => {
                    self.metrics.queued.with(&[]).inc();
                    return;
                }
                Err(mpsc::error::TrySendError::Full(s)) => {
                    drop(pool);
                    tracing::debug!(local = %key.0, remote = %key.1, "s2s queue full; bouncing");
                    self.bounce_later(s.into_stanza().into_iter().collect(), C::ResourceConstraint);
                    return;
                }
                // The stream ended and has not left the pool yet: open a new one.
                Err(mpsc::error::TrySendError::Closed(s)) => match s.into_stanza() {
                    Some(s) => stanza = s,
                    None => return,
                },
            }
        }
        let cfg = core.config.load_full();
        let (tx, rx) = mpsc::channel(cfg.s2s.queue_size.max(1));
        if let Err(e) = tx.try_send(outbound::Out::Stanza(stanza)) {
            drop(pool);
            let stanzas = e.into_inner().into_stanza().into_iter().collect();
            self.bounce_later(stanzas, C::ResourceConstraint);
            return;
        }
        self.metrics.queued.with(&[]).inc();
        let id = self.next_id();
        let state = StreamState::new("outgoing", &key.0, &key.1);
        let host = self.host_for(&pool, &cfg, &key);
        pool.insert(
            key.clone(),
            Outgoing {
                id,
                tx,
                state: state.clone(),
                link: None,
            },
        );
        drop(pool);
        let Some(s2s) = self.me.upgrade() else {
            return;
        };
        match host {
            Some((link, cert_valid)) => core.tasks.spawn(outbound::piggyback(
                s2s,
                core.clone(),
                key,
                id,
                rx,
                state,
                (link, cert_valid),
            )),
            None => core
                .tasks
                .spawn(outbound::run(s2s, core.clone(), key, id, rx, state)),
        };
    }

    fn streams(&self) -> Vec<StreamInfo> {
        let mut out = Vec::new();
        if let Ok(pool) = self.outgoing.lock() {
            for o in pool.values() {
                if let Some(mut i) = o.state.snapshot() {
                    i.queued = o.tx.max_capacity().saturating_sub(o.tx.capacity());
                    out.push(i);
                }
            }
        }
        if let Ok(m) = self.incoming.lock() {
            out.extend(m.values().filter_map(|s| s.snapshot()));
        }
        out.sort_by(|a, b| {
            (a.local.as_str(), a.remote.as_str(), a.direction).cmp(&(
                b.local.as_str(),
                b.remote.as_str(),
                b.direction,
            ))
        });
        out
    }

    fn share_dialback_secret(&self, secret: [u8; 32]) {
        *self.secret.lock().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(dialback::Secret::from_bytes(secret));
    }

    fn close(&self, local: &str, remote: &str) -> usize {
        let mut n = 0;
        let matches = |s: &StreamState| {
            s.info
                .lock()
                .map(|i| i.local == local && i.remote == remote)
                .unwrap_or(false)
        };
        if let Ok(pool) = self.outgoing.lock() {
            for o in pool.values().filter(|o| matches(&o.state)) {
                o.state.cancel.cancel();
                n += 1;
            }
        }
        if let Ok(m) = self.incoming.lock() {
            for s in m.values().filter(|s| matches(s)) {
                s.cancel.cancel();
                n += 1;
            }
        }
        n
    }
}
