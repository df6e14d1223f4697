//! [`ModuleHandle`]: what a loaded module can do at any time, one concern per submodule —
//! identity and logging (here), [`status`], hooks ([`hooks`]), disco ([`disco`]), host items
//! ([`items`]), typed options ([`options`]), sending ([`send`]), timers and cron ([`timers`]),
//! shared state ([`shared`]), stores ([`stores`]), metrics ([`metrics`]), HTTP routes
//! ([`http`]) and the module's own files ([`resources`]). Everything registered is tracked, so unloading the module removes
//! every trace of it.
//!
//! The method list with the Prosody names is on [`crate::core::modules::ModuleContext`].

pub mod disco;
pub mod hooks;
pub mod http;
pub mod items;
pub mod metrics;
pub mod options;
pub mod resources;
pub mod send;
pub mod shared;
pub mod status;
pub mod stores;
pub mod tags;
pub mod timers;

#[cfg(test)]
pub(super) mod probe;

use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;

use super::Core;
use super::modules::{Host, HostType};

pub use metrics::{Measure, MeasureConf, Measurement, ModuleMetric, TimingGuard};
pub use shared::SharedMap;
pub use status::{ModuleStatus, StatusType};
pub use stores::{StoreHandle, StoreKind, UserCleanup};
pub use timers::{Period, Timer};

/// Everything a module registered, removed again by [`ModuleHandle::teardown`].
#[derive(Default)]
struct Registrations {
    cleanups: Vec<UserCleanup>,
    hooks: Vec<(bool, super::events::HookId)>,
    data_hooks: Vec<(bool, super::events::HookId)>,
    features: Vec<String>,
    stream_features: Vec<crate::xmpp::Element>,
    identities: Vec<(String, String, String)>,
    extensions: Vec<crate::xmpp::Element>,
    items: Vec<(String, serde_json::Value)>,
    shared: Vec<String>,
    routes: Vec<(String, String)>,
    prefix_routes: Vec<(String, String)>,
}

/// A loaded module instance's runtime handle.
pub struct ModuleHandle {
    name: &'static str,
    host: Arc<Host>,
    core: Weak<Core>,
    status: Mutex<ModuleStatus>,
    cancel: CancellationToken,
    reg: Mutex<Registrations>,
}

impl ModuleHandle {
    pub(super) fn new(core: Weak<Core>, host: Arc<Host>, name: &'static str) -> Self {
        // Children of the server's shutdown token: timers and tasks also end at shutdown.
        let cancel = match core.upgrade() {
            Some(c) => c.shutdown.child_token(),
            None => CancellationToken::new(),
        };
        ModuleHandle {
            name,
            host,
            core,
            status: Mutex::new(ModuleStatus::loaded()),
            cancel,
            reg: Mutex::new(Registrations::default()),
        }
    }

    fn reg(&self) -> std::sync::MutexGuard<'_, Registrations> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn global_host(&self) -> Option<Arc<Host>> {
        self.core.upgrade().map(|c| c.global_host())
    }

    /// The host this module instance serves, `*` for a global module (Prosody's `module:get_host`).
    pub fn host(&self) -> &str {
        &self.host.name
    }

    /// The host object (its buses, modules and items).
    pub fn host_ref(&self) -> &Arc<Host> {
        &self.host
    }

    /// The kind of host (Prosody's `module:get_host_type`).
    pub fn host_type(&self) -> HostType {
        self.host.kind
    }

    /// Whether the module runs once on the `*` host (Prosody's `module:set_global`, declared by
    /// [`crate::core::modules::Module::global`]).
    pub fn is_global(&self) -> bool {
        self.host.kind == HostType::Global
    }

    /// The module's name.
    pub fn module(&self) -> &'static str {
        self.name
    }

    /// The server (weak, so modules never keep it alive).
    pub fn core(&self) -> Weak<Core> {
        self.core.clone()
    }

    /// Another host (or `*`), for a module that works across hosts (Prosody's `module:context`).
    pub fn context(&self, host: &str) -> Option<Arc<Host>> {
        let core = self.core.upgrade()?;
        if host == "*" {
            Some(core.global_host())
        } else {
            core.host(host).cloned()
        }
    }

    /// Logs `message` at `level` with the module and host as fields (Prosody's `module:log`).
    pub fn log(&self, level: tracing::Level, message: &str) {
        let (module, host) = (self.name, self.host.name.as_str());
        match level {
            tracing::Level::ERROR => tracing::error!(module, host, "{message}"),
            tracing::Level::WARN => tracing::warn!(module, host, "{message}"),
            tracing::Level::INFO => tracing::info!(module, host, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(module, host, "{message}"),
            tracing::Level::TRACE => tracing::trace!(module, host, "{message}"),
        }
    }

    /// Removes everything the module registered and stops its timers and tasks.
    pub(super) fn teardown(&self) {
        self.cancel.cancel();
        let reg = std::mem::take(&mut *self.reg());
        self.remove_hooks(&reg);
        self.remove_items(reg.items);
        self.release_shared(reg.shared);
        self.remove_routes(reg.routes, reg.prefix_routes);
    }
}
