//! Admin operations, written once for every face (the shell over the control socket, the admin
//! REST API, XEP-0133 ad-hoc commands): list and close sessions, switch hosts on and off at run
//! time, shut the server down with a reason, report uptime, version and memory, read the
//! configuration, and manage accounts and their roles.
//!
//! Each face parses, authorises, calls one of these methods, audits and renders; none re-derives
//! what an operation does.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Core;
use super::accounts::{AccountError, Role};
use super::cluster::RemoteSession;
use super::events::Origin;
use super::modules::ModuleError;
use super::sessions::{ClientAgent, SessionHandle, TlsInfo};
use crate::xmpp::error::{StreamError, StreamErrorCondition};
use crate::xmpp::{Element, Jid, ns};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The host is neither served nor configured.
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// The host is already in the asked state.
    #[error("host {0} is already {1}")]
    HostState(String, &'static str),
    /// The JID cannot be parsed.
    #[error("invalid JID {0}")]
    InvalidJid(String),
    /// No session matches.
    #[error("no session of {0}")]
    NoSession(String),
    /// The configuration has no such key.
    #[error("no configuration key {0}")]
    NoKey(String),
    /// An unknown role name.
    #[error("unknown role {0} (known: operator, admin, member, registered, guest)")]
    UnknownRole(String),
    /// An account operation failed.
    #[error("{0}")]
    Account(#[from] AccountError),
    /// A module failed to load or unload.
    #[error("{0}")]
    Module(#[from] ModuleError),
}

/// A request to stop the server (`server:shutdown`), which `main` waits for beside the signals.
#[derive(Default)]
pub struct StopRequest {
    token: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl StopRequest {
    /// Resolves once a shutdown was asked for.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }

    /// Whether a shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The reason given, if any (sent as the `<system-shutdown/>` text).
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

/// One client session as the admin faces list it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// The full JID.
    pub jid: String,
    /// The remote address.
    pub ip: String,
    /// Whether the connection is encrypted.
    pub secure: bool,
    /// XEP-0198 state: `resumable`, `enabled` or `off`.
    pub sm: &'static str,
    /// XEP-0352 state: `inactive` or `active`.
    pub csi: &'static str,
    /// Whether the client sent available presence.
    pub available: bool,
    /// Its presence priority.
    pub priority: i8,
    /// Stanzas waiting in its outbound queue.
    pub queued: usize,
    /// Whether it waits for a resumption with no connection.
    pub hibernating: bool,
    /// The transport: `tcp` (and the others as they come).
    pub transport: &'static str,
    /// The negotiated TLS version and cipher suite, when we terminate TLS.
    pub tls: Option<TlsInfo>,
    /// The SASL mechanism it authenticated with.
    pub mechanism: Option<String>,
    /// What the client said about itself (SASL2 user agent), if anything.
    pub client: Option<ClientAgent>,
    /// When it bound, in seconds since the Unix epoch.
    pub since: u64,
    /// Seconds since the client last sent something.
    pub idle_secs: u64,
    /// The cluster node serving it (absent on a single node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl SessionInfo {
    fn of(s: &SessionHandle) -> Self {
        let (sm_on, resumable) = {
            let sm = s.sm();
            (sm.enabled, sm.id.is_some())
        };
        SessionInfo {
            jid: s.jid.to_string(),
            ip: s.peer.clone(),
            secure: s.secure,
            sm: match (resumable, sm_on) {
                (true, _) => "resumable",
                (false, true) => "enabled",
                _ => "off",
            },
            csi: if s.is_inactive() {
                "inactive"
            } else {
                "active"
            },
            available: s.is_available(),
            priority: s.priority(),
            queued: s.queued(),
            hibernating: s.is_hibernating(),
            transport: s.conn.transport.as_str(),
            tls: s.conn.tls.clone(),
            mechanism: s.conn.mechanism.clone(),
            client: s.conn.client.clone(),
            since: s
                .conn
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            idle_secs: s.idle_secs(),
            node: None,
        }
    }

    /// A session on another cluster node: what the session directory knows of it.
    fn remote(r: &RemoteSession) -> Self {
        SessionInfo {
            jid: r.jid.to_string(),
            ip: String::new(),
            secure: r.secure,
            sm: "off",
            csi: "active",
            available: r.available,
            priority: r.priority,
            queued: 0,
            hibernating: false,
            transport: "tcp",
            tls: None,
            mechanism: None,
            client: None,
            since: 0,
            idle_secs: 0,
            node: Some(r.node.to_string()),
        }
    }
}

/// A host as `host:list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    /// The domain.
    pub host: String,
    /// Whether it is in the live configuration.
    pub configured: bool,
    /// Whether it is served now.
    pub active: bool,
    /// Modules loaded on it.
    pub modules: usize,
    /// Client sessions on it.
    pub sessions: usize,
}

/// The process's memory use and the counts of what holds memory.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Resident set size in bytes (`/proc/self/statm`; `None` where there is no procfs).
    pub rss_bytes: Option<u64>,
    /// Bytes the allocator has handed out and not yet freed, when it can tell
    /// ([`super::process::heap_bytes`]); `None` = unknown.
    pub heap_bytes: Option<u64>,
    /// Client sessions bound.
    pub sessions: usize,
    /// Stanzas waiting in session queues.
    pub queued_stanzas: usize,
}

/// What `server:uptime()`, `server:version()` and `server:memory()` report, in one answer.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// The software name.
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Memory and counts.
    pub memory: MemoryInfo,
    /// Hosts served now.
    pub hosts_active: usize,
    /// Whether a shutdown is under way.
    pub stopping: bool,
}

/// Matches `name` against a shell glob (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|c| *c == '*')
}

/// Looks up a dotted key (`c2s.listen`) in a JSON object.
fn dotted<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |v, k| v.get(k))
}

impl Core {
    /// Client sessions, optionally of one host and of one encryption state.
    pub fn session_list(&self, host: Option<&str>, secure: Option<bool>) -> Vec<SessionInfo> {
        let mut list: Vec<SessionInfo> = self
            .sessions
            .all(host)
            .iter()
            .filter(|s| secure.is_none_or(|want| s.secure == want))
            .map(|s| SessionInfo::of(s))
            .collect();
        if let Some(cluster) = self.cluster() {
            for s in &mut list {
                s.node = Some(cluster.node().to_string());
            }
            list.extend(
                self.all_remote_sessions(host)
                    .iter()
                    .filter(|r| secure.is_none_or(|want| r.secure == want))
                    .map(SessionInfo::remote),
            );
        }
        list.sort_by(|a, b| a.jid.cmp(&b.jid));
        list
    }

    /// [`Core::close_sessions`] on every node of the cluster: this node's sessions, then those
    /// the session directory places on other nodes, each closed by its node (asked and
    /// answered over the cluster). A node that does not answer in time closes nothing here.
    pub async fn close_sessions_everywhere(
        &self,
        jid: &str,
        condition: StreamErrorCondition,
        text: &str,
    ) -> Result<Vec<String>, AdminError> {
        let local = self.close_sessions(jid, condition, text);
        let Some(cluster) = self.cluster() else {
            return local;
        };
        let j = Jid::parse(jid).map_err(|e| AdminError::InvalidJid(format!("{jid}: {e}")))?;
        let nodes = self.nodes_serving(&j.bare(), |r| j.resource().is_none() || r.jid == j);
        let mut closed = match local {
            Ok(list) => list,
            Err(AdminError::NoSession(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        for node in nodes {
            closed.extend(
                cluster
                    .close(&node, &j, condition, text)
                    .await
                    .unwrap_or_default(),
            );
        }
        if closed.is_empty() {
            return Err(AdminError::NoSession(j.to_string()));
        }
        closed.sort();
        Ok(closed)
    }

    /// Closes the sessions of `jid` (a bare JID: all of them; a full JID: that one) with a
    /// stream error carrying `text`. Stream management does not resurrect them: a session
    /// asked to close ends for good. Returns the full JIDs closed.
    pub fn close_sessions(
        &self,
        jid: &str,
        condition: StreamErrorCondition,
        text: &str,
    ) -> Result<Vec<String>, AdminError> {
        let j = Jid::parse(jid).map_err(|e| AdminError::InvalidJid(format!("{jid}: {e}")))?;
        let targets = if j.resource().is_some() {
            self.sessions.get(&j).into_iter().collect()
        } else {
            self.sessions.resources(&j)
        };
        if targets.is_empty() {
            return Err(AdminError::NoSession(j.to_string()));
        }
        let error = StreamError::with_text(condition, text);
        Ok(targets
            .iter()
            .map(|s| {
                s.close(error.clone());
                s.jid.to_string()
            })
            .collect())
    }

    /// Every configured or served host, with whether it is active.
    pub fn host_list(&self) -> Vec<HostInfo> {
        let cfg = self.config.load();
        let mut names: Vec<String> = cfg.hosts.iter().map(|h| h.name.clone()).collect();
        for h in self.hosts.all() {
            if h.kind == super::modules::HostType::Local && !names.contains(&h.name) {
                names.push(h.name.clone());
            }
        }
        names
            .into_iter()
            .map(|name| HostInfo {
                configured: cfg.hosts.iter().any(|h| h.name == name),
                modules: self.hosts.get_any(&name).map_or(0, |h| h.modules().len()),
                sessions: self.sessions.all(Some(&name)).len(),
                active: self.hosts.is_active(&name),
                host: name,
            })
            .collect()
    }

    /// Starts serving a user host of the live configuration: one switched off, or one added
    /// to the configuration after the start (`config:reload()` first). Its accounts, allowlist
    /// and metrics join, its modules load; c2s, REST and disco answer for it from then on.
    /// Returns the modules loaded.
    pub fn activate_host(&self, host: &str) -> Result<Vec<String>, AdminError> {
        let cfg = self.config.load_full();
        let Some(hc) = cfg.hosts.iter().find(|h| h.name == host) else {
            return Err(AdminError::UnknownHost(host.to_string()));
        };
        if self.hosts.contains(host) {
            if !self.hosts.set_active(host, true) {
                return Err(AdminError::HostState(host.to_string(), "active"));
            }
        } else {
            // Everything that checks a host first learns it, then the host becomes visible.
            self.accounts.add_host(host);
            self.allowlists.add_host(host);
            self.core_metrics.seed_host(host);
            if self
                .hosts
                .add(Arc::new(super::modules::Host::new(host)))
                .is_err()
            {
                return Err(AdminError::HostState(host.to_string(), "active"));
            }
            tracing::info!(%host, "host added at run time");
        }
        let mut loaded = Vec::new();
        for m in cfg.modules_for(hc) {
            match self.load_module(host, &m) {
                Ok(()) => loaded.push(m),
                Err(ModuleError::AlreadyLoaded(_)) => {}
                Err(e) => {
                    tracing::warn!(%host, module = %m, error = %e, "module failed to load on activation")
                }
            }
        }
        self.global_host().data_events.fire(
            super::lifecycle::HOST_ACTIVATED,
            &mut json!({ "host": host }),
        );
        tracing::info!(%host, modules = ?loaded, "host activated");
        Ok(loaded)
    }

    /// Stops serving a host: its sessions close with `<host-gone/>`, its modules unload, c2s and
    /// REST refuse it; its data stays. Returns the sessions closed.
    pub fn deactivate_host(&self, host: &str) -> Result<usize, AdminError> {
        let Some(h) = self.hosts.get_any(host).cloned() else {
            return Err(AdminError::UnknownHost(host.to_string()));
        };
        if !self.hosts.set_active(host, false) {
            return Err(AdminError::HostState(host.to_string(), "inactive"));
        }
        let sessions = self.sessions.all(Some(host));
        let error = StreamError::with_text(
            StreamErrorCondition::HostGone,
            format!("{host} is no longer served here"),
        );
        for s in &sessions {
            s.close(error.clone());
        }
        for m in h.modules() {
            if let Err(e) = h.unload(&m) {
                tracing::warn!(%host, module = %m, error = %e, "module failed to unload on deactivation");
            }
        }
        self.global_host().data_events.fire(
            super::lifecycle::HOST_DEACTIVATED,
            &mut json!({ "host": host }),
        );
        tracing::info!(%host, sessions = sessions.len(), "host deactivated");
        Ok(sessions.len())
    }

    /// Asks the server to shut down: every session gets `<system-shutdown/>` with `reason` as
    /// text, connections drain, and the process exits 0. Idempotent (the first reason wins).
    pub fn request_shutdown(&self, reason: &str) {
        if let Ok(mut r) = self.stop.reason.lock()
            && r.is_none()
        {
            *r = Some(reason.to_string());
        }
        tracing::info!(reason, "shutdown requested");
        self.stop.token.cancel();
    }

    /// The stream error every session gets at shutdown.
    pub fn shutdown_error(&self) -> StreamError {
        match self.stop.reason() {
            Some(r) if !r.is_empty() => {
                StreamError::with_text(StreamErrorCondition::SystemShutdown, r)
            }
            _ => StreamError::new(StreamErrorCondition::SystemShutdown),
        }
    }

    /// Memory use and the counts that drive it.
    pub fn memory_info(&self) -> MemoryInfo {
        let all = self.sessions.all(None);
        MemoryInfo {
            rss_bytes: super::process::resident_bytes(),
            heap_bytes: super::process::heap_bytes(),
            sessions: all.len(),
            queued_stanzas: all.iter().map(|s| s.queued()).sum(),
        }
    }

    /// Version, uptime, memory and counts.
    pub fn server_info(&self) -> ServerInfo {
        ServerInfo {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            memory: self.memory_info(),
            hosts_active: self.hosts().len(),
            stopping: self.stop.is_requested(),
        }
    }

    /// A configuration value: for a host, its own setting first, then the global one; `key` may
    /// be dotted (`c2s.listen`). `host` `*` (or empty) reads only the global configuration.
    pub fn config_get(&self, host: &str, key: &str) -> Result<Value, AdminError> {
        let cfg = self.config.load();
        let global = serde_json::to_value(&**cfg).unwrap_or(Value::Null);
        if !host.is_empty() && host != "*" {
            let Some(hc) = cfg.hosts.iter().find(|h| h.name == host) else {
                return Err(AdminError::UnknownHost(host.to_string()));
            };
            let hv = serde_json::to_value(hc).unwrap_or(Value::Null);
            if let Some(v) = dotted(&hv, key).filter(|v| !v.is_null()) {
                return Ok(v.clone());
            }
        }
        dotted(&global, key)
            .filter(|v| !v.is_null())
            .cloned()
            .ok_or_else(|| AdminError::NoKey(key.to_string()))
    }

    /// Sends a message from `host` to every account with an online session there (never stored
    /// offline: only users a session takes it from now); returns how many got it.
    pub async fn announce(
        self: &Arc<Self>,
        host: &str,
        subject: Option<&str>,
        body: &str,
    ) -> usize {
        let users = self.online_users_everywhere(Some(host));
        let Ok(from) = Jid::parse(host) else {
            return 0;
        };
        let mut count = 0usize;
        for jid in &users {
            let mut msg = Element::new("message", ns::CLIENT)
                .attr("from", host.to_string())
                .attr("to", jid.to_string());
            if let Some(s) = subject.filter(|s| !s.is_empty()) {
                msg.push(Element::new("subject", ns::CLIENT).text(s.to_string()));
            }
            msg.push(Element::new("body", ns::CLIENT).text(body.to_string()));
            if self.delivery(&from, jid, &msg).await.fate == super::delivery::Fate::Delivered {
                self.route(Origin::Server, msg).await;
                count += 1;
            }
        }
        count
    }

    /// Creates an account, with a role when one is given.
    pub async fn user_create(
        &self,
        jid: &str,
        password: &str,
        role: Option<&str>,
    ) -> Result<Jid, AdminError> {
        user_create(&self.accounts, jid, password, role).await
    }

    /// Whether an account has admin rights: listed in `admins`, or holding an admin role.
    pub async fn is_admin(&self, jid: &Jid) -> bool {
        let bare = jid.bare();
        if self.config.load().is_admin(bare.as_str()) {
            return true;
        }
        matches!(self.accounts.get(&bare).await, Ok(Some(rec)) if rec.role.is_some_and(|r| r.is_admin()))
    }
}

/// Creates an account with an optional role (offline too: the CLI calls this without a server).
pub async fn user_create(
    accounts: &super::accounts::Accounts,
    jid: &str,
    password: &str,
    role: Option<&str>,
) -> Result<Jid, AdminError> {
    let role = role.map(parse_role).transpose()?;
    let j = accounts.account_jid(jid)?;
    accounts.create(&j, password).await?;
    if role.is_some() {
        accounts.set_role(&j, role).await?;
    }
    Ok(j)
}

/// Sets an account's role (offline too).
pub async fn user_set_role(
    accounts: &super::accounts::Accounts,
    jid: &str,
    role: &str,
) -> Result<Jid, AdminError> {
    let role = parse_role(role)?;
    let j = accounts.account_jid(jid)?;
    accounts.set_role(&j, Some(role)).await?;
    Ok(j)
}

/// An account's role, as `user:roles` shows it (`admins` in the configuration count as operator).
pub async fn user_roles(
    accounts: &super::accounts::Accounts,
    admins: &[String],
    jid: &str,
) -> Result<Value, AdminError> {
    let j = accounts.account_jid(jid)?;
    let rec = accounts
        .get(&j)
        .await?
        .ok_or_else(|| AccountError::NotFound(j.to_string()))?;
    let role = if admins.iter().any(|a| a == j.as_str()) {
        Role::Operator
    } else {
        rec.role.unwrap_or(Role::Registered)
    };
    Ok(json!({ "jid": j.to_string(), "role": role.as_str(), "prosody": role.prosody_name() }))
}

/// Account names of `host` matching a glob (`*` for all).
pub async fn user_list(
    accounts: &super::accounts::Accounts,
    host: &str,
    pattern: Option<&str>,
) -> Result<Vec<String>, AdminError> {
    let host = crate::xmpp::jid::normalize_domain(host)
        .map_err(|e| AdminError::InvalidJid(format!("{host}: {e}")))?;
    let all = accounts.list(&host).await?;
    Ok(match pattern {
        None => all,
        Some(p) => all.into_iter().filter(|u| glob_match(p, u)).collect(),
    })
}

fn parse_role(name: &str) -> Result<Role, AdminError> {
    Role::parse(name).ok_or_else(|| AdminError::UnknownRole(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("*", "alice"));
        assert!(glob_match("a*", "alice"));
        assert!(glob_match("*ce", "alice"));
        assert!(glob_match("a?ice", "alice"));
        assert!(glob_match("a*i*e", "alice"));
        assert!(!glob_match("b*", "alice"));
        assert!(!glob_match("a?", "alice"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn dotted_keys_walk_objects() {
        let v = json!({"c2s": {"listen": ["x"]}, "a": 1});
        assert_eq!(dotted(&v, "c2s.listen"), Some(&json!(["x"])));
        assert_eq!(dotted(&v, "a"), Some(&json!(1)));
        assert_eq!(dotted(&v, "c2s.nope"), None);
    }
}
