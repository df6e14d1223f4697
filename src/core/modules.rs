//! The module system: the `Module` trait, per-host loading and unloading, and the `ModuleContext`
//! through which a module registers everything it adds (so unload removes all of it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use super::Core;
use super::events::{Events, Handler, HookId};

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
}

/// The handle a module gets while loading: host identity plus tracked registration.
pub struct ModuleContext {
    core: Weak<Core>,
    host: Arc<Host>,
    module: &'static str,
    hooks: Vec<HookId>,
    features: Vec<String>,
    stream_features: Vec<crate::xmpp::Element>,
}

impl ModuleContext {
    /// The host this module instance serves.
    pub fn host(&self) -> &str {
        &self.host.name
    }

    /// The module's name.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// The server (weak, so modules never keep it alive).
    pub fn core(&self) -> Weak<Core> {
        self.core.clone()
    }

    /// Hooks `handler` to `event` on this host at `priority`; removed on unload.
    pub fn hook(&mut self, event: &str, priority: i32, handler: Handler) {
        let id = self.host.events.hook(event, priority, handler);
        self.hooks.push(id);
    }

    /// The raw value of a module option: the host's, else the global one.
    pub fn option(&self, name: &str) -> Option<toml::Value> {
        let core = self.core.upgrade()?;
        let cfg = core.config.load();
        cfg.option(&self.host.name, name).cloned()
    }

    fn wrong_type(&self, name: &str, expected: &str) {
        tracing::warn!(
            host = %self.host.name,
            module = self.module,
            option = name,
            "option {name} should be {expected}; using the default"
        );
    }

    /// A string option, or `default` (a wrong type logs a warning naming the option).
    pub fn option_string(&self, name: &str, default: &str) -> String {
        match self.option(name) {
            None => default.to_string(),
            Some(toml::Value::String(s)) => s,
            Some(_) => {
                self.wrong_type(name, "a string");
                default.to_string()
            }
        }
    }

    /// A boolean option, or `default`.
    pub fn option_bool(&self, name: &str, default: bool) -> bool {
        match self.option(name) {
            None => default,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => {
                self.wrong_type(name, "true or false");
                default
            }
        }
    }

    /// An integer option within `min..=max`, or `default`.
    pub fn option_integer(&self, name: &str, default: i64, min: i64, max: i64) -> i64 {
        match self.option(name) {
            None => default,
            Some(toml::Value::Integer(i)) if (min..=max).contains(&i) => i,
            Some(_) => {
                self.wrong_type(name, &format!("an integer from {min} to {max}"));
                default
            }
        }
    }

    /// A list-of-strings option, or `default`.
    pub fn option_strings(&self, name: &str, default: &[&str]) -> Vec<String> {
        let fallback = || default.iter().map(|s| s.to_string()).collect();
        match self.option(name) {
            None => fallback(),
            Some(toml::Value::Array(a)) => {
                let out: Option<Vec<String>> =
                    a.iter().map(|v| v.as_str().map(str::to_string)).collect();
                out.unwrap_or_else(|| {
                    self.wrong_type(name, "a list of strings");
                    fallback()
                })
            }
            Some(_) => {
                self.wrong_type(name, "a list of strings");
                fallback()
            }
        }
    }

    /// Advertises a disco#info feature on this host; removed on unload.
    pub fn add_feature(&mut self, feature: &str) {
        self.features.push(feature.to_string());
    }

    /// Adds an element to the stream features offered after authentication; removed on unload.
    pub fn add_stream_feature(&mut self, feature: crate::xmpp::Element) {
        self.stream_features.push(feature);
    }
}

struct Loaded {
    hooks: Vec<HookId>,
    features: Vec<String>,
    stream_features: Vec<crate::xmpp::Element>,
}

/// A served virtual host: its event bus and loaded modules.
pub struct Host {
    /// The domain.
    pub name: String,
    /// The host's event bus.
    pub events: Events,
    loaded: Mutex<BTreeMap<String, Loaded>>,
}

impl Host {
    /// A host with no modules loaded.
    pub fn new(name: &str) -> Self {
        Host {
            name: name.to_string(),
            events: Events::new(),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Loaded>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the loaded modules, sorted.
    pub fn modules(&self) -> Vec<String> {
        self.loaded().keys().cloned().collect()
    }

    /// Whether `module` is loaded.
    pub fn is_loaded(&self, module: &str) -> bool {
        self.loaded().contains_key(module)
    }

    /// The disco#info features the loaded modules advertise, sorted and unique.
    pub fn features(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .loaded()
            .values()
            .flat_map(|l| l.features.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Stream features the loaded modules offer after authentication.
    pub fn stream_features(&self) -> Vec<crate::xmpp::Element> {
        self.loaded()
            .values()
            .flat_map(|l| l.stream_features.iter().cloned())
            .collect()
    }

    /// Loads the built-in `module` on this host.
    pub fn load(
        self: &Arc<Self>,
        core: Weak<Core>,
        module: &dyn Module,
    ) -> Result<(), ModuleError> {
        let name = module.name();
        if self.is_loaded(name) {
            return Err(ModuleError::AlreadyLoaded(name.to_string()));
        }
        let mut ctx = ModuleContext {
            core,
            host: self.clone(),
            module: name,
            hooks: Vec::new(),
            features: Vec::new(),
            stream_features: Vec::new(),
        };
        if let Err(reason) = module.load(&mut ctx) {
            // Leave the host as it was.
            for id in ctx.hooks {
                self.events.unhook(id);
            }
            tracing::error!(host = %self.name, module = name, %reason, "module failed to load");
            return Err(ModuleError::LoadFailed {
                module: name.to_string(),
                reason,
            });
        }
        self.loaded().insert(
            name.to_string(),
            Loaded {
                hooks: ctx.hooks,
                features: ctx.features,
                stream_features: ctx.stream_features,
            },
        );
        tracing::info!(host = %self.name, module = name, "module loaded");
        Ok(())
    }

    /// Unloads `module`, removing every hook and feature it registered.
    pub fn unload(&self, module: &str) -> Result<(), ModuleError> {
        let loaded = self
            .loaded()
            .remove(module)
            .ok_or_else(|| ModuleError::NotLoaded(module.to_string()))?;
        for id in loaded.hooks {
            self.events.unhook(id);
        }
        tracing::info!(host = %self.name, module, "module unloaded");
        Ok(())
    }
}
