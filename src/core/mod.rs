//! The shared managers every face of the server calls: hosts and their modules, sessions, the
//! router, accounts and storage, held together in one [`Core`].

pub mod accounts;
pub mod admin;
pub mod admin_ops;
pub mod admission;
pub mod allowlist;
pub mod budget;
pub mod cluster;
pub mod delivery;
pub mod events;
pub mod faults;
pub mod grants;
pub mod groups;
pub mod host_map;
pub mod iq;
pub mod lifecycle;
pub mod metrics;
pub mod module_api;
pub mod modules;
pub mod options;
pub mod priority;
pub mod process;
pub mod reload;
pub mod remote;
pub mod roster;
pub mod router;
pub mod sessions;
pub mod stream_management;
pub mod throttle;
pub mod tokens;

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::storage::Store;
use accounts::Accounts;
use modules::{Host, ModuleError, ModuleTable};
use sessions::Sessions;

/// The server's shared state: one per running server, shared as `Arc<Core>`.
pub struct Core {
    /// The live configuration (swapped on reload).
    pub config: ArcSwap<Config>,
    /// The store every manager persists through.
    pub store: Store,
    /// Local accounts.
    pub accounts: Accounts,
    /// Online sessions.
    pub sessions: Sessions,
    /// The global budget for bytes queued to sessions ([`budget`]); `sessions` draws from it.
    pub budget: Arc<budget::QueueBudget>,
    /// Contact lists and subscriptions.
    pub roster: roster::RosterManager,
    /// Shared-roster groups.
    pub groups: groups::GroupManager,
    /// The admin API's allowlist edits of each host, in memory.
    pub allowlists: allowlist::Allowlists,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every task the server runs (listeners, connections, module timers and tasks); shutdown
    /// waits for them.
    pub tasks: TaskTracker,
    /// The modules this server can load.
    pub modules: ModuleTable,
    /// Every metric family (exposed at `GET /metrics`).
    pub metrics: metrics::Metrics,
    /// The server's own metrics.
    pub core_metrics: metrics::CoreMetrics,
    /// IQs the server sent and awaits answers to.
    pub iq: iq::IqTracker,
    /// HTTP routes modules serve.
    pub http_routes: module_api::http::HttpRoutes,
    /// When this server started (its uptime, XEP-0012).
    pub started: std::time::Instant,
    /// In-band registrations per client address (XEP-0077 pre-authentication), per minute.
    pub registrations: throttle::Throttle,
    /// Failed logins per address and per account, asked by every SASL path (brute force).
    pub auth_guard: throttle::AuthGuard,
    /// Connection flood limits, asked by every listener at accept.
    pub admission: Arc<admission::Admission>,
    /// State modules share by path.
    pub shared: std::sync::Mutex<module_api::SharedMap>,
    /// A shutdown asked for by an admin (`server:shutdown`), with its reason.
    pub stop: admin::StopRequest,
    /// The way to other servers (the s2s manager), installed once by the server; unset = none.
    pub federation: std::sync::OnceLock<Arc<dyn remote::Federation>>,
    /// The other nodes of the cluster (`[cluster]`), installed once by the server; unset = a single node.
    pub cluster: std::sync::OnceLock<Arc<dyn cluster::Cluster>>,
    /// The bound plain-HTTP addresses, set once by the server (the default base of URLs modules hand out).
    pub http_bound: std::sync::OnceLock<Vec<std::net::SocketAddr>>,
    global: Arc<Host>,
    /// Every host by domain; grows at run time, hosts switched off stay ([`host_map`]).
    hosts: host_map::HostMap,
    weak: Weak<Core>,
}

impl Core {
    /// Builds the managers for `config` over `store` and loads each host's modules from `modules`.
    pub fn new(
        config: Config,
        store: Store,
        modules: ModuleTable,
    ) -> Result<Arc<Core>, ModuleError> {
        let host_names: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
        let metrics = metrics::Metrics::new();
        let core_metrics = metrics::CoreMetrics::new(&metrics);
        let latency = core_metrics.storage_latency.clone();
        let admission = admission::Admission::new(&metrics);
        let budget = Arc::new(budget::QueueBudget::with_metrics(
            config.limits.queue_budget_bytes,
            &metrics,
        ));
        store.set_latency_observer(Arc::new(move |secs| latency.observe(&[], secs)));
        let core = Arc::new_cyclic(|weak| Core {
            metrics,
            core_metrics,
            iq: iq::IqTracker::default(),
            started: std::time::Instant::now(),
            registrations: throttle::Throttle::new(std::time::Duration::from_secs(60)),
            auth_guard: throttle::AuthGuard::new(std::time::Duration::from_secs(
                config.limits.auth_window_secs,
            )),
            admission,
            shared: std::sync::Mutex::new(Default::default()),
            stop: Default::default(),
            federation: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            http_bound: std::sync::OnceLock::new(),
            http_routes: Default::default(),
            global: Arc::new(Host::with_kind("*", modules::HostType::Global)),
            accounts: Accounts::new(
                store.clone(),
                host_names.clone(),
                config.auth.scram_iterations,
            )
            .with_events(weak.clone()),
            sessions: Sessions::with_budget(budget.clone()),
            budget,
            roster: roster::RosterManager::new(store.clone()),
            groups: groups::GroupManager::new(store.clone()),
            allowlists: allowlist::Allowlists::new(store.clone(), &host_names),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            modules,
            hosts: host_map::HostMap::new(host_names.iter().map(|h| Arc::new(Host::new(h))).chain(
                config.components().iter().map(|c| {
                    let parent = c.parent.as_deref().unwrap_or(config.default_host());
                    Arc::new(Host::component(&c.name, parent))
                }),
            )),
            config: ArcSwap::from_pointee(config),
            store,
            weak: weak.clone(),
        });
        let config = core.config.load_full();
        for h in &config.hosts {
            core.core_metrics.seed_host(&h.name);
        }
        for h in &config.hosts {
            for m in config.modules_for(h) {
                core.load_module(&h.name, &m)?;
            }
        }
        for c in config.components() {
            for m in std::iter::once(&c.module).chain(&c.modules_enabled) {
                core.load_module(&c.name, m)?;
            }
        }
        Ok(core)
    }

    /// The `*` pseudo-host of global modules and global events.
    pub fn global_host(&self) -> Arc<Host> {
        self.global.clone()
    }

    /// A served host by domain (`None` for a host switched off by `host:deactivate`).
    pub fn host(&self, domain: &str) -> Option<&Arc<Host>> {
        self.hosts.get(domain)
    }

    /// A served user host (one users log into) by domain; `None` for components.
    pub fn user_host(&self, domain: &str) -> Option<&Arc<Host>> {
        self.host(domain)
            .filter(|h| h.kind == modules::HostType::Local)
    }

    /// The component hosts listed under user host `parent`, sorted by name.
    pub fn components_of(&self, parent: &str) -> Vec<Arc<Host>> {
        let mut list: Vec<Arc<Host>> = self
            .hosts
            .all()
            .into_iter()
            .filter(|h| h.parent.as_deref() == Some(parent))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Every served host, in configuration order.
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        let cfg = self.config.load();
        cfg.hosts
            .iter()
            .filter_map(|h| self.host(&h.name).cloned())
            .collect()
    }

    /// Loads module `name` on `host` (a global module goes to the `*` host, once).
    pub fn load_module(&self, host: &str, name: &str) -> Result<(), ModuleError> {
        let module = self
            .modules
            .get(name)
            .ok_or_else(|| ModuleError::Unknown(name.to_string()))?;
        let h = if module.global() || host == "*" {
            if self.global.is_loaded(name) && host != "*" {
                return Ok(());
            }
            self.global.clone()
        } else {
            self.host(host)
                .cloned()
                .ok_or_else(|| ModuleError::UnknownHost(host.to_string()))?
        };
        h.load(self.weak.clone(), module.as_ref())
    }

    /// Unloads module `name` from `host` (`*` for a global module).
    pub fn unload_module(&self, host: &str, name: &str) -> Result<(), ModuleError> {
        if host == "*" {
            return self.global.unload(name);
        }
        let h = self
            .host(host)
            .ok_or_else(|| ModuleError::UnknownHost(host.to_string()))?;
        h.unload(name)
    }

    /// Reloads module `name` on `host`: unload then load; stored data is kept.
    pub fn reload_module(&self, host: &str, name: &str) -> Result<(), ModuleError> {
        match self.unload_module(host, name) {
            Ok(()) | Err(ModuleError::NotLoaded(_)) => {}
            Err(e) => return Err(e),
        }
        self.load_module(host, name)
    }
}
