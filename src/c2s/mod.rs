//! Client-to-server: the listeners, one task per connection, negotiation, then the session.

pub mod bind2;
pub mod duplex;
pub mod guard;
pub mod negotiate;
pub mod read_buffer;
pub mod register;
pub mod sasl2;
pub mod session;
pub mod shaper;
pub mod sm;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::auth::scram::{ChannelBinding, TLS_EXPORTER, TLS_SERVER_END_POINT};
use crate::core::Core;
use crate::core::admission::{PreauthSlot, Refusal};
use crate::core::sessions::TlsInfo;
use crate::xmpp::parser::StreamParser;
use negotiate::{Negotiation, Outcome, unauth_limits};
use read_buffer::ReadBuffer;
use shaper::Shaped;

/// Accepts client connections until shutdown; `direct_tls` selects XEP-0368 direct TLS.
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    tls: ClientTls,
    direct_tls: bool,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(core.config.load().c2s.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing");
            core.admission.count_refusal(Refusal::MaxConnections);
            continue;
        };
        // Flood limits: closed at once (dropping the socket), counted in the metrics.
        let slot = match core.admission.admit(
            &core.config.load().limits,
            peer.ip(),
            std::time::Instant::now(),
        ) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, reason = why.label(), "connection refused by the flood limits");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let core = core.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            connection(core, tcp, peer, tls, direct_tls, slot).await;
            drop(permit);
        });
    }
}

/// Counts an open connection in the `oxpecker_connections` gauge while it lives.
pub(crate) struct ConnectionGauge {
    core: Arc<Core>,
    kind: &'static str,
    tls: bool,
}

impl ConnectionGauge {
    pub(crate) fn new(core: Arc<Core>, kind: &'static str, tls: bool) -> Self {
        core.core_metrics
            .connections
            .with(&[kind, bool_label(tls)])
            .inc();
        ConnectionGauge { core, kind, tls }
    }

    fn secured(&mut self) {
        if !self.tls {
            let c = &self.core.core_metrics.connections;
            c.with(&[self.kind, "false"]).dec();
            c.with(&[self.kind, "true"]).inc();
            self.tls = true;
        }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.core
            .core_metrics
            .connections
            .with(&[self.kind, bool_label(self.tls)])
            .dec();
    }
}

fn bool_label(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// The negotiated TLS version and cipher suite of a server-side rustls connection.
pub fn tls_info(tls: &rustls::ServerConnection) -> Option<TlsInfo> {
    TlsInfo::of(tls)
}

/// The RFC 9266 `tls-exporter` channel binding of a TLS 1.3 connection (none for TLS 1.2,
/// where the exporter is only safe with extended master secret).
pub fn tls_exporter(tls: &rustls::ServerConnection) -> Option<ChannelBinding> {
    if tls.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    let data = tls
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()?;
    Some(ChannelBinding {
        kind: TLS_EXPORTER.into(),
        data: data.to_vec(),
    })
}

/// The TLS side of the client listeners: the acceptor, and the RFC 5929 `tls-server-end-point`
/// value of its certificate ([`crate::tls::end_point_of`], computed once at start; `None` when
/// undefined for the certificate's signature, e.g. Ed25519).
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls acceptor.
    pub acceptor: TlsAcceptor,
    /// The certificate's `tls-server-end-point` data.
    pub end_point: Option<Vec<u8>>,
}

impl ClientTls {
    /// The channel bindings a finished handshake `tls` offers: `tls-exporter` (TLS 1.3 only)
    /// and `tls-server-end-point` (any version). `tls-unique` never: rustls does not expose it.
    pub fn bindings(&self, tls: &rustls::ServerConnection) -> Vec<ChannelBinding> {
        let end_point = self.end_point.as_ref().map(|data| ChannelBinding {
            kind: TLS_SERVER_END_POINT.into(),
            data: data.clone(),
        });
        tls_exporter(tls).into_iter().chain(end_point).collect()
    }
}

/// The read half of a client's TLS stream, as the session reads it.
type TlsReader =
    ReadBuffer<Shaped<tokio::io::ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>>>;
/// The write half of a client's TLS stream.
type TlsWriter = tokio::io::WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>;

/// A bound TLS session's future, boxed: all the connection task keeps while it runs.
type SessionFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// One connection: negotiation, then the session. The task cell is sized by this future's
/// largest state and kept for the connection's life, so everything (negotiation, the TLS
/// handshake, plaintext sessions, the session itself) runs in boxed futures: while a session
/// runs the task holds the gauge and one pointer.
async fn connection(
    core: Arc<Core>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: ClientTls,
    direct_tls: bool,
    slot: PreauthSlot,
) {
    let kind = if direct_tls { "c2s_direct_tls" } else { "c2s" };
    let mut gauge = ConnectionGauge::new(core.clone(), kind, direct_tls);
    let negotiated = Box::pin(negotiate(
        core, tcp, peer, tls, direct_tls, slot, &mut gauge,
    ))
    .await;
    if let Some(session) = negotiated {
        session.await;
    }
}

/// The session a negotiation ended in, as the boxed future that serves it; none when the
/// stream ended during negotiation.
fn session_of(core: Arc<Core>, outcome: Outcome<TlsReader, TlsWriter>) -> Option<SessionFuture> {
    match outcome {
        Outcome::Bound {
            mut parser,
            writer,
            session,
            host,
        } => {
            drop(host);
            Some(Box::pin(async move {
                Box::pin(exempt_admin(
                    &core,
                    parser.get_mut().get_mut(),
                    &session.handle.jid,
                ))
                .await;
                session::run(core, parser, writer, session).await
            }))
        }
        Outcome::Resumed {
            mut parser,
            writer,
            hib,
            announced,
        } => Some(Box::pin(async move {
            Box::pin(exempt_admin(
                &core,
                parser.get_mut().get_mut(),
                &hib.handle.jid,
            ))
            .await;
            session::resume_after(core, parser, writer, hib, announced).await
        })),
        Outcome::StartTls(..) | Outcome::Closed => None,
    }
}

/// Negotiates a connection up to a bound (or resumed) TLS session, whose future it returns; a
/// plaintext session (only with `require_encryption = false`) is served here to its end.
async fn negotiate(
    core: Arc<Core>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: ClientTls,
    direct_tls: bool,
    slot: PreauthSlot,
    gauge: &mut ConnectionGauge,
) -> Option<SessionFuture> {
    let mut neg = Negotiation::new(core.clone(), peer.to_string(), direct_tls);
    let limits = unauth_limits(&neg.config);
    let tcp = if direct_tls {
        tcp
    } else {
        let (r, w) = tcp.into_split();
        let parser = StreamParser::new(ReadBuffer::new(shaped_reader(&core, peer, r)), limits);
        match Box::pin(neg.run(parser, w, None)).await {
            Outcome::Closed => return None,
            Outcome::Bound {
                mut parser,
                writer,
                session,
                ..
            } => {
                // Plaintext session (only when `require_encryption = false`).
                drop((slot, neg));
                exempt_admin(&core, parser.get_mut().get_mut(), &session.handle.jid).await;
                Box::pin(session::run(core, parser, writer, session)).await;
                return None;
            }
            Outcome::Resumed {
                mut parser,
                writer,
                hib,
                announced,
            } => {
                drop((slot, neg));
                exempt_admin(&core, parser.get_mut().get_mut(), &hib.handle.jid).await;
                Box::pin(session::resume_after(core, parser, writer, hib, announced)).await;
                return None;
            }
            Outcome::StartTls(parser, w) => parser
                .into_inner()
                .into_inner()
                .into_inner()
                .reunite(w)
                .ok()?,
        }
    };
    let handshake = Box::pin(tokio::time::timeout_at(
        neg.deadline,
        tls.acceptor.accept(tcp),
    ))
    .await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => return None,
    };
    neg.upgraded(tls_info(stream.get_ref().1));
    neg.bindings = tls.bindings(stream.get_ref().1);
    gauge.secured();
    let (r, w) = tokio::io::split(stream);
    let parser = StreamParser::new(ReadBuffer::new(shaped_reader(&core, peer, r)), limits);
    let outcome = Box::pin(neg.run(parser, w, None)).await;
    drop((slot, neg));
    session_of(core, outcome)
}

/// The connection's read half, shaped to `limits.c2s_read_rate` unless the address is exempt.
fn shaped_reader<R>(core: &Core, peer: SocketAddr, r: R) -> Shaped<R> {
    let limits = &core.config.load().limits;
    if limits.exempt(peer.ip().to_canonical()) {
        return Shaped::new(r, 0, 0);
    }
    Shaped::new(r, limits.c2s_read_rate, limits.c2s_read_burst)
}

/// Stops shaping an admin's session when `limits.exempt_admins` is set.
async fn exempt_admin<R>(core: &Core, reader: &mut Shaped<R>, jid: &crate::xmpp::Jid) {
    if reader.is_shaped()
        && core.config.load().limits.exempt_admins
        && Box::pin(core.is_admin(jid)).await
    {
        reader.unshape();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::Store;

    fn size4<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn size5<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The connection task's future is what every connection keeps in its tokio task cell for
    /// as long as it lives, idle or not: this keeps it small (issue #19).
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let core = Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert =
            crate::tls::ensure_certificate(None, dir.path(), &["localhost".to_string()]).unwrap();
        let tls = ClientTls {
            acceptor: TlsAcceptor::from(crate::tls::server_config(&cert).unwrap()),
            end_point: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let limits = core.config.load().limits.clone();
        let slot = core
            .admission
            .admit(&limits, peer.ip(), std::time::Instant::now())
            .unwrap();
        let fut = connection(core.clone(), tcp, peer, tls, true, slot);
        let size = std::mem::size_of_val(&fut);
        eprintln!("connection future: {size} bytes");
        type R = TlsReader;
        type W = TlsWriter;
        eprintln!(
            "session::run {} resume_after {} parser {}",
            size4(session::run::<R, W>),
            size5(session::resume_after::<R, W>),
            std::mem::size_of::<StreamParser<R>>(),
        );
        assert!(size <= 512, "the connection future is {size} bytes");
        // The session future carries the writer too: there is no second task (issue #19).
        let session = size4(session::run::<TlsReader, TlsWriter>);
        assert!(session <= 3072, "the session future is {session} bytes");
    }
}
