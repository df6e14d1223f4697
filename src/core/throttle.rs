//! Sliding-window rate limits held by the server (no process-wide state: each [`super::Core`]
//! has its own), e.g. in-band registrations per client address, and the [`AuthGuard`] that
//! counts failed logins per address and per account for every SASL path.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::sasl::SaslError;
use crate::config::LimitsConfig;
use crate::xmpp::Jid;

/// Keys tracked before stale ones are swept.
const SWEEP_AT: usize = 10_000;
/// Keys tracked at most: past this after a sweep, the oldest half of the history is forgotten.
const MAX_KEYS: usize = 200_000;
/// Attempts remembered per key (the oldest are forgotten first).
const MAX_PER_KEY: usize = 1024;

/// Counts attempts per key (an O(1) lookup) within a sliding window.
pub struct Throttle {
    window: Duration,
    seen: Mutex<Seen>,
}

/// The attempts per key, and the size at which stale keys are next swept.
#[derive(Default)]
struct Seen {
    keys: HashMap<String, VecDeque<Instant>>,
    sweep_at: usize,
}

impl Throttle {
    /// A throttle over `window`.
    pub fn new(window: Duration) -> Self {
        Throttle {
            window,
            seen: Mutex::new(Seen {
                keys: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    /// Records an attempt for `key` at `now` unless `max` attempts happened within the window; true if allowed.
    pub fn allow(&self, key: &str, max: usize, now: Instant) -> bool {
        self.with_key(key, now, |q| {
            if q.len() >= max {
                return false;
            }
            q.push_back(now);
            true
        })
    }

    /// Attempts recorded for `key` within the window before `now`.
    pub fn recent(&self, key: &str, now: Instant) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.keys.get(key).map_or(0, |q| {
            q.iter()
                .filter(|t| now.saturating_duration_since(**t) < self.window)
                .count()
        })
    }

    /// Records an attempt for `key` at `now`, whatever the count.
    pub fn record(&self, key: &str, now: Instant) {
        self.with_key(key, now, |q| {
            if q.len() >= MAX_PER_KEY {
                q.pop_front();
            }
            q.push_back(now);
        });
    }

    /// Runs `f` on the fresh attempts of `key`, sweeping stale keys when many are tracked.
    fn with_key<T>(
        &self,
        key: &str,
        now: Instant,
        f: impl FnOnce(&mut VecDeque<Instant>) -> T,
    ) -> T {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < window;
        let seen = &mut *seen;
        if seen.keys.len() >= seen.sweep_at && !seen.keys.contains_key(key) {
            seen.keys.retain(|_, q| q.iter().any(fresh));
            if seen.keys.len() >= MAX_KEYS / 2 {
                // Bounded memory under a flood of distinct keys: forget the half seen longest ago.
                let mut last: Vec<Instant> = seen
                    .keys
                    .values()
                    .filter_map(|q| q.back().copied())
                    .collect();
                last.sort_unstable();
                let cut = last.get(last.len() / 2).copied();
                seen.keys.retain(|_, q| q.back().copied() > cut);
            }
            // Amortised: the next sweep waits until the map has doubled.
            seen.sweep_at = (seen.keys.len() * 2).clamp(SWEEP_AT, MAX_KEYS);
        }
        let q = seen.keys.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| !fresh(t)) {
            q.pop_front();
        }
        f(q)
    }
}

/// A token bucket: `rate` tokens a second up to `burst`, starting full (connection accepts per
/// address, bytes read per session).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens a second up to `burst` (at least one).
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if the bucket holds them; false (taking none) otherwise.
    pub fn take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens even into debt and returns how long until the bucket is out of debt
    /// (zero if it is not in debt): what was read is paid for by waiting before the next read.
    pub fn charge(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        // Bounded: at most one burst of debt is carried (a single read is at most one buffer).
        self.tokens = self.tokens.max(-self.burst);
        Duration::from_secs_f64(-self.tokens / self.rate)
    }

    /// Whether the bucket is full (an idle key that can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The throttling key of a peer address (`ip:port` or `[ip]:port`): the IP without the port, an
/// IPv6 address by its /64 (one subscriber's network); anything else as it is.
pub fn address_key(peer: &str) -> String {
    let ip = peer
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| peer.parse::<IpAddr>());
    match ip {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        Ok(ip) => ip.to_string(),
        Err(_) => peer.to_string(),
    }
}

/// Failed authentications per source address and per account: the one brute-force decision
/// every SASL path asks (c2s SASL today; SASL2, BOSH and WebSocket as they land). Call
/// [`AuthGuard::allows`] before verifying a secret and [`AuthGuard::failed`] after a wrong one;
/// thresholds come from `[limits]` at each call.
pub struct AuthGuard {
    by_address: Throttle,
    by_account: Throttle,
}

impl AuthGuard {
    /// A guard counting failures over `window`.
    pub fn new(window: Duration) -> Self {
        AuthGuard {
            by_address: Throttle::new(window),
            by_account: Throttle::new(window),
        }
    }

    /// Whether an attempt from `peer` (for `account` once known) may be verified: refused when
    /// the address failed `auth_max_failures` times in the window, or when the account failed
    /// `auth_account_max_failures` times and this address has failed too.
    pub fn allows(
        &self,
        limits: &LimitsConfig,
        peer: &str,
        account: Option<&Jid>,
        now: Instant,
    ) -> bool {
        let address = self.by_address.recent(&address_key(peer), now);
        if limits.auth_max_failures > 0 && address >= limits.auth_max_failures {
            return false;
        }
        match account {
            Some(jid) if limits.auth_account_max_failures > 0 && address > 0 => {
                self.by_account.recent(jid.as_str(), now) < limits.auth_account_max_failures
            }
            _ => true,
        }
    }

    /// Reports how an attempt from `peer` (for `account`, if the client named one) ended: a
    /// wrong guess (`not-authorized`, `invalid-authzid`, a disabled account or expired
    /// credentials) counts against the address and the account; success and server-side or
    /// protocol failures do not.
    pub fn finished(
        &self,
        peer: &str,
        account: Option<&Jid>,
        error: Option<&SaslError>,
        now: Instant,
    ) {
        let guess = matches!(
            error,
            Some(
                SaslError::NotAuthorized
                    | SaslError::InvalidAuthzid
                    | SaslError::AccountDisabled
                    | SaslError::CredentialsExpired
            )
        );
        if guess {
            self.failed(peer, account, now);
        }
    }

    /// Counts a failed authentication from `peer` (for `account`, if the client named one).
    pub fn failed(&self, peer: &str, account: Option<&Jid>, now: Instant) {
        self.by_address.record(&address_key(peer), now);
        if let Some(jid) = account {
            self.by_account.record(jid.as_str(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_in_a_window() {
        let window = Duration::from_secs(60);
        let t = Throttle::new(window);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.allow("1.2.3.4", 3, start));
        }
        assert!(!t.allow("1.2.3.4", 3, start + Duration::from_secs(30)));
        assert!(t.allow("5.6.7.8", 3, start));
        assert!(t.allow("1.2.3.4", 3, start + window + Duration::from_secs(1)));
        assert!(!Throttle::new(window).allow("x", 0, start));
    }

    #[test]
    fn recent_counts_and_record_always_records() {
        let window = Duration::from_secs(60);
        let t = Throttle::new(window);
        let start = Instant::now();
        assert_eq!(t.recent("k", start), 0);
        for _ in 0..5 {
            t.record("k", start);
        }
        assert_eq!(t.recent("k", start), 5);
        assert_eq!(t.recent("other", start), 0);
        assert_eq!(t.recent("k", start + window), 0);
        for _ in 0..(MAX_PER_KEY + 10) {
            t.record("big", start);
        }
        assert_eq!(t.recent("big", start), MAX_PER_KEY);
    }

    #[test]
    fn many_distinct_keys_stay_bounded() {
        let t = Throttle::new(Duration::from_secs(600));
        let start = Instant::now();
        for i in 0..(MAX_KEYS + 5_000) {
            t.record(&i.to_string(), start + Duration::from_millis(i as u64));
        }
        let held = t.seen.lock().expect("lock").keys.len();
        assert!(held <= MAX_KEYS, "{held}");
        // The newest keys are the ones kept.
        let last = (MAX_KEYS + 4_999).to_string();
        assert_eq!(t.recent(&last, start + Duration::from_secs(300)), 1);
    }

    #[test]
    fn a_token_bucket_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 5, start);
        for _ in 0..5 {
            assert!(b.take(1, start));
        }
        assert!(!b.take(1, start));
        assert!(b.take(1, start + Duration::from_millis(100)));
        assert!(!b.take(1, start + Duration::from_millis(100)));
        assert!(b.is_full(start + Duration::from_secs(10)));
        // Charging past the tokens gives the wait that pays the debt back.
        let mut c = TokenBucket::new(1000, 1000, start);
        assert_eq!(c.charge(1000, start), Duration::ZERO);
        let wait = c.charge(500, start);
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(c.charge(0, start + wait), Duration::ZERO);
        // A huge read carries at most one burst of debt.
        assert_eq!(c.charge(u64::MAX / 2, start + wait), Duration::from_secs(1));
    }

    #[test]
    fn address_keys_drop_the_port_and_group_ipv6_by_64() {
        assert_eq!(address_key("192.0.2.7:5222"), "192.0.2.7");
        assert_eq!(
            address_key("[2001:db8:1:2:3:4:5:6]:5222"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(address_key("[2001:db8:1:2:ff::1]:1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("[::ffff:192.0.2.7]:1"), "192.0.2.7");
        assert_eq!(address_key("peer:1"), "peer:1");
    }

    #[test]
    fn the_guard_refuses_an_address_past_its_failures_and_spares_others() {
        let limits = LimitsConfig {
            auth_max_failures: 3,
            auth_account_max_failures: 5,
            ..LimitsConfig::default()
        };
        let g = AuthGuard::new(Duration::from_secs(300));
        let now = Instant::now();
        let alice = Jid::parse("alice@localhost").expect("jid");
        for _ in 0..3 {
            assert!(g.allows(&limits, "192.0.2.1:1000", Some(&alice), now));
            g.failed("192.0.2.1:1000", Some(&alice), now);
        }
        // Another port of the same address is the same attacker.
        assert!(!g.allows(&limits, "192.0.2.1:2000", None, now));
        assert!(g.allows(&limits, "192.0.2.2:1000", Some(&alice), now));
        // Past the window the address is free again.
        assert!(g.allows(&limits, "192.0.2.1:1", None, now + Duration::from_secs(300)));
    }

    #[test]
    fn an_account_under_distributed_attack_stays_open_to_clean_addresses() {
        let limits = LimitsConfig {
            auth_max_failures: 100,
            auth_account_max_failures: 5,
            ..LimitsConfig::default()
        };
        let g = AuthGuard::new(Duration::from_secs(300));
        let now = Instant::now();
        let alice = Jid::parse("alice@localhost").expect("jid");
        for i in 0..5 {
            g.failed(&format!("198.51.100.{i}:1"), Some(&alice), now);
        }
        assert!(!g.allows(&limits, "198.51.100.1:9", Some(&alice), now));
        assert!(g.allows(&limits, "203.0.113.9:9", Some(&alice), now));
        let bob = Jid::parse("bob@localhost").expect("jid");
        assert!(g.allows(&limits, "198.51.100.1:9", Some(&bob), now));
        let off = LimitsConfig {
            auth_max_failures: 0,
            auth_account_max_failures: 0,
            ..LimitsConfig::default()
        };
        assert!(g.allows(&off, "198.51.100.1:9", Some(&alice), now));
    }

    #[test]
    fn only_wrong_guesses_count() {
        let limits = LimitsConfig {
            auth_max_failures: 1,
            ..LimitsConfig::default()
        };
        let g = AuthGuard::new(Duration::from_secs(300));
        let now = Instant::now();
        for e in [
            SaslError::TemporaryAuthFailure,
            SaslError::MalformedRequest,
            SaslError::Aborted,
        ] {
            g.finished("192.0.2.1:1", None, Some(&e), now);
        }
        g.finished("192.0.2.1:1", None, None, now);
        assert!(g.allows(&limits, "192.0.2.1:1", None, now));
        g.finished("192.0.2.1:1", None, Some(&SaslError::NotAuthorized), now);
        assert!(!g.allows(&limits, "192.0.2.1:1", None, now));
    }
}
