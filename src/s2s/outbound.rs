//! Outgoing streams: connect, STARTTLS, authenticate our domain by dialback, then write the
//! queued stanzas until the stream idles out, fails or is closed. Further domain pairs to the
//! same server ride on an authenticated stream with a dialback request of their own
//! (piggybacking, XEP-0220 §2.5) when the peer supports it. Also the one-shot connection that
//! asks an authoritative server to verify a dialback key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::resolve::{self, Target};
use super::stream::{self, Conn, Parser, Writer};
use super::{Counted, S2s, StreamState};
use crate::config::Config;
use crate::core::Core;
use crate::core::sessions::TlsInfo;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::parser::StreamEvent;
use crate::xmpp::{Element, ns};

/// Why an outgoing stream could not be established.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// No address for the domain (no `[s2s.hosts]` entry, nothing in DNS, or the domain refuses federation).
    #[error("no address known")]
    NoAddress,
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The peer broke the protocol, closed, or offered nothing we accept.
    #[error("negotiation: {0}")]
    Protocol(String),
    /// The peer refused our dialback key.
    #[error("dialback refused")]
    Refused,
    /// Our policy refuses the domain (`deny_domains`/`allow_domains`) or its certificate
    /// (`secure_auth`).
    #[error("policy: {0}")]
    Policy(String),
    /// Negotiation did not finish in time.
    #[error("timed out")]
    Timeout,
}

impl Failure {
    /// The metric label.
    fn reason(&self) -> &'static str {
        match self {
            Failure::NoAddress => "not_found",
            Failure::Connect(_) => "connect",
            Failure::Protocol(_) => "protocol",
            Failure::Refused => "refused",
            Failure::Policy(_) => "policy",
            Failure::Timeout => "timeout",
        }
    }

    /// The error queued stanzas bounce with.
    fn condition(&self) -> C {
        match self {
            Failure::Timeout => C::RemoteServerTimeout,
            Failure::Policy(_) => C::NotAllowed,
            _ => C::RemoteServerNotFound,
        }
    }
}

fn protocol(what: impl Into<String>) -> Failure {
    Failure::Protocol(what.into())
}

/// What an outgoing connection's queue carries.
pub(super) enum Out {
    /// A stanza to write.
    Stanza(Element),
    /// A request to authenticate a further domain pair on this connection by dialback;
    /// `reply` hears whether the peer accepted it (dropped: it did not answer).
    Piggyback {
        /// Our domain.
        local: String,
        /// The remote domain.
        remote: String,
        /// Where the verdict goes.
        reply: oneshot::Sender<bool>,
    },
}

impl Out {
    /// The stanza, if this is one.
    pub(super) fn into_stanza(self) -> Option<Element> {
        match self {
            Out::Stanza(el) => Some(el),
            Out::Piggyback { .. } => None,
        }
    }
}

/// An authenticated outgoing connection that accepts further dialback requests.
pub(super) struct Link {
    /// The connection's queue.
    pub(super) tx: mpsc::Sender<Out>,
    /// The remote domain the connection was opened to.
    pub(super) remote: String,
    /// Encrypted.
    pub(super) tls: bool,
    /// The negotiated TLS parameters.
    tls_info: Option<TlsInfo>,
    /// The peer's certificate chain.
    pub(super) chain: Vec<CertificateDer<'static>>,
}

impl Link {
    /// Whether the connection has ended.
    pub(super) fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Dialback requests sent on a connection and not yet answered, by (local, remote).
type Pending = Arc<Mutex<HashMap<(String, String), oneshot::Sender<bool>>>>;

/// Whether the peer's features announce dialback errors (XEP-0220 §2.4), and with them the
/// acceptance of further `<db:result/>` requests on the same stream.
fn multiplexes(features: &Element) -> bool {
    features
        .get_child("dialback", ns::DIALBACK_FEATURE)
        .is_some_and(|d| d.get_child("errors", ns::DIALBACK_FEATURE).is_some())
}

/// An open, secured stream to `remote` whose header and features were read.
struct Opened {
    parser: Parser,
    writer: Writer,
    /// The id the receiving server gave the stream.
    id: String,
    tls: bool,
    /// The negotiated TLS parameters, when encrypted.
    tls_info: Option<TlsInfo>,
    /// Whether the peer's certificate is trusted and names `remote`.
    cert_valid: bool,
    /// The peer's certificate chain (empty without TLS).
    chain: Vec<CertificateDer<'static>>,
    /// The last stream features the peer sent.
    features: Element,
}

/// Connects to the first reachable target for `remote` (see [`resolve`]): a plain TCP stream
/// for STARTTLS, or one already secured for a direct-TLS (`_xmpps-server`) target. Returns the
/// stream, whether it is encrypted and whether the peer's certificate is valid for `remote`.
async fn connect(s2s: &S2s, cfg: &Config, remote: &str) -> Result<(Conn, Secured), Failure> {
    let targets = s2s.dns.targets(&cfg.s2s, remote).await.map_err(|e| {
        tracing::debug!(%remote, error = %e, "no s2s target");
        Failure::NoAddress
    })?;
    let mut last = Failure::NoAddress;
    for target in targets {
        let (addrs, direct_tls) = match &target {
            Target::Static(addr) => (vec![*addr], false),
            Target::Host {
                host,
                port,
                direct_tls,
            } => (s2s.dns.addresses(&cfg.s2s, host, *port).await, *direct_tls),
        };
        if addrs.is_empty() {
            continue;
        }
        let tcp = match resolve::connect(&addrs).await {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%remote, ?target, error = %e, "s2s target unreachable");
                last = Failure::Connect(e);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        if !direct_tls {
            return Ok((Box::new(tcp), Secured::default()));
        }
        // XEP-0368: TLS at once, with the ALPN protocol id of server-to-server XMPP.
        let mut client = (*s2s.tls_client).clone();
        client.alpn_protocols = vec![b"xmpp-server".to_vec()];
        match secure(s2s, cfg, remote, tcp, Arc::new(client)).await {
            Ok(secured) => return Ok(secured),
            Err(e @ Failure::Policy(_)) => return Err(e),
            Err(e) => {
                tracing::debug!(%remote, ?target, error = %e, "direct TLS failed");
                last = e;
            }
        }
    }
    Err(last)
}

/// What TLS gave a connection.
#[derive(Default)]
struct Secured {
    /// Encrypted.
    tls: bool,
    /// The negotiated version and cipher.
    tls_info: Option<TlsInfo>,
    /// The peer's certificate is trusted and names the remote domain.
    cert_valid: bool,
    /// The peer's certificate chain.
    chain: Vec<CertificateDer<'static>>,
}

/// The TLS handshake as a client for `remote` over `plain`, with the policy check of the
/// peer's certificate (`secure_auth`); returns the secured stream and whether the certificate
/// is valid for `remote`.
async fn secure<IO>(
    s2s: &S2s,
    cfg: &Config,
    remote: &str,
    plain: IO,
    client: Arc<rustls::ClientConfig>,
) -> Result<(Conn, Secured), Failure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let name = rustls::pki_types::ServerName::try_from(remote.to_string())
        .map_err(|e| protocol(e.to_string()))?;
    let secured = tokio_rustls::TlsConnector::from(client)
        .connect(name, plain)
        .await
        .map_err(|e| protocol(format!("TLS: {e}")))?;
    let chain = stream::peer_chain(secured.get_ref().1);
    let cert_valid = s2s.trust().valid_for(&chain, remote);
    if !cert_valid && cfg.s2s.requires_certificate(remote) {
        return Err(Failure::Policy(format!(
            "no valid certificate for {remote}"
        )));
    }
    let tls_info = TlsInfo::of(secured.get_ref().1);
    Ok((
        Box::new(secured),
        Secured {
            tls: true,
            tls_info,
            cert_valid,
            chain,
        },
    ))
}

/// Connects to `remote` as `local`, upgrading with STARTTLS when offered (required unless
/// `s2s.require_encryption` is off), and reads the final stream features.
async fn open(s2s: &S2s, cfg: &Config, local: &str, remote: &str) -> Result<Opened, Failure> {
    let (mut conn, mut secured) = connect(s2s, cfg, remote).await?;
    loop {
        let (mut parser, mut writer) = stream::open(conn, cfg);
        stream::write(&mut writer, &stream::header(local, Some(remote), None))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let id = match stream::next(&mut parser, None).await {
            Ok(StreamEvent::Header(h)) => h.id.unwrap_or_default(),
            other => return Err(protocol(format!("no stream header: {other:?}"))),
        };
        let features = match stream::next(&mut parser, None).await {
            Ok(StreamEvent::Stanza(f)) if f.is("features", ns::STREAM) => f,
            other => return Err(protocol(format!("no stream features: {other:?}"))),
        };
        if !secured.tls && features.get_child("starttls", ns::TLS).is_some() {
            stream::write(
                &mut writer,
                &Element::new("starttls", ns::TLS).to_xml(ns::SERVER),
            )
            .await
            .map_err(|e| protocol(e.to_string()))?;
            match stream::next(&mut parser, None).await {
                Ok(StreamEvent::Stanza(p)) if p.is("proceed", ns::TLS) => {}
                other => return Err(protocol(format!("STARTTLS refused: {other:?}"))),
            }
            let plain =
                stream::rejoin(parser, writer).ok_or_else(|| protocol("data after <proceed/>"))?;
            (conn, secured) = secure(s2s, cfg, remote, plain, s2s.tls_client.clone()).await?;
            continue;
        }
        if !secured.tls && cfg.s2s.require_encryption {
            return Err(protocol(
                "the peer offers no STARTTLS and encryption is required",
            ));
        }
        if id.is_empty() {
            return Err(protocol("the stream header has no id"));
        }
        return Ok(Opened {
            parser,
            writer,
            id,
            tls: secured.tls,
            tls_info: secured.tls_info,
            cert_valid: secured.cert_valid,
            chain: secured.chain,
            features,
        });
    }
}

/// How our domain was authenticated on an outgoing stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// SASL EXTERNAL with our certificate (XEP-0178).
    External,
    /// Server Dialback (XEP-0220).
    Dialback,
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Auth::External => "external",
            Auth::Dialback => "dialback",
        }
    }
}

fn offers_external(features: &Element) -> bool {
    features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.is("mechanism", ns::SASL) && c.text_content().trim() == "EXTERNAL")
    })
}

/// SASL EXTERNAL as `local`; on success the stream is restarted and its features read again.
async fn external(
    mut o: Opened,
    cfg: &Config,
    local: &str,
    remote: &str,
) -> Result<(Opened, bool), Failure> {
    use base64::Engine;
    let auth = Element::new("auth", ns::SASL)
        .attr("mechanism", "EXTERNAL")
        .text(base64::engine::general_purpose::STANDARD.encode(local));
    stream::write(&mut o.writer, &stream::wire(&auth))
        .await
        .map_err(|e| protocol(e.to_string()))?;
    match stream::next(&mut o.parser, None).await {
        Ok(StreamEvent::Stanza(r)) if r.is("success", ns::SASL) => {}
        Ok(StreamEvent::Stanza(r)) if r.is("failure", ns::SASL) => return Ok((o, false)),
        other => return Err(protocol(format!("no SASL outcome: {other:?}"))),
    }
    // Stream restart (RFC 6120 §6.4.6): a fresh parser over the same buffered reader.
    o.parser = crate::xmpp::parser::StreamParser::new(o.parser.into_inner(), stream::limits(cfg));
    stream::write(&mut o.writer, &stream::header(local, Some(remote), None))
        .await
        .map_err(|e| protocol(e.to_string()))?;
    match stream::next(&mut o.parser, None).await {
        // The restarted stream has an id of its own, the one further dialback keys are made for.
        Ok(StreamEvent::Header(h)) => o.id = h.id.unwrap_or_default(),
        other => return Err(protocol(format!("no stream header after SASL: {other:?}"))),
    }
    match stream::next(&mut o.parser, None).await {
        Ok(StreamEvent::Stanza(f)) if f.is("features", ns::STREAM) => o.features = f,
        other => {
            return Err(protocol(format!(
                "no stream features after SASL: {other:?}"
            )));
        }
    }
    Ok((o, true))
}

/// Opens the stream and authenticates `local` to `remote`: SASL EXTERNAL when the peer offers
/// it (it does when our certificate names `local`), else a dialback key.
async fn establish(
    s2s: &S2s,
    cfg: &Config,
    local: &str,
    remote: &str,
) -> Result<(Opened, Auth), Failure> {
    let mut o = open(s2s, cfg, local, remote).await?;
    if o.tls && offers_external(&o.features) {
        let (opened, ok) = external(o, cfg, local, remote).await?;
        if ok {
            return Ok((opened, Auth::External));
        }
        o = opened;
    }
    let key = s2s.secret().key(remote, local, &o.id);
    let result = Element::new("result", ns::DIALBACK)
        .attr("from", local)
        .attr("to", remote)
        .text(key);
    stream::write(&mut o.writer, &stream::wire(&result))
        .await
        .map_err(|e| protocol(e.to_string()))?;
    loop {
        match stream::next(&mut o.parser, None).await {
            Ok(StreamEvent::Stanza(r)) if r.is("result", ns::DIALBACK) => {
                return match r.get_attr("type") {
                    Some("valid") => Ok((o, Auth::Dialback)),
                    _ => Err(Failure::Refused),
                };
            }
            Ok(StreamEvent::Stanza(_)) => continue,
            other => return Err(protocol(format!("no dialback result: {other:?}"))),
        }
    }
}

/// Asks the authoritative server of `remote` whether `key` is the key it made for the stream
/// `id` it opened to our `local` (XEP-0220 §2.1.2, over a connection of its own).
pub(super) async fn verify(
    s2s: &S2s,
    core: &Core,
    local: &str,
    remote: &str,
    id: &str,
    key: &str,
) -> Result<bool, Failure> {
    let cfg = core.config.load_full();
    let deadline = Instant::now() + Duration::from_secs(cfg.s2s.negotiation_timeout_secs);
    let run = async {
        let mut o = open(s2s, &cfg, local, remote).await?;
        let req = Element::new("verify", ns::DIALBACK)
            .attr("from", local)
            .attr("to", remote)
            .attr("id", id)
            .text(key);
        stream::write(&mut o.writer, &stream::wire(&req))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let valid = loop {
            match stream::next(&mut o.parser, None).await {
                Ok(StreamEvent::Stanza(r))
                    if r.is("verify", ns::DIALBACK) && r.get_attr("id") == Some(id) =>
                {
                    break r.get_attr("type") == Some("valid");
                }
                Ok(StreamEvent::Stanza(_)) => continue,
                other => return Err(protocol(format!("no verify answer: {other:?}"))),
            }
        };
        let _ = stream::write(&mut o.writer, "</stream:stream>").await;
        let _ = o.writer.shutdown().await;
        Ok(valid)
    };
    match tokio::time::timeout_at(deadline, run).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout),
    }
}

/// How the writing loop ended.
#[derive(Clone, Copy)]
enum End {
    /// Unused for `idle_timeout_secs`, or closed by the admin or shutdown.
    Quiet,
    /// The peer went away or stopped reading.
    Broken,
}

/// Bounces every stanza still queued in `rx` with `condition` (the stream failed to establish).
async fn bounce_queued(s2s: &S2s, core: &Arc<Core>, rx: &mut mpsc::Receiver<Out>, condition: C) {
    rx.close();
    let mut queued = Vec::new();
    while let Ok(item) = rx.try_recv() {
        if let Some(el) = item.into_stanza() {
            s2s.metrics.queued.with(&[]).dec();
            queued.push(el);
        }
    }
    for el in queued {
        core.bounce(&el, condition).await;
    }
}

/// What was queued after a stream ended (`first`, then the rest of `rx`): a quiet end sends it
/// again (on a new stream), a broken one bounces it.
async fn requeue(
    s2s: &Arc<S2s>,
    core: &Arc<Core>,
    first: Option<Out>,
    rx: &mut mpsc::Receiver<Out>,
    end: End,
) {
    rx.close();
    let mut rest: Vec<Element> = first.and_then(Out::into_stanza).into_iter().collect();
    while let Ok(item) = rx.try_recv() {
        rest.extend(item.into_stanza());
    }
    for el in rest {
        s2s.metrics.queued.with(&[]).dec();
        match end {
            End::Quiet if !core.shutdown.is_cancelled() => {
                let from = el
                    .get_attr("from")
                    .and_then(|f| crate::xmpp::Jid::parse(f).ok());
                let to = el
                    .get_attr("to")
                    .and_then(|t| crate::xmpp::Jid::parse(t).ok());
                if let (Some(from), Some(to)) = (from, to) {
                    crate::core::remote::Federation::send(s2s.as_ref(), from, to, el);
                }
            }
            _ => core.bounce(&el, C::RemoteServerTimeout).await,
        }
    }
}

/// Runs the outgoing stream for `key` = (local, remote): establish, then drain `rx`.
pub(super) async fn run(
    s2s: Arc<S2s>,
    core: Arc<Core>,
    key: (String, String),
    id: u64,
    mut rx: mpsc::Receiver<Out>,
    state: Arc<StreamState>,
) {
    let cfg = core.config.load_full();
    let (local, remote) = (key.0.as_str(), key.1.as_str());
    let deadline = Instant::now() + Duration::from_secs(cfg.s2s.negotiation_timeout_secs);
    let attempt = if !cfg.s2s.permits(remote) {
        Err(Failure::Policy(format!("{remote} is not allowed")))
    } else {
        tokio::select! {
        _ = core.shutdown.cancelled() => Err(Failure::Protocol("shutting down".into())),
        _ = state.cancel.cancelled() => Err(Failure::Protocol("closed by the administrator".into())),
        r = tokio::time::timeout_at(deadline, establish(&s2s, &cfg, local, remote)) => {
            r.unwrap_or(Err(Failure::Timeout))
        }
        }
    };
    let (o, auth) = match attempt {
        Ok(o) => o,
        Err(f) => {
            tracing::info!(%local, %remote, error = %f, "s2s connection failed");
            s2s.metrics.failed.with(&[f.reason()]).inc();
            s2s.remove_outgoing(&key, id);
            bounce_queued(&s2s, &core, &mut rx, f.condition()).await;
            return;
        }
    };
    tracing::info!(%local, %remote, tls = o.tls, cert_valid = o.cert_valid, auth = auth.label(), "s2s outgoing stream authenticated");
    state.update(|i| {
        i.auth = auth.label();
        i.tls = o.tls;
        i.tls_version = o.tls_info.as_ref().map(|t| t.version.clone());
        i.cipher = o.tls_info.as_ref().map(|t| t.cipher.clone());
        i.cert_valid = o.cert_valid;
    });
    state.touch();
    core.s2s_established(false, local, remote, auth.label(), o.tls, None);
    let _counted = Counted::new(&s2s.metrics.connections, "outgoing", auth.label());
    let Opened {
        mut parser,
        mut writer,
        id: stream_id,
        tls,
        tls_info,
        chain,
        features,
        ..
    } = o;
    if multiplexes(&features) {
        s2s.offer_link(&key, id, |tx| Link {
            tx,
            remote: remote.to_string(),
            tls,
            tls_info,
            chain,
        });
    }
    // The peer sends nothing on our outgoing stream but answers to further dialback requests,
    // a close or an error; read it apart.
    let pending: Pending = Arc::default();
    let peer_gone = state.cancel.child_token();
    let reader_done = peer_gone.clone();
    let answers = pending.clone();
    core.tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = reader_done.cancelled() => break,
                ev = parser.next() => match ev {
                    Ok(StreamEvent::Stanza(r)) if r.is("result", ns::DIALBACK) => {
                        let pair = (
                            r.get_attr("to").unwrap_or_default().to_string(),
                            r.get_attr("from").unwrap_or_default().to_string(),
                        );
                        let waiting = answers.lock().ok().and_then(|mut p| p.remove(&pair));
                        if let Some(reply) = waiting {
                            let _ = reply.send(r.get_attr("type") == Some("valid"));
                        }
                    }
                    Ok(StreamEvent::Stanza(_)) => continue,
                    _ => break,
                },
            }
        }
        reader_done.cancel();
        // Unanswered requests are dropped: their pairs open streams of their own.
        if let Ok(mut p) = answers.lock() {
            p.clear();
        }
    });
    let idle = Duration::from_secs(cfg.s2s.idle_timeout_secs.max(1));
    let send_timeout = Duration::from_secs(cfg.s2s.send_timeout_secs.max(1));
    let end = loop {
        let next = tokio::select! {
            _ = core.shutdown.cancelled() => break End::Quiet,
            _ = state.cancel.cancelled() => break End::Quiet,
            _ = peer_gone.cancelled() => break End::Broken,
            r = tokio::time::timeout(idle, rx.recv()) => r,
        };
        let (data, stanza) = match next {
            Err(_) | Ok(None) => break End::Quiet,
            Ok(Some(Out::Stanza(el))) => {
                s2s.metrics.queued.with(&[]).dec();
                (stream::wire(&el), Some(el))
            }
            Ok(Some(Out::Piggyback {
                local: other,
                remote: to,
                reply,
            })) => {
                let key = s2s.secret().key(&to, &other, &stream_id);
                let request = Element::new("result", ns::DIALBACK)
                    .attr("from", other.as_str())
                    .attr("to", to.as_str())
                    .text(key);
                if let Ok(mut p) = pending.lock() {
                    p.insert((other, to), reply);
                }
                (stream::wire(&request), None)
            }
        };
        match tokio::time::timeout(send_timeout, stream::write(&mut writer, &data)).await {
            Ok(Ok(())) => {
                if stanza.is_some() {
                    s2s.metrics.stanzas.with(&["out"]).inc();
                }
                state.touch();
            }
            _ => {
                tracing::info!(%local, %remote, "s2s peer stopped reading; closing the stream");
                if let Some(el) = stanza {
                    core.bounce(&el, C::RemoteServerTimeout).await;
                }
                break End::Broken;
            }
        }
    };
    peer_gone.cancel();
    s2s.remove_outgoing(&key, id);
    rx.close();
    if matches!(end, End::Quiet) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream::write(&mut writer, "</stream:stream>").await;
            let _ = writer.shutdown().await;
        })
        .await;
    }
    requeue(&s2s, &core, None, &mut rx, end).await;
}

/// Runs the pair `key` = (local, remote) over `link`, another pair's connection to the same
/// server: one dialback request on it (XEP-0220 §2.5), then this pair's queue feeds the
/// connection's. If the peer refuses or does not answer in time, the pair opens a stream of
/// its own ([`run`]).
pub(super) async fn piggyback(
    s2s: Arc<S2s>,
    core: Arc<Core>,
    key: (String, String),
    id: u64,
    mut rx: mpsc::Receiver<Out>,
    state: Arc<StreamState>,
    (link, cert_valid): (Arc<Link>, bool),
) {
    let cfg = core.config.load_full();
    let (local, remote) = (key.0.clone(), key.1.clone());
    let deadline = Instant::now() + Duration::from_secs(cfg.s2s.negotiation_timeout_secs);
    let (reply, verdict) = oneshot::channel();
    let ask = async {
        let request = Out::Piggyback {
            local: local.clone(),
            remote: remote.clone(),
            reply,
        };
        link.tx.send(request).await.ok()?;
        verdict.await.ok()
    };
    let accepted = tokio::select! {
        _ = core.shutdown.cancelled() => false,
        _ = state.cancel.cancelled() => false,
        r = tokio::time::timeout_at(deadline, ask) => matches!(r, Ok(Some(true))),
    };
    if !accepted {
        tracing::debug!(%local, %remote, via = %link.remote, "s2s piggybacking not accepted; opening a stream of its own");
        return run(s2s, core, key, id, rx, state).await;
    }
    tracing::info!(%local, %remote, via = %link.remote, "s2s domain pair authenticated on an existing stream");
    state.update(|i| {
        i.auth = "dialback";
        i.tls = link.tls;
        i.tls_version = link.tls_info.as_ref().map(|t| t.version.clone());
        i.cipher = link.tls_info.as_ref().map(|t| t.cipher.clone());
        i.cert_valid = cert_valid;
    });
    state.touch();
    core.s2s_established(false, &local, &remote, "dialback", link.tls, None);
    let idle = Duration::from_secs(cfg.s2s.idle_timeout_secs.max(1));
    let mut left = None;
    loop {
        let next = tokio::select! {
            _ = core.shutdown.cancelled() => break,
            _ = state.cancel.cancelled() => break,
            _ = link.tx.closed() => break,
            r = tokio::time::timeout(idle, rx.recv()) => r,
        };
        let Ok(Some(item)) = next else {
            break;
        };
        state.touch();
        // Still counted as queued: the connection's loop takes it off the count.
        if let Err(mpsc::error::SendError(item)) = link.tx.send(item).await {
            left = Some(item);
            break;
        }
    }
    s2s.remove_outgoing(&key, id);
    requeue(&s2s, &core, left, &mut rx, End::Quiet).await;
}
