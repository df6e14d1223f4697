//! Client streams carried by a web transport (WebSocket, BOSH): the same negotiation and session
//! as TCP, run over an in-memory duplex that the transport feeds with the client's XML and drains
//! of the server's (see `web::framing` for the translation both ways).

use std::sync::Arc;

use tokio::io::DuplexStream;

use super::negotiate::{Negotiation, Outcome, unauth_limits};
use super::read_buffer::ReadBuffer;
use super::{ConnectionGauge, session};
use crate::core::Core;
use crate::core::sessions::{TlsInfo, Transport};
use crate::xmpp::parser::StreamParser;

/// Bytes buffered each way between a web transport and its stream.
pub const DUPLEX_BUFFER: usize = 64 * 1024;

/// Who is on the other end of a web transport, as far as negotiation cares.
#[derive(Clone, Debug)]
pub struct Carrier {
    /// The transport.
    pub transport: Transport,
    /// The client's address (after trusted-proxy resolution).
    pub peer: String,
    /// Whether the HTTP connection is encrypted (our TLS, or a trusted proxy's HTTPS).
    pub secure: bool,
    /// Our TLS parameters, when we terminated TLS.
    pub tls: Option<TlsInfo>,
    /// Whether the client is on loopback (then SASL is allowed without encryption).
    pub loopback: bool,
}

impl Carrier {
    /// The metrics label of this transport's connections.
    fn kind(&self) -> &'static str {
        match self.transport {
            Transport::Tcp => "c2s",
            Transport::WebSocket => "c2s_websocket",
            Transport::Bosh => "c2s_bosh",
        }
    }
}

/// Runs negotiation and then the session on `io` until the stream ends.
pub async fn serve(core: Arc<Core>, carrier: Carrier, io: DuplexStream) {
    let _gauge = ConnectionGauge::new(core.clone(), carrier.kind(), carrier.secure);
    // Loopback counts as encrypted for SASL (as `c2s.require_encryption` reads it); the session
    // still shows what the connection really is.
    let mut neg = Negotiation::new(
        core.clone(),
        carrier.peer.clone(),
        carrier.secure || carrier.loopback,
    );
    neg.conn.secure = carrier.secure;
    neg.conn.transport = carrier.transport;
    neg.conn.tls = carrier.tls;
    let (r, w) = tokio::io::split(io);
    let parser = StreamParser::new(ReadBuffer::new(r), unauth_limits(&neg.config));
    match neg.run(parser, w, None).await {
        Outcome::Bound {
            parser,
            writer,
            session,
            ..
        } => session::run(core, parser, writer, session).await,
        Outcome::Resumed {
            parser,
            writer,
            hib,
            announced,
        } => session::resume_after(core, parser, writer, hib, announced).await,
        Outcome::StartTls(..) | Outcome::Closed => {}
    }
}
