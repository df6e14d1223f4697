//! Who may call the API: the client address (allowlist, trusted proxies), Basic credentials of
//! admins with a verified-credential cache, Bearer API tokens, and throttling of failures.
//!
//! The cache maps `HMAC-SHA256(per-process random key, jid ‖ 0 ‖ password)` to a fingerprint
//! (SHA-256) of the account's stored Argon2 hash. It never holds a clear password, and an entry
//! only counts while the account's stored hash is the one it was verified against, so a
//! password change (from the API, the CLI or XMPP) or a deletion invalidates it at once. Roles
//! are read from the account record on every request, so a role change applies to the very
//! next one. Argon2 therefore runs once per credential change (cold misses for the same
//! credential wait for one verification rather than running their own).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use dashmap::DashMap;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::auth::credentials::{Credentials, MIN_ITERATIONS};
use crate::core::Core;
use crate::core::accounts::AccountRecord;
use crate::modules::admin_rest::AdminRestOptions;
use crate::xmpp::Jid;

/// Most cached credentials; the cache is emptied when it grows past this.
const MAX_CACHE: usize = 10_000;
/// Most addresses tracked for throttling.
const MAX_TRACKED: usize = 100_000;

/// Who made an authenticated call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An admin account with Basic credentials.
    Account(Jid),
    /// An API token (its id) owned by an admin account.
    Token {
        /// The token id.
        id: String,
        /// The owner.
        owner: Jid,
    },
}

impl Principal {
    /// For the audit log: `admin@host` or `token:ID(admin@host)`.
    pub fn who(&self) -> String {
        match self {
            Principal::Account(j) => j.to_string(),
            Principal::Token { id, owner } => format!("token:{id}({owner})"),
        }
    }
}

struct Failures {
    count: u32,
    since: Instant,
}

/// Authentication state shared by every listener of a server.
pub struct Authenticator {
    key: [u8; 32],
    cache: DashMap<[u8; 32], [u8; 32]>,
    inflight: DashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>,
    failures: DashMap<IpAddr, Failures>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    /// A fresh authenticator with a random cache key.
    pub fn new() -> Self {
        Authenticator {
            key: rand::random(),
            cache: DashMap::new(),
            inflight: DashMap::new(),
            failures: DashMap::new(),
        }
    }

    /// Number of verified credentials held (for tests).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn cache_key(&self, jid: &Jid, password: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) {
            mac.update(jid.as_str().as_bytes());
            mac.update(&[0]);
            mac.update(password.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    /// Seconds left if `ip` is throttled.
    fn throttled(&self, ip: IpAddr, opts: &AdminRestOptions) -> Option<u64> {
        let f = self.failures.get(&ip)?;
        let window = Duration::from_secs(opts.lockout_secs);
        let elapsed = f.since.elapsed();
        (f.count >= opts.max_failures && elapsed < window)
            .then(|| (window - elapsed).as_secs().max(1))
    }

    fn fail(&self, ip: IpAddr, opts: &AdminRestOptions) {
        let window = Duration::from_secs(opts.lockout_secs);
        if self.failures.len() >= MAX_TRACKED {
            self.failures.retain(|_, f| f.since.elapsed() < window);
        }
        let mut f = self.failures.entry(ip).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if f.since.elapsed() >= window {
            *f = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// Checks the `Authorization` header; the caller has already checked the allowlist.
    pub async fn authenticate(
        &self,
        core: &Arc<Core>,
        host: &str,
        ip: IpAddr,
        authorization: Option<&str>,
        opts: &AdminRestOptions,
    ) -> Result<Principal, ApiError> {
        if let Some(secs) = self.throttled(ip, opts) {
            return Err(ApiError::Throttled(secs));
        }
        let Some(header) = authorization else {
            return Err(ApiError::MissingAuth);
        };
        let result = self.check(core, host, header).await;
        match &result {
            Ok(_) => {
                self.failures.remove(&ip);
            }
            Err(ApiError::InvalidAuth | ApiError::AuthFailure) => self.fail(ip, opts),
            Err(_) => {}
        }
        result
    }

    async fn check(
        &self,
        core: &Arc<Core>,
        host: &str,
        header: &str,
    ) -> Result<Principal, ApiError> {
        let (scheme, value) = header.trim().split_once(' ').ok_or(ApiError::InvalidAuth)?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.check_token(core, value).await;
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::InvalidAuth);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| ApiError::InvalidAuth)?;
        let decoded = String::from_utf8(decoded).map_err(|_| ApiError::InvalidAuth)?;
        let (user, password) = decoded.split_once(':').ok_or(ApiError::InvalidAuth)?;
        // `admin` alone means admin@<the request's host>.
        let jid = if user.contains('@') {
            Jid::parse(user)
        } else {
            Jid::new(Some(user), host, None)
        }
        .map_err(|_| ApiError::AuthFailure)?;
        if jid.node().is_none() || jid.resource().is_some() || core.host(jid.domain()).is_none() {
            return Err(ApiError::AuthFailure);
        }
        let Some(record) = core.accounts.get(&jid).await? else {
            self.dummy_verify(password).await;
            return Err(ApiError::AuthFailure);
        };
        if !self.verify(&jid, password, &record).await {
            return Err(ApiError::AuthFailure);
        }
        if !is_admin(core, &jid, &record) {
            return Err(ApiError::NotAdmin);
        }
        Ok(Principal::Account(jid))
    }

    /// Verifies a password, from the cache when the stored hash is unchanged.
    async fn verify(&self, jid: &Jid, password: &str, record: &AccountRecord) -> bool {
        let key = self.cache_key(jid, password);
        let fingerprint = record.credentials.fingerprint();
        let hit = |cache: &DashMap<[u8; 32], [u8; 32]>| {
            cache
                .get(&key)
                .is_some_and(|f| bool::from(f.ct_eq(&fingerprint)))
        };
        if hit(&self.cache) {
            return true;
        }
        // One verification per credential at a time; the others wait and then hit the cache.
        let lock = self.inflight.entry(key).or_default().clone();
        let guard = lock.lock().await;
        let ok = if hit(&self.cache) {
            true
        } else {
            let creds = record.credentials.clone();
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || creds.verify(&password))
                .await
                .unwrap_or(false);
            if ok {
                if self.cache.len() >= MAX_CACHE {
                    self.cache.clear();
                }
                self.cache.insert(key, fingerprint);
            }
            ok
        };
        drop(guard);
        self.inflight
            .remove_if(&key, |_, l| Arc::strong_count(l) <= 2);
        ok
    }

    /// Spends about as long as a real verification, so unknown accounts cannot be told apart by timing.
    async fn dummy_verify(&self, password: &str) {
        static DUMMY: OnceLock<Option<Credentials>> = OnceLock::new();
        let password = password.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            let dummy = DUMMY
                .get_or_init(|| Credentials::new("oxpecker-dummy-password", MIN_ITERATIONS).ok());
            dummy.as_ref().is_some_and(|d| d.verify_argon2(&password))
        })
        .await;
    }

    async fn check_token(&self, core: &Arc<Core>, token: &str) -> Result<Principal, ApiError> {
        let rec = core
            .accounts
            .verify_token(token)
            .await?
            .filter(|r| r.scope == "admin")
            .ok_or(ApiError::AuthFailure)?;
        let owner = core
            .accounts
            .account_jid(&rec.owner)
            .map_err(|_| ApiError::AuthFailure)?;
        let record = core
            .accounts
            .get(&owner)
            .await?
            .ok_or(ApiError::AuthFailure)?;
        if !is_admin(core, &owner, &record) {
            return Err(ApiError::NotAdmin);
        }
        Ok(Principal::Token { id: rec.id, owner })
    }
}

/// Whether an account has admin rights: listed in `admins`, or a role with admin rights.
pub fn is_admin(core: &Core, jid: &Jid, record: &AccountRecord) -> bool {
    core.config.load().is_admin(jid.as_str()) || record.role.is_some_and(|r| r.is_admin())
}

/// The client's address: the socket peer, or — only when the peer is a trusted proxy — the
/// nearest untrusted address in `X-Forwarded-For` (read right to left).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
    let mut ip = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(h) => {
                ip = h.to_canonical();
                if !is_trusted(&ip) {
                    return ip;
                }
            }
            Err(_) => return ip,
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_per_address_and_ends_with_the_window() {
        let auth = Authenticator::new();
        let mut opts = AdminRestOptions::for_host(&crate::config::Config::default(), "localhost");
        opts.max_failures = 2;
        opts.lockout_secs = 1;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        auth.fail(a, &opts);
        assert_eq!(auth.throttled(a, &opts), None);
        auth.fail(a, &opts);
        assert_eq!(auth.throttled(a, &opts), Some(1));
        assert_eq!(auth.throttled(b, &opts), None);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(auth.throttled(a, &opts), None);
        // A new failure after the window starts a new count.
        auth.fail(a, &opts);
        assert_eq!(auth.throttled(a, &opts), None);
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted = vec!["10.0.0.0/24".parse::<IpNet>().unwrap()];
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(client, ["127.0.0.1"].into_iter(), &trusted),
            client
        );
        // Trusted peer: the nearest untrusted hop wins; spoofed hops further left are ignored.
        assert_eq!(
            client_ip(
                proxy,
                ["127.0.0.1, 203.0.113.9, 10.0.0.7"].into_iter(),
                &trusted
            ),
            client
        );
        // Garbage stops the walk at the last good address.
        assert_eq!(client_ip(proxy, ["junk"].into_iter(), &trusted), proxy);
        // IPv4-mapped IPv6 peers are treated as IPv4.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, std::iter::empty(), &[]),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
