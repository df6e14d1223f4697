//! Connection admission (flood defence): connections that have not bound a session yet are
//! bounded per address and overall, and new connections per address are rate limited; a
//! refused connection is closed at once and counted in `oxpecker_refused_connections_total`.
//! Every listener asks [`Admission::admit`] right after accept and holds the [`PreauthSlot`]
//! until its session is bound. Thresholds come from `[limits]` at each call.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::metrics::{Family, Metrics};
use super::throttle::{TokenBucket, address_key};
use crate::config::LimitsConfig;

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

/// One address's negotiating connections and accept bucket.
struct Entry {
    preauth: usize,
    accepts: TokenBucket,
}

/// The admission state of one server.
pub struct Admission {
    by_address: Mutex<HashMap<String, Entry>>,
    preauth: AtomicUsize,
    refused: Arc<Family>,
}

/// A connection counted as not yet bound; dropping it (bound, or closed) releases the count.
pub struct PreauthSlot {
    admission: Arc<Admission>,
    key: Option<String>,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        self.admission.preauth.fetch_sub(1, Ordering::Relaxed);
        let mut map = self
            .admission
            .by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&key) {
            e.preauth = e.preauth.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Fresh state; registers `oxpecker_refused_connections_total` in `metrics`.
    pub fn new(metrics: &Metrics) -> Arc<Self> {
        Arc::new(Admission {
            by_address: Mutex::new(HashMap::new()),
            preauth: AtomicUsize::new(0),
            refused: metrics.counter(
                "oxpecker_refused_connections",
                "Connections closed at accept by the flood limits, by reason",
                &["reason"],
            ),
        })
    }

    /// Connections counted as negotiating now.
    pub fn preauth(&self) -> usize {
        self.preauth.load(Ordering::Relaxed)
    }

    /// Counts a connection refused elsewhere (e.g. at `c2s.max_connections`).
    pub fn count_refusal(&self, why: Refusal) {
        self.refused.with(&[why.label()]).inc();
    }

    /// Admits a new connection from `ip`, or says why not (and counts it). Exempt addresses
    /// are always admitted and not counted.
    pub fn admit(
        self: &Arc<Self>,
        limits: &LimitsConfig,
        ip: IpAddr,
        now: Instant,
    ) -> Result<PreauthSlot, Refusal> {
        if limits.exempt(ip.to_canonical()) {
            return Ok(PreauthSlot {
                admission: self.clone(),
                key: None,
            });
        }
        let key = address_key(&ip.to_string());
        let verdict = {
            let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= SWEEP_AT && !map.contains_key(&key) {
                map.retain(|_, e| e.preauth > 0 || !e.accepts.is_full(now));
            }
            let rate = limits.accept_rate_per_address;
            let burst = limits.accept_burst_per_address;
            let e = map.entry(key.clone()).or_insert_with(|| Entry {
                preauth: 0,
                accepts: TokenBucket::new(u64::from(rate), u64::from(burst), now),
            });
            let total = self.preauth.load(Ordering::Relaxed);
            if limits.max_preauth_per_address > 0 && e.preauth >= limits.max_preauth_per_address {
                Err(Refusal::AddressPreauth)
            } else if limits.max_preauth > 0 && total >= limits.max_preauth {
                Err(Refusal::Preauth)
            } else if rate > 0 && !e.accepts.take(1, now) {
                Err(Refusal::AcceptRate)
            } else {
                e.preauth += 1;
                self.preauth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        match verdict {
            Ok(()) => Ok(PreauthSlot {
                admission: self.clone(),
                key: Some(key),
            }),
            Err(why) => {
                self.count_refusal(why);
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
}
