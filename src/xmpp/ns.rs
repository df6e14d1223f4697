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
/// XEP-0203 delayed delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0004 data forms.
pub const DATA: &str = "jabber:x:data";
/// XEP-0297 stanza forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 message processing hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0280 message carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0280 feature: the server follows the current eligibility rules.
pub const CARBONS_RULES: &str = "urn:xmpp:carbons:rules:0";
/// XEP-0085 chat state notifications.
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0184 message delivery receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0333 chat markers.
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0313 message archive management.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0313 extended queries (before-id, after-id, ids).
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0359 unique and stable stanza ids.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0059 result set management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0357 push notifications.
pub const PUSH: &str = "urn:xmpp:push:0";
/// XEP-0060 publish-subscribe.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 event notifications.
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 owner use cases.
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 application errors.
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0115 entity capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0160 offline message feature advertised in disco.
pub const OFFLINE: &str = "msgoffline";
/// RFC 6121 roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0237 roster versioning stream feature.
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// RFC 6121 §3.4 subscription pre-approval stream feature.
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0048 bookmarks in private XML storage.
pub const BOOKMARKS: &str = "storage:bookmarks";
/// XEP-0402 PEP native bookmarks.
pub const BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";
/// XEP-0411 bookmarks conversion feature advertised on accounts.
pub const BOOKMARKS_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0398 vCard to PEP avatar conversion.
pub const PEP_VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
/// XEP-0084 user avatar data.
pub const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
/// XEP-0084 user avatar metadata.
pub const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0153 vCard-based avatar update.
pub const VCARD_UPDATE: &str = "vcard-temp:x:update";
/// XEP-0050 ad-hoc commands.
pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
/// XEP-0133 service administration (form type and command node prefix).
pub const ADMIN: &str = "http://jabber.org/protocol/admin";
/// XEP-0045 Multi-User Chat: the join element.
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 occupant payloads (`<x/>` with items and status codes, invitations).
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0045 moderator and admin requests (roles, affiliations).
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0045 owner requests (room configuration, destruction).
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0045 room configuration form type.
pub const MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// XEP-0045 room information form type (disco#info extension).
pub const MUC_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0045 feature: the room's stanza ids are stable (XEP-0359 `by` the room).
pub const MUC_STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";
/// XEP-0421 anonymous unique occupant identifiers.
pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0317 hats of MUC occupants (the `<hats/>` presence payload).
pub const HATS: &str = "urn:xmpp:hats:0";
/// XEP-0317 hat management commands (form type and prefix of the ad-hoc command nodes).
pub const HATS_COMMANDS: &str = "urn:xmpp:hats:commands";
/// XEP-0249 direct MUC invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
/// Server Dialback (XEP-0220), the `db:` prefix on server-to-server streams.
pub const DIALBACK: &str = "jabber:server:dialback";
/// The dialback stream feature (XEP-0220 §2.1).
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// XEP-0363 HTTP File Upload.
pub const HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// XEP-0215 External Service Discovery.
pub const EXTDISCO: &str = "urn:xmpp:extdisco:2";
/// XMPP over WebSocket framing, `<open/>` and `<close/>` (RFC 7395 §3.3).
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// BOSH `<body/>` wrapper (XEP-0124).
pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XMPP over BOSH attributes, `xmpp:version`, `xmpp:restart` (XEP-0206).
pub const XBOSH: &str = "urn:xmpp:xbosh";
/// Extensible Resource Descriptor, the host-meta document (XEP-0156, RFC 6415).
pub const XRD: &str = "http://docs.oasis-open.org/ns/xri/xrd-1.0";
/// XEP-0227 portable import/export (PIEFXIS) top-level namespace.
pub const PIE: &str = "urn:xmpp:pie:0";
/// XEP-0227 SCRAM credentials.
pub const PIE_SCRAM: &str = "urn:xmpp:pie:0#scram";
/// XEP-0227 message archives.
pub const PIE_MAM: &str = "urn:xmpp:pie:0#mam";
/// Oxpecker's extension to XEP-0227: stored records that the standard elements do not carry.
pub const PIE_OXPECKER: &str = "urn:oxpecker:pie:0";
/// XEP-0388 Extensible SASL Profile (SASL2).
pub const SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0386 Bind 2.
pub const BIND2: &str = "urn:xmpp:bind:0";
/// XEP-0484 Fast Authentication Streamlining Tokens.
pub const FAST: &str = "urn:xmpp:fast:0";
/// XEP-0440 SASL channel-binding type capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// Prosody's client management protocol (`mod_client_management`).
pub const CLIENT_MANAGEMENT: &str = "xmpp:prosody.im/protocol/manage-clients";
