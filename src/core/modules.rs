//! The module system: the [`Module`] trait, per-host loading, unloading and reloading, and the
//! [`ModuleContext`] / [`ModuleHandle`] through which a module does everything — so unloading it
//! removes every hook, timer, item, disco feature and shared-state reference it added.
//!
//! # Writing a module
//!
//! A module is a type implementing [`Module`]. In `load` it registers what it needs through the
//! context; anything long-lived (a timer, a handler that needs the module's status or storage)
//! captures the [`ModuleHandle`] from [`ModuleContext::handle`]. It is then listed in the
//! server's module table (`crate::modules::BUILTIN`) and enabled per host with `modules_enabled`.
//!
//! ```
//! use std::time::Duration;
//! use std::sync::Arc;
//! use oxpecker::core::events::{handler, Flow};
//! use oxpecker::core::lifecycle::RESOURCE_BIND;
//! use oxpecker::core::priority;
//! use oxpecker::core::modules::{
//!     LoadError, Measure, MeasureConf, Module, ModuleContext, StatusType,
//! };
//! use oxpecker::core::sessions::Outbound;
//! use oxpecker::xmpp::{stanza, Element};
//!
//! /// Answers `<query xmlns='urn:example:hello'/>` IQs sent to the server, counts and times them.
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
//!     fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
//!         // Typed option: the host's value, else the global one, else the default.
//!         let greeting = ctx.option_string("hello_greeting", "Hello");
//!         if greeting.is_empty() {
//!             return Err(LoadError::bad_option("hello_greeting", "must not be empty"));
//!         }
//!         let counter = ctx.measure("requests", Measure::Counter, MeasureConf::default());
//!         // A timed measure: the guard from `start()` records the elapsed time when dropped.
//!         let timing = ctx.measure(
//!             "answer",
//!             Measure::Times,
//!             MeasureConf {
//!                 description: Some("Time to answer a hello query".into()),
//!                 ..MeasureConf::default()
//!             },
//!         );
//!         ctx.add_feature("urn:example:hello");
//!         ctx.hook(
//!             "iq-get/host/urn:example:hello:query",
//!             priority::HANDLER,
//!             handler(move |ev| {
//!                 let (greeting, counter, timing) =
//!                     (greeting.clone(), counter.clone(), timing.clone());
//!                 async move {
//!                     let _timer = timing.start();
//!                     counter.inc();
//!                     let reply = Element::new("query", "urn:example:hello").text(greeting);
//!                     ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
//!                     Flow::Handled
//!                 }
//!             }),
//!         );
//!         // A lifecycle event (a data event): count the resources bound on this host.
//!         let binds = ctx.measure("binds", Measure::Counter, MeasureConf::default());
//!         ctx.hook_event(
//!             RESOURCE_BIND,
//!             priority::HANDLER,
//!             Arc::new(move |data: &mut serde_json::Value| {
//!                 if data["resource"].is_string() {
//!                     binds.inc();
//!                 }
//!                 None // let the event go on to other handlers
//!             }),
//!         );
//!         // A stream-level element (nonza) of a bound session: `<wave xmlns='urn:example:hello'/>`
//!         // is answered on the stream with `<waved/>`.
//!         ctx.hook_tag(
//!             "urn:example:hello",
//!             "wave",
//!             priority::HANDLER,
//!             handler(|ev| async move {
//!                 if let Some(session) = ev.origin.session() {
//!                     session.send_nonza(Outbound::Nonza(
//!                         Element::new("waved", "urn:example:hello").to_xml("jabber:client"),
//!                     ));
//!                 }
//!                 Flow::Handled
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use super::Core;
use super::events::{DataEvents, Events};
pub use super::module_api::options::PathBase;
pub use super::module_api::{
    Measure, MeasureConf, Measurement, ModuleHandle, ModuleMetric, ModuleStatus, Period,
    StatusType, StoreHandle, StoreKind, Timer, TimingGuard,
};

/// Why a module operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModuleError {
    /// No module of the server's table has this name.
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
        #[source]
        reason: LoadError,
    },
}

/// Why a module's [`Module::load`] refused to load.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// An option has a value the module cannot use.
    #[error("`{option}` {reason}")]
    BadOption {
        /// The option.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A shared value exists with another type.
    #[error("cannot share {0}: it exists with another type")]
    Shared(String),
    /// A module this one depends on did not load.
    #[error("needs module {module}: {reason}")]
    Dependency {
        /// The dependency.
        module: String,
        /// Why it did not load.
        reason: String,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Something the module needs is unavailable (a resource file, say).
    #[error("{0}")]
    Unavailable(String),
}

impl LoadError {
    /// A [`LoadError::BadOption`].
    pub fn bad_option(option: &str, reason: impl Into<String>) -> Self {
        LoadError::BadOption {
            option: option.to_string(),
            reason: reason.into(),
        }
    }
}

/// Makes one module instance.
pub type Constructor = fn() -> Arc<dyn Module>;

/// The modules a server can load, by name. `Server` hands the built-in table
/// (`crate::modules::BUILTIN`) to [`Core::new`], so `core` never names the modules itself.
#[derive(Clone, Copy)]
pub struct ModuleTable(&'static [(&'static str, Constructor)]);

impl ModuleTable {
    /// A table of `(name, constructor)` pairs.
    pub const fn new(modules: &'static [(&'static str, Constructor)]) -> Self {
        ModuleTable(modules)
    }

    /// A fresh instance of module `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Module>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, make)| make())
    }

    /// Every module name.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(n, _)| *n).collect()
    }

    /// What config validation needs: the names and every option a module reads.
    pub fn catalog(&self) -> crate::config::ModuleCatalog {
        crate::config::ModuleCatalog {
            names: self.names(),
            options: self
                .0
                .iter()
                .flat_map(|(_, make)| make().options().iter().copied())
                .collect(),
        }
    }
}

/// A feature module: everything it does, it registers through its [`ModuleContext`] in `load`.
pub trait Module: Send + Sync + 'static {
    /// The module's name as used in `modules_enabled`.
    fn name(&self) -> &'static str;
    /// Registers hooks, features and the like on the context's host.
    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError>;
    /// The config options this module reads (so the config validator knows them).
    fn options(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether the module is global: loaded once on the `*` pseudo-host rather than per host
    /// (Prosody's `module:set_global`).
    fn global(&self) -> bool {
        false
    }
}

/// What kind of host a module is loaded on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostType {
    /// A virtual host users log into.
    Local,
    /// A component host (a MUC service, upload, …): its own bus and modules, no user logins.
    Component,
    /// The `*` pseudo-host of global modules.
    Global,
}

/// The context a module gets while loading: its [`ModuleHandle`] plus load-time helpers.
/// Every method of the handle is available on the context.
///
/// # The module API, by Prosody name
///
/// | Prosody | here |
/// |---|---|
/// | `module:get_host()`, `module.host` | [`ModuleHandle::host`] (`*` for a global module) |
/// | `module:get_host_type()` | [`ModuleHandle::host_type`] |
/// | `module:set_global()` | [`Module::global`] returns `true`; [`ModuleHandle::is_global`] |
/// | `module:get_directory()` | [`ModuleHandle::get_directory`] |
/// | `module:load_resource(path)` | [`ModuleHandle::load_resource`] |
/// | `module:log(level, msg)` | [`ModuleHandle::log`] |
/// | `module:set_status(type, msg, override)` | [`ModuleHandle::set_status`] |
/// | `module:log_status(level, msg)` | [`ModuleHandle::log_status`] |
/// | `module:get_status()` | [`ModuleHandle::get_status`] |
/// | `module:get_option(name, default)` | [`ModuleHandle::option`] (raw) |
/// | `get_option_string` / `_boolean` / `_number` / `_integer` / `_period` | [`ModuleHandle::option_string`], [`option_bool`](ModuleHandle::option_bool), [`option_number`](ModuleHandle::option_number), [`option_integer`](ModuleHandle::option_integer), [`option_period`](ModuleHandle::option_period) |
/// | `get_option_array` / `_set` / `_inherited_set` / `_enum` | [`ModuleHandle::option_strings`], [`option_set`](ModuleHandle::option_set), [`option_inherited_set`](ModuleHandle::option_inherited_set), [`option_enum`](ModuleHandle::option_enum) |
/// | `get_option_path(name, default, parent)` | [`ModuleHandle::option_path`] with a [`PathBase`] |
/// | `module:fire_event(name, data)` | [`ModuleHandle::fire_event`] |
/// | `module:hook(name, handler, priority)` | [`ModuleHandle::hook`] (stanza events), [`ModuleHandle::hook_event`] (data events) |
/// | `module:hook_global(name, handler, priority)` | [`ModuleHandle::hook_global`] (stanza events of every host), [`ModuleHandle::hook_global_event`] (data events) |
/// | `module:hook_object_event(...)` | none yet: hosts are the only objects with a bus; rooms get one with group chat |
/// | `module:unhook(name, handler)` | [`ModuleHandle::unhook`] with the [`HookId`](super::events::HookId) a hook returned |
/// | `module:send(stanza, origin)` | [`ModuleHandle::send`] |
/// | `module:send_iq(stanza, origin, timeout)` | [`ModuleHandle::send_iq`] |
/// | `module:add_timer(delay, callback)` | [`ModuleHandle::add_timer`] → [`Timer`] (`stop`, `reschedule`) |
/// | `module:cron(spec)`, `hourly`, `daily`, `weekly` | [`ModuleHandle::cron`], [`hourly`](ModuleHandle::hourly), [`daily`](ModuleHandle::daily), [`weekly`](ModuleHandle::weekly) |
/// | `module:depends(name)` | [`ModuleContext::depends`] |
/// | `module:shared(path)` | [`ModuleHandle::shared`] |
/// | `module:context(host)` | [`ModuleHandle::context`], [`ModuleHandle::option_on`] |
/// | `module:add_feature(var)` | [`ModuleHandle::add_feature`] |
/// | `module:add_identity(category, type, name)` | [`ModuleHandle::add_identity`] |
/// | `module:add_extension(form)` | [`ModuleHandle::add_extension`] |
/// | `module:add_item(key, item)` / `remove_item` | [`ModuleHandle::add_item`], [`ModuleHandle::remove_item`] |
/// | `module:handle_items(key, add, remove, existing)` | [`ModuleHandle::handle_items`] |
/// | `module:get_host_items(key)` | [`ModuleHandle::get_host_items`] |
/// | `module:provides(name, item)` | [`ModuleHandle::provides`] |
/// | `module:open_store(name, type)` | [`ModuleHandle::open_store`] (what it holds for an account goes with the account) |
/// | `module:measure(name, type, conf)` | [`ModuleHandle::measure`] with [`MeasureConf`] → [`Measurement`] (`start()` gives a [`TimingGuard`]) |
/// | `module:metric(type, name, unit, description, labels)` | [`ModuleHandle::metric`] |
/// | `module:provides("http", { route = … })` | [`ModuleHandle::add_http_route`] (exact method and path, server-wide) |
///
/// Beyond Prosody: [`ModuleHandle::spawn`] (a task that ends when the module unloads),
/// [`ModuleHandle::add_stream_feature`], and [`ModuleHandle::on_user_deleted`] for account
/// data kept outside the module's stores.
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
    pub fn depends(&self, name: &str) -> Result<(), LoadError> {
        let core = self.core().upgrade().ok_or(LoadError::ShuttingDown)?;
        if self.host_ref().is_loaded(name) {
            return Ok(());
        }
        core.load_module(self.host(), name)
            .map_err(|e| LoadError::Dependency {
                module: name.to_string(),
                reason: e.to_string(),
            })
    }
}

/// A served virtual host (or the global `*` host): its event buses, loaded modules and items.
pub struct Host {
    /// The domain (or `*`).
    pub name: String,
    /// What kind of host this is.
    pub kind: HostType,
    /// For a component, the user host whose disco#items lists it.
    pub parent: Option<String>,
    /// The host's stanza event bus.
    pub events: Events,
    /// The host's data event bus.
    pub data_events: DataEvents,
    loaded: Mutex<BTreeMap<String, Arc<ModuleHandle>>>,
    failed: Mutex<BTreeMap<String, ModuleStatus>>,
    pub(super) items: Mutex<BTreeMap<String, Vec<(String, Value)>>>,
    /// Bumped after every change to what the host's disco#info shows: a module loaded or
    /// unloaded, a feature, identity or extension added.
    disco_generation: AtomicU64,
    /// The XEP-0115 caps of the disco generation they were computed for (see [`Host::caps`]).
    caps: Mutex<Option<(u64, Option<crate::xmpp::Element>)>>,
}

impl Host {
    /// A host with no modules loaded.
    pub fn new(name: &str) -> Self {
        Self::with_kind(name, HostType::Local)
    }

    /// A component host listed under `parent`.
    pub fn component(name: &str, parent: &str) -> Self {
        Host {
            parent: Some(parent.to_string()),
            ..Self::with_kind(name, HostType::Component)
        }
    }

    /// A host of the given kind.
    pub fn with_kind(name: &str, kind: HostType) -> Self {
        Host {
            name: name.to_string(),
            kind,
            parent: None,
            events: Events::new(),
            data_events: DataEvents::new(),
            loaded: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            items: Mutex::new(BTreeMap::new()),
            disco_generation: AtomicU64::new(0),
            caps: Mutex::new(None),
        }
    }

    /// Marks the host's disco#info as changed; called after the change is visible, so a
    /// value computed before it is never served again.
    pub(super) fn disco_changed(&self) {
        self.disco_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The host's XEP-0115 caps element: `compute` runs once per change of its disco#info
    /// (modules, features, identities, extensions) and the result is reused until the next one.
    pub fn caps(
        &self,
        compute: impl FnOnce(&Host) -> Option<crate::xmpp::Element>,
    ) -> Option<crate::xmpp::Element> {
        // Read the generation before computing: a change racing the computation bumps it
        // again, so the value stored below is then already out of date and never served.
        let generation = self.disco_generation.load(Ordering::Acquire);
        if let Some((g, caps)) = &*self.caps_cache()
            && *g == generation
        {
            return caps.clone();
        }
        let caps = compute(self);
        let mut slot = self.caps_cache();
        if slot.as_ref().is_none_or(|(g, _)| *g < generation) {
            *slot = Some((generation, caps.clone()));
        }
        caps
    }

    fn caps_cache(&self) -> std::sync::MutexGuard<'_, Option<(u64, Option<crate::xmpp::Element>)>> {
        self.caps.lock().unwrap_or_else(|e| e.into_inner())
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
            let status = ModuleStatus::new(StatusType::Error, &reason.to_string());
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
        self.disco_changed();
        tracing::info!(host = %self.name, module = name, "module loaded");
        Ok(())
    }

    /// Unloads `module`, removing every hook, timer, item, feature and shared reference it added.
    pub fn unload(&self, module: &str) -> Result<(), ModuleError> {
        let handle = self
            .loaded()
            .remove(module)
            .ok_or_else(|| ModuleError::NotLoaded(module.to_string()))?;
        self.disco_changed();
        handle.teardown();
        tracing::info!(host = %self.name, module, "module unloaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::module_api::probe::{core, load};

    #[tokio::test]
    async fn depends_loads_the_dependency_first_and_names_an_unknown_one() {
        let core = core();
        load(&core, |ctx| ctx.depends("helper")).unwrap();
        let host = core.host("localhost").unwrap();
        assert!(host.is_loaded("helper"));
        core.unload_module("localhost", "probe").unwrap();
        let e = load(&core, |ctx| ctx.depends("nonexistent")).unwrap_err();
        assert!(matches!(
            e,
            ModuleError::LoadFailed {
                reason: LoadError::Dependency { .. },
                ..
            }
        ));
        assert_eq!(
            core.load_module("localhost", "nonexistent"),
            Err(ModuleError::Unknown("nonexistent".into()))
        );
    }

    /// A `<c/>` with verification string `ver`.
    fn c(ver: &str) -> Option<crate::xmpp::Element> {
        Some(crate::xmpp::Element::new("c", crate::xmpp::ns::CAPS).attr("ver", ver))
    }

    #[test]
    fn a_value_computed_across_a_change_is_not_served_after_it() {
        let host = Host::new("example.org");
        // The change lands while the computation runs: its result answers this call only.
        let first = host.caps(|h| {
            h.disco_changed();
            c("old")
        });
        assert_eq!(first.unwrap().get_attr("ver"), Some("old"));
        let next = host.caps(|_| c("new"));
        assert_eq!(next.unwrap().get_attr("ver"), Some("new"));
        // Unchanged since: the cached value is served without computing.
        let again = host.caps(|_| panic!("recomputed without a change"));
        assert_eq!(again.unwrap().get_attr("ver"), Some("new"));
    }
}
