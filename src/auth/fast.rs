//! XEP-0484 FAST tokens and the `HT-SHA-256-NONE` hashed-token mechanism
//! (draft-schmaus-kitten-sasl-ht).
//!
//! The client proves it holds the token by sending `username NUL HMAC-SHA-256(token,
//! "Initiator")`; the server answers `HMAC-SHA-256(token, "Responder")` as SASL2 additional
//! data. Tokens we issue are longer than SHA-256's 64-byte block, so by RFC 2104 the HMAC key is
//! SHA-256(token): the server keeps only that hash and still computes the same proofs.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sasl::SaslError;

/// The one FAST mechanism offered (no channel binding).
pub const HT_SHA_256_NONE: &str = "HT-SHA-256-NONE";
/// Random bytes in a token; 72 bytes give 96 base64url characters, above the 64-byte HMAC block.
const TOKEN_BYTES: usize = 72;
/// Longest username part accepted in an initial response.
const MAX_USERNAME: usize = 1023;

/// Whether `name` is a FAST mechanism this server implements.
pub fn is_fast_mechanism(name: &str) -> bool {
    name == HT_SHA_256_NONE
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
