//! XML namespace constants used across the server.

/// Client-to-server stanza namespace (RFC 6120 §4.8.3).
pub const CLIENT: &str = "jabber:client";
/// Stream namespace (RFC 6120 §4.8.1).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// STARTTLS negotiation (RFC 6120 §5).
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL negotiation (RFC 6120 §6).
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921, draft-cridland-xmpp-session).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Stanza error conditions (RFC 6120 §8.3).
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0478 stream limits advertisement.
pub const STREAM_LIMITS: &str = "urn:xmpp:stream-limits:0";
/// XEP-0199 XMPP Ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0030 service discovery, info.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030 service discovery, items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// The `xml:` prefix namespace.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
