//! The way out to other servers: the router hands stanzas for domains it does not serve to the
//! [`Federation`] the server installed (the s2s manager), and the admin faces list and close
//! its streams through it. `core` knows only this trait, never the s2s code behind it.

use std::sync::Arc;

use super::Core;
use crate::xmpp::{Element, Jid};

/// One server-to-server stream, as the admin surfaces show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamInfo {
    /// `outgoing` or `incoming`.
    pub direction: &'static str,
    /// Our domain on this stream.
    pub local: String,
    /// The other server's domain.
    pub remote: String,
    /// How the remote domain was authenticated: `dialback`, or `none` while negotiating.
    pub auth: &'static str,
    /// Whether the stream is encrypted with TLS.
    pub tls: bool,
    /// The TLS version, e.g. `TLSv1_3`, when encrypted.
    pub tls_version: Option<String>,
    /// The TLS cipher suite, when encrypted.
    pub cipher: Option<String>,
    /// Whether the peer's certificate was verified for its domain.
    pub cert_valid: bool,
    /// Seconds since the stream last carried a stanza.
    pub idle_secs: u64,
    /// Stanzas waiting to be written (outgoing streams).
    pub queued: usize,
}

/// The server-to-server side as the router and the admin faces see it.
pub trait Federation: Send + Sync {
    /// Sends `stanza` from local `from` to remote `to`: queued on the (from-domain, to-domain)
    /// stream, which is opened on demand; a stanza that cannot be delivered is bounced.
    fn send(&self, from: Jid, to: Jid, stanza: Element);
    /// Every stream, both directions.
    fn streams(&self) -> Vec<StreamInfo>;
    /// Closes every stream between `local` and `remote`; how many were closed.
    fn close(&self, local: &str, remote: &str) -> usize;
    /// Uses `secret` for Server Dialback keys from now on: the one every node of a cluster
    /// shares, so a key made on one node verifies on any other.
    fn share_dialback_secret(&self, _secret: [u8; 32]) {}
}

impl Core {
    /// Sends `stanza` from local `from` to remote `to` out through federation: on this
    /// node's own stream, or, in a cluster, through the node holding the (from-domain,
    /// to-domain) pair's lease ([`super::cluster::Cluster::outgoing`]).
    pub fn send_remote(
        &self,
        federation: &Arc<dyn Federation>,
        from: Jid,
        to: Jid,
        stanza: Element,
    ) {
        let out = match self.cluster.get() {
            Some(c) => c.outgoing(from, to, stanza),
            None => Some((from, to, stanza)),
        };
        if let Some((from, to, stanza)) = out {
            federation.send(from, to, stanza);
        }
    }
}
