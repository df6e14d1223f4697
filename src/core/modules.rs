//! The module system: the [`Module`] trait, per-host loading, unloading and reloading, and the
//! [`ModuleContext`] / [`ModuleHandle`] through which a module does everything — so unloading it
//! removes every hook, timer, item, disco feature and shared-state reference it added.
//!
//! # Writing a module
//!
//! A module is a type implementing [`Module`]. In `load` it registers what it needs through the
//! context; anything long-lived (a timer, a handler that needs the module's status or storage)
//! captures the [`ModuleHandle`] from [`ModuleContext::handle`]. It is then listed in
//! `crate::modules::builtin` and enabled per host with `modules_enabled`.
//!
//! ```
//! use std::time::Duration;
//! use oxpecker::core::events::{handler, Flow};
//! use oxpecker::core::modules::{Module, ModuleContext, StatusType};
//! use oxpecker::xmpp::{stanza, Element};
//!
//! /// Answers `<query xmlns='urn:example:hello'/>` IQs sent to the server and counts them.
//! struct Hello;
//!
//! impl Module for Hello {
//!     fn name(&self) -> &'static str {
//!         "hello"
//!     }
//!
//!     fn options(&self) -> &'static [&'static str] {
//!         &["hello_greeting"]
//!     }
//!
//!     fn load(&self, ctx: &mut ModuleContext) -> Result<(), String> {
//!         // Typed option: the host's value, else the global one, else the default.
//!         let greeting = ctx.option_string("hello_greeting", "Hello");
//!         let counter = ctx.measure("requests", oxpecker::core::modules::Measure::Counter);
//!         ctx.add_feature("urn:example:hello");
//!         ctx.hook(
//!             "iq-get/host/urn:example:hello:query",
//!             0,
//!             handler(move |ev| {
//!                 let greeting = greeting.clone();
//!                 let counter = counter.clone();
//!                 async move {
//!                     counter.inc();
//!                     let reply = Element::new("query", "urn:example:hello").text(greeting);
//!                     ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
//!                     Flow::Handled
//!                 }
//!             }),
//!         );
//!         // A repeating timer: returning Some(delay) runs it again, None stops it.
//!         let module = ctx.handle();
//!         ctx.add_timer(Duration::from_secs(3600), move || {
//!             let module = module.clone();
//!             async move {
//!                 module.set_status(StatusType::Info, "still here", false);
//!                 Some(Duration::from_secs(3600))
//!             }
//!         });
//!         Ok(())
//!     }
//! }
//! # let _ = Hello;
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use super::Core;
use super::events::{DataEvents, Events};
pub use super::module_api::{
    Measure, ModuleHandle, ModuleMetric, ModuleStatus, Period, StatusType, StoreHandle, StoreKind,
    Timer,
};

/// Why a module operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModuleError {
    /// No built-in module has this name.
    #[error("unknown module {0}")]
    Unknown(String),
    /// The host is not served here.
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// The module is already loaded on the host.
    #[error("module {0} is already loaded")]
    AlreadyLoaded(String),
    /// The module is not loaded on the host.
    #[error("module {0} is not loaded")]
    NotLoaded(String),
    /// The module refused to load.
    #[error("module {module} failed to load: {reason}")]
    LoadFailed {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
}

/// A feature module: everything it does, it registers through its [`ModuleContext`] in `load`.
pub trait Module: Send + Sync + 'static {
    /// The module's name as used in `modules_enabled`.
    fn name(&self) -> &'static str;
    /// Registers hooks, features and the like on the context's host.
    fn load(&self, ctx: &mut ModuleContext) -> Result<(), String>;
    /// The config options this module reads (so the config validator knows them).
    fn options(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether the module is global: loaded once on the `*` pseudo-host rather than per host.
    fn global(&self) -> bool {
        false
    }
}

/// What kind of host a module is loaded on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostType {
    /// A virtual host users log into.
    Local,
    /// A component (e.g. a MUC service); none are served yet.
    Component,
    /// The `*` pseudo-host of global modules.
    Global,
}

/// The context a module gets while loading: its [`ModuleHandle`] plus load-time helpers.
/// Every method of the handle is available on the context.
pub struct ModuleContext {
    handle: Arc<ModuleHandle>,
}

impl std::ops::Deref for ModuleContext {
    type Target = ModuleHandle;
    fn deref(&self) -> &ModuleHandle {
        &self.handle
    }
}

impl ModuleContext {
    /// The module's runtime handle, to capture in handlers, timers and tasks.
    pub fn handle(&self) -> Arc<ModuleHandle> {
        self.handle.clone()
    }

    /// Loads module `name` on this host first if it is not loaded (Prosody's `depends`).
    pub fn depends(&self, name: &str) -> Result<(), String> {
        let core = self.core().upgrade().ok_or("server is shutting down")?;
        if self.host_ref().is_loaded(name) {
            return Ok(());
        }
        core.load_module(self.host(), name)
            .map_err(|e| e.to_string())
    }
}

/// A served virtual host (or the global `*` host): its event buses, loaded modules and items.
pub struct Host {
    /// The domain (or `*`).
    pub name: String,
    /// What kind of host this is.
    pub kind: HostType,
    /// The host's stanza event bus.
    pub events: Events,
    /// The host's data event bus.
    pub data_events: DataEvents,
    loaded: Mutex<BTreeMap<String, Arc<ModuleHandle>>>,
    failed: Mutex<BTreeMap<String, ModuleStatus>>,
    pub(super) items: Mutex<BTreeMap<String, Vec<(String, Value)>>>,
}

impl Host {
    /// A host with no modules loaded.
    pub fn new(name: &str) -> Self {
        Self::with_kind(name, HostType::Local)
    }

    /// A host of the given kind.
    pub fn with_kind(name: &str, kind: HostType) -> Self {
        Host {
            name: name.to_string(),
            kind,
            events: Events::new(),
            data_events: DataEvents::new(),
            loaded: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            items: Mutex::new(BTreeMap::new()),
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<ModuleHandle>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> Vec<Arc<ModuleHandle>> {
        self.loaded().values().cloned().collect()
    }

    /// Names of the loaded modules, sorted.
    pub fn modules(&self) -> Vec<String> {
        self.loaded().keys().cloned().collect()
    }

    /// Whether `module` is loaded.
    pub fn is_loaded(&self, module: &str) -> bool {
        self.loaded().contains_key(module)
    }

    /// The handle of a loaded module.
    pub fn module(&self, module: &str) -> Option<Arc<ModuleHandle>> {
        self.loaded().get(module).cloned()
    }

    /// A module's status: its own if loaded, the load error if it failed to load.
    pub fn module_status(&self, module: &str) -> Option<ModuleStatus> {
        if let Some(h) = self.module(module) {
            return Some(h.get_status());
        }
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(module)
            .cloned()
    }

    /// The disco#info features the loaded modules advertise, sorted and unique.
    pub fn features(&self) -> Vec<String> {
        let mut all: Vec<String> = self.handles().iter().flat_map(|h| h.features()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The disco#info identities `(category, type, name)` the loaded modules add.
    pub fn identities(&self) -> Vec<(String, String, String)> {
        let mut all: Vec<_> = self.handles().iter().flat_map(|h| h.identities()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// XEP-0128 extended-info forms the loaded modules add.
    pub fn extensions(&self) -> Vec<crate::xmpp::Element> {
        self.handles().iter().flat_map(|h| h.extensions()).collect()
    }

    /// Stream features the loaded modules offer after authentication.
    pub fn stream_features(&self) -> Vec<crate::xmpp::Element> {
        self.handles()
            .iter()
            .flat_map(|h| h.stream_features())
            .collect()
    }

    /// The account cleanups of the loaded modules.
    pub fn user_cleanups(&self) -> Vec<super::module_api::UserCleanup> {
        self.handles()
            .iter()
            .flat_map(|h| h.user_cleanups())
            .collect()
    }

    /// Items of the array `key` added on this host.
    pub fn items(&self, key: &str) -> Vec<Value> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|v| v.iter().map(|(_, i)| i.clone()).collect())
            .unwrap_or_default()
    }

    /// Loads the built-in `module` on this host; on failure the host is left as it was and
    /// the module reports an `error` status.
    pub fn load(
        self: &Arc<Self>,
        core: Weak<Core>,
        module: &dyn Module,
    ) -> Result<(), ModuleError> {
        let name = module.name();
        if self.is_loaded(name) {
            return Err(ModuleError::AlreadyLoaded(name.to_string()));
        }
        let handle = Arc::new(ModuleHandle::new(core, self.clone(), name));
        let mut ctx = ModuleContext {
            handle: handle.clone(),
        };
        if let Err(reason) = module.load(&mut ctx) {
            handle.teardown();
            tracing::error!(host = %self.name, module = name, %reason, "module failed to load");
            let status = ModuleStatus {
                kind: StatusType::Error,
                message: reason.clone(),
                time: super::accounts::now(),
            };
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), status);
            return Err(ModuleError::LoadFailed {
                module: name.to_string(),
                reason,
            });
        }
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.loaded().insert(name.to_string(), handle);
        tracing::info!(host = %self.name, module = name, "module loaded");
        Ok(())
    }

    /// Unloads `module`, removing every hook, timer, item, feature and shared reference it added.
    pub fn unload(&self, module: &str) -> Result<(), ModuleError> {
        let handle = self
            .loaded()
            .remove(module)
            .ok_or_else(|| ModuleError::NotLoaded(module.to_string()))?;
        handle.teardown();
        tracing::info!(host = %self.name, module, "module unloaded");
        Ok(())
    }
}
