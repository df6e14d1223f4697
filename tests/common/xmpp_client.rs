//! A real, independent XMPP client for tests, built from tokio-xmpp 6's own machinery: its XML
//! stream (`xmlstream`), its SASL negotiation (`tokio_xmpp::client_login`, the very function
//! `tokio_xmpp::Client` logs in with), and its resilient `StanzaStream` (resource binding,
//! stanza queues). Only two things are ours: STARTTLS runs over a rustls config that trusts
//! exactly the test server's certificate (and verifies the host name), and the `StanzaStream` is
//! fed by our connector closure.
//!
//! Why not `tokio_xmpp::Client` with a custom `tokio_xmpp::connect::ServerConnector`: that
//! trait's `connect` must return `sasl::common::ChannelBinding`, which tokio-xmpp 6.0.0 does not
//! re-export, and `sasl` is not a (dev-)dependency of this crate, so the trait cannot be
//! implemented here. `StanzaStream::new` (the connector extension point `Client` itself wraps)
//! takes a closure instead and needs no such type; `Client` has no constructor from a
//! `StanzaStream`, so tests drive the `StanzaStream` directly and match IQ replies by id.
//!
//! Channel binding: the SASL credentials carry tokio-xmpp's default (`Unsupported`, gs2 header
//! `y,,`: "I could bind, but you offered no -PLUS"). tokio-xmpp's stock STARTTLS connector would
//! instead pass `TlsExporter` on TLS 1.3, which renames its SCRAM mechanisms to `SCRAM-*-PLUS`;
//! against a server that offers no -PLUS mechanism it then skips SCRAM and falls back to PLAIN.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{FullJid, Jid};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::stanzastream::{
    Connection, Event, StanzaStage, StanzaState, StanzaStream, StreamEvent,
};
use tokio_xmpp::xmlstream::{
    ReadError, StreamHeader, Timeouts, XmppStream, XmppStreamElement, initiate_stream,
};
use tokio_xmpp::{Error, Stanza};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A TLS-secured, not yet authenticated client stream.
pub type SecureStream = XmppStream<BufStream<TlsStream<TcpStream>>>;

/// Stream timeouts for localhost (tokio-xmpp's own "tight" preset).
fn timeouts() -> Timeouts {
    Timeouts::tight()
}

/// The header of a client stream addressed to `domain`.
fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    }
}

/// Returns `T::default()` for the argument type `T` of `f`, which lets us build the
/// `sasl::common::Credentials` that `client_login` takes without naming the `sasl` crate.
fn default_arg<T: Default, R>(_f: &impl FnOnce(T) -> R) -> T {
    T::default()
}

/// Connects to `addr`, opens a stream to `domain`, does `<starttls/>` and a TLS handshake with
/// `tls` verifying `domain`, and reopens the stream; returns the secured stream and its features.
pub async fn connect_starttls(
    addr: SocketAddr,
    domain: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(StreamFeatures, SecureStream), Error> {
    let tcp = BufStream::new(TcpStream::connect(addr).await?);
    let pending = initiate_stream(tcp, ns::JABBER_CLIENT, header(domain), timeouts()).await?;
    let (features, mut stream): (_, XmppStream<_>) = pending.recv_features().await?;
    if !features.can_starttls() {
        return Err(ProtocolError::NoTls.into());
    }
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await?;
    loop {
        match stream
            .next()
            .await
            .map(|r| r.and_then(|el| el.into_read_error()))
        {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(other)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected <proceed/>, got {other:?}"),
                )
                .into());
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(e.into()),
            Some(Err(ReadError::ParseError(e))) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e).into());
            }
            Some(Err(ReadError::StreamFooterReceived)) | None => return Err(Error::Disconnected),
        }
    }
    let tcp = stream.into_inner().into_inner();
    let name = rustls_pki_types::ServerName::try_from(domain.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let pending = initiate_stream(
        BufStream::new(tls),
        ns::JABBER_CLIENT,
        header(domain),
        timeouts(),
    )
    .await?;
    Ok(pending.recv_features().await?)
}

/// Outcome of [`authenticate`]: a restarted, authenticated (unbound) stream plus what was offered.
pub struct Authenticated {
    /// The stream, ready to be handed to a `StanzaStream` for binding.
    pub connection: Connection,
    /// The SASL mechanisms the server offered on the secured stream.
    pub offered: BTreeSet<String>,
}

/// STARTTLS to `addr`, then tokio-xmpp's SASL as `jid` (bare, or full to request a resource)
/// using `only` (or, if `None`, every mechanism the server offers), then the stream restart.
pub async fn authenticate(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    jid: &Jid,
    password: &str,
    only: Option<&[&str]>,
) -> Result<Authenticated, Error> {
    let domain = jid.domain().as_str();
    let username = jid.node().expect("an account JID has a localpart").as_str();
    let (features, stream) = connect_starttls(addr, domain, tls).await?;
    let offered = features.sasl_mechanisms.clone();
    let mechanisms = match only {
        Some(m) => m.iter().map(|s| s.to_string()).collect(),
        None => offered.clone(),
    };
    let sasl = move |creds| tokio_xmpp::client_login(stream, mechanisms, creds);
    let creds = default_arg(&sasl)
        .with_username(username)
        .with_password(password);
    let restarted = sasl(creds).await?;
    let (features, stream) = restarted
        .send_header(header(domain))
        .await?
        .recv_features()
        .await?;
    Ok(Authenticated {
        connection: Connection {
            stream: stream.box_stream(),
            features,
            identity: jid.clone(),
        },
        offered,
    })
}

/// A logged-in client: tokio-xmpp's `StanzaStream` over one authenticated connection.
pub struct XmppClient {
    /// The stanza stream (send with [`XmppClient::send`], receive with [`XmppClient::next_stanza`]).
    pub stream: StanzaStream,
    /// The JID the server bound.
    pub jid: FullJid,
    /// The SASL mechanisms the server offered.
    pub offered: BTreeSet<String>,
}

impl XmppClient {
    /// Logs in (see [`authenticate`]), lets the `StanzaStream` bind, and waits until it is online.
    pub async fn login(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        jid: &str,
        password: &str,
        only: Option<&[&str]>,
    ) -> Result<Self, Error> {
        let jid = Jid::new(jid)?;
        let auth = authenticate(addr, tls, &jid, password, only).await?;
        let mut first = Some(auth.connection);
        // Only the first connection is handed over: a later call means the connection broke,
        // and dropping `slot` makes the StanzaStream fail, so a test sees the loss instead of
        // a silent reconnect.
        let connector = move |_location: Option<String>, slot: tokio::sync::oneshot::Sender<_>| {
            if let Some(conn) = first.take() {
                let _ = slot.send(conn);
            }
        };
        let mut stream = StanzaStream::new(Box::new(connector), 16);
        // The first event of a fresh stream is its (re)set with the bound JID.
        let bound = match tokio::time::timeout(WAIT, stream.next()).await {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no bind").into()),
            Ok(None) => return Err(Error::Disconnected),
            Ok(Some(Event::Stream(StreamEvent::Reset { bound_jid, .. }))) => bound_jid,
            Ok(Some(other)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected event before bind: {other:?}"),
                )
                .into());
            }
        };
        let jid = bound
            .try_into_full()
            .map_err(|b| io::Error::new(io::ErrorKind::InvalidData, format!("bound {b}")))?;
        Ok(XmppClient {
            stream,
            jid,
            offered: auth.offered,
        })
    }

    /// Sends `stanza` and waits until tokio-xmpp has written it to the transport.
    pub async fn send(&mut self, stanza: impl Into<Stanza>) {
        let mut token = self.stream.send(Box::new(stanza.into())).await;
        let state = tokio::time::timeout(WAIT, token.wait_for(StanzaStage::Sent))
            .await
            .expect("timed out sending a stanza");
        match state {
            Some(StanzaState::Sent { .. } | StanzaState::Acked { .. }) => {}
            other => panic!("stanza not sent: {other:?}"),
        }
    }

    /// Returns the next received stanza for which `want` holds, skipping others; panics on
    /// timeout or if the stream ends or resets.
    pub async fn next_stanza(&mut self, mut want: impl FnMut(&Stanza) -> bool) -> Stanza {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("timed out waiting for a stanza")
                .expect("stanza stream ended");
            match event {
                Event::Stanza(s) if want(&s) => return s,
                Event::Stanza(_) => {}
                Event::Stream(e) => panic!("stream event while waiting for a stanza: {e:?}"),
            }
        }
    }

    /// Sends `iq` and returns the `result` or `error` IQ with the same id.
    pub async fn iq(&mut self, iq: Iq) -> Iq {
        let id = iq.id().to_owned();
        self.send(iq).await;
        let reply = self
            .next_stanza(|s| {
                matches!(s, Stanza::Iq(i @ (Iq::Result { .. } | Iq::Error { .. })) if i.id() == id)
            })
            .await;
        let Stanza::Iq(reply) = reply else {
            unreachable!("filtered to IQs")
        };
        reply
    }

    /// Closes the stream cleanly (`</stream:stream>`), waiting at most [`WAIT`].
    pub async fn close(self) {
        tokio::time::timeout(WAIT, self.stream.close())
            .await
            .expect("timed out closing the stream");
    }
}
