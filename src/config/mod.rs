//! Configuration: TOML loading, defaults (the embedded "just works" set-up) and validation that names the key.
//!
//! `config/oxpecker.toml` in the repository documents every option; keep the two in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::xmpp::jid::{self, Jid};

pub mod limits;
pub use limits::LimitsConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid or a key has the wrong type (the message names the key and line).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A key has an unacceptable value.
    #[error("invalid config: `{key}`: {reason}")]
    Invalid {
        /// The dotted key path.
        key: String,
        /// Why.
        reason: String,
    },
}

/// A TOML error as one line: `line N: message` (toml's own text spans several lines).
/// An IP address or CIDR range (host bits cleared), as the address-list options take them.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
}

fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or_default();
            let index = before.matches('\n').count();
            let line = index.saturating_add(1);
            let source: String = text
                .lines()
                .nth(index)
                .unwrap_or_default()
                .trim()
                .chars()
                .take(80)
                .collect();
            ConfigError::Parse(format!("line {line} (`{source}`): {message}"))
        }
        None => ConfigError::Parse(message),
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The modules a server can load, as config validation sees them (handed in by the server,
/// so `config` never names the modules).
#[derive(Clone, Debug, Default)]
pub struct ModuleCatalog {
    /// Module names.
    pub names: Vec<&'static str>,
    /// Every option some module reads.
    pub options: Vec<&'static str>,
}

/// What to do when a client binds a resource that is already online (Prosody's `conflict_resolve`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceConflict {
    /// Disconnect the existing session with a `conflict` stream error (RFC 6120 §7.7.2.2, Prosody's default).
    #[default]
    KickOld,
    /// Give the new session a server-generated resource instead.
    Random,
    /// Refuse the new bind with a `conflict` stanza error.
    Refuse,
}

/// Which resources get a `chat` or `normal` message addressed to a bare JID (RFC 6121 §8.5.2.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BareMessageDelivery {
    /// Every available resource with a non-negative priority (the default).
    #[default]
    All,
    /// Only the available resources of the highest non-negative priority.
    Highest,
}

/// How log lines are written (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; colours only when the output is a terminal (the default).
    #[default]
    Text,
    /// One JSON object per line, with the event's tracing fields and spans, for log shippers.
    Json,
}

/// When a log file starts a new file (`log_rotation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogRotation {
    /// A new file every hour (`NAME.YYYY-MM-DD-HH`).
    Hourly,
    /// A new file every day (`NAME.YYYY-MM-DD`, the default).
    #[default]
    Daily,
    /// One file, never rotated by the server (for logrotate with copytruncate).
    Never,
}

/// The whole server configuration.
///
/// Unknown top-level keys are collected into `options` and must be declared by a module
/// (e.g. `admin_rest_base`; checked by [`Config::check_modules`]), so a typo still refuses to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Virtual hosts, in order; the first is the default host.
    #[serde(rename = "host")]
    pub hosts: Vec<HostConfig>,
    /// Component hosts (`[[component]]`); unset = the embedded defaults, a MUC service at
    /// `conference.<first host>` and a file upload service at `upload.<first host>` (see
    /// [`Config::components`]); `component = []` = none.
    #[serde(rename = "component", default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<ComponentConfig>>,
    /// Accounts with admin rights (bare JIDs).
    pub admins: Vec<String>,
    /// Where the embedded store, certificates and the control socket live.
    pub data_dir: PathBuf,
    /// Where modules read their own files: `<module_resources>/<module>/` (default `modules`
    /// beside the configuration file).
    pub module_resources: PathBuf,
    /// Modules loaded on every host unless a host overrides the list.
    pub modules_enabled: Vec<String>,
    /// Modules never loaded on any host.
    pub modules_disabled: Vec<String>,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: LogFormat,
    /// Write logs to this file instead of standard output (rotated per `log_rotation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// When the log files rotate.
    pub log_rotation: LogRotation,
    /// Rotated log files kept (older ones are deleted); 0 keeps them all.
    pub log_max_files: usize,
    /// Write the `audit` target (admin actions, refused admin calls) to this file, and only there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log_file: Option<PathBuf>,
    /// Client-to-server listener settings.
    pub c2s: C2sConfig,
    /// Server-to-server (federation) settings.
    pub s2s: S2sConfig,
    /// HTTP listener settings.
    pub http: HttpConfig,
    /// Web client transports on the HTTP listeners (WebSocket, BOSH).
    pub web: WebConfig,
    /// TLS certificate settings.
    pub tls: TlsConfig,
    /// Credential settings.
    pub auth: AuthConfig,
    /// Storage settings.
    pub storage: StorageConfig,
    /// Defences against hostile peers (`[limits]`).
    pub limits: LimitsConfig,
    /// Cluster membership through NATS (`[cluster]`); absent = a single node.
    pub cluster: ClusterConfig,
    /// Who gets a chat or normal message sent to a bare JID (a host may override it).
    pub bare_message_delivery: BareMessageDelivery,
    /// Module options set globally (Prosody style: `offline_max_messages = 500`).
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
    /// The file this configuration was loaded from (re-read on reload); `None` for built-in defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One virtual host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostConfig {
    /// The domain served.
    pub name: String,
    /// Replaces the global `modules_enabled` for this host.
    #[serde(default)]
    pub modules_enabled: Option<Vec<String>>,
    /// Added to the global `modules_disabled` for this host.
    #[serde(default)]
    pub modules_disabled: Vec<String>,
    /// Overrides the global `bare_message_delivery` for this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_message_delivery: Option<BareMessageDelivery>,
    /// Module options for this host only; they override the global ones.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

/// One component host (Prosody's `Component "conference.example.org" "muc"`): its own event
/// bus and modules, no user logins, listed in its parent host's disco#items.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ComponentConfig {
    /// The component's domain.
    pub name: String,
    /// The module that implements the component (e.g. `muc`).
    pub module: String,
    /// Further modules loaded on the component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules_enabled: Vec<String>,
    /// The user host whose disco#items lists the component; unset = the domain after the
    /// component's first label if it is served here, else the first host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Options for this component's modules; they override the global ones.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

/// Client-to-server settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Addresses for STARTTLS client connections (port 5222 by convention).
    pub listen: Vec<SocketAddr>,
    /// Addresses for direct-TLS client connections (XEP-0368, port 5223 by convention).
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Refuse authentication until the stream is encrypted.
    pub require_encryption: bool,
    /// Largest stanza in bytes once authenticated; advertised per XEP-0478.
    pub max_stanza_size: usize,
    /// Largest stanza in bytes before authentication.
    pub max_stanza_size_unauthenticated: usize,
    /// Seconds a client may take to finish negotiation (TLS, SASL, bind).
    pub negotiation_timeout_secs: u64,
    /// Seconds of silence after which an authenticated client is disconnected (0 = never).
    pub idle_timeout_secs: u64,
    /// SASL mechanisms offered, in this order (PLAIN only ever over TLS, `-PLUS` only with a
    /// TLS 1.3 channel binding).
    pub sasl_mechanisms: Vec<String>,
    /// Policy when a bound resource is taken.
    pub resource_conflict: ResourceConflict,
    /// Outbound queue length per session; a client that falls this far behind is disconnected.
    pub send_queue: usize,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Refuse clients that do not use SASL2 with a client id.
    pub enforce_client_ids: bool,
    /// Lifetime of a FAST token in seconds (0 = FAST not offered).
    pub fast_token_lifetime_secs: u64,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5222))],
            direct_tls_listen: Vec::new(),
            require_encryption: true,
            max_stanza_size: 256 * 1024,
            max_stanza_size_unauthenticated: 10 * 1024,
            negotiation_timeout_secs: 30,
            idle_timeout_secs: 0,
            // The -PLUS mechanisms are opt-in: slixmpp 1.8 picks them over TLS 1.3 without a
            // tls-exporter binding to send, and its login then fails instead of falling back.
            sasl_mechanisms: ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
                .map(String::from)
                .to_vec(),
            resource_conflict: ResourceConflict::KickOld,
            send_queue: 1024,
            max_connections: 100_000,
            enforce_client_ids: false,
            fast_token_lifetime_secs: 21 * 86_400,
        }
    }
}

/// Server-to-server (federation) settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Addresses for STARTTLS server connections (port 5269 by convention).
    pub listen: Vec<SocketAddr>,
    /// Addresses for direct-TLS server connections (XEP-0368, port 5270 by convention).
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Require TLS on every server-to-server stream, both directions.
    pub require_encryption: bool,
    /// Largest stanza in bytes on a server-to-server stream; advertised per XEP-0478.
    pub max_stanza_size: usize,
    /// Seconds a stream may take to connect, secure and authenticate.
    pub negotiation_timeout_secs: u64,
    /// Seconds an outgoing stream may stay unused before it is closed.
    pub idle_timeout_secs: u64,
    /// Stanzas queued per outgoing stream (while it connects or when the peer reads slowly).
    pub queue_size: usize,
    /// Seconds one write to a peer may block before the peer counts as not reading.
    pub send_timeout_secs: u64,
    /// Require a valid certificate (trusted, naming the domain) from every remote domain:
    /// no dialback without one (Prosody's `s2s_secure_auth`).
    pub secure_auth: bool,
    /// Remote domains that need a valid certificate even when `secure_auth` is off.
    pub secure_domains: Vec<String>,
    /// Remote domains allowed to use dialback without a valid certificate when `secure_auth` is on.
    pub insecure_domains: Vec<String>,
    /// If not empty, the only remote domains this server federates with.
    pub allow_domains: Vec<String>,
    /// Remote domains this server never federates with.
    pub deny_domains: Vec<String>,
    /// Trust the operating system's certificate store for peer certificates.
    pub system_roots: bool,
    /// Further PEM files of trusted certificate authorities for peer certificates.
    pub ca_files: Vec<PathBuf>,
    /// Look remote domains up in DNS (SRV `_xmpps-server`/`_xmpp-server`, then A/AAAA on 5269);
    /// off: only `hosts` below is consulted.
    pub dns: bool,
    /// Name servers for those lookups (`"127.0.0.1:53"`); empty: the system's `/etc/resolv.conf`.
    pub dns_servers: Vec<SocketAddr>,
    /// Static targets that replace DNS for these remote domains (`"example.net" = "127.0.0.2:5269"`).
    pub hosts: BTreeMap<String, SocketAddr>,
    /// Most incoming server connections from one address not yet authenticated (0 = no limit).
    pub max_preauth_per_ip: usize,
    /// Most incoming server connections overall not yet authenticated (0 = no limit).
    pub max_preauth: usize,
    /// New server connections accepted per second from one address, on average (0 = no limit).
    pub accept_rate_per_ip: u32,
    /// New server connections one address may open in a burst before `accept_rate_per_ip` applies.
    pub accept_burst_per_ip: u32,
}

impl S2sConfig {
    /// Whether `domain` must present a valid certificate (`secure_auth` and its exceptions).
    pub fn requires_certificate(&self, domain: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|d| d.eq_ignore_ascii_case(domain));
        if listed(&self.secure_domains) {
            return true;
        }
        if listed(&self.insecure_domains) {
            return false;
        }
        self.secure_auth
    }

    /// Whether this server federates with `domain` at all (`allow_domains`, `deny_domains`).
    pub fn permits(&self, domain: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|d| d.eq_ignore_ascii_case(domain));
        !listed(&self.deny_domains)
            && (self.allow_domains.is_empty() || listed(&self.allow_domains))
    }
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5269))],
            direct_tls_listen: Vec::new(),
            require_encryption: true,
            max_stanza_size: 512 * 1024,
            negotiation_timeout_secs: 30,
            idle_timeout_secs: 300,
            queue_size: 256,
            send_timeout_secs: 30,
            secure_auth: false,
            secure_domains: Vec::new(),
            insecure_domains: Vec::new(),
            allow_domains: Vec::new(),
            deny_domains: Vec::new(),
            system_roots: true,
            ca_files: Vec::new(),
            dns: true,
            dns_servers: Vec::new(),
            hosts: BTreeMap::new(),
            max_preauth_per_ip: 10,
            max_preauth: 1000,
            accept_rate_per_ip: 5,
            accept_burst_per_ip: 20,
        }
    }
}

/// HTTP settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Plain-HTTP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// HTTPS listen addresses (same certificate as c2s); empty = none.
    pub tls_listen: Vec<SocketAddr>,
    /// Addresses (CIDR) allowed to read `GET /metrics`.
    pub metrics_allow: Vec<ipnet::IpNet>,
    /// Origins browsers may call the web transports, host-meta and file upload from (CORS); `*` = any; empty = none.
    pub cors_origins: Vec<String>,
    /// Reverse proxies (CIDR) whose `X-Forwarded-For`/`X-Forwarded-Proto` the web transports believe.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5280))],
            tls_listen: Vec::new(),
            metrics_allow: vec![
                ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Web client transports (RFC 7395 WebSocket at `/xmpp-websocket`, XEP-0124/0206 BOSH at `/http-bind`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve XMPP over WebSocket at `/xmpp-websocket`.
    pub websocket: bool,
    /// Serve BOSH at `/http-bind`.
    pub bosh: bool,
    /// Longest `wait` (seconds) a BOSH request is held open.
    pub bosh_max_wait_secs: u64,
    /// Seconds a BOSH session may go without any request before it ends.
    pub bosh_inactivity_secs: u64,
    /// Most BOSH requests held open at once (`hold`).
    pub bosh_max_hold: u32,
    /// Shortest interval (seconds) between empty BOSH polls, advertised as `polling` and enforced.
    pub bosh_polling_secs: u64,
    /// Bytes of output a BOSH session buffers for its client before the session's queue backs up.
    pub bosh_max_buffer_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            websocket: true,
            bosh: true,
            bosh_max_wait_secs: 60,
            bosh_inactivity_secs: 60,
            bosh_max_hold: 1,
            bosh_polling_secs: 5,
            bosh_max_buffer_bytes: 1024 * 1024,
        }
    }
}

/// TLS certificate settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; unset = a self-signed certificate made in `data_dir/tls/` on first start.
    pub certificate: Option<PathBuf>,
    /// PEM private key (required with `certificate`).
    pub key: Option<PathBuf>,
}

/// Credential settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PBKDF2 iteration count for new SCRAM keys (at least 4096).
    pub scram_iterations: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scram_iterations: 10_000,
        }
    }
}

/// Storage settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Which engine keeps the store (see [`StorageBackend`]).
    pub backend: StorageBackend,
    /// Cache of the embedded engine (fjall's block cache, sled's page cache), in MiB.
    pub cache_capacity_mb: u64,
    /// Connection URL of the PostgreSQL database (`backend = "postgres"`); may hold a password,
    /// which is shown as `***` wherever the configuration is displayed.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Option<String>,
}

/// Writes a database URL with its password replaced by `***` (`check-config`, `config:get`).
fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&redact_url(url)),
        None => s.serialize_none(),
    }
}

/// `url` with its password hidden: `postgres://user:***@host/db`, or `password=***` in the
/// key=value form.
fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some(("password", _)) => "password=***".to_string(),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cluster membership (`[cluster]`): several nodes serving the same domains through NATS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS server (with JetStream) the nodes meet at, e.g. `nats://127.0.0.1:4222`;
    /// unset = a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// This node's name, unique in the cluster (letters, digits, `-`, `_`); default: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Seconds after which a node that stopped heartbeating counts as gone with its sessions.
    pub node_ttl_secs: u64,
    /// Stanzas waiting to be published to other nodes; beyond, they bounce (`remote-server-timeout`).
    pub forward_queue: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: None,
            node_name: None,
            node_ttl_secs: 6,
            forward_queue: 10_000,
        }
    }
}

impl ClusterConfig {
    /// This node's name: `node_name`, else the machine's host name, else `node`.
    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().replace(|c: char| !valid_node_char(c), "_"))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".into())
        })
    }
}

/// Whether `c` may appear in a node name (it becomes part of NATS subjects and KV keys).
fn valid_node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The engine behind the store, `[storage] backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// fjall, an LSM tree with a journal in `<data_dir>/store` (the default: cheap appends).
    #[default]
    Fjall,
    /// sled 0.34 in `<data_dir>/store` (the engine before fjall).
    Sled,
    /// A PostgreSQL database at `url`, which several nodes can share.
    Postgres,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::default(),
            cache_capacity_mb: 64,
            url: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: vec![HostConfig {
                name: "localhost".into(),
                ..HostConfig::default()
            }],
            components: None,
            admins: Vec::new(),
            data_dir: PathBuf::from("./data"),
            module_resources: PathBuf::from("modules"),
            modules_enabled: [
                "roster",
                "presence",
                "offline",
                "disco",
                "ping",
                "admin_rest",
                "time",
                "version",
                "last",
                "vcard",
                "private",
                "blocking",
                "mam",
                "carbons",
                "smacks",
                "csi",
                "push",
                "pep",
                "bookmarks",
                "vcard_legacy",
                "metrics",
            ]
            .map(String::from)
            .to_vec(),
            modules_disabled: Vec::new(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            log_file: None,
            log_rotation: LogRotation::Daily,
            log_max_files: 7,
            audit_log_file: None,
            c2s: C2sConfig::default(),
            s2s: S2sConfig::default(),
            http: HttpConfig::default(),
            web: WebConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            cluster: ClusterConfig::default(),
            bare_message_delivery: BareMessageDelivery::All,
            options: BTreeMap::new(),
            source: None,
        }
    }
}

impl Config {
    /// Loads and validates a TOML file; relative paths in it are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text)?;
        if let Some(dir) = path.parent() {
            cfg.resolve_paths(dir);
        }
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text (paths stay as written); module names and options are
    /// checked separately, against the server's modules, by [`Config::check_modules`].
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.module_resources);
        if let Some(p) = self.tls.certificate.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.key.as_mut() {
            fix(p);
        }
        for p in &mut self.s2s.ca_files {
            fix(p);
        }
        for p in [&mut self.log_file, &mut self.audit_log_file]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
    }

    /// Checks module names and module options against the modules the server has; errors
    /// name the key. [`Config::parse`] checks everything else.
    pub fn check_modules(&self, known: &ModuleCatalog) -> Result<(), ConfigError> {
        let options = &known.options;
        let check_options =
            |key: &str, opts: &BTreeMap<String, toml::Value>| -> Result<(), ConfigError> {
                match opts.keys().find(|k| !options.contains(&k.as_str())) {
                    Some(k) => Err(invalid(
                        format!("{key}{k}"),
                        "unknown option (no core setting or module uses it)",
                    )),
                    None => Ok(()),
                }
            };
        check_options("", &self.options)?;
        for (i, h) in self.hosts.iter().enumerate() {
            check_options(&format!("host[{i}]."), &h.options)?;
        }
        for (i, c) in self.components.iter().flatten().enumerate() {
            check_options(&format!("component[{i}]."), &c.options)?;
        }
        let check_modules = |key: &str, list: &[String]| -> Result<(), ConfigError> {
            for m in list {
                if !known.names.contains(&m.as_str()) {
                    return Err(invalid(
                        key,
                        format!("unknown module `{m}` (known: {})", known.names.join(", ")),
                    ));
                }
            }
            Ok(())
        };
        check_modules("modules_enabled", &self.modules_enabled)?;
        check_modules("modules_disabled", &self.modules_disabled)?;
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some(list) = &h.modules_enabled {
                check_modules(&format!("host[{i}].modules_enabled"), list)?;
            }
            check_modules(&format!("host[{i}].modules_disabled"), &h.modules_disabled)?;
        }
        for (i, c) in self.components.iter().flatten().enumerate() {
            check_modules(
                &format!("component[{i}].module"),
                std::slice::from_ref(&c.module),
            )?;
            check_modules(
                &format!("component[{i}].modules_enabled"),
                &c.modules_enabled,
            )?;
        }
        Ok(())
    }

    /// Checks values and normalises host names and admin JIDs; errors name the offending key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.hosts.is_empty() {
            return Err(invalid("host", "at least one [[host]] is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, h) in self.hosts.iter_mut().enumerate() {
            h.name = jid::normalize_domain(&h.name)
                .map_err(|e| invalid(format!("host[{i}].name"), e.to_string()))?;
            if !seen.insert(h.name.clone()) {
                return Err(invalid(
                    format!("host[{i}].name"),
                    format!("host {} is listed twice", h.name),
                ));
            }
        }
        for (i, c) in self.components.iter_mut().flatten().enumerate() {
            c.name = jid::normalize_domain(&c.name)
                .map_err(|e| invalid(format!("component[{i}].name"), e.to_string()))?;
            if !seen.insert(c.name.clone()) {
                return Err(invalid(
                    format!("component[{i}].name"),
                    format!("{} is already a host or component", c.name),
                ));
            }
            if c.module.is_empty() {
                return Err(invalid(
                    format!("component[{i}].module"),
                    "name the module that implements the component (e.g. \"muc\")",
                ));
            }
            if let Some(p) = c.parent.as_mut() {
                *p = jid::normalize_domain(p)
                    .map_err(|e| invalid(format!("component[{i}].parent"), e.to_string()))?;
                if !self.hosts.iter().any(|h| &h.name == p) {
                    return Err(invalid(
                        format!("component[{i}].parent"),
                        format!("{p} is not a [[host]]"),
                    ));
                }
            }
        }
        for (i, a) in self.admins.iter_mut().enumerate() {
            let j = Jid::parse(a).map_err(|e| invalid(format!("admins[{i}]"), e.to_string()))?;
            if j.node().is_none() || j.resource().is_some() {
                return Err(invalid(
                    format!("admins[{i}]"),
                    "must be a bare account JID like admin@example.com",
                ));
            }
            *a = j.to_string();
        }
        let c = &self.c2s;
        if c.max_stanza_size < 10_000 {
            return Err(invalid(
                "c2s.max_stanza_size",
                "must be at least 10000 bytes (RFC 6120 §13.12)",
            ));
        }
        if c.max_stanza_size_unauthenticated < 1024 {
            return Err(invalid(
                "c2s.max_stanza_size_unauthenticated",
                "must be at least 1024 bytes",
            ));
        }
        if c.negotiation_timeout_secs == 0 {
            return Err(invalid("c2s.negotiation_timeout_secs", "must be positive"));
        }
        if c.send_queue == 0 {
            return Err(invalid("c2s.send_queue", "must be positive"));
        }
        if c.max_connections == 0 {
            return Err(invalid("c2s.max_connections", "must be positive"));
        }
        if c.sasl_mechanisms.is_empty() {
            return Err(invalid(
                "c2s.sasl_mechanisms",
                "at least one mechanism is required",
            ));
        }
        for m in &c.sasl_mechanisms {
            if crate::auth::sasl::Mechanism::from_name(m).is_none() {
                return Err(invalid(
                    "c2s.sasl_mechanisms",
                    format!("unknown mechanism `{m}` (known: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN)"),
                ));
            }
        }
        if self.auth.scram_iterations < crate::auth::credentials::MIN_ITERATIONS {
            return Err(invalid(
                "auth.scram_iterations",
                format!(
                    "must be at least {} (RFC 7677)",
                    crate::auth::credentials::MIN_ITERATIONS
                ),
            ));
        }
        self.validate_s2s()?;
        self.validate_web()?;
        self.validate_cluster()?;
        if self.limits.auth_window_secs == 0 {
            return Err(invalid("limits.auth_window_secs", "must be positive"));
        }
        if self.tls.certificate.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls",
                "set both `certificate` and `key`, or neither for a self-signed certificate",
            ));
        }
        if self.storage.cache_capacity_mb == 0 {
            return Err(invalid("storage.cache_capacity_mb", "must be positive"));
        }
        if self.storage.backend == StorageBackend::Postgres && self.storage.url.is_none() {
            return Err(invalid(
                "storage.url",
                "backend = \"postgres\" needs the database's url (postgres://user@host/db)",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", e.to_string()));
        }
        for (key, file) in [
            ("log_file", &self.log_file),
            ("audit_log_file", &self.audit_log_file),
        ] {
            let folder =
                |f: &PathBuf| f.file_name().is_none() || f.to_string_lossy().ends_with('/');
            if file.as_ref().is_some_and(folder) {
                return Err(invalid(key, "must name a file, not a folder"));
            }
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if let Some(name) = &c.node_name
            && (name.is_empty() || name.len() > 64 || !name.chars().all(valid_node_char))
        {
            return Err(invalid(
                "cluster.node_name",
                "use 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if c.node_ttl_secs < 2 {
            return Err(invalid("cluster.node_ttl_secs", "must be at least 2"));
        }
        if c.forward_queue == 0 {
            return Err(invalid("cluster.forward_queue", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_web(&self) -> Result<(), ConfigError> {
        let w = &self.web;
        if w.bosh_max_wait_secs == 0 || w.bosh_inactivity_secs == 0 {
            return Err(invalid(
                "web.bosh_max_wait_secs",
                "BOSH wait and inactivity must be positive",
            ));
        }
        if w.bosh_max_hold == 0 || w.bosh_max_hold > 16 {
            return Err(invalid("web.bosh_max_hold", "must be between 1 and 16"));
        }
        if w.bosh_max_buffer_bytes < self.c2s.max_stanza_size {
            return Err(invalid(
                "web.bosh_max_buffer_bytes",
                "must hold at least one stanza of c2s.max_stanza_size",
            ));
        }
        Ok(())
    }

    fn validate_s2s(&mut self) -> Result<(), ConfigError> {
        let s = &self.s2s;
        if s.max_stanza_size < 10_000 {
            return Err(invalid(
                "s2s.max_stanza_size",
                "must be at least 10000 bytes (RFC 6120 §13.12)",
            ));
        }
        if s.negotiation_timeout_secs == 0 {
            return Err(invalid("s2s.negotiation_timeout_secs", "must be positive"));
        }
        if s.queue_size == 0 {
            return Err(invalid("s2s.queue_size", "must be positive"));
        }
        if s.send_timeout_secs == 0 {
            return Err(invalid("s2s.send_timeout_secs", "must be positive"));
        }
        let mut hosts = BTreeMap::new();
        for (domain, addr) in &s.hosts {
            let d = jid::normalize_domain(domain)
                .map_err(|e| invalid(format!("s2s.hosts.{domain}"), e.to_string()))?;
            hosts.insert(d, *addr);
        }
        self.s2s.hosts = hosts;
        Ok(())
    }

    /// The default (first) host.
    pub fn default_host(&self) -> &str {
        self.hosts
            .first()
            .map(|h| h.name.as_str())
            .unwrap_or("localhost")
    }

    /// The modules to load on `host`, in order.
    pub fn modules_for(&self, host: &HostConfig) -> Vec<String> {
        let base = host
            .modules_enabled
            .as_ref()
            .unwrap_or(&self.modules_enabled);
        base.iter()
            .filter(|m| !self.modules_disabled.contains(m) && !host.modules_disabled.contains(m))
            .cloned()
            .collect()
    }

    /// The component hosts served: the configured `[[component]]`s, or with none configured
    /// the embedded defaults (a `muc` service at `conference.<first host>`, an `http_upload`
    /// service at `upload.<first host>`), each with its
    /// parent resolved.
    pub fn components(&self) -> Vec<ComponentConfig> {
        let mut list = match &self.components {
            Some(list) => list.clone(),
            None => vec![
                ComponentConfig {
                    name: format!("conference.{}", self.default_host()),
                    module: "muc".into(),
                    ..ComponentConfig::default()
                },
                ComponentConfig {
                    name: format!("upload.{}", self.default_host()),
                    module: "http_upload".into(),
                    ..ComponentConfig::default()
                },
            ],
        };
        for c in &mut list {
            if c.parent.is_none() {
                let after_first = c.name.split_once('.').map(|(_, rest)| rest);
                let parent = match after_first {
                    Some(p) if self.hosts.iter().any(|h| h.name == p) => p,
                    _ => self.default_host(),
                };
                c.parent = Some(parent.to_string());
            }
        }
        list
    }

    /// Whether `jid` (a bare JID string) is an admin.
    pub fn is_admin(&self, jid: &str) -> bool {
        self.admins.iter().any(|a| a == jid)
    }

    /// A module option for `host`: the host's value, else the global one.
    pub fn option(&self, host: &str, name: &str) -> Option<&toml::Value> {
        self.hosts
            .iter()
            .find(|h| h.name == host)
            .and_then(|h| h.options.get(name))
            .or_else(|| {
                self.components
                    .iter()
                    .flatten()
                    .find(|c| c.name == host)
                    .and_then(|c| c.options.get(name))
            })
            .or_else(|| self.options.get(name))
    }

    /// The reverse proxies whose `X-Forwarded-For`/`X-Forwarded-Proto` the HTTP side believes,
    /// for the admin API of `host` (`None`: server-wide, as the web transports ask).
    /// `http.trusted_proxies` is the one list; `admin_rest_trusted_proxies`, Prosody's name, is an
    /// alias that adds to it: set at top level it counts everywhere, in a `[[host]]` only for
    /// that host's admin API. Entries that are no address or CIDR range are skipped (the
    /// `admin_rest` module refuses to load with them).
    pub fn trusted_proxies(&self, host: Option<&str>) -> Vec<ipnet::IpNet> {
        let alias = match host {
            Some(h) => self.option(h, "admin_rest_trusted_proxies"),
            None => self.options.get("admin_rest_trusted_proxies"),
        };
        let mut out = self.http.trusted_proxies.clone();
        let extra = alias
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().and_then(parse_net));
        for net in extra {
            if !out.contains(&net) {
                out.push(net);
            }
        }
        out
    }

    /// The folder of the configuration file (the working directory for built-in defaults).
    pub fn config_dir(&self) -> PathBuf {
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) => dir.to_path_buf(),
            None => PathBuf::from("."),
        }
    }

    /// The bare-JID message delivery policy of `host`: the host's setting, else the global one.
    pub fn bare_message_delivery(&self, host: &str) -> BareMessageDelivery {
        self.hosts
            .iter()
            .find(|h| h.name == host)
            .and_then(|h| h.bare_message_delivery)
            .unwrap_or(self.bare_message_delivery)
    }

    /// The directory for the embedded store.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_one_list_with_the_prosody_name_as_an_alias() {
        let cfg = Config::parse(
            "admin_rest_trusted_proxies = [\"10.0.0.1\", \"192.0.2.0/24\"]\n[http]\ntrusted_proxies = [\"192.0.2.0/24\"]\n[[host]]\nname = \"a.example\"\n[[host]]\nname = \"b.example\"\nadmin_rest_trusted_proxies = [\"198.51.100.7\"]\n",
        )
        .unwrap();
        let nets = |list: Vec<ipnet::IpNet>| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            nets(cfg.trusted_proxies(None)),
            ["192.0.2.0/24", "10.0.0.1/32"],
            "the top-level alias counts server-wide, without duplicates"
        );
        assert_eq!(
            nets(cfg.trusted_proxies(Some("a.example"))),
            ["192.0.2.0/24", "10.0.0.1/32"]
        );
        assert_eq!(
            nets(cfg.trusted_proxies(Some("b.example"))),
            ["192.0.2.0/24", "198.51.100.7/32"],
            "a host's own value replaces the global alias for its admin API"
        );
        let plain = Config::parse("[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").unwrap();
        assert_eq!(
            nets(plain.trusted_proxies(Some("localhost"))),
            ["127.0.0.1/32"]
        );
    }

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.default_host(), "localhost");
        assert!(c.c2s.require_encryption);
        assert_eq!(c.c2s.max_stanza_size, 262144);
        assert_eq!(c.auth.scram_iterations, 10000);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[c2s]\nmax_stanza_sise = 5\n").unwrap_err();
        assert!(e.to_string().contains("max_stanza_sise"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("[c2s]\nrequire_encryption = \"yes\"\n").unwrap_err();
        assert!(e.to_string().contains("require_encryption"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[auth]\nscram_iterations = 100\n", "auth.scram_iterations"),
            ("[c2s]\nmax_stanza_size = 10\n", "c2s.max_stanza_size"),
            ("admins = [\"not a jid@@\"]\n", "admins[0]"),
            ("[[host]]\nname = \"\"\n", "host[0].name"),
            (
                "[c2s]\nsasl_mechanisms = [\"DIGEST-MD5\"]\n",
                "c2s.sasl_mechanisms",
            ),
            ("[cluster]\nnode_name = \"a.b\"\n", "cluster.node_name"),
            ("[cluster]\nnode_ttl_secs = 1\n", "cluster.node_ttl_secs"),
            ("[cluster]\nforward_queue = 0\n", "cluster.forward_queue"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn module_names_and_options_are_checked_against_the_catalog() {
        let known = ModuleCatalog {
            names: vec!["ping", "disco"],
            options: vec!["ping_interval"],
        };
        let check = |text: &str| Config::parse(text).unwrap().check_modules(&known);
        assert!(check("modules_enabled = [\"ping\"]\nping_interval = 3\n").is_ok());
        for (text, key) in [
            ("no_such_option = 1\n", "`no_such_option`"),
            (
                "[[host]]\nname = \"a\"\ntypo_here = 1\n",
                "host[0].typo_here",
            ),
            ("modules_enabled = [\"nope\"]\n", "`modules_enabled`"),
            (
                "modules_enabled = []\n[[host]]\nname = \"a\"\nmodules_disabled = [\"x\"]\n",
                "host[0].modules_disabled",
            ),
        ] {
            let e = check(text).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn bare_message_delivery_is_typed_and_resolved_host_first() {
        let c = Config::parse(
            "bare_message_delivery = \"highest\"\n[[host]]\nname = \"a\"\n[[host]]\nname = \"b\"\nbare_message_delivery = \"all\"\n",
        )
        .unwrap();
        assert_eq!(c.bare_message_delivery("a"), BareMessageDelivery::Highest);
        assert_eq!(c.bare_message_delivery("b"), BareMessageDelivery::All);
        assert_eq!(
            Config::parse("")
                .unwrap()
                .bare_message_delivery("localhost"),
            BareMessageDelivery::All
        );
        let e = Config::parse("bare_message_delivery = \"some\"\n").unwrap_err();
        assert!(e.to_string().contains("highest"), "{e}");
        assert!(e.to_string().contains("bare_message_delivery"), "{e}");
    }

    #[test]
    fn components_default_to_a_muc_service_and_name_bad_keys() {
        let c = Config::parse("[[host]]\nname = \"a.example\"\n").unwrap();
        let list = c.components();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "conference.a.example");
        assert_eq!(list[0].module, "muc");
        assert_eq!(list[0].parent.as_deref(), Some("a.example"));
        assert_eq!(list[1].name, "upload.a.example");
        assert_eq!(list[1].module, "http_upload");
        assert_eq!(list[1].parent.as_deref(), Some("a.example"));
        assert!(
            Config::parse("component = []\n")
                .unwrap()
                .components()
                .is_empty()
        );
        let c = Config::parse(
            "[[host]]\nname = \"a\"\n[[component]]\nname = \"Rooms.A\"\nmodule = \"muc\"\nmuc_x = 3\n",
        )
        .unwrap();
        assert_eq!(c.components()[0].name, "rooms.a");
        assert_eq!(c.option("rooms.a", "muc_x"), Some(&toml::Value::Integer(3)));
        for (text, key) in [
            (
                "[[host]]\nname = \"a\"\n[[component]]\nname = \"a\"\nmodule = \"muc\"\n",
                "component[0].name",
            ),
            (
                "[[component]]\nname = \"x.localhost\"\nmodule = \"\"\n",
                "component[0].module",
            ),
            (
                "[[component]]\nname = \"x.y\"\nmodule = \"muc\"\nparent = \"nope\"\n",
                "component[0].parent",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn per_host_modules() {
        let c = Config::parse(
            "modules_enabled = [\"ping\", \"disco\"]\n[[host]]\nname = \"a.example\"\nmodules_disabled = [\"ping\"]\n[[host]]\nname = \"B.Example\"\n",
        )
        .unwrap();
        assert_eq!(c.modules_for(&c.hosts[0]), vec!["disco".to_string()]);
        assert_eq!(c.hosts[1].name, "b.example");
        assert_eq!(c.modules_for(&c.hosts[1]).len(), 2);
    }

    #[test]
    fn parse_errors_are_one_line_naming_the_line() {
        let e = Config::parse("admins = []\n[c2s]\nlisten_on = []\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("invalid config: line 3 (`listen_on = []`): "),
            "{text}"
        );
        assert!(text.contains("listen_on") && !text.contains('\n'), "{text}");
        let c = Config::parse("log_format = \"json\"\nlog_rotation = \"never\"\n").unwrap();
        assert_eq!(
            (c.log_format, c.log_rotation),
            (LogFormat::Json, LogRotation::Never)
        );
        assert!(Config::parse("log_format = \"xml\"\n").is_err());
        assert!(Config::parse("log_file = \"/var/log/\"\n").is_err());
    }

    #[test]
    fn storage_url_is_required_for_postgres_and_never_shown_with_its_password() {
        let e = Config::parse("[storage]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(e.to_string().contains("storage.url"), "{e}");
        let c = Config::parse(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://ox:s3cret@db:5432/ox?sslmode=disable\"\n",
        )
        .unwrap();
        assert_eq!(c.storage.backend, StorageBackend::Postgres);
        assert_eq!(
            c.storage.url.as_deref(),
            Some("postgres://ox:s3cret@db:5432/ox?sslmode=disable")
        );
        let shown = toml::to_string(&c).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://ox:***@db:5432/ox?sslmode=disable"),
            "{shown}"
        );
        assert_eq!(
            redact_url("host=/run/pg password=s3cret dbname=ox"),
            "host=/run/pg password=*** dbname=ox"
        );
        assert_eq!(redact_url("postgres://ox@db/ox"), "postgres://ox@db/ox");
        assert!(Config::parse("[storage]\nbackend = \"mysql\"\n").is_err());
    }

    #[test]
    fn reference_config_is_valid_and_complete() {
        let text = include_str!("../../config/oxpecker.toml");
        let parsed = Config::parse(text).unwrap();
        // Every option of the default config appears (commented or not) in the reference file.
        let defaults = toml::to_string(&Config::default()).unwrap();
        for line in defaults.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    text.contains(key.trim()),
                    "config/oxpecker.toml lacks `{key}`"
                );
            }
        }
        assert_eq!(parsed.default_host(), "localhost");
    }
}
