//! `admin_rest`: the admin REST API (a drop-in for Prosody's mod_admin_rest) as a per-host module.
//!
//! The HTTP handlers live in [`crate::http::admin_rest`]; this module is what makes the API
//! exist for a host (unloaded → the API answers 404 for that host), declares the options, and
//! checks them when it loads so a bad allowlist entry is reported by name.

use ipnet::IpNet;

use crate::config::Config;
use crate::core::modules::{LoadError, Module, ModuleContext};

/// The `admin_rest` module.
pub struct AdminRest;

/// Default base path of the API.
pub const DEFAULT_BASE: &str = "/admin_rest";
/// Default allowlist: loopback only.
pub const DEFAULT_WHITELIST: &[&str] = &["127.0.0.0/8", "::1"];
/// Default number of failed authentications from one address before it is throttled.
pub const DEFAULT_MAX_FAILURES: i64 = 10;
/// Default length of the throttling window, in seconds.
pub const DEFAULT_LOCKOUT_SECS: i64 = 60;

const OPTIONS: &[&str] = &[
    "admin_rest_secure",
    "admin_rest_base",
    "admin_rest_whitelist",
    "admin_rest_trusted_proxies",
    "admin_rest_message_prefix",
    "admin_rest_multicast_prefix",
    "admin_rest_broadcast_prefix",
    "admin_rest_allow_destructive",
    "admin_rest_allow_shutdown",
    "admin_rest_auth_max_failures",
    "admin_rest_auth_lockout_secs",
];

impl Module for AdminRest {
    fn name(&self) -> &'static str {
        "admin_rest"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        for key in ["admin_rest_whitelist", "admin_rest_trusted_proxies"] {
            if let Some(v) = ctx.option(key) {
                let list = v.as_array().ok_or_else(|| {
                    LoadError::bad_option(key, "must be a list of addresses or CIDR ranges")
                })?;
                for item in list {
                    let s = item
                        .as_str()
                        .ok_or_else(|| LoadError::bad_option(key, "must be a list of strings"))?;
                    parse_net(s).ok_or_else(|| {
                        LoadError::bad_option(
                            key,
                            format!("`{s}` is not an IP address or CIDR range"),
                        )
                    })?;
                }
            }
        }
        // A mistyped option must not silently fall back (e.g. `admin_rest_secure = "yes"`).
        let expect = |names: &[&str], what: &str, ok: fn(&toml::Value) -> bool| {
            for name in names {
                if let Some(v) = ctx.option(name)
                    && !ok(&v)
                {
                    return Err(LoadError::bad_option(name, format!("must be {what}")));
                }
            }
            Ok(())
        };
        expect(
            &[
                "admin_rest_secure",
                "admin_rest_allow_destructive",
                "admin_rest_allow_shutdown",
            ],
            "true or false",
            |v| v.is_bool(),
        )?;
        expect(
            &[
                "admin_rest_base",
                "admin_rest_message_prefix",
                "admin_rest_multicast_prefix",
                "admin_rest_broadcast_prefix",
            ],
            "a string",
            |v| v.is_str(),
        )?;
        expect(
            &["admin_rest_auth_max_failures"],
            "an integer from 1 to 1000000",
            |v| v.as_integer().is_some_and(|i| (1..=1_000_000).contains(&i)),
        )?;
        expect(
            &["admin_rest_auth_lockout_secs"],
            "an integer from 1 to 86400",
            |v| v.as_integer().is_some_and(|i| (1..=86_400).contains(&i)),
        )?;
        let base = ctx.option_string("admin_rest_base", DEFAULT_BASE);
        if !valid_base(&base) {
            return Err(LoadError::bad_option(
                "admin_rest_base",
                format!("must start with `/` and not end with one (got `{base}`)"),
            ));
        }
        Ok(())
    }

    fn options(&self) -> &'static [&'static str] {
        OPTIONS
    }
}

/// Whether `base` is a usable base path (`/x`, `/x/y`; not `/` alone, no trailing slash).
pub fn valid_base(base: &str) -> bool {
    base.starts_with('/') && base.len() > 1 && !base.ends_with('/') && !base.contains("//")
}

/// Parses an address (`127.0.0.1`, `::1`) or a CIDR range (`10.0.0.0/8`) into a network.
pub fn parse_net(s: &str) -> Option<IpNet> {
    crate::config::parse_net(s)
}

/// The options of the API for one host, read from the live configuration (host value, then global).
#[derive(Clone, Debug)]
pub struct AdminRestOptions {
    /// Refuse plain HTTP (`admin_rest_secure`).
    pub secure: bool,
    /// Base path (`admin_rest_base`).
    pub base: String,
    /// Allowlist from the configuration (`admin_rest_whitelist`), as written.
    pub whitelist: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed: `http.trusted_proxies` plus the
    /// `admin_rest_trusted_proxies` alias ([`Config::trusted_proxies`]).
    pub trusted_proxies: Vec<IpNet>,
    /// Prefix of single messages (`admin_rest_message_prefix`).
    pub message_prefix: String,
    /// Prefix of multicast messages (`admin_rest_multicast_prefix`).
    pub multicast_prefix: String,
    /// Prefix of broadcast messages (`admin_rest_broadcast_prefix`).
    pub broadcast_prefix: String,
    /// Whether `DELETE /data` and `DELETE /certs` are enabled (`admin_rest_allow_destructive`).
    pub allow_destructive: bool,
    /// Whether `POST /server/shutdown` is enabled (`admin_rest_allow_shutdown`).
    pub allow_shutdown: bool,
    /// Failed authentications from one address before it gets 429 (`admin_rest_auth_max_failures`).
    pub max_failures: u32,
    /// Throttling window in seconds (`admin_rest_auth_lockout_secs`).
    pub lockout_secs: u64,
}

impl AdminRestOptions {
    /// Reads the options for `host`; a value of the wrong type falls back to the default.
    pub fn for_host(cfg: &Config, host: &str) -> Self {
        let opt = |name: &str| cfg.option(host, name);
        let string = |name: &str, default: &str| {
            opt(name)
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let boolean =
            |name: &str, default: bool| opt(name).and_then(|v| v.as_bool()).unwrap_or(default);
        let int = |name: &str, default: i64, min: i64, max: i64| {
            opt(name)
                .and_then(|v| v.as_integer())
                .filter(|i| (min..=max).contains(i))
                .unwrap_or(default)
        };
        let list = |name: &str, default: &[&str]| -> Vec<String> {
            match opt(name).and_then(|v| v.as_array()) {
                Some(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                None => default.iter().map(|s| s.to_string()).collect(),
            }
        };
        let base = string("admin_rest_base", DEFAULT_BASE);
        AdminRestOptions {
            secure: boolean("admin_rest_secure", false),
            base: if valid_base(&base) {
                base
            } else {
                DEFAULT_BASE.to_string()
            },
            whitelist: list("admin_rest_whitelist", DEFAULT_WHITELIST),
            trusted_proxies: cfg.trusted_proxies(Some(host)),
            message_prefix: string("admin_rest_message_prefix", ""),
            multicast_prefix: string("admin_rest_multicast_prefix", ""),
            broadcast_prefix: string("admin_rest_broadcast_prefix", ""),
            allow_destructive: boolean("admin_rest_allow_destructive", false),
            allow_shutdown: boolean("admin_rest_allow_shutdown", false),
            max_failures: int(
                "admin_rest_auth_max_failures",
                DEFAULT_MAX_FAILURES,
                1,
                1_000_000,
            ) as u32,
            lockout_secs: int(
                "admin_rest_auth_lockout_secs",
                DEFAULT_LOCKOUT_SECS,
                1,
                86_400,
            ) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_and_bases() {
        assert_eq!(parse_net("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("nope").is_none());
        assert!(valid_base("/admin_rest"));
        assert!(valid_base("/api/admin"));
        assert!(!valid_base("/"));
        assert!(!valid_base("admin"));
        assert!(!valid_base("/admin/"));
    }

    #[test]
    fn bad_options_refuse_to_load() {
        use crate::storage::Store;
        for bad in [
            "admin_rest_secure = \"yes\"\n",
            "admin_rest_whitelist = [\"not-an-ip\"]\n",
            "admin_rest_base = \"/trailing/\"\n",
            "admin_rest_auth_max_failures = 0\n",
        ] {
            let cfg = Config::parse(&format!("modules_enabled = [\"admin_rest\"]\n{bad}")).unwrap();
            let err = crate::core::Core::new(cfg, Store::memory(), super::super::BUILTIN).err();
            assert!(
                matches!(
                    err,
                    Some(crate::core::modules::ModuleError::LoadFailed {
                        reason: LoadError::BadOption { .. },
                        ..
                    })
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn options_are_read_host_first() {
        let cfg = Config::parse(
            "admin_rest_message_prefix = \"[g] \"\nadmin_rest_whitelist = [\"10.0.0.0/8\"]\n[[host]]\nname = \"a\"\nadmin_rest_message_prefix = \"[a] \"\n[[host]]\nname = \"b\"\n",
        )
        .unwrap();
        assert_eq!(AdminRestOptions::for_host(&cfg, "a").message_prefix, "[a] ");
        let b = AdminRestOptions::for_host(&cfg, "b");
        assert_eq!(b.message_prefix, "[g] ");
        assert_eq!(b.whitelist, vec!["10.0.0.0/8".to_string()]);
        assert_eq!(b.base, DEFAULT_BASE);
        let d = AdminRestOptions::for_host(&Config::default(), "localhost");
        assert_eq!(
            d.whitelist,
            vec!["127.0.0.0/8".to_string(), "::1".to_string()]
        );
        assert!(!d.secure && !d.allow_destructive);
    }
}
