//! What both directions of a server-to-server stream share: the transport, the stream header,
//! the limits, reading with a deadline, and the TLS client set-up.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::config::Config;
use crate::tls::{CertPaths, TlsError};
use crate::xmpp::element::escape;
use crate::xmpp::error::{StreamError, StreamErrorCondition as C};
use crate::xmpp::parser::{Limits, ParseError, StreamEvent, StreamParser};
use crate::xmpp::{Element, ns};

/// A byte stream a server-to-server stream runs over (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The transport of one connection, boxed so that STARTTLS can swap it.
pub type Conn = Box<dyn Io>;
/// The parser over the read half.
pub type Parser = StreamParser<BufReader<ReadHalf<Conn>>>;
/// The write half.
pub type Writer = WriteHalf<Conn>;

/// Read buffer per connection.
const READ_BUFFER: usize = 4096;

/// Splits `conn` into a fresh parser (expecting a stream header) and the write half.
pub fn open(conn: Conn, cfg: &Config) -> (Parser, Writer) {
    let (r, w) = tokio::io::split(conn);
    let parser = StreamParser::new(BufReader::with_capacity(READ_BUFFER, r), limits(cfg));
    (parser, w)
}

/// Joins the halves again (for the TLS upgrade); `None` if plaintext is still unread, which
/// must never reach the TLS layer.
pub fn rejoin(parser: Parser, w: Writer) -> Option<Conn> {
    let reader = parser.into_inner();
    if !reader.buffer().is_empty() {
        return None;
    }
    Some(reader.into_inner().unsplit(w))
}

/// The parser limits of a server-to-server stream (`s2s.max_stanza_size`).
pub fn limits(cfg: &Config) -> Limits {
    Limits {
        max_stanza_bytes: cfg.s2s.max_stanza_size,
        ..Limits::default()
    }
}

/// A `jabber:server` stream header declaring the dialback prefix.
pub fn header(from: &str, to: Option<&str>, id: Option<&str>) -> String {
    let mut out = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' xmlns:db='{}' from='{}'",
        ns::SERVER,
        ns::STREAM,
        ns::DIALBACK,
        escape(from, true)
    );
    if let Some(to) = to {
        out.push_str(&format!(" to='{}'", escape(to, true)));
    }
    if let Some(id) = id {
        out.push_str(&format!(" id='{}'", escape(id, true)));
    }
    out.push_str(" version='1.0'>");
    out
}

/// Serialises a stanza for the wire: `jabber:client` elements are written unprefixed, so on a
/// `jabber:server` stream they are server stanzas.
pub fn wire(el: &Element) -> String {
    el.to_xml(ns::CLIENT)
}

/// Writes `data` and flushes.
pub async fn write(w: &mut Writer, data: &str) -> std::io::Result<()> {
    w.write_all(data.as_bytes()).await?;
    w.flush().await
}

/// The next parser event, failing with `connection-timeout` at `deadline` if one is given.
pub async fn next(
    parser: &mut Parser,
    deadline: Option<Instant>,
) -> Result<StreamEvent, ParseError> {
    match deadline {
        None => parser.next().await,
        Some(d) => match tokio::time::timeout_at(d, parser.next()).await {
            Ok(r) => r,
            Err(_) => Err(ParseError::Stream(StreamError::with_text(
                C::ConnectionTimeout,
                "negotiation took too long",
            ))),
        },
    }
}

/// A TLS client configuration for outgoing streams, presenting our certificate (for the peer's
/// SASL EXTERNAL). The peer's certificate is not required to be valid here: it is checked for
/// its domain after the handshake ([`super::cert::Trust`]), and a stream without a valid one
/// authenticates by dialback where policy allows.
pub fn client_config(paths: &CertPaths) -> Result<Arc<ClientConfig>, TlsError> {
    let (certs, key) = crate::tls::load_pair(paths)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// The TLS server configuration of the s2s listeners: like c2s, but asking (not requiring) the
/// peer for its certificate, checked for its domain after the handshake.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = crate::tls::load_pair(paths)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// The certificate chain the peer presented on a TLS stream (empty if none).
pub fn peer_chain(conn: &rustls::CommonState) -> Vec<CertificateDer<'static>> {
    conn.peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// Accepts any certificate but still checks the handshake signatures with it (server and
/// client side); whether it names the peer's domain is decided after the handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// The two roles differ only in how the end-entity certificate is accepted; the signature
// checks are the shared ones above.
impl ClientCertVerifier for AnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}
