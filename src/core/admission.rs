//! Connection admission (flood defence): connections that have not authenticated yet (a client
//! that has not bound a session, a server that has not authenticated a domain) are bounded per
//! address and overall, and new connections per address are rate limited; a refused
//! connection is closed at once and counted in `oxpecker_refused_connections_total` by
//! listener (`c2s`, `s2s`) and reason. Every listener asks [`Admission::admit`] (clients) or
//! [`Admission::admit_on`] right after accept and holds the [`PreauthSlot`] until the peer is
//! authenticated. Each listener kind counts apart, with its own thresholds ([`Thresholds`]: the
//! client ones from `[limits]`, the server ones from `[s2s]`), read at each call.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::metrics::{Family, Metrics};
use super::throttle::{TokenBucket, address_key};
use crate::config::{LimitsConfig, S2sConfig};

/// Addresses tracked before idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// Why a connection was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address has `max_preauth_per_address` connections negotiating.
    AddressPreauth,
    /// `max_preauth` connections are negotiating overall.
    Preauth,
    /// The address opens connections faster than `accept_rate_per_address`.
    AcceptRate,
    /// `c2s.max_connections` are open.
    MaxConnections,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AddressPreauth => "address_preauth",
            Refusal::Preauth => "preauth",
            Refusal::AcceptRate => "accept_rate",
            Refusal::MaxConnections => "max_connections",
        }
    }
}

/// The kind of listener a connection came in on; each kind is counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Client listeners (STARTTLS and direct TLS; the web transports have none).
    C2s,
    /// Server-to-server listeners.
    S2s,
}

impl Listener {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Listener::C2s => "c2s",
            Listener::S2s => "s2s",
        }
    }
}

/// The limits of one listener kind (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Most connections from one address not yet authenticated.
    pub max_preauth_per_address: usize,
    /// Most connections overall not yet authenticated.
    pub max_preauth: usize,
    /// New connections per second from one address, on average.
    pub accept_rate_per_address: u32,
    /// New connections one address may open in a burst before the rate applies.
    pub accept_burst_per_address: u32,
}

impl Thresholds {
    /// The client listeners' limits (`[limits]`).
    pub fn c2s(l: &LimitsConfig) -> Self {
        Thresholds {
            max_preauth_per_address: l.max_preauth_per_address,
            max_preauth: l.max_preauth,
            accept_rate_per_address: l.accept_rate_per_address,
            accept_burst_per_address: l.accept_burst_per_address,
        }
    }

    /// The server listeners' limits (`[s2s]`).
    pub fn s2s(s: &S2sConfig) -> Self {
        Thresholds {
            max_preauth_per_address: s.max_preauth_per_ip,
            max_preauth: s.max_preauth,
            accept_rate_per_address: s.accept_rate_per_ip,
            accept_burst_per_address: s.accept_burst_per_ip,
        }
    }
}

/// One address's negotiating connections and accept bucket.
struct Entry {
    preauth: usize,
    accepts: TokenBucket,
}

/// The counts of one listener kind.
#[derive(Default)]
struct Pool {
    by_address: Mutex<HashMap<String, Entry>>,
    preauth: AtomicUsize,
}

/// The admission state of one server.
pub struct Admission {
    c2s: Pool,
    s2s: Pool,
    refused: Arc<Family>,
}

/// A connection counted as not yet authenticated; dropping it (authenticated, or closed)
/// releases the count.
pub struct PreauthSlot {
    admission: Arc<Admission>,
    listener: Listener,
    key: Option<String>,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let pool = self.admission.pool(self.listener);
        pool.preauth.fetch_sub(1, Ordering::Relaxed);
        let mut map = pool.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&key) {
            e.preauth = e.preauth.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Fresh state; registers `oxpecker_refused_connections_total` in `metrics`.
    pub fn new(metrics: &Metrics) -> Arc<Self> {
        Arc::new(Admission {
            c2s: Pool::default(),
            s2s: Pool::default(),
            refused: metrics.counter(
                "oxpecker_refused_connections",
                "Connections closed at accept by the flood limits, by listener and reason",
                &["listener", "reason"],
            ),
        })
    }

    fn pool(&self, listener: Listener) -> &Pool {
        match listener {
            Listener::C2s => &self.c2s,
            Listener::S2s => &self.s2s,
        }
    }

    /// Client connections counted as negotiating now.
    pub fn preauth(&self) -> usize {
        self.preauth_on(Listener::C2s)
    }

    /// Connections of `listener` counted as not yet authenticated now.
    pub fn preauth_on(&self, listener: Listener) -> usize {
        self.pool(listener).preauth.load(Ordering::Relaxed)
    }

    /// Counts a client connection refused elsewhere (e.g. at `c2s.max_connections`).
    pub fn count_refusal(&self, why: Refusal) {
        self.count(Listener::C2s, why);
    }

    fn count(&self, listener: Listener, why: Refusal) {
        self.refused.with(&[listener.label(), why.label()]).inc();
    }

    /// Admits a new client connection from `ip` under `[limits]`, or says why not (and counts
    /// it). Exempt addresses are always admitted and not counted.
    pub fn admit(
        self: &Arc<Self>,
        limits: &LimitsConfig,
        ip: IpAddr,
        now: Instant,
    ) -> Result<PreauthSlot, Refusal> {
        let exempt = limits.exempt(ip.to_canonical());
        self.admit_on(Listener::C2s, &Thresholds::c2s(limits), exempt, ip, now)
    }

    /// Admits a new connection of `listener` from `ip` under `limits`, or says why not (and
    /// counts it). An `exempt` address is always admitted and not counted.
    pub fn admit_on(
        self: &Arc<Self>,
        listener: Listener,
        limits: &Thresholds,
        exempt: bool,
        ip: IpAddr,
        now: Instant,
    ) -> Result<PreauthSlot, Refusal> {
        if exempt {
            return Ok(PreauthSlot {
                admission: self.clone(),
                listener,
                key: None,
            });
        }
        let pool = self.pool(listener);
        let key = address_key(&ip.to_string());
        let verdict = {
            let mut map = pool.by_address.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= SWEEP_AT && !map.contains_key(&key) {
                map.retain(|_, e| e.preauth > 0 || !e.accepts.is_full(now));
            }
            let rate = limits.accept_rate_per_address;
            let burst = limits.accept_burst_per_address;
            let e = map.entry(key.clone()).or_insert_with(|| Entry {
                preauth: 0,
                accepts: TokenBucket::new(u64::from(rate), u64::from(burst), now),
            });
            let total = pool.preauth.load(Ordering::Relaxed);
            if limits.max_preauth_per_address > 0 && e.preauth >= limits.max_preauth_per_address {
                Err(Refusal::AddressPreauth)
            } else if limits.max_preauth > 0 && total >= limits.max_preauth {
                Err(Refusal::Preauth)
            } else if rate > 0 && !e.accepts.take(1, now) {
                Err(Refusal::AcceptRate)
            } else {
                e.preauth = e.preauth.saturating_add(1);
                pool.preauth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        match verdict {
            Ok(()) => Ok(PreauthSlot {
                admission: self.clone(),
                listener,
                key: Some(key),
            }),
            Err(why) => {
                self.count(listener, why);
                Err(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_preauth_per_address: 2,
            max_preauth: 3,
            accept_rate_per_address: 1,
            accept_burst_per_address: 100,
            exempt_addresses: vec!["10.0.0.0/8".parse().expect("net")],
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn preauth_connections_are_bounded_per_address_and_overall_and_released() {
        let m = Metrics::new();
        let a = Admission::new(&m);
        let l = limits();
        let now = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let one = a.admit(&l, ip("192.0.2.1"), now).expect("first");
        let two = a.admit(&l, ip("192.0.2.1"), now).expect("second");
        assert_eq!(
            a.admit(&l, ip("192.0.2.1"), now).err(),
            Some(Refusal::AddressPreauth)
        );
        let three = a.admit(&l, ip("192.0.2.2"), now).expect("other address");
        assert_eq!(
            a.admit(&l, ip("192.0.2.3"), now).err(),
            Some(Refusal::Preauth)
        );
        // Exempt addresses are neither refused nor counted.
        let exempt: Vec<_> = (0..10)
            .map(|_| a.admit(&l, ip("10.1.2.3"), now).expect("exempt"))
            .collect();
        assert_eq!(a.preauth(), 3);
        drop(one);
        assert_eq!(a.preauth(), 2);
        let _again = a.admit(&l, ip("192.0.2.1"), now).expect("released");
        drop((two, three, exempt));
        let text = m.render();
        assert!(text.contains("reason=\"address_preauth\""), "{text}");
        assert!(text.contains("reason=\"preauth\""), "{text}");
    }

    #[test]
    fn accepts_per_address_are_rate_limited_after_a_burst() {
        let m = Metrics::new();
        let a = Admission::new(&m);
        let l = LimitsConfig {
            accept_rate_per_address: 1,
            accept_burst_per_address: 3,
            ..limits()
        };
        let now = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        for _ in 0..3 {
            drop(a.admit(&l, ip, now).expect("burst"));
        }
        assert_eq!(a.admit(&l, ip, now).err(), Some(Refusal::AcceptRate));
        let other: IpAddr = "198.51.100.8".parse().expect("ip");
        assert!(a.admit(&l, other, now).is_ok());
        let later = now + std::time::Duration::from_secs(1);
        assert!(a.admit(&l, ip, later).is_ok());
    }

    #[test]
    fn server_listeners_count_apart_with_their_own_thresholds() {
        let m = Metrics::new();
        let a = Admission::new(&m);
        let s2s = Thresholds {
            max_preauth_per_address: 1,
            max_preauth: 10,
            accept_rate_per_address: 0,
            accept_burst_per_address: 0,
        };
        let now = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let held = a
            .admit_on(Listener::S2s, &s2s, false, ip, now)
            .expect("first server stream");
        assert_eq!(
            a.admit_on(Listener::S2s, &s2s, false, ip, now).err(),
            Some(Refusal::AddressPreauth)
        );
        // The same address may still connect as a client, and an exempt one as a server.
        let client = a.admit(&limits(), ip, now).expect("client");
        let exempt = a
            .admit_on(Listener::S2s, &s2s, true, ip, now)
            .expect("exempt");
        assert_eq!((a.preauth_on(Listener::S2s), a.preauth()), (1, 1));
        drop((held, client, exempt));
        assert_eq!(a.preauth_on(Listener::S2s), 0);
        assert!(a.admit_on(Listener::S2s, &s2s, false, ip, now).is_ok());
        let text = m.render();
        assert!(
            text.contains("listener=\"s2s\",reason=\"address_preauth\""),
            "{text}"
        );
        assert!(!text.contains("listener=\"c2s\""), "{text}");
    }
}
