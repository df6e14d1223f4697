//! Server Dialback keys (XEP-0220 with XEP-0185): an HMAC-SHA-256 over the receiving domain,
//! the originating domain and the stream id, keyed with a per-server secret from a CSPRNG.
//!
//! Only the server that made a key ever checks it (the authoritative server answering
//! `<db:verify/>`), so the fields are length-prefixed rather than space-joined: no choice of
//! stream id can make two different triples share a key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The server's dialback secret; made once per start (or shared by the nodes of a cluster
/// through their NATS bucket), never logged or stored on disk.
pub struct Secret([u8; 32]);

impl Secret {
    /// A fresh secret from the operating system's CSPRNG-seeded generator.
    pub fn generate() -> Secret {
        use rand::RngCore;
        let mut s = [0u8; 32];
        rand::rng().fill_bytes(&mut s);
        Secret(s)
    }

    /// The secret made of `bytes` (the one a cluster's nodes share).
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    fn mac(&self, receiving: &str, originating: &str, stream_id: &str) -> Option<Hmac<Sha256>> {
        // XEP-0185: the HMAC key is SHA-256 of the secret (HMAC takes keys of any length).
        let key = Sha256::digest(self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?;
        for field in [receiving, originating, stream_id] {
            // Domains and stream ids are bounded by the stanza size limit, far below u32::MAX.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            mac.update(&len.to_be_bytes());
            mac.update(field.as_bytes());
        }
        Some(mac)
    }

    /// The key for a stream from `originating` to `receiving` with id `stream_id` (lowercase hex).
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let Some(mac) = self.mac(receiving, originating, stream_id) else {
            return String::new();
        };
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `key` is the one this server made for that stream (constant-time comparison).
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
        let Some(bytes) = from_hex(key.trim()).filter(|b| !b.is_empty()) else {
            return false;
        };
        self.mac(receiving, originating, stream_id)
            .is_some_and(|m| m.verify_slice(&bytes).is_ok())
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_verifies_only_for_its_own_stream() {
        let s = Secret::generate();
        let k = s.key("b.example", "a.example", "abc");
        assert_eq!(k.len(), 64);
        assert!(s.verify("b.example", "a.example", "abc", &k));
        assert!(!s.verify("b.example", "a.example", "abd", &k));
        assert!(!s.verify("a.example", "b.example", "abc", &k));
        // Moving a space between fields does not produce the same key.
        assert_ne!(s.key("b.example a", "example", "abc"), k);
        assert!(!s.verify("b.example", "a.example", "abc", "zz"));
        assert!(!s.verify("b.example", "a.example", "abc", ""));
    }

    #[test]
    fn another_secret_makes_another_key() {
        let (a, b) = (Secret::generate(), Secret::generate());
        let k = a.key("b.example", "a.example", "id");
        assert!(!b.verify("b.example", "a.example", "id", &k));
        // Nodes sharing the bytes of a secret verify each other's keys.
        let (c, d) = (Secret::from_bytes([7; 32]), Secret::from_bytes([7; 32]));
        assert!(d.verify(
            "b.example",
            "a.example",
            "id",
            &c.key("b.example", "a.example", "id")
        ));
    }
}
