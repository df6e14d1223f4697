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
/// XEP-0202 Entity Time.
pub const TIME: &str = "urn:xmpp:time";
/// XEP-0092 Software Version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0012 Last Activity.
pub const LAST: &str = "jabber:iq:last";
/// XEP-0054 vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0049 Private XML Storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0191 Blocking Command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191 blocking application error (`<blocked/>`).
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0077 In-Band Registration.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077 registration stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// The server-to-server stanza namespace (reserved for XEP-0049).
pub const SERVER: &str = "jabber:server";
/// XEP-0198 stream management.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352 client state indication.
pub const CSI: &str = "urn:xmpp:csi:0";
