//! Stored password credentials: an Argon2id PHC hash plus SCRAM keys for both hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::scram::ScramHash;

/// Lowest accepted PBKDF2 iteration count (RFC 5802 §5.1 / RFC 7677 minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Iteration count used for new credentials by default.
pub const DEFAULT_ITERATIONS: u32 = 10000;
/// Salt length in bytes.
const SALT_LEN: usize = 16;

/// Errors creating credentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The password is empty.
    #[error("password must not be empty")]
    EmptyPassword,
    /// The iteration count is below [`MIN_ITERATIONS`].
    #[error("iteration count {0} is below the minimum {MIN_ITERATIONS}")]
    TooFewIterations(u32),
    /// The Argon2 hasher failed.
    #[error("argon2 hashing failed: {0}")]
    Hash(String),
}

/// Serde helper storing bytes as standard base64 strings.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serializes bytes as base64.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    /// Deserializes base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(D::Error::custom)
    }
}

/// Salted SCRAM verifier for one hash function (RFC 5802 §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScramKeys {
    /// PBKDF2 salt.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl ScramKeys {
    /// Derives StoredKey and ServerKey from a password (used raw, without SASLprep).
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = hash.hi(password, salt, iterations);
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.h(&hash.hmac(&salted, b"Client Key")),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }
}

/// Everything stored for one account's password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// Argon2id PHC string.
    pub argon2: String,
    /// SCRAM-SHA-1 verifier.
    pub scram_sha1: ScramKeys,
    /// SCRAM-SHA-256 verifier.
    pub scram_sha256: ScramKeys,
}

impl Credentials {
    /// Hashes a password with fresh random salts; CPU-heavy (Argon2 + 2×PBKDF2).
    pub fn new(password: &str, iterations: u32) -> Result<Credentials, CredentialError> {
        if password.is_empty() {
            return Err(CredentialError::EmptyPassword);
        }
        if iterations < MIN_ITERATIONS {
            return Err(CredentialError::TooFewIterations(iterations));
        }
        let pw = password.as_bytes();
        let argon_salt: [u8; SALT_LEN] = rand::random();
        let argon2 = Argon2::default()
            .hash_password_with_salt(pw, &argon_salt)
            .map_err(|e| CredentialError::Hash(e.to_string()))?
            .to_string();
        let salt1: [u8; SALT_LEN] = rand::random();
        let salt256: [u8; SALT_LEN] = rand::random();
        Ok(Credentials {
            argon2,
            scram_sha1: ScramKeys::derive(ScramHash::Sha1, pw, &salt1, iterations),
            scram_sha256: ScramKeys::derive(ScramHash::Sha256, pw, &salt256, iterations),
        })
    }

    /// Checks a password against the Argon2id hash (slow, constant-time).
    pub fn verify_argon2(&self, password: &str) -> bool {
        Argon2::default()
            .verify_password(password.as_bytes(), self.argon2.as_str())
            .is_ok()
    }

    /// Checks a password by re-deriving the SCRAM-SHA-256 StoredKey (constant-time compare).
    pub fn verify_scram(&self, password: &str) -> bool {
        let k = &self.scram_sha256;
        if k.iterations == 0 || k.stored_key.is_empty() {
            return false;
        }
        let derived = ScramKeys::derive(
            ScramHash::Sha256,
            password.as_bytes(),
            &k.salt,
            k.iterations,
        );
        derived.stored_key.ct_eq(&k.stored_key).into()
    }

    /// Returns the SCRAM verifier for `hash`.
    pub fn scram(&self, hash: ScramHash) -> &ScramKeys {
        match hash {
            ScramHash::Sha1 => &self.scram_sha1,
            ScramHash::Sha256 => &self.scram_sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Credentials::new("", 4096).unwrap_err(),
            CredentialError::EmptyPassword
        );
        assert_eq!(
            Credentials::new("pw", 4095).unwrap_err(),
            CredentialError::TooFewIterations(4095)
        );
    }

    #[test]
    fn create_verify_serde() {
        let c = Credentials::new("s3cr3t ü", MIN_ITERATIONS).unwrap();
        assert!(c.argon2.starts_with("$argon2id$"));
        assert_eq!(c.scram_sha1.stored_key.len(), 20);
        assert_eq!(c.scram_sha256.server_key.len(), 32);
        assert_ne!(c.scram_sha1.salt, c.scram_sha256.salt);
        assert_eq!(c.scram(ScramHash::Sha1), &c.scram_sha1);
        assert!(c.verify_argon2("s3cr3t ü"));
        assert!(!c.verify_argon2("s3cr3t u"));
        assert!(c.verify_scram("s3cr3t ü"));
        assert!(!c.verify_scram("wrong"));

        let json = serde_json::to_string(&c).unwrap();
        let salt_b64 = super::super::sasl::encode_b64(&c.scram_sha256.salt);
        assert!(json.contains(&format!("\"salt\":\"{salt_b64}\"")));
        let back: Credentials = serde_json::from_str(&json).unwrap();
        assert_eq!(back.argon2, c.argon2);
        assert_eq!(back.scram_sha1, c.scram_sha1);
        assert_eq!(back.scram_sha256, c.scram_sha256);
        assert!(back.verify_scram("s3cr3t ü"));

        let bad = json.replace(&salt_b64, "not base64!");
        assert!(serde_json::from_str::<Credentials>(&bad).is_err());
    }

    #[test]
    fn hi_matches_rfc6070() {
        // RFC 6070 PBKDF2-HMAC-SHA1 test vector, 4096 iterations.
        let out = ScramHash::Sha1.hi(b"password", b"salt", 4096);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "4b007901b765489abead49d926f721d065a429c1");
    }
}
