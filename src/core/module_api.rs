//! [`ModuleHandle`]: what a loaded module can do at any time — hooks, options, status, sending,
//! timers and cron, shared state, items, disco, storage and metrics — all tracked so that
//! unloading the module removes every trace of it.

use std::any::Any;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Core;
use super::events::{DataHandler, Handler, HookId, Origin};
use super::metrics::{Family, MetricKind, SIZE_BUCKETS, Series, TIME_BUCKETS};
use super::modules::{Host, HostType};
use super::options::{self, OptionError};
use crate::storage::{ArchiveStore, KeyValStore, MapStore};
use crate::xmpp::Element;

pub mod tags;

/// Severity of a module status, ordered info < warn < error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusType {
    /// Healthy, with information.
    Info,
    /// Working, with a problem worth attention.
    Warn,
    /// Not working.
    Error,
}

/// A module's current status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModuleStatus {
    /// Severity.
    #[serde(rename = "type")]
    pub kind: StatusType,
    /// Human-readable message.
    pub message: String,
    /// When it was set (unix seconds).
    pub time: i64,
}

/// The high-level metric kinds of Prosody's `module:measure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// A current amount (gauge).
    Amount,
    /// A total that only goes up (counter).
    Counter,
    /// Occurrences whose total is not otherwise tracked (counter).
    Rate,
    /// Durations in seconds (histogram).
    Times,
    /// Sizes in bytes (histogram).
    Sizes,
    /// Any distribution of values (summary).
    Distribution,
}

/// A cron period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Once an hour.
    Hourly,
    /// Once a day.
    Daily,
    /// Once a week.
    Weekly,
}

impl Period {
    /// The period in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Period::Hourly => 3600,
            Period::Daily => 86_400,
            Period::Weekly => 604_800,
        }
    }
}

/// The store kinds of `open_store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// One value per user.
    KeyVal,
    /// Two-level keys.
    Map,
    /// Ordered, queryable items.
    Archive,
}

/// A store opened by a module.
pub enum StoreHandle {
    /// A keyval store.
    KeyVal(KeyValStore),
    /// A map store.
    Map(MapStore),
    /// An archive store.
    Archive(ArchiveStore),
}

/// A running timer; dropped timers keep running until stopped or the module unloads.
#[derive(Clone)]
pub struct Timer {
    cancel: CancellationToken,
    reschedule: Arc<tokio::sync::watch::Sender<Option<Duration>>>,
}

impl Timer {
    /// Cancels the timer.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Runs the timer `delay` from now instead of at its current deadline.
    pub fn reschedule(&self, delay: Duration) {
        let _ = self.reschedule.send(Some(delay));
    }
}

/// A module's labelled metric family: every series carries the implicit `host` label first.
#[derive(Clone)]
pub struct ModuleMetric {
    family: Arc<Family>,
    host: String,
}

impl ModuleMetric {
    /// The series for these label values (after the implicit host).
    pub fn with(&self, values: &[&str]) -> Arc<Series> {
        let mut all = Vec::with_capacity(values.len() + 1);
        all.push(self.host.as_str());
        all.extend_from_slice(values);
        self.family.with(&all)
    }

    /// Records an observation (histogram or summary) on the series `values`.
    pub fn observe(&self, values: &[&str], v: f64) {
        let mut all = vec![self.host.as_str()];
        all.extend_from_slice(values);
        self.family.observe(&all, v);
    }
}

/// An async cleanup run when an account is deleted.
pub type UserCleanup = Arc<
    dyn Fn(Arc<Core>, crate::xmpp::Jid) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

#[derive(Default)]
struct Registrations {
    cleanups: Vec<UserCleanup>,
    hooks: Vec<(bool, HookId)>,
    data_hooks: Vec<(bool, HookId)>,
    features: Vec<String>,
    stream_features: Vec<Element>,
    identities: Vec<(String, String, String)>,
    extensions: Vec<Element>,
    items: Vec<(String, Value)>,
    shared: Vec<String>,
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

/// Shared-state entries: value and how many module instances hold it.
pub type SharedMap = std::collections::HashMap<String, (Arc<dyn Any + Send + Sync>, usize)>;

impl ModuleHandle {
    pub(super) fn new(core: Weak<Core>, host: Arc<Host>, name: &'static str) -> Self {
        ModuleHandle {
            name,
            host,
            core,
            status: Mutex::new(ModuleStatus {
                kind: StatusType::Info,
                message: "loaded".into(),
                time: super::accounts::now(),
            }),
            cancel: CancellationToken::new(),
            reg: Mutex::new(Registrations::default()),
        }
    }

    fn reg(&self) -> std::sync::MutexGuard<'_, Registrations> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn global_host(&self) -> Option<Arc<Host>> {
        self.core.upgrade().map(|c| c.global_host())
    }

    // ---- identity and logging ----

    /// The host this module instance serves (`*` for a global module).
    pub fn host(&self) -> &str {
        &self.host.name
    }

    /// The host object.
    pub fn host_ref(&self) -> &Arc<Host> {
        &self.host
    }

    /// The kind of host.
    pub fn host_type(&self) -> HostType {
        self.host.kind
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

    /// A raw option as seen from another host (`*` = the global value only).
    pub fn option_on(&self, host: &str, name: &str) -> Option<toml::Value> {
        let core = self.core.upgrade()?;
        let cfg = core.config.load();
        if host == "*" {
            cfg.options.get(name).cloned()
        } else {
            cfg.option(host, name).cloned()
        }
    }

    /// Logs `message` at `level` with the module and host as fields.
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

    // ---- status ----

    /// Sets the status; a less severe status than the current one is ignored unless `override_`.
    /// Fires `module-status/updated` with `{"name": module}` when it changes.
    pub fn set_status(&self, kind: StatusType, message: &str, override_: bool) -> bool {
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if kind < st.kind && !override_ {
                return false;
            }
            *st = ModuleStatus {
                kind,
                message: message.to_string(),
                time: super::accounts::now(),
            };
        }
        let mut data = json!({ "name": self.name });
        self.host
            .data_events
            .fire("module-status/updated", &mut data);
        true
    }

    /// Logs at the matching level and records the message as the status.
    pub fn log_status(&self, kind: StatusType, message: &str) {
        let level = match kind {
            StatusType::Info => tracing::Level::INFO,
            StatusType::Warn => tracing::Level::WARN,
            StatusType::Error => tracing::Level::ERROR,
        };
        self.log(level, message);
        self.set_status(kind, message, false);
    }

    /// The current status.
    pub fn get_status(&self) -> ModuleStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    // ---- events ----

    /// Hooks a stanza `handler` to `event` on this host at `priority`.
    pub fn hook(&self, event: &str, priority: i32, handler: Handler) -> HookId {
        let id = self.host.events.hook(event, priority, handler);
        self.reg().hooks.push((false, id));
        id
    }

    /// Hooks a stanza handler on the global (`*`) bus.
    pub fn hook_global(&self, event: &str, priority: i32, handler: Handler) -> Option<HookId> {
        let g = self.global_host()?;
        let id = g.events.hook(event, priority, handler);
        self.reg().hooks.push((true, id));
        Some(id)
    }

    /// Hooks a data-event handler on this host (returning `Some` halts the event).
    pub fn hook_event(&self, event: &str, priority: i32, handler: DataHandler) -> HookId {
        let id = self.host.data_events.hook(event, priority, handler);
        self.reg().data_hooks.push((false, id));
        id
    }

    /// Hooks a data-event handler on the global bus.
    pub fn hook_global_event(
        &self,
        event: &str,
        priority: i32,
        handler: DataHandler,
    ) -> Option<HookId> {
        let g = self.global_host()?;
        let id = g.data_events.hook(event, priority, handler);
        self.reg().data_hooks.push((true, id));
        Some(id)
    }

    /// Removes a hook this module added.
    pub fn unhook(&self, id: HookId) {
        let global = self.global_host();
        let mut reg = self.reg();
        if let Some(pos) = reg.hooks.iter().position(|(_, h)| *h == id) {
            let (g, h) = reg.hooks.remove(pos);
            match (g, &global) {
                (true, Some(gh)) => gh.events.unhook(h),
                _ => self.host.events.unhook(h),
            }
        }
        if let Some(pos) = reg.data_hooks.iter().position(|(_, h)| *h == id) {
            let (g, h) = reg.data_hooks.remove(pos);
            match (g, &global) {
                (true, Some(gh)) => gh.data_events.unhook(h),
                _ => self.host.data_events.unhook(h),
            }
        }
    }

    /// Registers `cleanup`, awaited by [`Core::delete_account`] for each account deleted on this
    /// host, so the module removes what it stores for the user.
    pub fn on_user_deleted<F, Fut>(&self, cleanup: F)
    where
        F: Fn(Arc<Core>, crate::xmpp::Jid) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: UserCleanup = Arc::new(move |core, jid| Box::pin(cleanup(core, jid)));
        self.reg().cleanups.push(f);
    }

    pub(super) fn user_cleanups(&self) -> Vec<UserCleanup> {
        self.reg().cleanups.clone()
    }

    /// Fires a data event on this host; the first handler returning a value halts it.
    pub fn fire_event(&self, event: &str, data: &mut Value) -> Option<Value> {
        self.host.data_events.fire(event, data)
    }

    // ---- discovery ----

    /// Advertises a disco#info feature on this host.
    pub fn add_feature(&self, feature: &str) {
        self.reg().features.push(feature.to_string());
    }

    /// Adds a stream feature offered after authentication (Prosody's `hook_tag` use for features).
    pub fn add_stream_feature(&self, feature: Element) {
        self.reg().stream_features.push(feature);
    }

    /// Adds a disco#info identity.
    pub fn add_identity(&self, category: &str, kind: &str, name: &str) {
        self.reg()
            .identities
            .push((category.into(), kind.into(), name.into()));
    }

    /// Adds a XEP-0128 extended-info data form (`<x xmlns='jabber:x:data' type='result'>`).
    pub fn add_extension(&self, form: Element) {
        self.reg().extensions.push(form);
    }

    pub(super) fn features(&self) -> Vec<String> {
        self.reg().features.clone()
    }

    pub(super) fn stream_features(&self) -> Vec<Element> {
        self.reg().stream_features.clone()
    }

    pub(super) fn identities(&self) -> Vec<(String, String, String)> {
        self.reg().identities.clone()
    }

    pub(super) fn extensions(&self) -> Vec<Element> {
        self.reg().extensions.clone()
    }

    // ---- items ----

    /// Adds `item` to the host array `key` and fires `item-added/<key>`.
    pub fn add_item(&self, key: &str, item: Value) {
        self.host
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .push((self.name.to_string(), item.clone()));
        self.reg().items.push((key.to_string(), item.clone()));
        let mut data = json!({ "item": item, "source": self.name });
        self.host
            .data_events
            .fire(&format!("item-added/{key}"), &mut data);
    }

    /// Removes one `item` from the host array `key` and fires `item-removed/<key>`.
    pub fn remove_item(&self, key: &str, item: &Value) -> bool {
        let removed = {
            let mut items = self.host.items.lock().unwrap_or_else(|e| e.into_inner());
            let list = items.entry(key.to_string()).or_default();
            match list.iter().position(|(m, i)| m == self.name && i == item) {
                Some(p) => {
                    list.remove(p);
                    true
                }
                None => false,
            }
        };
        if removed {
            let mut reg = self.reg();
            if let Some(p) = reg.items.iter().position(|(k, i)| k == key && i == item) {
                reg.items.remove(p);
            }
            drop(reg);
            let mut data = json!({ "item": item, "source": self.name });
            self.host
                .data_events
                .fire(&format!("item-removed/{key}"), &mut data);
        }
        removed
    }

    /// Items of the array `key` on this host and on the global host.
    pub fn get_host_items(&self, key: &str) -> Vec<Value> {
        let mut out = self.host.items(key);
        if let Some(g) = self.global_host()
            && g.name != self.host.name
        {
            out.extend(g.items(key));
        }
        out
    }

    /// Watches the array `key`: `on_add`/`on_remove` run for changes, and `on_add` for existing items if asked.
    pub fn handle_items<A, R>(&self, key: &str, on_add: A, on_remove: R, existing: bool)
    where
        A: Fn(&Value) + Send + Sync + 'static,
        R: Fn(&Value) + Send + Sync + 'static,
    {
        if existing {
            for item in self.get_host_items(key) {
                on_add(&item);
            }
        }
        self.hook_event(
            &format!("item-added/{key}"),
            0,
            Arc::new(move |d: &mut Value| {
                on_add(&d["item"]);
                None
            }),
        );
        self.hook_event(
            &format!("item-removed/{key}"),
            0,
            Arc::new(move |d: &mut Value| {
                on_remove(&d["item"]);
                None
            }),
        );
    }

    /// Publishes `item` in the `<name>-provider` array (Prosody's `provides`).
    pub fn provides(&self, name: &str, item: Value) {
        let mut item = item;
        if let Some(obj) = item.as_object_mut() {
            obj.entry("name").or_insert_with(|| {
                json!(
                    self.name
                        .strip_prefix(&format!("{name}_"))
                        .unwrap_or(self.name)
                )
            });
        }
        self.add_item(&format!("{name}-provider"), item);
    }

    // ---- options ----

    /// The raw value of a module option: the host's, else the global one.
    pub fn option(&self, name: &str) -> Option<toml::Value> {
        let core = self.core.upgrade()?;
        let cfg = core.config.load();
        cfg.option(&self.host.name, name).cloned()
    }

    fn typed<T>(
        &self,
        name: &str,
        default: T,
        conv: impl FnOnce(&toml::Value) -> Result<T, OptionError>,
    ) -> T {
        match self.option(name) {
            None => default,
            Some(v) => conv(&v).unwrap_or_else(|e| {
                tracing::warn!(
                    host = %self.host.name,
                    module = self.name,
                    option = name,
                    "option {name}: {e}; using the default"
                );
                default
            }),
        }
    }

    /// A string option, or `default` (a wrong type logs a warning naming the option).
    pub fn option_string(&self, name: &str, default: &str) -> String {
        self.typed(name, default.to_string(), options::string)
    }

    /// A boolean option, or `default`.
    pub fn option_bool(&self, name: &str, default: bool) -> bool {
        self.typed(name, default, options::boolean)
    }

    /// A number option within `min..=max`, or `default`.
    pub fn option_number(&self, name: &str, default: f64, min: f64, max: f64) -> f64 {
        self.typed(name, default, |v| options::number(v, min, max))
    }

    /// An integer option within `min..=max`, or `default`.
    pub fn option_integer(&self, name: &str, default: i64, min: i64, max: i64) -> i64 {
        self.typed(name, default, |v| options::integer(v, min, max))
    }

    /// A period option ("3 weeks", "never" → `None`), or `default`.
    pub fn option_period(&self, name: &str, default: Option<Duration>) -> Option<Duration> {
        self.typed(name, default, options::period)
    }

    /// A list-of-strings option, or `default`.
    pub fn option_strings(&self, name: &str, default: &[&str]) -> Vec<String> {
        self.typed(
            name,
            default.iter().map(|s| s.to_string()).collect(),
            options::array,
        )
    }

    /// A set option (duplicates removed), or `default`.
    pub fn option_set(&self, name: &str, default: &[&str]) -> Vec<String> {
        self.typed(
            name,
            default.iter().map(|s| s.to_string()).collect(),
            options::set,
        )
    }

    /// The union of the global and this host's set option.
    pub fn option_inherited_set(&self, name: &str) -> Vec<String> {
        let Some(core) = self.core.upgrade() else {
            return Vec::new();
        };
        let cfg = core.config.load();
        let host = cfg
            .hosts
            .iter()
            .find(|h| h.name == self.host.name)
            .and_then(|h| h.options.get(name));
        options::inherited_set(cfg.options.get(name), host).unwrap_or_else(|e| {
            tracing::warn!(module = self.name, option = name, "option {name}: {e}");
            Vec::new()
        })
    }

    /// A path option, relative paths resolved against the data directory.
    pub fn option_path(&self, name: &str, default: &str) -> PathBuf {
        let base = self
            .core
            .upgrade()
            .map(|c| c.config.load().data_dir.clone())
            .unwrap_or_default();
        let default_path = base.join(default);
        self.typed(name, default_path, |v| options::path(v, &base))
    }

    /// An enum option: `default` or one of `choices`.
    pub fn option_enum(&self, name: &str, default: &str, choices: &[&str]) -> String {
        let mut all = vec![default];
        all.extend_from_slice(choices);
        self.typed(name, default.to_string(), |v| options::choice(v, &all))
    }

    // ---- sending ----

    /// Routes a stanza (it needs valid `from` and `to`).
    pub async fn send(&self, stanza: Element) {
        if let Some(core) = self.core.upgrade() {
            core.route(Origin::Server, stanza).await;
        }
    }

    /// Sends an IQ and waits for its response (at most 256 in flight; default timeout 120 s).
    pub async fn send_iq(
        &self,
        stanza: Element,
        timeout: Option<Duration>,
    ) -> Result<Element, super::iq::IqError> {
        let core = self.core.upgrade().ok_or(super::iq::IqError::Shutdown)?;
        core.send_iq(stanza, timeout).await
    }

    // ---- timers, cron, tasks ----

    /// Cancelled when the module unloads (for tasks a module spawns itself).
    pub fn unloaded(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs `task` until it ends or the module unloads.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Calls `f` after `delay`; returning `Some(d)` repeats it after `d`. Removed on unload.
    pub fn add_timer<F, Fut>(&self, delay: Duration, f: F) -> Timer
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Duration>> + Send + 'static,
    {
        let cancel = self.cancel.child_token();
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        let timer = Timer {
            cancel: cancel.clone(),
            reschedule: Arc::new(tx),
        };
        tokio::spawn(async move {
            let mut delay = delay;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = rx.changed() => {
                        match changed {
                            Ok(()) => {
                                if let Some(d) = *rx.borrow_and_update() {
                                    delay = d;
                                }
                                continue;
                            }
                            // Every handle dropped: keep the schedule, no more reschedules.
                            Err(_) => {
                                tokio::select! {
                                    _ = cancel.cancelled() => return,
                                    _ = tokio::time::sleep(delay) => {}
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
                if cancel.is_cancelled() {
                    return;
                }
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = f() => next,
                };
                match next {
                    Some(next) => delay = next,
                    None => return,
                }
            }
        });
        timer
    }

    /// Runs `f` once per `period`, even across restarts (the last run is stored per host).
    pub fn cron<F, Fut>(&self, name: &str, period: Period, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let store = core.store.keyval(&self.host.name, "cron");
        let key = format!("{}/{}", self.name, name);
        let cancel = self.cancel.child_token();
        tokio::spawn(async move {
            loop {
                let last = store
                    .get(&key)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| v["last"].as_i64());
                let now = super::accounts::now();
                let due = last.map(|l| l + period.seconds()).unwrap_or(now);
                if due > now {
                    let wait = Duration::from_secs((due - now) as u64);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = f(now) => {}
                }
                if let Err(e) = store.set(&key, Some(json!({ "last": now }))).await {
                    tracing::error!(task = %key, error = %e, "cannot record cron run");
                    return;
                }
            }
        });
    }

    /// Runs `f` once an hour.
    pub fn hourly<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(name, Period::Hourly, f);
    }

    /// Runs `f` once a day.
    pub fn daily<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(name, Period::Daily, f);
    }

    /// Runs `f` once a week.
    pub fn weekly<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(name, Period::Weekly, f);
    }

    // ---- shared state ----

    fn shared_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else if path.contains('/') {
            format!("/{}/{}", self.host.name, path)
        } else {
            format!("/{}/{}/{}", self.host.name, self.name, path)
        }
    }

    /// A value shared by path (`name`, `module/name` or `/host/module/name`), created on first
    /// use; `None` if it exists with another type. Released when no loaded module holds it.
    pub fn shared<T: Default + Send + Sync + 'static>(&self, path: &str) -> Option<Arc<T>> {
        let core = self.core.upgrade()?;
        let full = self.shared_path(path);
        let value = {
            let mut map = core.shared.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map
                .entry(full.clone())
                .or_insert_with(|| (Arc::new(T::default()) as Arc<dyn Any + Send + Sync>, 0));
            let v = entry.0.clone().downcast::<T>().ok()?;
            if !self.reg().shared.contains(&full) {
                entry.1 += 1;
                self.reg().shared.push(full);
            }
            v
        };
        Some(value)
    }

    // ---- storage ----

    /// A keyval store of this host.
    pub fn keyval_store(&self, name: &str) -> Option<KeyValStore> {
        Some(self.core.upgrade()?.store.keyval(&self.host.name, name))
    }

    /// A map store of this host.
    pub fn map_store(&self, name: &str) -> Option<MapStore> {
        Some(self.core.upgrade()?.store.map(&self.host.name, name))
    }

    /// An archive store of this host.
    pub fn archive_store(&self, name: &str) -> Option<ArchiveStore> {
        Some(self.core.upgrade()?.store.archive(&self.host.name, name))
    }

    /// Opens a store of the given kind (Prosody's `open_store`).
    pub fn open_store(&self, name: &str, kind: StoreKind) -> Option<StoreHandle> {
        Some(match kind {
            StoreKind::KeyVal => StoreHandle::KeyVal(self.keyval_store(name)?),
            StoreKind::Map => StoreHandle::Map(self.map_store(name)?),
            StoreKind::Archive => StoreHandle::Archive(self.archive_store(name)?),
        })
    }

    // ---- metrics ----

    fn metric_name(&self, name: &str) -> String {
        format!("oxpecker_{}_{}", self.name, name)
    }

    /// A high-level metric (Prosody's `measure`) for this host; returns its series.
    pub fn measure(&self, name: &str, kind: Measure) -> Arc<Series> {
        let (mk, unit) = match kind {
            Measure::Amount => (MetricKind::Gauge, None),
            Measure::Counter | Measure::Rate => (MetricKind::Counter, None),
            Measure::Times => (
                MetricKind::Histogram(TIME_BUCKETS.to_vec()),
                Some("seconds"),
            ),
            Measure::Sizes => (MetricKind::Histogram(SIZE_BUCKETS.to_vec()), Some("bytes")),
            Measure::Distribution => (MetricKind::Summary, None),
        };
        let full = match unit {
            Some(u) if !name.ends_with(u) => format!("{}_{u}", self.metric_name(name)),
            _ => self.metric_name(name),
        };
        self.metric(mk, &full, unit, "", &[]).with(&[])
    }

    /// A low-level metric family (Prosody's `metric`); names are prefixed with
    /// `oxpecker_<module>_` unless they already are, and series carry an implicit `host` label.
    pub fn metric(
        &self,
        kind: MetricKind,
        name: &str,
        unit: Option<&str>,
        help: &str,
        labels: &[&str],
    ) -> ModuleMetric {
        let full = if name.starts_with("oxpecker_") {
            name.to_string()
        } else {
            self.metric_name(name)
        };
        let mut all = vec!["host"];
        all.extend_from_slice(labels);
        let family = match self.core.upgrade() {
            Some(c) => c.metrics.family(&full, help, unit, kind, &all),
            None => super::metrics::Metrics::new().family(&full, help, unit, kind, &all),
        };
        ModuleMetric {
            family,
            host: self.host.name.clone(),
        }
    }

    // ---- unload ----

    /// Removes everything the module registered and stops its timers and tasks.
    pub(super) fn teardown(&self) {
        self.cancel.cancel();
        let reg = std::mem::take(&mut *self.reg());
        let global = self.global_host();
        for (g, id) in reg.hooks {
            match (g, &global) {
                (true, Some(gh)) => gh.events.unhook(id),
                _ => self.host.events.unhook(id),
            }
        }
        for (g, id) in reg.data_hooks {
            match (g, &global) {
                (true, Some(gh)) => gh.data_events.unhook(id),
                _ => self.host.data_events.unhook(id),
            }
        }
        for (key, item) in reg.items {
            {
                let mut items = self.host.items.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(list) = items.get_mut(&key)
                    && let Some(p) = list.iter().position(|(m, i)| m == self.name && *i == item)
                {
                    list.remove(p);
                }
            }
            let mut data = json!({ "item": item, "source": self.name });
            self.host
                .data_events
                .fire(&format!("item-removed/{key}"), &mut data);
        }
        if let Some(core) = self.core.upgrade() {
            let mut map = core.shared.lock().unwrap_or_else(|e| e.into_inner());
            for path in reg.shared {
                if let Some(entry) = map.get_mut(&path) {
                    entry.1 = entry.1.saturating_sub(1);
                    if entry.1 == 0 {
                        map.remove(&path);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::Config;
    use crate::core::modules::{Module, ModuleContext};
    use crate::storage::Store;

    type LoadFn = Box<dyn Fn(&mut ModuleContext) -> Result<(), String> + Send + Sync>;

    /// A module whose `load` runs a closure, for exercising the API.
    struct Probe(LoadFn);

    impl Module for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn load(&self, ctx: &mut ModuleContext) -> Result<(), String> {
            (self.0)(ctx)
        }
    }

    fn core_with(cfg: Config, store: Store) -> Arc<Core> {
        Core::new(cfg, store).expect("core")
    }

    fn load(
        core: &Arc<Core>,
        f: impl Fn(&mut ModuleContext) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<(), crate::core::modules::ModuleError> {
        let host = core.host("localhost").cloned().expect("host");
        host.load(Arc::downgrade(core), &Probe(Box::new(f)))
    }

    #[tokio::test]
    async fn status_orders_severity_and_fires_an_event() {
        let core = core_with(Config::default(), Store::memory());
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        load(&core, move |ctx| {
            let s = s.clone();
            ctx.hook_event(
                "module-status/updated",
                0,
                Arc::new(move |d: &mut Value| {
                    assert_eq!(d["name"], "probe");
                    s.fetch_add(1, Ordering::SeqCst);
                    None
                }),
            );
            Ok(())
        })
        .unwrap();
        let h = core.host("localhost").unwrap().module("probe").unwrap();
        assert!(h.set_status(StatusType::Warn, "disk slow", false));
        assert!(
            !h.set_status(StatusType::Info, "fine", false),
            "lower severity ignored"
        );
        assert_eq!(h.get_status().message, "disk slow");
        assert!(h.set_status(StatusType::Info, "fine", true), "override");
        h.log_status(StatusType::Error, "broken");
        let st = core
            .host("localhost")
            .unwrap()
            .module_status("probe")
            .unwrap();
        assert_eq!(
            (st.kind, st.message.as_str()),
            (StatusType::Error, "broken")
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn failed_load_leaves_the_host_as_it_was_with_an_error_status() {
        let core = core_with(Config::default(), Store::memory());
        let host = core.host("localhost").cloned().unwrap();
        let before = (host.events.hook_count(), host.features());
        let r = load(&core, |ctx| {
            ctx.hook(
                "message/bare",
                0,
                crate::core::events::handler(|ev| async move {
                    crate::core::events::Flow::Continue(ev)
                }),
            );
            ctx.add_feature("urn:example:x");
            Err("cannot start".into())
        });
        assert!(r.is_err());
        assert_eq!((host.events.hook_count(), host.features()), before);
        assert!(!host.is_loaded("probe"));
        let st = host.module_status("probe").unwrap();
        assert_eq!(
            (st.kind, st.message.as_str()),
            (StatusType::Error, "cannot start")
        );
    }

    #[tokio::test]
    async fn typed_options_prefer_host_then_global_then_default() {
        let cfg = Config::parse(
            "offline_max_messages = 5\nroster_max_items = \"lots\"\n[[host]]\nname = \"localhost\"\noffline_max_messages = 7\n",
        )
        .unwrap();
        let core = core_with(cfg, Store::memory());
        load(&core, |ctx| {
            assert_eq!(ctx.option_integer("offline_max_messages", 1, 0, 100), 7);
            assert_eq!(
                ctx.option_integer("roster_max_items", 9, 0, 100),
                9,
                "wrong type → default"
            );
            assert_eq!(
                ctx.option_integer("offline_max_messages", 1, 0, 6),
                1,
                "out of range → default"
            );
            assert_eq!(ctx.option_string("nope", "d"), "d");
            assert_eq!(
                ctx.option_period("nope", Some(Duration::from_secs(3))),
                Some(Duration::from_secs(3))
            );
            assert_eq!(ctx.option_enum("nope", "a", &["b"]), "a");
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn unload_removes_hooks_features_items_timers_and_shared_state() {
        let core = core_with(Config::default(), Store::memory());
        let host = core.host("localhost").cloned().unwrap();
        let before = (
            host.events.hook_count(),
            host.data_events.hook_count(),
            host.features().len(),
        );
        let ticks = Arc::new(AtomicUsize::new(0));
        let removed = Arc::new(AtomicUsize::new(0));
        let (t, r) = (ticks.clone(), removed.clone());
        load(&core, move |ctx| {
            ctx.hook(
                "message/bare",
                5,
                crate::core::events::handler(|ev| async move {
                    crate::core::events::Flow::Continue(ev)
                }),
            );
            ctx.add_feature("urn:example:probe");
            ctx.add_identity("automation", "probe", "Probe");
            ctx.add_item("things", json!("one"));
            let r = r.clone();
            ctx.handle_items(
                "things",
                |_| {},
                move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                },
                true,
            );
            let shared: Arc<AtomicUsize> = ctx.shared("counter").unwrap();
            shared.fetch_add(1, Ordering::SeqCst);
            let t = t.clone();
            ctx.add_timer(Duration::from_millis(5), move || {
                let t = t.clone();
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                    Some(Duration::from_millis(5))
                }
            });
            Ok(())
        })
        .unwrap();
        assert!(host.features().contains(&"urn:example:probe".to_string()));
        assert_eq!(host.identities().len(), 1);
        assert_eq!(host.items("things"), vec![json!("one")]);
        assert!(
            core.shared
                .lock()
                .unwrap()
                .contains_key("/localhost/probe/counter")
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(ticks.load(Ordering::SeqCst) >= 2, "timer repeats");
        core.unload_module("localhost", "probe").unwrap();
        assert_eq!(
            removed.load(Ordering::SeqCst),
            0,
            "the remove handler was unhooked first"
        );
        assert!(host.items("things").is_empty());
        assert!(
            !core
                .shared
                .lock()
                .unwrap()
                .contains_key("/localhost/probe/counter")
        );
        assert_eq!(
            (
                host.events.hook_count(),
                host.data_events.hook_count(),
                host.features().len()
            ),
            before
        );
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after,
            "timer stopped on unload"
        );
    }

    #[tokio::test]
    async fn timers_stop_and_reschedule() {
        let core = core_with(Config::default(), Store::memory());
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = hits.clone();
        let timer = Arc::new(Mutex::new(None));
        let slot = timer.clone();
        load(&core, move |ctx| {
            let h2 = h2.clone();
            let t = ctx.add_timer(Duration::from_secs(3600), move || {
                let h2 = h2.clone();
                async move {
                    h2.fetch_add(1, Ordering::SeqCst);
                    None
                }
            });
            *slot.lock().unwrap() = Some(t);
            Ok(())
        })
        .unwrap();
        let t = timer.lock().unwrap().clone().unwrap();
        t.reschedule(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "rescheduled to run soon, once (returned None)"
        );
        t.stop();
    }

    #[tokio::test]
    async fn shared_state_is_shared_between_modules_by_path() {
        let core = core_with(Config::default(), Store::memory());
        load(&core, |ctx| {
            let a: Arc<Mutex<Vec<u8>>> = ctx.shared("/localhost/other/list").unwrap();
            a.lock().unwrap().push(1);
            let b: Arc<Mutex<Vec<u8>>> = ctx.shared("other/list").unwrap();
            assert_eq!(*b.lock().unwrap(), vec![1]);
            assert!(
                ctx.shared::<String>("other/list").is_none(),
                "type mismatch"
            );
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn cron_runs_once_per_period_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let store = Store::open_sled(dir.path(), 8 << 20).unwrap();
            let core = core_with(Config::default(), store);
            let r = runs.clone();
            load(&core, move |ctx| {
                let r = r.clone();
                ctx.daily("cleanup", move |_now| {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                });
                Ok(())
            })
            .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            core.unload_module("localhost", "probe").unwrap();
            core.store.flush().await.unwrap();
            drop(core);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the second start is within the same day"
        );
    }

    #[tokio::test]
    async fn metrics_are_prefixed_and_carry_the_host() {
        let core = core_with(Config::default(), Store::memory());
        load(&core, |ctx| {
            ctx.measure("things", Measure::Counter).inc_by(3.0);
            ctx.measure("lag", Measure::Times);
            let fam = ctx.metric(MetricKind::Gauge, "queue", None, "Queue length", &["kind"]);
            fam.with(&["a"]).set(2.0);
            Ok(())
        })
        .unwrap();
        let out = core.metrics.render();
        assert!(
            out.contains("oxpecker_probe_things_total{host=\"localhost\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("oxpecker_probe_queue{host=\"localhost\",kind=\"a\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE oxpecker_probe_lag_seconds histogram"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn send_iq_resolves_with_the_response_or_an_error() {
        let core = core_with(Config::default(), Store::memory());
        let ping = Element::new("iq", crate::xmpp::ns::CLIENT)
            .attr("type", "get")
            .attr("id", "p1")
            .attr("from", "localhost")
            .attr("to", "localhost")
            .child(Element::new("ping", crate::xmpp::ns::PING));
        let r = core.send_iq(ping, None).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"));
        let unknown = Element::new("iq", crate::xmpp::ns::CLIENT)
            .attr("type", "get")
            .attr("id", "p2")
            .attr("from", "localhost")
            .attr("to", "localhost")
            .child(Element::new("query", "urn:example:none"));
        assert!(matches!(
            core.send_iq(unknown, None).await,
            Err(crate::core::iq::IqError::ErrorResponse(_))
        ));
        let bad = Element::new("iq", crate::xmpp::ns::CLIENT).attr("type", "result");
        assert_eq!(
            core.send_iq(bad, None).await,
            Err(crate::core::iq::IqError::Invalid)
        );
        assert_eq!(core.iq.in_flight(), 0);
    }

    #[tokio::test]
    async fn context_reaches_other_hosts_and_the_global_options() {
        let cfg = Config::parse(
            "offline_max_messages = 5\n[[host]]\nname = \"localhost\"\noffline_max_messages = 7\n[[host]]\nname = \"other.example\"\n",
        )
        .unwrap();
        let core = core_with(cfg, Store::memory());
        load(&core, |ctx| {
            assert_eq!(ctx.context("other.example").unwrap().name, "other.example");
            assert_eq!(ctx.context("*").unwrap().kind, HostType::Global);
            assert!(ctx.context("nowhere.example").is_none());
            assert_eq!(
                ctx.option_on("*", "offline_max_messages"),
                Some(toml::Value::Integer(5))
            );
            assert_eq!(
                ctx.option_on("other.example", "offline_max_messages"),
                Some(toml::Value::Integer(5))
            );
            assert_eq!(
                ctx.option_on("localhost", "offline_max_messages"),
                Some(toml::Value::Integer(7))
            );
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn depends_loads_the_dependency_first() {
        let core = core_with(
            Config::parse("modules_enabled = []").unwrap(),
            Store::memory(),
        );
        load(&core, |ctx| ctx.depends("ping")).unwrap();
        assert!(core.host("localhost").unwrap().is_loaded("ping"));
    }
}
