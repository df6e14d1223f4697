//! Sans-IO SCRAM (RFC 5802, RFC 7677) server and client, with optional channel binding and
//! the XEP-0474 downgrade-protection attribute.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::credentials::{DEFAULT_ITERATIONS, ScramKeys};
use super::sasl::SaslError;

/// Number of random bytes in a generated nonce (before base64).
const NONCE_BYTES: usize = 24;

/// Hash function underlying a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    /// SHA-1 (SCRAM-SHA-1).
    Sha1,
    /// SHA-256 (SCRAM-SHA-256).
    Sha256,
}

/// HMAC with any key length; an (impossible) key error yields an empty tag, which never verifies.
fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism_name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Digest output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => mac::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => mac::<Hmac<Sha256>>(key, data),
        }
    }

    /// H(data).
    pub fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i) = PBKDF2-HMAC(password, salt, i, output_len).
    pub fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        let res = match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, iterations, &mut out)
            }
        };
        if res.is_err() {
            out.clear();
        }
        out
    }
}

/// Fresh printable nonce: base64 of 24 random bytes (never contains ',').
fn random_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; NONCE_BYTES]>())
}

/// Escapes a username into a SCRAM saslname (`,` → `=2C`, `=` → `=3D`).
fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Decodes a saslname; any `=` escape other than `=2C`/`=3D` or an empty name is malformed.
fn unescape_saslname(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(SaslError::MalformedRequest);
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    Ok(out)
}

/// Returns the value of attribute `name` (`name=value`) or a malformed-request error.
fn attr(part: Option<&str>, name: char) -> Result<&str, SaslError> {
    let part = part.ok_or(SaslError::MalformedRequest)?;
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some('=')) if c == name => Ok(chars.as_str()),
        _ => Err(SaslError::MalformedRequest),
    }
}

/// Checks a nonce is non-empty printable ASCII without ','.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Strict base64 decode of an attribute value.
fn b64(s: &str) -> Result<Vec<u8>, SaslError> {
    STANDARD.decode(s).map_err(|_| SaslError::MalformedRequest)
}

/// XOR of two equal-length byte strings.
fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Fake, stable-per-username salt for unknown users (keyed by a per-process secret).
fn fake_salt(username: &str) -> Vec<u8> {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    let mut salt = ScramHash::Sha256.hmac(secret, username.as_bytes());
    salt.truncate(16);
    salt
}

/// Identity data extracted from a client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// Authentication identity, unescaped but not normalised.
    pub username: String,
    /// Requested authorization identity, if any.
    pub authzid: Option<String>,
}

/// RFC 9266 `tls-exporter`: keying material exported from a TLS 1.3 connection.
pub const TLS_EXPORTER: &str = "tls-exporter";
/// RFC 5929 §4 `tls-server-end-point`: a hash of the server's end-entity certificate.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";
/// RFC 5929 §3 `tls-unique`: the first Finished message of a TLS 1.2 (or older) connection.
/// TLS 1.3 has no such value and rustls does not expose it for TLS 1.2, so it is never offered.
pub const TLS_UNIQUE: &str = "tls-unique";

/// A channel binding the server can verify (RFC 5929 / RFC 9266): its type name and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBinding {
    /// The type, e.g. `tls-exporter`.
    pub kind: String,
    /// The binding data of this connection.
    pub data: Vec<u8>,
}

/// Server exchange state.
#[derive(Debug)]
enum ServerState {
    Initial,
    GotFirst {
        cbind: Vec<u8>,
        bare: String,
        client_nonce: String,
        username: String,
    },
    SentFirst {
        cbind: Vec<u8>,
        auth_prefix: String,
        nonce: String,
        keys: Option<(Vec<u8>, Vec<u8>)>,
    },
    Done,
}

/// Server side of one SCRAM exchange.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    server_nonce: String,
    state: ServerState,
    /// Whether the mechanism is a `-PLUS` one (channel binding required).
    plus: bool,
    /// The connection's channel bindings the server offers (any one may be chosen).
    bindings: Vec<ChannelBinding>,
    /// The XEP-0474 hash of what was offered, sent as `h` in the server-first-message.
    downgrade_hash: Option<String>,
}

impl ScramServer {
    /// Starts a server exchange with a fresh random server nonce.
    pub fn new(hash: ScramHash) -> Self {
        Self::with_nonce(hash, random_nonce())
    }

    /// Starts a server exchange with a fixed server nonce (used by tests).
    fn with_nonce(hash: ScramHash, server_nonce: String) -> Self {
        Self {
            hash,
            server_nonce,
            state: ServerState::Initial,
            plus: false,
            bindings: Vec::new(),
            downgrade_hash: None,
        }
    }

    /// A server exchange for the `-PLUS` variant when `plus` (which then requires the client to
    /// bind to one of `bindings`, the connection's channel bindings, by naming its type).
    pub fn with_binding(hash: ScramHash, plus: bool, bindings: Vec<ChannelBinding>) -> Self {
        Self {
            plus,
            bindings,
            ..Self::new(hash)
        }
    }

    /// The same exchange announcing `hash` (see [`super::ssdp::downgrade_hash`]) as the
    /// XEP-0474 `h` attribute of its server-first-message.
    pub fn with_downgrade_hash(mut self, hash: String) -> Self {
        self.downgrade_hash = Some(hash);
        self
    }

    /// Parses the client-first-message and returns the identities to look up.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslError> {
        let state = std::mem::replace(&mut self.state, ServerState::Done);
        if !matches!(state, ServerState::Initial) {
            return Err(SaslError::MalformedRequest);
        }
        let msg = std::str::from_utf8(msg).map_err(|_| SaslError::MalformedRequest)?;
        let mut it = msg.splitn(3, ',');
        let (Some(flag), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return Err(SaslError::MalformedRequest);
        };
        let gs2_header = &msg[..flag.len() + authz.len() + 2];
        let mut cbind = gs2_header.as_bytes().to_vec();
        let chosen = flag
            .strip_prefix("p=")
            .and_then(|kind| self.bindings.iter().find(|b| b.kind == kind));
        match (flag, self.plus, chosen) {
            // `y` ("I could bind, you offered no -PLUS") is accepted even when we offer a
            // binding: RFC 5802 §6 would fail it as a stripped list, but clients send `y`
            // without being able to bind (tokio-xmpp's default, which the tests use).
            ("n" | "y", false, _) => {}
            (_, true, Some(b)) => cbind.extend_from_slice(&b.data),
            _ => return Err(SaslError::MalformedRequest),
        }
        let authzid = match authz {
            "" => None,
            a => Some(unescape_saslname(attr(Some(a), 'a')?)?),
        };
        let mut parts = bare.split(',');
        let username = unescape_saslname(attr(parts.next(), 'n')?)?;
        let client_nonce = attr(parts.next(), 'r')?;
        if !valid_nonce(client_nonce) {
            return Err(SaslError::MalformedRequest);
        }
        // Optional extensions are ignored (any "m=" would have failed the n= check).
        self.state = ServerState::GotFirst {
            cbind,
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
            username: username.clone(),
        };
        Ok(ClientFirst { username, authzid })
    }

    /// Builds the server-first-message; pass `None` for unknown users to fail later, indistinguishably.
    ///
    /// Called out of order it returns an empty message and the exchange fails.
    pub fn server_first(&mut self, keys: Option<&ScramKeys>) -> Vec<u8> {
        let state = std::mem::replace(&mut self.state, ServerState::Done);
        let ServerState::GotFirst {
            cbind,
            bare,
            client_nonce,
            username,
        } = state
        else {
            return Vec::new();
        };
        let len = self.hash.output_len();
        let keys = keys
            .filter(|k| k.iterations > 0 && k.stored_key.len() == len && k.server_key.len() == len);
        let (salt, iterations) = match keys {
            Some(k) => (k.salt.clone(), k.iterations),
            None => (fake_salt(&username), DEFAULT_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let mut server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(&salt));
        if let Some(h) = &self.downgrade_hash {
            server_first.push_str(",h=");
            server_first.push_str(h);
        }
        self.state = ServerState::SentFirst {
            cbind,
            auth_prefix: format!("{bare},{server_first},"),
            nonce,
            keys: keys.map(|k| (k.stored_key.clone(), k.server_key.clone())),
        };
        server_first.into_bytes()
    }

    /// Verifies the client-final-message and returns the server-final-message (`v=...`).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let state = std::mem::replace(&mut self.state, ServerState::Done);
        let ServerState::SentFirst {
            cbind: expected,
            auth_prefix,
            nonce,
            keys,
        } = state
        else {
            return Err(SaslError::MalformedRequest);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| SaslError::MalformedRequest)?;
        let (without_proof, proof) = msg.rsplit_once(',').ok_or(SaslError::MalformedRequest)?;
        let proof = b64(attr(Some(proof), 'p')?)?;
        let mut parts = without_proof.split(',');
        let cbind = b64(attr(parts.next(), 'c')?)?;
        let client_nonce = attr(parts.next(), 'r')?;
        if cbind.ct_eq(&expected).unwrap_u8() != 1
            || client_nonce.as_bytes().ct_eq(nonce.as_bytes()).unwrap_u8() != 1
        {
            return Err(SaslError::NotAuthorized);
        }
        let Some((stored_key, server_key)) = keys else {
            return Err(SaslError::NotAuthorized);
        };
        if proof.len() != self.hash.output_len() {
            return Err(SaslError::NotAuthorized);
        }
        let auth_message = format!("{auth_prefix}{without_proof}");
        let client_signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if self.hash.h(&client_key).ct_eq(&stored_key).unwrap_u8() != 1 {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// Client exchange state.
#[derive(Debug)]
enum ClientState {
    Initial,
    SentFirst { bare: String },
    SentFinal { server_signature: Vec<u8> },
    Done,
}

/// Client side of one SCRAM exchange (no channel binding, gs2 header `n,,`).
pub struct ScramClient {
    hash: ScramHash,
    username: String,
    password: String,
    nonce: String,
    state: ClientState,
    binding: Option<ChannelBinding>,
    /// The XEP-0474 hash the client computed from what it saw offered, if it checks one.
    downgrade_hash: Option<String>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("username", &self.username)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts a client exchange with a fresh random nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Self {
        Self::with_nonce(hash, username, password, random_nonce())
    }

    /// Starts a client exchange with a fixed nonce (used by tests).
    fn with_nonce(hash: ScramHash, username: &str, password: &str, nonce: String) -> Self {
        Self {
            hash,
            username: username.to_owned(),
            password: password.to_owned(),
            nonce,
            state: ClientState::Initial,
            binding: None,
            downgrade_hash: None,
        }
    }

    /// The same client binding the exchange to `binding` (the `-PLUS` mechanisms).
    pub fn with_channel_binding(mut self, binding: ChannelBinding) -> Self {
        self.binding = Some(binding);
        self
    }

    /// The same client requiring the server-first-message's XEP-0474 `h` attribute to equal
    /// `hash` (computed from the lists it saw offered); otherwise the exchange fails.
    pub fn expect_downgrade_hash(mut self, hash: String) -> Self {
        self.downgrade_hash = Some(hash);
        self
    }

    fn gs2_header(&self) -> String {
        match &self.binding {
            Some(b) => format!("p={},,", b.kind),
            None => "n,,".into(),
        }
    }

    /// Produces the client-first-message.
    pub fn client_first(&mut self) -> Vec<u8> {
        let bare = format!("n={},r={}", escape_saslname(&self.username), self.nonce);
        let msg = format!("{}{bare}", self.gs2_header());
        self.state = ClientState::SentFirst { bare };
        msg.into_bytes()
    }

    /// Processes the server-first-message and produces the client-final-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let state = std::mem::replace(&mut self.state, ClientState::Done);
        let ClientState::SentFirst { bare } = state else {
            return Err(SaslError::MalformedRequest);
        };
        let sf = std::str::from_utf8(server_first).map_err(|_| SaslError::MalformedRequest)?;
        let mut parts = sf.split(',');
        let nonce = attr(parts.next(), 'r')?;
        let salt = b64(attr(parts.next(), 's')?)?;
        let iterations: u32 = attr(parts.next(), 'i')?
            .parse()
            .map_err(|_| SaslError::MalformedRequest)?;
        if !valid_nonce(nonce)
            || nonce.len() <= self.nonce.len()
            || !nonce.starts_with(&self.nonce)
            || iterations == 0
        {
            return Err(SaslError::MalformedRequest);
        }
        if let Some(expected) = &self.downgrade_hash {
            let sent = parts.find_map(|p| p.strip_prefix("h="));
            // Public data (both sides hash what was on the wire): no constant-time compare.
            if sent != Some(expected.as_str()) {
                return Err(SaslError::NotAuthorized);
            }
        }
        let h = self.hash;
        let salted = h.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.h(&client_key);
        let mut cbind = self.gs2_header().into_bytes();
        if let Some(b) = &self.binding {
            cbind.extend_from_slice(&b.data);
        }
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
        let auth_message = format!("{bare},{sf},{without_proof}");
        let proof = xor(&client_key, &h.hmac(&stored_key, auth_message.as_bytes()));
        let server_key = h.hmac(&salted, b"Server Key");
        self.state = ClientState::SentFinal {
            server_signature: h.hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message proves the server knows our credentials.
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), SaslError> {
        let ClientState::SentFinal { server_signature } = &self.state else {
            return Err(SaslError::MalformedRequest);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| SaslError::MalformedRequest)?;
        if msg.starts_with("e=") {
            return Err(SaslError::NotAuthorized);
        }
        let sig = b64(attr(msg.split(',').next(), 'v')?)?;
        if sig.ct_eq(server_signature).unwrap_u8() == 1 {
            Ok(())
        } else {
            Err(SaslError::NotAuthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SaslError::{MalformedRequest as Malformed, NotAuthorized as NotAuth};

    fn exporter(data: &[u8]) -> ChannelBinding {
        ChannelBinding {
            kind: "tls-exporter".into(),
            data: data.to_vec(),
        }
    }

    /// One exchange of `client` against a PLUS (or not) server with `server_cb`.
    fn bound_exchange(
        mut client: ScramClient,
        plus: bool,
        server_cb: Option<ChannelBinding>,
    ) -> Result<(), SaslError> {
        let keys = ScramKeys::derive(ScramHash::Sha256, b"pw", b"saltsaltsalt", 4096);
        let mut server =
            ScramServer::with_binding(ScramHash::Sha256, plus, server_cb.into_iter().collect());
        server.client_first(&client.client_first())?;
        let sf = server.server_first(Some(&keys));
        let fin = client.client_final(&sf)?;
        let v = server.client_final(&fin)?;
        client.verify_server_final(&v)
    }

    #[test]
    fn plus_mechanisms_verify_the_channel_binding() {
        let c = || ScramClient::new(ScramHash::Sha256, "alice", "pw");
        let cb = exporter(b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            bound_exchange(c().with_channel_binding(cb.clone()), true, Some(cb.clone())),
            Ok(())
        );
        // Another connection's binding (a relayed exchange) fails.
        assert_eq!(
            bound_exchange(
                c().with_channel_binding(exporter(b"another connection's exporter..")),
                true,
                Some(cb.clone())
            ),
            Err(NotAuth)
        );
        // -PLUS without binding, a binding without -PLUS, or an unknown type: malformed.
        assert_eq!(bound_exchange(c(), true, Some(cb.clone())), Err(Malformed));
        assert_eq!(
            bound_exchange(
                c().with_channel_binding(cb.clone()),
                false,
                Some(cb.clone())
            ),
            Err(Malformed)
        );
        let other = ChannelBinding {
            kind: "tls-unique".into(),
            data: cb.data.clone(),
        };
        assert_eq!(
            bound_exchange(c().with_channel_binding(other), true, Some(cb.clone())),
            Err(Malformed)
        );
        // The plain mechanism still works on a connection that offers a binding.
        assert_eq!(bound_exchange(c(), false, Some(cb)), Ok(()));
    }

    #[test]
    fn the_client_picks_any_offered_binding_by_its_type() {
        let keys = ScramKeys::derive(ScramHash::Sha256, b"pw", b"saltsaltsalt", 4096);
        let end_point = ChannelBinding {
            kind: TLS_SERVER_END_POINT.into(),
            data: vec![9u8; 32],
        };
        let offered = vec![exporter(&[1u8; 32]), end_point.clone()];
        let run = |cb: ChannelBinding| {
            let mut client =
                ScramClient::new(ScramHash::Sha256, "alice", "pw").with_channel_binding(cb);
            let mut server = ScramServer::with_binding(ScramHash::Sha256, true, offered.clone());
            server.client_first(&client.client_first())?;
            let fin = client.client_final(&server.server_first(Some(&keys)))?;
            let v = server.client_final(&fin)?;
            client.verify_server_final(&v)
        };
        for cb in &offered {
            assert_eq!(run(cb.clone()), Ok(()), "{}", cb.kind);
        }
        // The end-point type with another certificate's hash (a relay with its own cert).
        let relayed = ChannelBinding {
            data: vec![8u8; 32],
            ..end_point
        };
        assert_eq!(run(relayed), Err(NotAuth));
        let unique = ChannelBinding {
            kind: TLS_UNIQUE.into(),
            data: vec![1u8; 12],
        };
        assert_eq!(run(unique), Err(Malformed));
    }

    /// (hash, client nonce, server nonce, salt b64, client-first, server-first, client-final, server-final)
    type Vector = (
        ScramHash,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );

    const RFC: [Vector; 2] = [
        (
            ScramHash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "QSXCR+Q6sek8bf92",
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        (
            ScramHash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ];

    fn keys(hash: ScramHash, pw: &str) -> ScramKeys {
        ScramKeys::derive(hash, pw.as_bytes(), b"0123456789abcdef", 4096)
    }

    /// Runs a full exchange; returns the server's client_final result.
    fn run(hash: ScramHash, user: &str, pw: &str, k: Option<&ScramKeys>) -> Result<(), SaslError> {
        let mut c = ScramClient::new(hash, user, pw);
        let mut s = ScramServer::new(hash);
        let first = s.client_first(&c.client_first())?;
        assert_eq!(first.username, user);
        let cf = c.client_final(&s.server_first(k))?;
        let sf = s.client_final(&cf)?;
        c.verify_server_final(&sf)
    }

    #[test]
    fn rfc_vectors() {
        for (hash, cn, sn, salt, c1, s1, c2, s2) in RFC {
            let mut c = ScramClient::with_nonce(hash, "user", "pencil", cn.into());
            assert_eq!(c.client_first(), c1.as_bytes());
            assert_eq!(c.client_final(s1.as_bytes()).unwrap(), c2.as_bytes());
            c.verify_server_final(s2.as_bytes()).unwrap();
            assert_eq!(c.verify_server_final(b"v=AAAA"), Err(NotAuth));
            assert_eq!(c.verify_server_final(b"e=other-error"), Err(NotAuth));

            let k = ScramKeys::derive(hash, b"pencil", &STANDARD.decode(salt).unwrap(), 4096);
            let mut s = ScramServer::with_nonce(hash, sn.into());
            let first = s.client_first(c1.as_bytes()).unwrap();
            assert_eq!(
                first,
                ClientFirst {
                    username: "user".into(),
                    authzid: None
                }
            );
            assert_eq!(s.server_first(Some(&k)), s1.as_bytes());
            assert_eq!(s.client_final(c2.as_bytes()).unwrap(), s2.as_bytes());
        }
    }

    #[test]
    fn the_downgrade_hash_rides_in_server_first_and_the_client_checks_it() {
        let hash = ScramHash::Sha1;
        let k = keys(hash, "pw");
        let offered = "G6k/rBLDqgOhRRaCuuatSDFkJ08=".to_string();
        let exchange = |client: ScramClient| -> (String, Result<(), SaslError>) {
            let mut c = client;
            let mut s = ScramServer::new(hash).with_downgrade_hash(offered.clone());
            s.client_first(&c.client_first()).unwrap();
            let sf = s.server_first(Some(&k));
            let text = String::from_utf8(sf.clone()).unwrap();
            let result = c
                .client_final(&sf)
                .and_then(|cf| s.client_final(&cf))
                .and_then(|v| c.verify_server_final(&v));
            (text, result)
        };
        let (sf, ok) =
            exchange(ScramClient::new(hash, "u", "pw").expect_downgrade_hash(offered.clone()));
        assert!(
            sf.ends_with(",i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08="),
            "{sf}"
        );
        assert_eq!(ok, Ok(()));
        // A client that ignores the attribute still authenticates (RFC 5802 extensions).
        assert_eq!(exchange(ScramClient::new(hash, "u", "pw")).1, Ok(()));
        // A client that saw other lists refuses before sending a proof.
        let stripped = ScramClient::new(hash, "u", "pw").expect_downgrade_hash("AAAA".into());
        assert_eq!(exchange(stripped).1, Err(NotAuth));
        // Without the attribute a checking client refuses too.
        let mut c = ScramClient::new(hash, "u", "pw").expect_downgrade_hash(offered.clone());
        let mut s = ScramServer::new(hash);
        s.client_first(&c.client_first()).unwrap();
        assert_eq!(c.client_final(&s.server_first(Some(&k))), Err(NotAuth));
    }

    #[test]
    fn round_trips() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            assert_eq!(
                run(hash, "juliet", "r0m30", Some(&keys(hash, "r0m30"))),
                Ok(())
            );
            let odd = "a,b=c=2C,";
            assert_eq!(run(hash, odd, "pw", Some(&keys(hash, "pw"))), Ok(()));
            let wrong = run(hash, "juliet", "wrong", Some(&keys(hash, "r0m30")));
            assert_eq!(wrong, Err(NotAuth));
            assert_eq!(run(hash, "nobody", "x", None), Err(NotAuth));
        }
        // Keys of the wrong hash are treated like an unknown user.
        let k = keys(ScramHash::Sha1, "pw");
        assert_eq!(run(ScramHash::Sha256, "u", "pw", Some(&k)), Err(NotAuth));
    }

    #[test]
    fn unknown_user_looks_real() {
        let mut a = ScramServer::new(ScramHash::Sha256);
        a.client_first(b"n,,n=ghost,r=abc").unwrap();
        let sa = String::from_utf8(a.server_first(None)).unwrap();
        let mut b = ScramServer::new(ScramHash::Sha256);
        b.client_first(b"n,,n=ghost,r=abc").unwrap();
        let sb = String::from_utf8(b.server_first(None)).unwrap();
        let salt = |s: &str| s.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&sa), salt(&sb));
        assert!(sa.ends_with(&format!(",i={DEFAULT_ITERATIONS}")));
        assert_eq!(STANDARD.decode(&salt(&sa)[2..]).unwrap().len(), 16);
    }

    #[test]
    fn client_first_parsing() {
        let mut s = ScramServer::new(ScramHash::Sha256);
        let f = s
            .client_first(b"y,a=admin=2Cx,n=us=3Der=2C,r=n0nce,ext=1")
            .unwrap();
        assert_eq!(f.username, "us=er,");
        assert_eq!(f.authzid.as_deref(), Some("admin,x"));
        for bad in [
            b"".as_slice(),
            b"n,,",
            b"n,,n=user",
            b"n,,r=abc,n=user",
            b"n,,n=,r=abc",
            b"n,,n=user,r=",
            b"n,,n=us=41er,r=abc",
            b"n,,n=user=,r=abc",
            b"n,,n=user=2,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"p=tls-unique,,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,b=x,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,,n=us\xffer,r=abc",
            b"n,,n=user,r=ab\x01c",
        ] {
            let mut s = ScramServer::new(ScramHash::Sha1);
            assert_eq!(s.client_first(bad), Err(Malformed), "{bad:?}");
        }
        // A second client-first is refused.
        assert_eq!(s.client_first(b"n,,n=user,r=abc"), Err(Malformed));
    }

    #[test]
    fn client_final_tampering() {
        let (hash, cn, sn, salt, c1, s1, c2, _) = RFC[1];
        let k = ScramKeys::derive(hash, b"pencil", &STANDARD.decode(salt).unwrap(), 4096);
        let nonce = &s1[2..s1.find(',').unwrap()];
        let proof = &c2[c2.rfind(',').unwrap()..];
        let cases: Vec<(String, SaslError)> = vec![
            (c2.replace(cn, "rOprNGfwEbeRWgbNEkqX"), NotAuth),
            (format!("c=biws,r={cn}{proof}"), NotAuth),
            (c2.replace("c=biws", "c=eSws"), NotAuth),
            (c2.replace("c=biws", "c=bi!s"), Malformed),
            (c2.replace("p=dHzb", "p=AAAA"), NotAuth),
            (format!("c=biws,r={nonce},p=AAAA"), NotAuth),
            (format!("c=biws,r={nonce},p=%%%"), Malformed),
            (format!("c=biws,r={nonce}"), Malformed),
            (format!("r={nonce},c=biws{proof}"), Malformed),
            (String::new(), Malformed),
        ];
        for (msg, err) in cases {
            let mut s = ScramServer::with_nonce(hash, sn.into());
            s.client_first(c1.as_bytes()).unwrap();
            s.server_first(Some(&k));
            assert_eq!(s.client_final(msg.as_bytes()), Err(err), "{msg}");
            // The exchange is over after a failure.
            assert_eq!(s.client_final(c2.as_bytes()), Err(Malformed));
        }
        let mut s = ScramServer::new(hash);
        assert!(s.server_first(Some(&k)).is_empty());
        assert_eq!(s.client_final(b"\xff"), Err(Malformed));
    }

    #[test]
    fn client_rejects_bad_server_first() {
        for bad in [
            b"".as_slice(),
            b"r=abc,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=0",
            b"r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=-1",
            b"r=fyko+d2lbbFgONRv9qkxdawLx,s=@@@,i=4096",
            b"r=fyko+d2lbbFgONRv9qkxdawLx,i=4096",
            b"m=x,r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=fyko+d2lbbFgONRv9qkxdawL\xff,s=QSXCR+Q6sek8bf92,i=4096",
        ] {
            let mut c = ScramClient::with_nonce(ScramHash::Sha1, "u", "p", RFC[0].1.into());
            c.client_first();
            assert_eq!(c.client_final(bad), Err(Malformed), "{bad:?}");
        }
        let c = ScramClient::new(ScramHash::Sha1, "u", "p");
        assert_eq!(c.verify_server_final(b"v=AAAA"), Err(Malformed));
    }

    #[test]
    fn truncated_and_random_input_never_panics() {
        let (hash, cn, sn, salt, c1, s1, c2, s2) = RFC[0];
        let k = ScramKeys::derive(hash, b"pencil", &STANDARD.decode(salt).unwrap(), 4096);
        for n in 0..c2.len() {
            let mut s = ScramServer::with_nonce(hash, sn.into());
            if s.client_first(&c1.as_bytes()[..n.min(c1.len())]).is_ok() {
                s.server_first(Some(&k));
                assert!(s.client_final(&c2.as_bytes()[..n]).is_err());
            }
            let mut c = ScramClient::with_nonce(hash, "user", "pencil", cn.into());
            c.client_first();
            if c.client_final(&s1.as_bytes()[..n.min(s1.len())]).is_ok() && n < s2.len() {
                assert!(c.verify_server_final(&s2.as_bytes()[..n]).is_err());
            }
        }
        for _ in 0..200 {
            let junk: [u8; 12] = rand::random();
            let mut s = ScramServer::new(hash);
            let _ = s.client_first(&junk);
            let _ = s.client_final(&junk);
        }
    }
}
