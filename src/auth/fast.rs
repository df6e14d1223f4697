//! XEP-0484 FAST tokens and the `HT-SHA-256-*` hashed-token mechanisms
//! (draft-schmaus-kitten-sasl-ht): `NONE` without channel binding, `ENDP` bound to
//! `tls-server-end-point`, `EXPR` to `tls-exporter`, `UNIQ` to `tls-unique`.
//!
//! The client proves it holds the token by sending `username NUL HMAC-SHA-256(token,
//! "Initiator" || cb-data)`; the server answers `HMAC-SHA-256(token, "Responder" || cb-data)`
//! as SASL2 additional data, where cb-data is the connection's binding of the mechanism's type
//! (empty for `NONE`). Tokens we issue are longer than SHA-256's 64-byte block, so by RFC 2104 the HMAC key is
//! SHA-256(token): the server keeps only that hash and still computes the same proofs.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sasl::SaslError;
use super::scram::{TLS_EXPORTER, TLS_SERVER_END_POINT, TLS_UNIQUE};

/// The FAST mechanism without channel binding, offered on every connection.
pub const HT_SHA_256_NONE: &str = "HT-SHA-256-NONE";
/// Random bytes in a token; 72 bytes give 96 base64url characters, above the 64-byte HMAC block.
const TOKEN_BYTES: usize = 72;
/// Longest username part accepted in an initial response.
const MAX_USERNAME: usize = 1023;

/// A hashed-token mechanism: SHA-256 with one channel-binding choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HtMechanism {
    /// `HT-SHA-256-ENDP`: bound to `tls-server-end-point`.
    Endp,
    /// `HT-SHA-256-EXPR`: bound to `tls-exporter` (TLS 1.3).
    Expr,
    /// `HT-SHA-256-UNIQ`: bound to `tls-unique`, which rustls never provides (see
    /// [`TLS_UNIQUE`]), so it is implemented but never offered.
    Uniq,
    /// `HT-SHA-256-NONE`: no channel binding.
    None,
}

impl HtMechanism {
    /// Every mechanism, in the order the `<fast/>` feature lists them (bound ones first).
    pub const ALL: [HtMechanism; 4] = [
        HtMechanism::Endp,
        HtMechanism::Expr,
        HtMechanism::Uniq,
        HtMechanism::None,
    ];

    /// The mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::Endp => "HT-SHA-256-ENDP",
            HtMechanism::Expr => "HT-SHA-256-EXPR",
            HtMechanism::Uniq => "HT-SHA-256-UNIQ",
            HtMechanism::None => HT_SHA_256_NONE,
        }
    }

    /// Looks up a mechanism by its exact name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The channel-binding type whose data the proofs cover; `None` for `HT-SHA-256-NONE`.
    pub fn binding_type(self) -> Option<&'static str> {
        match self {
            HtMechanism::Endp => Some(TLS_SERVER_END_POINT),
            HtMechanism::Expr => Some(TLS_EXPORTER),
            HtMechanism::Uniq => Some(TLS_UNIQUE),
            HtMechanism::None => None,
        }
    }
}

/// Whether `name` is a FAST mechanism this server implements.
pub fn is_fast_mechanism(name: &str) -> bool {
    HtMechanism::from_name(name).is_some()
}

/// A new random token (the clear secret handed to the client once).
pub fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = std::array::from_fn(|_| rand::random());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the server stores of a token: its SHA-256, which is also the HMAC key it implies.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// A parsed `HT-*` initial response.
#[derive(Debug, PartialEq, Eq)]
pub struct HtResponse {
    /// The authentication identity (raw, not normalised).
    pub username: String,
    /// The client's `Initiator` proof.
    pub proof: Vec<u8>,
}

/// Splits `username NUL proof`.
pub fn parse_initial(data: &[u8]) -> Result<HtResponse, SaslError> {
    let nul = data
        .iter()
        .position(|b| *b == 0)
        .ok_or(SaslError::MalformedRequest)?;
    let (user, rest) = data.split_at(nul);
    let proof = rest.get(1..).ok_or(SaslError::MalformedRequest)?;
    if user.is_empty() || user.len() > MAX_USERNAME || proof.len() != 32 {
        return Err(SaslError::MalformedRequest);
    }
    let username = std::str::from_utf8(user)
        .map_err(|_| SaslError::MalformedRequest)?
        .to_string();
    Ok(HtResponse {
        username,
        proof: proof.to_vec(),
    })
}

/// Whether `proof` is the `Initiator` proof for the token whose stored key is `key`.
pub fn verify_initiator(key: &[u8; 32], cb_data: &[u8], proof: &[u8]) -> bool {
    let mut msg = b"Initiator".to_vec();
    msg.extend_from_slice(cb_data);
    let expected = hmac(key, &msg);
    !expected.is_empty() && bool::from(expected.ct_eq(proof))
}

/// The server's `Responder` proof for the token whose stored key is `key`.
pub fn responder(key: &[u8; 32], cb_data: &[u8]) -> Vec<u8> {
    let mut msg = b"Responder".to_vec();
    msg.extend_from_slice(cb_data);
    hmac(key, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_proof(token: &str, label: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()).expect("key");
        m.update(label);
        m.finalize().into_bytes().to_vec()
    }

    #[test]
    fn the_stored_hash_gives_the_same_proofs_as_the_clear_token() {
        let token = new_token();
        assert!(token.len() > 64, "{}", token.len());
        let key = token_key(&token);
        assert!(verify_initiator(
            &key,
            b"",
            &client_proof(&token, b"Initiator")
        ));
        assert_eq!(responder(&key, b""), client_proof(&token, b"Responder"));
        let other = token_key(&new_token());
        assert!(!verify_initiator(
            &other,
            b"",
            &client_proof(&token, b"Initiator")
        ));
    }

    #[test]
    fn bound_proofs_cover_the_channel_binding_data() {
        let token = new_token();
        let key = token_key(&token);
        let cb = [5u8; 32];
        let mut label = b"Initiator".to_vec();
        label.extend_from_slice(&cb);
        let proof = client_proof(&token, &label);
        assert!(verify_initiator(&key, &cb, &proof));
        // Another connection's binding, or none at all, does not verify.
        assert!(!verify_initiator(&key, &[6u8; 32], &proof));
        assert!(!verify_initiator(&key, b"", &proof));
        let mut label = b"Responder".to_vec();
        label.extend_from_slice(&cb);
        assert_eq!(responder(&key, &cb), client_proof(&token, &label));
        for m in HtMechanism::ALL {
            assert_eq!(HtMechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(
            HtMechanism::Endp.binding_type(),
            Some("tls-server-end-point")
        );
        assert_eq!(HtMechanism::None.binding_type(), None);
        assert!(!is_fast_mechanism("HT-SHA-512-NONE"));
    }

    #[test]
    fn initial_responses_are_checked_for_shape() {
        let mut ok = b"alice\0".to_vec();
        ok.extend_from_slice(&[7u8; 32]);
        assert_eq!(
            parse_initial(&ok),
            Ok(HtResponse {
                username: "alice".into(),
                proof: vec![7u8; 32]
            })
        );
        for bad in [
            &b"alice"[..],
            b"\0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"alice\0short",
        ] {
            assert_eq!(parse_initial(bad), Err(SaslError::MalformedRequest));
        }
    }
}
