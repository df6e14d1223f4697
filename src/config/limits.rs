//! `[limits]`: the defences against hostile peers (brute force, connection floods, bandwidth),
//! each on by default with a generous threshold.

use serde::{Deserialize, Serialize};

/// The default `queue_budget_bytes`: 512 MiB queued to all sessions together.
pub const DEFAULT_QUEUE_BUDGET_BYTES: usize = 512 * 1024 * 1024;

/// Abuse limits (like Prosody's mod_limits and ejabberd's shapers and mod_fail2ban).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failed authentications from one address (an IPv6 address by its /64) within
    /// `auth_window_secs` after which its further attempts are refused (0 = no limit).
    pub auth_max_failures: usize,
    /// Failed authentications for one account within the window after which attempts on it are
    /// refused from every address that has itself failed in the window (0 = no limit).
    pub auth_account_max_failures: usize,
    /// The window over which failed authentications are counted, in seconds.
    pub auth_window_secs: u64,
    /// Milliseconds a refused attempt waits before its `<temporary-auth-failure/>` and the close.
    pub auth_refusal_delay_ms: u64,
    /// Most connections from one address that have not yet bound a session (0 = no limit).
    pub max_preauth_per_address: usize,
    /// Most connections overall that have not yet bound a session (0 = no limit).
    pub max_preauth: usize,
    /// New connections accepted per second from one address, on average (0 = no limit).
    pub accept_rate_per_address: u32,
    /// New connections one address may open in a burst before `accept_rate_per_address` applies.
    pub accept_burst_per_address: u32,
    /// Bytes per second read from one client connection, on average (0 = unshaped).
    pub c2s_read_rate: u64,
    /// Bytes a client connection may send in a burst before `c2s_read_rate` applies.
    pub c2s_read_burst: u64,
    /// Bytes per second read from one server-to-server connection, on average (0 = unshaped).
    pub s2s_read_rate: u64,
    /// Bytes a server-to-server connection may send in a burst before `s2s_read_rate` applies.
    pub s2s_read_burst: u64,
    /// Sessions of admin accounts are not shaped.
    pub exempt_admins: bool,
    /// Addresses (CIDR) exempt from the connection limits and the shaping (not from the
    /// authentication limits).
    pub exempt_addresses: Vec<ipnet::IpNet>,
    /// Bytes of stanzas queued to all sessions together, past which the largest queue's
    /// session is closed with `<policy-violation/>` ([`crate::core::budget`]; needs a restart).
    pub queue_budget_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            auth_max_failures: 10,
            auth_account_max_failures: 30,
            auth_window_secs: 300,
            auth_refusal_delay_ms: 2000,
            max_preauth_per_address: 100,
            max_preauth: 10_000,
            accept_rate_per_address: 20,
            accept_burst_per_address: 100,
            c2s_read_rate: 64 * 1024,
            c2s_read_burst: 1024 * 1024,
            s2s_read_rate: 512 * 1024,
            s2s_read_burst: 4 * 1024 * 1024,
            exempt_admins: false,
            exempt_addresses: vec![
                ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            queue_budget_bytes: DEFAULT_QUEUE_BUDGET_BYTES,
        }
    }
}

impl LimitsConfig {
    /// Whether `ip` is exempt from the connection limits and shaping.
    pub fn exempt(&self, ip: std::net::IpAddr) -> bool {
        self.exempt_addresses.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_exempt_by_default_and_others_are_not() {
        let l = LimitsConfig::default();
        assert!(l.exempt("127.0.0.1".parse().expect("ip")));
        assert!(l.exempt("::1".parse().expect("ip")));
        assert!(!l.exempt("127.0.0.2".parse().expect("ip")));
        assert!(!l.exempt("192.0.2.1".parse().expect("ip")));
        // A burst holds the largest stanza, so one stanza alone is never slowed.
        assert!(l.c2s_read_burst >= crate::config::C2sConfig::default().max_stanza_size as u64);
    }
}
