//! Stored password credentials: an Argon2id PHC hash plus SCRAM keys for both hashes.
//!
//! An imported account may lack some of them (Prosody and ejabberd keep SCRAM keys only, often
//! SCRAM-SHA-1 alone): an empty hash or key set means "absent". Such an account logs in with the
//! mechanisms it has keys for, and clear-password checks (PLAIN, REST Basic) verify against
//! its SCRAM keys until the password is next set.

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
    /// Imported SCRAM keys do not fit their hash (length or iteration count).
    #[error("{0} keys are malformed (key length or iteration count)")]
    BadScramKeys(&'static str),
    /// Imported credentials carry no SCRAM keys at all.
    #[error("no SCRAM keys")]
    NoScramKeys,
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

/// Salted SCRAM verifier for one hash function (RFC 5802 §3); the default (empty) one is "absent".
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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

    /// Whether these keys are usable for `hash` (iterations set, keys of the hash's length).
    pub fn is_valid_for(&self, hash: ScramHash) -> bool {
        let len = hash.output_len();
        self.iterations > 0 && self.stored_key.len() == len && self.server_key.len() == len
    }

    /// Whether this is the absent (empty) verifier.
    pub fn is_absent(&self) -> bool {
        self.iterations == 0 && self.stored_key.is_empty() && self.server_key.is_empty()
    }

    /// Checks a clear password by re-deriving the StoredKey (constant-time compare).
    pub fn verify(&self, hash: ScramHash, password: &str) -> bool {
        if !self.is_valid_for(hash) {
            return false;
        }
        let derived = ScramKeys::derive(hash, password.as_bytes(), &self.salt, self.iterations);
        derived.stored_key.ct_eq(&self.stored_key).into()
    }
}

/// Everything stored for one account's password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// Argon2id PHC string; empty for an imported account whose password was not set since.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub argon2: String,
    /// SCRAM-SHA-1 verifier (absent when empty).
    #[serde(default, skip_serializing_if = "ScramKeys::is_absent")]
    pub scram_sha1: ScramKeys,
    /// SCRAM-SHA-256 verifier (absent when empty).
    #[serde(default, skip_serializing_if = "ScramKeys::is_absent")]
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

    /// Credentials carried over as SCRAM keys only (an import), without an Argon2 hash.
    /// Fails unless at least one verifier is valid for its hash; an invalid one is an error too.
    pub fn from_scram(
        sha1: Option<ScramKeys>,
        sha256: Option<ScramKeys>,
    ) -> Result<Credentials, CredentialError> {
        for (hash, keys) in [(ScramHash::Sha1, &sha1), (ScramHash::Sha256, &sha256)] {
            if let Some(k) = keys
                && !k.is_valid_for(hash)
            {
                return Err(CredentialError::BadScramKeys(hash.mechanism_name()));
            }
        }
        if sha1.is_none() && sha256.is_none() {
            return Err(CredentialError::NoScramKeys);
        }
        Ok(Credentials {
            argon2: String::new(),
            scram_sha1: sha1.unwrap_or_default(),
            scram_sha256: sha256.unwrap_or_default(),
        })
    }

    /// Whether every verifier is present (false for SCRAM-only imports until the next password set).
    pub fn is_complete(&self) -> bool {
        !self.argon2.is_empty()
            && self.scram_sha1.is_valid_for(ScramHash::Sha1)
            && self.scram_sha256.is_valid_for(ScramHash::Sha256)
    }

    /// Checks a clear password (REST Basic): against the Argon2id hash, or against the SCRAM
    /// keys when the account has no Argon2 hash (an import).
    pub fn verify(&self, password: &str) -> bool {
        if self.argon2.is_empty() {
            self.verify_scram(password)
        } else {
            self.verify_argon2(password)
        }
    }

    /// What a password-verification cache keys on: changes whenever the stored secrets change.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.argon2.as_bytes());
        h.update(&self.scram_sha256.stored_key);
        h.update(&self.scram_sha1.stored_key);
        h.finalize().into()
    }

    /// Checks a password against the Argon2id hash (slow, constant-time); false without one.
    pub fn verify_argon2(&self, password: &str) -> bool {
        Argon2::default()
            .verify_password(password.as_bytes(), self.argon2.as_str())
            .is_ok()
    }

    /// Checks a password by re-deriving the SCRAM-SHA-256 StoredKey, or the SCRAM-SHA-1 one
    /// when the account has SHA-1 keys only (constant-time compare).
    pub fn verify_scram(&self, password: &str) -> bool {
        if self.scram_sha256.is_valid_for(ScramHash::Sha256) {
            self.scram_sha256.verify(ScramHash::Sha256, password)
        } else {
            self.scram_sha1.verify(ScramHash::Sha1, password)
        }
    }

    /// Returns the SCRAM verifier for `hash`.
    pub fn scram(&self, hash: ScramHash) -> &ScramKeys {
        match hash {
            ScramHash::Sha1 => &self.scram_sha1,
            ScramHash::Sha256 => &self.scram_sha256,
        }
    }
}

/// Runs password hashing (Argon2id, PBKDF2) on the blocking pool, at most one derivation per
/// CPU core at a time: bulk account creation uses every core, and a burst of callers queues
/// here instead of holding one Argon2 memory block (19 MiB) each.
#[derive(Debug)]
pub struct HashPool {
    permits: tokio::sync::Semaphore,
    size: usize,
}

/// The hashing pool was closed or a derivation panicked.
#[derive(Debug, thiserror::Error)]
#[error("password hashing task failed")]
pub struct HashTaskFailed;

impl Default for HashPool {
    fn default() -> Self {
        HashPool::new(
            std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(1),
        )
    }
}

impl HashPool {
    /// A pool running at most `size` derivations at once (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        HashPool {
            permits: tokio::sync::Semaphore::new(size),
            size,
        }
    }

    /// How many derivations may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Derivations running now.
    pub fn busy(&self) -> usize {
        self.size.saturating_sub(self.permits.available_permits())
    }

    /// Runs the CPU-heavy `f` on the blocking pool once a core is free.
    pub async fn run<T, F>(&self, f: F) -> Result<T, HashTaskFailed>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| HashTaskFailed)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| HashTaskFailed)
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
    fn scram_only_credentials_verify_and_serde() {
        let sha1 = ScramKeys::derive(ScramHash::Sha1, b"old pw", b"salt-1", 4096);
        let c = Credentials::from_scram(Some(sha1.clone()), None).unwrap();
        assert!(c.argon2.is_empty() && !c.is_complete());
        assert!(c.scram_sha256.is_absent());
        assert!(c.verify_scram("old pw") && c.verify("old pw"));
        assert!(!c.verify("wrong") && !c.verify_argon2("old pw"));
        assert!(!c.scram(ScramHash::Sha256).is_valid_for(ScramHash::Sha256));
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("argon2") && !json.contains("scram_sha256"),
            "{json}"
        );
        let back: Credentials = serde_json::from_str(&json).unwrap();
        assert_eq!(back.scram_sha1, sha1);
        assert!(back.verify("old pw"));
        assert_ne!(
            back.fingerprint(),
            Credentials::new("old pw", 4096).unwrap().fingerprint()
        );

        let sha256 = ScramKeys::derive(ScramHash::Sha256, b"pw2", b"s", 4096);
        let both = Credentials::from_scram(Some(sha1.clone()), Some(sha256)).unwrap();
        assert!(both.verify("pw2") && !both.verify("old pw"));
        assert_eq!(
            Credentials::from_scram(None, None).unwrap_err(),
            CredentialError::NoScramKeys
        );
        assert_eq!(
            Credentials::from_scram(None, Some(sha1)).unwrap_err(),
            CredentialError::BadScramKeys("SCRAM-SHA-256")
        );
        let full = Credentials::new("pw", 4096).unwrap();
        assert!(full.is_complete() && full.verify("pw") && !full.verify("px"));
    }

    #[test]
    fn hi_matches_rfc6070() {
        // RFC 6070 PBKDF2-HMAC-SHA1 test vector, 4096 iterations.
        let out = ScramHash::Sha1.hi(b"password", b"salt", 4096);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "4b007901b765489abead49d926f721d065a429c1");
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hash_pool_runs_as_many_derivations_at_once_as_it_has_cores() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Arc::new(HashPool::new(2));
        assert_eq!(HashPool::new(0).size(), 1, "never zero permits");
        assert!(HashPool::default().size() >= 1);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Each job waits (bounded) until a second one runs beside it, then records the peak.
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        for _ in 0..2000 {
                            if peak.load(Ordering::SeqCst) >= 2 {
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "two at once, never more");
        assert_eq!(pool.busy(), 0);
    }
}
