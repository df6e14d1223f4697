//! SASL framing helpers shared by all mechanisms (RFC 6120 §6, RFC 4616).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::scram::ScramHash;

/// Maximum length in bytes of each PLAIN field.
const PLAIN_MAX_FIELD: usize = 255;

/// A SASL mechanism supported by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM-SHA-256-PLUS (RFC 7677, with channel binding); offered only with a binding.
    ScramSha256Plus,
    /// SCRAM-SHA-1-PLUS (RFC 5802, with channel binding); offered only with a binding.
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// PLAIN (RFC 4616); only offer over TLS.
    Plain,
}

impl Mechanism {
    /// All mechanisms in server preference order.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA-registered mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Looks up a mechanism by its exact (case-sensitive) name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a channel-binding (`-PLUS`) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The `-PLUS` variant of a SCRAM mechanism.
    pub fn plus(self) -> Option<Self> {
        match self {
            Mechanism::ScramSha256 => Some(Mechanism::ScramSha256Plus),
            Mechanism::ScramSha1 => Some(Mechanism::ScramSha1Plus),
            _ => None,
        }
    }

    /// The SCRAM hash used by this mechanism, if it is a SCRAM mechanism.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

/// A SASL failure, mapped onto the RFC 6120 §6.5 defined conditions.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The client aborted the exchange.
    #[error("authentication aborted")]
    Aborted,
    /// The account is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// The credentials have expired.
    #[error("credentials expired")]
    CredentialsExpired,
    /// The mechanism requires an encrypted stream.
    #[error("encryption required")]
    EncryptionRequired,
    /// The payload was not valid base64.
    #[error("incorrect base64 encoding")]
    IncorrectEncoding,
    /// The requested authorization identity is not allowed.
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// The mechanism is unknown or not offered.
    #[error("invalid mechanism")]
    InvalidMechanism,
    /// The mechanism message could not be parsed.
    #[error("malformed SASL request")]
    MalformedRequest,
    /// The mechanism is weaker than policy allows.
    #[error("mechanism too weak")]
    MechanismTooWeak,
    /// Authentication failed (wrong credentials, unknown user, tampering).
    #[error("not authorized")]
    NotAuthorized,
    /// A transient server-side failure.
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
    /// The server requires SASL2 with a client id (`enforce_client_ids`).
    #[error("a SASL2 client id is required")]
    ClientIdRequired,
}

impl SaslError {
    /// The RFC 6120 §6.5 failure element name for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::Aborted => "aborted",
            SaslError::AccountDisabled => "account-disabled",
            SaslError::CredentialsExpired => "credentials-expired",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::IncorrectEncoding => "incorrect-encoding",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::MalformedRequest => "malformed-request",
            SaslError::MechanismTooWeak => "mechanism-too-weak",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
            SaslError::ClientIdRequired => "not-authorized",
        }
    }

    /// A human-readable `<text/>` for the failure, where the condition alone is unclear.
    pub fn text(&self) -> Option<&'static str> {
        match self {
            SaslError::ClientIdRequired => {
                Some("this server only admits clients that authenticate with SASL2 and a client id")
            }
            _ => None,
        }
    }
}

/// Decoded SASL PLAIN message; `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// Requested authorization identity (None when empty).
    pub authzid: Option<String>,
    /// Authentication identity (raw, not normalised).
    pub authcid: String,
    /// The cleartext password.
    pub password: String,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses an RFC 4616 PLAIN message: `[authzid] NUL authcid NUL passwd`.
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedRequest);
    };
    let field = |b: &[u8]| -> Result<String, SaslError> {
        if b.len() > PLAIN_MAX_FIELD {
            return Err(SaslError::MalformedRequest);
        }
        String::from_utf8(b.to_vec()).map_err(|_| SaslError::MalformedRequest)
    };
    let authzid = field(authzid)?;
    let authcid = field(authcid)?;
    let password = field(password)?;
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then_some(authzid),
        authcid,
        password,
    })
}

/// Decodes an XMPP SASL payload; `=` is the empty response and `""` also decodes to empty.
pub fn decode_b64(payload: &str) -> Result<Vec<u8>, SaslError> {
    if payload == "=" {
        return Ok(Vec::new());
    }
    STANDARD
        .decode(payload)
        .map_err(|_| SaslError::IncorrectEncoding)
}

/// Encodes a SASL payload as standard padded base64 (`=` for an empty payload).
pub fn encode_b64(data: &[u8]) -> String {
    if data.is_empty() {
        return "=".to_owned();
    }
    STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::ALL[0], Mechanism::ScramSha256Plus);
        assert_eq!(Mechanism::ScramSha1.plus(), Some(Mechanism::ScramSha1Plus));
        assert!(Mechanism::ScramSha1Plus.is_plus() && !Mechanism::Plain.is_plus());
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::Plain.scram_hash(), None);
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(
            SaslError::TemporaryAuthFailure.condition(),
            "temporary-auth-failure"
        );
    }

    #[test]
    fn plain_ok() {
        let p = parse_plain(b"\0juliet\0r0m30").unwrap();
        assert_eq!(p.authzid, None);
        assert_eq!(p.authcid, "juliet");
        assert_eq!(p.password, "r0m30");
        let p = parse_plain("admin@x\0jüliet\0pässword".as_bytes()).unwrap();
        assert_eq!(p.authzid.as_deref(), Some("admin@x"));
        assert_eq!(p.authcid, "jüliet");
        assert!(!format!("{p:?}").contains("pässword"));
    }

    #[test]
    fn plain_malformed() {
        let long = [b"\0".as_slice(), &[b'a'; 256], b"\0pw"].concat();
        for bad in [
            b"".as_slice(),
            b"juliet",
            b"\0juliet",
            b"\0juliet\0",
            b"\0\0pw",
            b"a\0b\0c\0d",
            b"\0j\xffx\0pw",
            &long,
        ] {
            assert_eq!(
                parse_plain(bad),
                Err(SaslError::MalformedRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn base64() {
        assert_eq!(decode_b64("=").unwrap(), b"");
        assert_eq!(decode_b64("").unwrap(), b"");
        assert_eq!(
            decode_b64("AGp1bGlldAByMG0zMA==").unwrap(),
            b"\0juliet\0r0m30"
        );
        for bad in [
            "AGp1 bGll",
            "AGp1bGll\n",
            "!!!!",
            "AGp1bGlldAByMG0zMA",
            "==",
        ] {
            assert_eq!(decode_b64(bad), Err(SaslError::IncorrectEncoding), "{bad}");
        }
        assert_eq!(encode_b64(b""), "=");
        assert_eq!(encode_b64(b"\0juliet\0r0m30"), "AGp1bGlldAByMG0zMA==");
    }
}
