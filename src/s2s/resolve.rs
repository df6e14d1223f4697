//! Where to connect for a remote domain (RFC 6120 §3.2, XEP-0368): the static `[s2s.hosts]`
//! table first; else DNS SRV records for `_xmpps-server._tcp` (direct TLS) and
//! `_xmpp-server._tcp` (STARTTLS), merged and ordered by priority and weight (RFC 2782); else
//! the domain's own A/AAAA records on port 5269. Each target's addresses are tried
//! happy-eyeballs style (RFC 8305): attempts start a short delay apart, alternating address
//! families, and the first connection that succeeds wins.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::config::S2sConfig;

/// The conventional STARTTLS server port, used when a domain has no SRV records.
pub const DEFAULT_PORT: u16 = 5269;

/// How long a connection attempt runs alone before the next address is tried too (RFC 8305 §5).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// One place to connect to, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A fixed address from `[s2s.hosts]` (STARTTLS).
    Static(SocketAddr),
    /// A host name (or address literal) and port from DNS.
    Host {
        /// The host to look up.
        host: String,
        /// The port.
        port: u16,
        /// Whether TLS starts at once (an `_xmpps-server` record, XEP-0368) instead of STARTTLS.
        direct_tls: bool,
    },
}

/// Why no target could be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The domain publishes that it offers no federation (a single SRV record with target `.`).
    #[error("the domain offers no server-to-server service")]
    Refused,
    /// DNS is off (`s2s.dns = false`) and `[s2s.hosts]` has no entry.
    #[error("no address known and DNS is off")]
    NoDns,
    /// The resolver could not be set up (no usable system configuration).
    #[error("no DNS resolver: {0}")]
    Resolver(String),
}

/// An SRV record as far as ordering is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative chance among records of the same priority.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host name, without the trailing dot.
    pub target: String,
    /// Whether it came from `_xmpps-server` (direct TLS).
    pub direct_tls: bool,
}

/// Orders SRV records for connection attempts: ascending priority; within a priority, the
/// weighted random selection of RFC 2782 (weight-0 records have a small chance), direct TLS
/// before STARTTLS when both name the same host and port (XEP-0368 §3).
pub fn order(mut records: Vec<Srv>, rng: &mut impl Rng) -> Vec<Srv> {
    records.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.direct_tls.cmp(&a.direct_tls))
    });
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(same);
        let mut group = group.to_vec();
        // Weight-0 records go first in the list, as RFC 2782 asks, so that they keep a small
        // chance of being picked (a running sum that reaches 0 picks them).
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut sum = 0u64;
            let idx = group
                .iter()
                .position(|r| {
                    sum += u64::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(idx));
        }
        rest = tail;
    }
    out
}

/// The DNS side of federation: one resolver (with its cache), rebuilt when the configured
/// name servers change.
#[derive(Default)]
pub struct Dns {
    resolver: Mutex<Option<(Vec<SocketAddr>, TokioResolver)>>,
}

impl Dns {
    /// The resolver for `servers` (empty: the system's `/etc/resolv.conf`).
    fn resolver(&self, servers: &[SocketAddr]) -> Result<TokioResolver, ResolveError> {
        let mut slot = self
            .resolver
            .lock()
            .map_err(|_| ResolveError::Resolver("resolver lock poisoned".into()))?;
        if let Some((built_for, r)) = slot.as_ref()
            && built_for == servers
        {
            return Ok(r.clone());
        }
        let builder = if servers.is_empty() {
            Resolver::builder_tokio().map_err(|e| ResolveError::Resolver(e.to_string()))?
        } else {
            let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
            for s in servers {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                config.add_name_server(NameServerConfig::new(s.ip(), true, vec![udp, tcp]));
            }
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        let mut builder = builder;
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 1;
        let r = builder
            .build()
            .map_err(|e| ResolveError::Resolver(e.to_string()))?;
        *slot = Some((servers.to_vec(), r.clone()));
        Ok(r)
    }

    /// Where to connect for `domain`, in order.
    pub async fn targets(
        &self,
        cfg: &S2sConfig,
        domain: &str,
    ) -> Result<Vec<Target>, ResolveError> {
        if let Some(addr) = cfg.hosts.get(domain) {
            return Ok(vec![Target::Static(*addr)]);
        }
        if !cfg.dns {
            return Err(ResolveError::NoDns);
        }
        let resolver = self.resolver(&cfg.dns_servers)?;
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let (tls_name, plain_name) = (
            format!("_xmpps-server._tcp.{fqdn}"),
            format!("_xmpp-server._tcp.{fqdn}"),
        );
        let (tls, plain) = tokio::join!(
            srv(&resolver, &tls_name, true),
            srv(&resolver, &plain_name, false),
        );
        let records: Vec<Srv> = tls.into_iter().chain(plain).collect();
        if records.is_empty() {
            return Ok(vec![Target::Host {
                host: domain.to_string(),
                port: DEFAULT_PORT,
                direct_tls: false,
            }]);
        }
        // RFC 2782: a lone record with target "." means the service is decidedly not offered.
        if records.iter().all(|r| r.target.is_empty()) {
            return Err(ResolveError::Refused);
        }
        let ordered = order(records, &mut rand::rng());
        Ok(ordered
            .into_iter()
            .filter(|r| !r.target.is_empty())
            .map(|r| Target::Host {
                host: r.target,
                port: r.port,
                direct_tls: r.direct_tls,
            })
            .collect())
    }

    /// The addresses of `host` on `port`, interleaved IPv6/IPv4 (RFC 8305 §4); empty when the
    /// lookup fails.
    pub async fn addresses(&self, cfg: &S2sConfig, host: &str, port: u16) -> Vec<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, port)];
        }
        let Ok(resolver) = self.resolver(&cfg.dns_servers) else {
            return Vec::new();
        };
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match resolver.lookup_ip(fqdn.as_str()).await {
            Ok(found) => interleave(found.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
            Err(e) => {
                tracing::debug!(%host, error = %e, "s2s address lookup failed");
                Vec::new()
            }
        }
    }
}

/// The SRV records at `name` (none when the lookup fails or finds nothing).
async fn srv(resolver: &TokioResolver, name: &str, direct_tls: bool) -> Vec<Srv> {
    match resolver.srv_lookup(name).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii().trim_end_matches('.').to_string(),
                    direct_tls,
                }),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(%name, error = %e, "no SRV records");
            Vec::new()
        }
    }
}

/// Alternates address families, IPv6 first, keeping each family's order.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
    out
}

/// Connects to the first of `addrs` that answers: each attempt starts [`ATTEMPT_DELAY`] after
/// the previous one (or at once when it failed), and the first to succeed wins.
pub async fn connect(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut attempts = JoinSet::new();
    let mut next = addrs.iter();
    let mut last_err = std::io::Error::new(std::io::ErrorKind::NotFound, "no address to try");
    loop {
        let started = match next.next() {
            Some(addr) => {
                let addr = *addr;
                attempts.spawn(async move { TcpStream::connect(addr).await });
                true
            }
            None => false,
        };
        if attempts.is_empty() {
            return Err(last_err);
        }
        let wait = async {
            if started {
                tokio::time::sleep(ATTEMPT_DELAY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(Ok(tcp))) => return Ok(tcp),
                Some(Ok(Err(e))) => last_err = e,
                Some(Err(e)) => last_err = std::io::Error::other(e.to_string()),
                None => {}
            },
            _ = wait => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rec(priority: u16, weight: u16, target: &str, direct_tls: bool) -> Srv {
        Srv {
            priority,
            weight,
            port: 5269,
            target: target.into(),
            direct_tls,
        }
    }

    #[test]
    fn priority_orders_first_and_direct_tls_wins_ties() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let got = order(
            vec![
                rec(20, 0, "c", false),
                rec(10, 0, "a", false),
                rec(10, 0, "a", true),
            ],
            &mut rng,
        );
        let names: Vec<_> = got
            .iter()
            .map(|r| (r.target.as_str(), r.direct_tls))
            .collect();
        assert_eq!(names, [("a", true), ("a", false), ("c", false)]);
    }

    #[test]
    fn weights_pick_proportionally_and_every_record_appears_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let got = order(
                vec![rec(0, 90, "heavy", false), rec(0, 10, "light", false)],
                &mut rng,
            );
            assert_eq!(got.len(), 2);
            if got[0].target == "heavy" {
                heavy_first += 1;
            }
        }
        assert!((820..=970).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn interleaving_alternates_families_v6_first() {
        let v4a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v4b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(interleave(vec![v4a, v4b, v6]), vec![v6, v4a, v4b]);
    }

    #[tokio::test]
    async fn connect_skips_a_dead_address() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = live.local_addr().unwrap();
        let tcp = connect(&[dead, addr]).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), addr);
        assert!(connect(&[dead]).await.is_err());
        assert!(connect(&[]).await.is_err());
    }

    #[tokio::test]
    async fn static_hosts_win_and_dns_off_finds_nothing() {
        let mut cfg = S2sConfig {
            dns: false,
            ..Default::default()
        };
        let addr: SocketAddr = "127.0.0.2:5269".parse().unwrap();
        cfg.hosts.insert("example.net".into(), addr);
        let dns = Dns::default();
        assert_eq!(
            dns.targets(&cfg, "example.net").await,
            Ok(vec![Target::Static(addr)])
        );
        assert_eq!(
            dns.targets(&cfg, "other.net").await,
            Err(ResolveError::NoDns)
        );
    }
}
