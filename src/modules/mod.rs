//! Built-in feature modules, one file each, and the registry that names them.

pub mod disco;
pub mod ping;

use std::sync::Arc;

use crate::core::modules::Module;

/// Names of every built-in module.
pub fn builtin_names() -> Vec<&'static str> {
    vec!["disco", "ping"]
}

/// Every option name a built-in module reads (config keys outside the core settings).
pub fn option_names() -> Vec<&'static str> {
    builtin_names()
        .into_iter()
        .filter_map(builtin)
        .flat_map(|m| m.options().iter().copied())
        .collect()
}

/// A fresh instance of the built-in module `name`.
pub fn builtin(name: &str) -> Option<Arc<dyn Module>> {
    match name {
        "disco" => Some(Arc::new(disco::Disco)),
        "ping" => Some(Arc::new(ping::Ping)),
        _ => None,
    }
}
