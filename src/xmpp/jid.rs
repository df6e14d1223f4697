//! RFC 7622 XMPP addresses (JIDs): parsing, PRECIS/IDNA normalisation and a cheap-to-clone form.
//!
//! A [`Jid`] keeps its canonical string `node@domain/resource` in a single `Arc<str>` plus two
//! offsets, so cloning is a reference-count bump and equality, ordering and hashing operate on
//! the canonical string. Normalisation:
//! - localpart: PRECIS `UsernameCaseMapped`, minus the characters `" & ' / : < > @` (§3.3.1);
//! - domainpart: UTS #46 with STD3 rules, stored as **lower-case Unicode (U-labels)**, so that
//!   `xn--bcher-kva.example` and `BÜCHER.example.` are the same domain; one trailing dot is
//!   stripped; IPv4 and bracketed IPv6 literals are accepted (IPv6 in canonical compressed form);
//! - resourcepart: PRECIS `OpaqueString` (case and inner/leading spaces preserved).
//!
//! Each part must be 1..=1023 bytes after normalisation.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use idna::uts46::{AsciiDenyList, Hyphens, Uts46};
use precis_profiles::precis_core::Error as PrecisError;
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// Maximum length in bytes of each normalised JID part (RFC 7622 §3.2–3.4).
pub const MAX_PART_LEN: usize = 1023;

/// Raw inputs longer than this are rejected before normalisation (cheap DoS guard).
const MAX_RAW_LEN: usize = 8 * MAX_PART_LEN;

/// Characters forbidden in a localpart on top of the PRECIS rules (RFC 7622 §3.3.1).
const FORBIDDEN_NODE_CHARS: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@'];

/// Error produced when a JID or one of its parts is invalid.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JidError {
    /// The domainpart is missing or empty.
    #[error("the domain part of the address is empty")]
    EmptyDomain,
    /// A localpart separator `@` is present but the localpart is empty.
    #[error("the user name (local part) of the address is empty")]
    EmptyNode,
    /// A resource separator `/` is present but the resourcepart is empty.
    #[error("the resource part of the address is empty")]
    EmptyResource,
    /// The localpart violates RFC 7622 §3.3.
    #[error("invalid user name (local part): {0}")]
    InvalidNode(String),
    /// The domainpart violates RFC 7622 §3.2.
    #[error("invalid domain: {0}")]
    InvalidDomain(String),
    /// The resourcepart violates RFC 7622 §3.4.
    #[error("invalid resource: {0}")]
    InvalidResource(String),
    /// The named part exceeds 1023 bytes.
    #[error("the {0} is longer than 1023 bytes")]
    TooLong(&'static str),
}

/// Describes a character for an error message without echoing raw control characters.
fn describe_char(c: char) -> String {
    if c.is_control() {
        format!("control character U+{:04X}", u32::from(c))
    } else {
        format!("character '{c}' (U+{:04X})", u32::from(c))
    }
}

/// Turns a PRECIS error into a user-facing reason.
fn precis_reason(e: &PrecisError) -> String {
    match e {
        PrecisError::BadCodepoint(info) => match char::from_u32(info.cp) {
            Some(c) => format!("{} is not allowed", describe_char(c)),
            None => format!("code point U+{:04X} is not allowed", info.cp),
        },
        PrecisError::Invalid => {
            "not allowed by the PRECIS rules (e.g. mixed text direction)".into()
        }
        PrecisError::Unexpected(u) => format!("rejected by the PRECIS rules ({u})"),
    }
}

/// Enforces a PRECIS profile and insists on a stable result, so canonical forms always re-parse.
///
/// precis-profiles validates the string class before case mapping (e.g. Cherokee `Ꭲ` maps to a
/// disallowed lower-case letter), so a second pass is needed to catch unstable outputs.
fn enforce_stable(
    s: &str,
    enforce: fn(&str) -> Result<Cow<'_, str>, PrecisError>,
) -> Result<String, PrecisError> {
    let once = enforce(s)?.into_owned();
    if enforce(&once)? == once.as_str() {
        Ok(once)
    } else {
        Err(PrecisError::Invalid)
    }
}

/// Rejects normalised parts that are empty or longer than [`MAX_PART_LEN`].
fn check_len(s: &str, what: &'static str, empty: JidError) -> Result<(), JidError> {
    match s.len() {
        0 => Err(empty),
        n if n > MAX_PART_LEN => Err(JidError::TooLong(what)),
        _ => Ok(()),
    }
}

/// Normalises and validates a localpart (user name) per RFC 7622 §3.3.
pub fn normalize_node(node: &str) -> Result<String, JidError> {
    if node.is_empty() {
        return Err(JidError::EmptyNode);
    }
    if node.len() > MAX_RAW_LEN {
        return Err(JidError::TooLong("user name (local part)"));
    }
    // Fast path: printable ASCII is PVALID in the IdentifierClass; enforcement only lower-cases.
    let out: Cow<'_, str> = if node.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Cow::Owned(node.to_ascii_lowercase())
    } else {
        Cow::Owned(
            enforce_stable(node, |s| UsernameCaseMapped::enforce(s))
                .map_err(|e| JidError::InvalidNode(precis_reason(&e)))?,
        )
    };
    if let Some(c) = out.chars().find(|c| FORBIDDEN_NODE_CHARS.contains(c)) {
        return Err(JidError::InvalidNode(format!(
            "{} is not allowed",
            describe_char(c)
        )));
    }
    check_len(&out, "user name (local part)", JidError::EmptyNode)?;
    Ok(out.into_owned())
}

/// Normalises and validates a domainpart per RFC 7622 §3.2 (result is lower-case Unicode).
pub fn normalize_domain(domain: &str) -> Result<String, JidError> {
    if domain.len() > MAX_RAW_LEN {
        return Err(JidError::TooLong("domain"));
    }
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    if let Some(inner) = trimmed.strip_prefix('[') {
        let ip = inner
            .strip_suffix(']')
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .ok_or_else(|| JidError::InvalidDomain("not a valid [IPv6] address literal".into()))?;
        return Ok(format!("[{ip}]"));
    }
    if let Ok(ip) = trimmed.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let is_ldh = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let bad_ascii = |s: &str| s.chars().find(|c| c.is_ascii() && !is_ldh(*c as u8));
    if let Some(c) = bad_ascii(trimmed) {
        let reason = format!("{} is not allowed", describe_char(c));
        return Err(JidError::InvalidDomain(reason));
    }
    let fast = trimmed.is_ascii()
        && !trimmed
            .split('.')
            .any(|l| l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")));
    let mut out: String = if fast {
        trimmed.to_ascii_lowercase()
    } else {
        let (cow, res) =
            Uts46::new().to_unicode(domain.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow);
        if res.is_err() {
            return Err(JidError::InvalidDomain(
                "not a valid (internationalised) domain name".into(),
            ));
        }
        cow.into_owned()
    };
    // UTS #46 maps ideographic full stops etc. to '.', so strip a trailing dot again here.
    if !fast && out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    if out.split('.').any(str::is_empty) {
        return Err(JidError::InvalidDomain("contains an empty label".into()));
    }
    // Defence in depth: UTS #46 mapping must not have produced separators such as '/' or '@'.
    if let Some(c) = bad_ascii(&out) {
        let reason = format!("{} is not allowed", describe_char(c));
        return Err(JidError::InvalidDomain(reason));
    }
    check_len(&out, "domain", JidError::EmptyDomain)?;
    Ok(out)
}

/// Normalises and validates a resourcepart per RFC 7622 §3.4 (PRECIS `OpaqueString`).
pub fn normalize_resource(resource: &str) -> Result<String, JidError> {
    if resource.is_empty() {
        return Err(JidError::EmptyResource);
    }
    if resource.len() > MAX_RAW_LEN {
        return Err(JidError::TooLong("resource"));
    }
    // Fast path: printable ASCII (incl. space) is PVALID in the FreeformClass and left unchanged.
    let out: Cow<'_, str> = if resource.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Cow::Borrowed(resource)
    } else {
        Cow::Owned(
            enforce_stable(resource, |s| OpaqueString::enforce(s))
                .map_err(|e| JidError::InvalidResource(precis_reason(&e)))?,
        )
    };
    check_len(&out, "resource", JidError::EmptyResource)?;
    Ok(out.into_owned())
}

/// A normalised XMPP address: `[node@]domain[/resource]`, cheap to clone and hash.
///
/// Equality, ordering and hashing are those of the canonical string (its parts follow from
/// it), so a map keyed by `Jid` can be searched with a borrowed `&str` such as
/// [`Jid::bare_str`], with no `Jid` built for the lookup.
#[derive(Clone)]
pub struct Jid {
    /// Canonical string form.
    full: Arc<str>,
    /// Length of the node in bytes; 0 means no node.
    node_len: u32,
    /// Byte index where the resource starts (after '/'); 0 means no resource.
    res_start: u32,
}

impl Jid {
    /// Parses and normalises a JID string (RFC 7622 §3.1 splitting rules).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (rest, resource) = match s.split_once('/') {
            Some((rest, res)) => (rest, Some(res)),
            None => (s, None),
        };
        let (node, domain) = match rest.split_once('@') {
            Some((node, domain)) => (Some(node), domain),
            None => (None, rest),
        };
        Jid::new(node, domain, resource)
    }

    /// Builds a JID from separate parts, normalising each of them.
    pub fn new(node: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Jid, JidError> {
        let node = node.map(normalize_node).transpose()?;
        let domain = normalize_domain(domain)?;
        let resource = resource.map(normalize_resource).transpose()?;
        Ok(Jid::from_normalized(
            node.as_deref(),
            &domain,
            resource.as_deref(),
        ))
    }

    /// Assembles a JID from parts that are already normalised.
    fn from_normalized(node: Option<&str>, domain: &str, resource: Option<&str>) -> Jid {
        let cap =
            node.map_or(0, |n| n.len() + 1) + domain.len() + resource.map_or(0, |r| r.len() + 1);
        let mut s = String::with_capacity(cap);
        if let Some(n) = node {
            s.push_str(n);
            s.push('@');
        }
        // Each part is at most 1023 bytes, so every offset fits comfortably in a u32.
        let node_len = node.map_or(0, str::len) as u32;
        s.push_str(domain);
        let mut res_start = 0;
        if let Some(r) = resource {
            s.push('/');
            res_start = s.len() as u32;
            s.push_str(r);
        }
        Jid {
            full: Arc::from(s),
            node_len,
            res_start,
        }
    }

    /// The normalised localpart, if any.
    pub fn node(&self) -> Option<&str> {
        match self.node_len {
            0 => None,
            n => self.full.get(..n as usize),
        }
    }

    /// The normalised domainpart (lower-case Unicode, or an IP literal).
    pub fn domain(&self) -> &str {
        let start = match self.node_len {
            0 => 0,
            n => n as usize + 1,
        };
        let end = match self.res_start {
            0 => self.full.len(),
            r => r as usize - 1,
        };
        self.full.get(start..end).unwrap_or_default()
    }

    /// The normalised resourcepart, if any.
    pub fn resource(&self) -> Option<&str> {
        match self.res_start {
            0 => None,
            r => self.full.get(r as usize..),
        }
    }

    /// The canonical string form (`node@domain/resource`).
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The canonical string of the bare JID (`node@domain`), borrowed: no allocation.
    pub fn bare_str(&self) -> &str {
        match self.res_start {
            0 => &self.full,
            r => self.full.get(..r as usize - 1).unwrap_or_default(),
        }
    }

    /// Returns this JID without its resource (a cheap clone if already bare).
    pub fn bare(&self) -> Jid {
        match self.res_start {
            0 => self.clone(),
            r => Jid {
                full: Arc::from(self.full.get(..r as usize - 1).unwrap_or_default()),
                node_len: self.node_len,
                res_start: 0,
            },
        }
    }

    /// True if the JID has no resourcepart.
    pub fn is_bare(&self) -> bool {
        self.res_start == 0
    }

    /// True if the JID has a resourcepart.
    pub fn is_full(&self) -> bool {
        !self.is_bare()
    }

    /// Returns the bare form of this JID with the given (normalised) resource attached.
    pub fn with_resource(&self, res: &str) -> Result<Jid, JidError> {
        let res = normalize_resource(res)?;
        Ok(Jid::from_normalized(self.node(), self.domain(), Some(&res)))
    }
}

// The canonical string determines the parts (a node holds no `@` or `/`, a domain no `/`),
// so comparing and hashing it alone agrees with comparing every field, and with `str`'s own
// `Eq`, `Ord` and `Hash`, as `Borrow<str>` requires.
impl PartialEq for Jid {
    fn eq(&self, other: &Jid) -> bool {
        self.full == other.full
    }
}

impl Eq for Jid {}

impl PartialOrd for Jid {
    fn partial_cmp(&self, other: &Jid) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Jid {
    fn cmp(&self, other: &Jid) -> std::cmp::Ordering {
        self.full.cmp(&other.full)
    }
}

impl std::hash::Hash for Jid {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for Jid {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Jid").field(&&*self.full).finish()
    }
}

impl FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Jid::parse(s)
    }
}

impl TryFrom<&str> for Jid {
    type Error = JidError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Jid::parse(s)
    }
}

impl serde::Serialize for Jid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Jid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        Jid::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn rfc7622_valid_examples() {
        // (input, node, domain, resource); "" means absent.
        let cases = [
            ("juliet@example.com", "juliet", "example.com", ""),
            ("juliet@example.com/foo", "juliet", "example.com", "foo"),
            (
                "juliet@example.com/foo bar",
                "juliet",
                "example.com",
                "foo bar",
            ),
            (
                "juliet@example.com/foo@bar",
                "juliet",
                "example.com",
                "foo@bar",
            ),
            ("foo\\20bar@example.com", "foo\\20bar", "example.com", ""),
            ("fussball@example.com", "fussball", "example.com", ""),
            ("fußball@example.com", "fußball", "example.com", ""),
            ("π@example.com", "π", "example.com", ""),
            ("Σ@example.com/foo", "σ", "example.com", "foo"),
            ("σ@example.com/foo", "σ", "example.com", "foo"),
            ("ς@example.com/foo", "ς", "example.com", "foo"),
            ("king@example.com/♚", "king", "example.com", "♚"),
            ("example.com", "", "example.com", ""),
            ("example.com/foobar", "", "example.com", "foobar"),
            (
                "a.example.com/b@example.net",
                "",
                "a.example.com",
                "b@example.net",
            ),
            ("a@b.c/d/e@f", "a", "b.c", "d/e@f"),
            // Listed as invalid in RFC 7622 §3.5, but OpaqueString permits spaces (as do others).
            ("juliet@example.com/ foo", "juliet", "example.com", " foo"),
        ];
        let opt = |s: &'static str| (!s.is_empty()).then_some(s);
        for (input, node, domain, res) in cases {
            let jid = j(input);
            assert_eq!(jid.node(), opt(node), "{input}");
            assert_eq!(jid.domain(), domain, "{input}");
            assert_eq!(jid.resource(), opt(res), "{input}");
            assert_eq!(jid.is_full(), !res.is_empty());
            assert_eq!(j(&jid.to_string()), jid, "round trip {input}");
        }
        assert_ne!(j("fussball@example.com"), j("fußball@example.com"));
    }

    #[test]
    fn rfc7622_invalid_examples() {
        let cases: &[(&str, JidError)] = &[
            ("@example.com", JidError::EmptyNode),
            ("@example.com/", JidError::EmptyNode),
            ("example.com/", JidError::EmptyResource),
            ("juliet@", JidError::EmptyDomain),
            ("/foobar", JidError::EmptyDomain),
            ("", JidError::EmptyDomain),
            (".", JidError::EmptyDomain),
        ];
        for (input, err) in cases {
            assert_eq!(Jid::parse(input).as_ref(), Err(err), "{input:?}");
        }
        #[rustfmt::skip]
        let invalid = [
            "juliet@@example.com", "\"juliet\"@example.com", "foo bar@example.com",
            "henry\u{2163}@example.com", "♚@example.com", "a&b@example.com", "a:b@example.com",
            "a<b>@example.com", "a\u{0}@example.com", "a\u{7}b@example.com", "\u{202E}x@example.com",
            "juliet@example.com/a\u{1}b", "juliet@example.com/a\nb", "juliet@exa mple.com",
            "juliet@example..com", "juliet@.example.com", "juliet@example.com..", "juliet@exa_mple.com",
            "juliet@[::1", "juliet@[not-ip]", "juliet@xn--a.com", "juliet@a\u{FF0F}b.com",
            "juliet@a\u{FF20}b.com", "a\u{FF20}b@example.com",
        ];
        for input in invalid {
            assert!(Jid::parse(input).is_err(), "{input:?} should be rejected");
        }
    }

    #[test]
    fn error_messages_are_readable() {
        let e = Jid::parse("bad user@localhost").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid user name (local part): character ' ' (U+0020) is not allowed"
        );
        let e = normalize_node("a\u{7}").unwrap_err();
        assert!(e.to_string().contains("control character U+0007"), "{e}");
        assert_eq!(
            normalize_domain("exa_mple.com").unwrap_err().to_string(),
            "invalid domain: character '_' (U+005F) is not allowed"
        );
        assert_eq!(
            normalize_node("x@y").unwrap_err(),
            JidError::InvalidNode("character '@' (U+0040) is not allowed".into())
        );
    }

    #[test]
    fn case_and_domain_normalisation() {
        assert_eq!(j("Juliet@Example.COM"), j("juliet@example.com"));
        assert_eq!(j("Juliet@Example.COM").as_str(), "juliet@example.com");
        assert_eq!(j("juliet@example.com/Foo").resource(), Some("Foo"));
        assert_ne!(j("juliet@example.com/Foo"), j("juliet@example.com/foo"));
        assert_eq!(j("juliet@example.com."), j("juliet@example.com"));
        assert_eq!(j("example.com./r").as_str(), "example.com/r");
        assert_eq!(j("x@BÜCHER.example").domain(), "bücher.example");
        assert_eq!(j("x@xn--bcher-kva.example"), j("x@bücher.example"));
        assert_eq!(j("x@bücher。example。").domain(), "bücher.example");
        assert_eq!(j("Ａｌｉｃｅ@example.com").node(), Some("alice"));
        assert_eq!(j("x@example.com/\u{2000}a").resource(), Some(" a"));
    }

    #[test]
    fn ip_literals() {
        assert_eq!(j("[::1]").domain(), "[::1]");
        assert_eq!(j("u@[0:0::0:1]/r").as_str(), "u@[::1]/r");
        assert_eq!(j("u@127.0.0.1").domain(), "127.0.0.1");
        assert_eq!(j("u@127.0.0.1.").domain(), "127.0.0.1");
    }

    #[test]
    fn length_limits() {
        let max = "a".repeat(MAX_PART_LEN);
        let over = "a".repeat(MAX_PART_LEN + 1);
        assert!(Jid::new(Some(&max), "example.com", Some(&max)).is_ok());
        assert_eq!(
            normalize_node(&over),
            Err(JidError::TooLong("user name (local part)"))
        );
        assert_eq!(
            normalize_resource(&over),
            Err(JidError::TooLong("resource"))
        );
        let long_domain = vec!["a".repeat(63); 16].join(".");
        assert_eq!(long_domain.len(), MAX_PART_LEN);
        assert!(normalize_domain(&long_domain).is_ok());
        assert_eq!(
            normalize_domain(&format!("{long_domain}a")),
            Err(JidError::TooLong("domain"))
        );
        // Huge and multi-byte inputs must be rejected without panicking.
        assert!(Jid::parse(&"é".repeat(100_000)).is_err());
        assert!(Jid::parse(&format!("{}@x/{}", "π".repeat(600), "♚".repeat(400))).is_err());
        assert!(normalize_resource(&"\u{00AD}".repeat(2000)).is_err());
    }

    #[test]
    fn ascii_fast_paths_match_precis() {
        for b in 0x20u8..=0x7e {
            let s = format!("a{}B", b as char);
            let slow = UsernameCaseMapped::enforce(s.as_str()).ok();
            let fast = normalize_node(&s).ok();
            if !s.contains(FORBIDDEN_NODE_CHARS) {
                assert_eq!(fast.as_deref(), slow.as_deref(), "{s:?}");
            }
            let slow = OpaqueString::enforce(s.as_str()).ok();
            assert_eq!(
                normalize_resource(&s).ok().as_deref(),
                slow.as_deref(),
                "{s:?}"
            );
        }
        for d in ["Example.COM", "a-b.c", "1.2.3", "-x-.y", "ab--cd.e"] {
            let (slow, res) =
                Uts46::new().to_unicode(d.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow);
            assert!(res.is_ok());
            assert_eq!(normalize_domain(d).ok().as_deref(), Some(&*slow), "{d}");
        }
    }

    #[test]
    fn bare_and_with_resource() {
        let full = j("Juliet@example.com/balcony");
        let bare = full.bare();
        assert_eq!(bare.as_str(), "juliet@example.com");
        assert!(bare.is_bare() && !bare.is_full());
        assert_eq!(bare.node(), Some("juliet"));
        assert_eq!(bare.domain(), "example.com");
        assert_eq!(bare.bare(), bare);
        assert_eq!(bare.with_resource("balcony"), Ok(full.clone()));
        assert_eq!(
            full.with_resource("x/y")
                .map(|j| j.to_string())
                .ok()
                .as_deref(),
            Some("juliet@example.com/x/y")
        );
        assert_eq!(bare.with_resource(""), Err(JidError::EmptyResource));
        let domain = j("example.com/r");
        assert_eq!(domain.bare().as_str(), "example.com");
        assert_eq!(domain.node(), None);
        assert_eq!(format!("{full:?}"), "Jid(\"juliet@example.com/balcony\")");
        assert_eq!("a@b".parse::<Jid>(), Ok(j("a@b")));
    }

    #[test]
    fn the_bare_string_is_borrowed_and_finds_the_bare_key_of_a_map() {
        let full = j("Juliet@example.com/balcony@x/y");
        assert_eq!(full.bare_str(), "juliet@example.com");
        assert_eq!(j("example.com/r").bare_str(), "example.com");
        assert_eq!(j("a@b").bare_str(), "a@b");
        let mut map = std::collections::HashMap::new();
        map.insert(full.bare(), 1);
        map.insert(j("example.com"), 2);
        assert_eq!(map.get(full.bare_str()), Some(&1));
        assert_eq!(map.get(j("example.com/balcony").bare_str()), Some(&2));
        assert_eq!(map.get("romeo@example.com"), None);
        // Equality and order are the canonical string's.
        assert_eq!(
            full.bare().cmp(&j("juliet@example.com")),
            std::cmp::Ordering::Equal
        );
        assert!(j("a@b") < j("a@b/r") && j("a@b/r") < j("b@a"));
    }

    #[test]
    fn serde_round_trip() {
        let jid = j("Σ@Example.com/Res");
        let json = serde_json::to_string(&jid).unwrap();
        assert_eq!(json, "\"σ@example.com/Res\"");
        assert_eq!(serde_json::from_str::<Jid>(&json).unwrap(), jid);
        assert!(serde_json::from_str::<Jid>("\"@x\"").is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        #[rustfmt::skip]
        let samples = [
            "\u{0}", "@", "/", "@/", "a@/", "[", "[]", "]", "@@@", "\u{FFFD}", "\u{10FFFF}@x",
            "x@\u{10FFFF}", "x@xn--", "x@xn--.com", "\u{200D}@x", "x@\u{200D}", "x@\u{3002}",
        ];
        for s in samples {
            let _ = Jid::parse(s);
        }
        for c in (0u32..0x3000).step_by(7).filter_map(char::from_u32) {
            let s = format!("{c}@{c}.example/{c}");
            if let Ok(jid) = Jid::parse(&s) {
                assert_eq!(j(jid.as_str()), jid, "idempotent for U+{:04X}", c as u32);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Characters JIDs are made of, the separators and the troublemakers among them.
        const ALPHABET: &str = "[a-zA-Z0-9@/.\\-_ '\"&<>\\[\\]:%+ßΣσİıﬁ東京🐦\u{200B}\u{200D}\u{3002}\u{FF0E}\u{0}\u{7F}\u{FFFD}]";

        proptest! {
            #[test]
            fn arbitrary_strings_never_panic_and_parsed_jids_round_trip(
                s in prop_oneof![any::<String>(), proptest::string::string_regex(&format!("{ALPHABET}{{0,40}}")).expect("regex")],
            ) {
                if let Ok(jid) = Jid::parse(&s) {
                    let again = Jid::parse(&jid.to_string());
                    prop_assert_eq!(again.as_ref(), Ok(&jid), "{:?}", s);
                }
            }

            #[test]
            fn parse_after_display_is_the_identity_on_valid_jids(
                node in proptest::option::of("[a-z0-9ßσ東\\-_.+]{1,20}"),
                labels in prop::collection::vec("[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,5})?", 1..4),
                resource in proptest::option::of("[a-zA-Z0-9][a-zA-Z0-9 @/.ßΣ東🐦:\\-]{0,29}"),
            ) {
                let domain = labels.join(".");
                let built = Jid::new(node.as_deref(), &domain, resource.as_deref());
                prop_assert!(built.is_ok(), "{:?} {:?} {:?}: {:?}", node, domain, resource, built);
                let jid = built.expect("checked");
                let shown = jid.to_string();
                let parsed = Jid::parse(&shown);
                prop_assert_eq!(parsed.as_ref(), Ok(&jid), "{}", shown);
                prop_assert_eq!(jid.node(), node.as_deref());
                prop_assert_eq!(jid.domain(), domain.as_str());
                prop_assert_eq!(jid.resource(), resource.as_deref());
            }
        }
    }
}
