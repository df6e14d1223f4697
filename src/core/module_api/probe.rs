//! Test support: a module whose `load` runs a closure, to exercise the API through a real host.

use std::sync::Arc;

use crate::config::Config;
use crate::core::Core;
use crate::core::modules::{LoadError, Module, ModuleContext, ModuleError, ModuleTable};
use crate::storage::Store;

type LoadFn = Box<dyn Fn(&mut ModuleContext) -> Result<(), LoadError> + Send + Sync>;

/// A module whose `load` runs a closure.
pub struct Probe(LoadFn);

impl Module for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        (self.0)(ctx)
    }
}

/// A module that only advertises a feature, loadable by name from [`TABLE`].
struct Helper;

impl Module for Helper {
    fn name(&self) -> &'static str {
        "helper"
    }
    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature("urn:example:helper");
        Ok(())
    }
}

/// The module table of the test servers: just `helper`.
pub const TABLE: ModuleTable = ModuleTable::new(&[("helper", || Arc::new(Helper))]);

/// A server with `cfg` over `store` and the test table (which has no component module, so
/// the embedded default MUC component is left out unless `cfg` names components).
pub fn core_with(mut cfg: Config, store: Store) -> Arc<Core> {
    cfg.components.get_or_insert_with(Vec::new);
    Core::new(cfg, store, TABLE).expect("core")
}

/// A server with one host, `localhost`, no modules, in memory.
pub fn core() -> Arc<Core> {
    core_with(
        Config::parse("modules_enabled = []").expect("config"),
        Store::memory(),
    )
}

/// Loads a probe running `f` on `localhost`.
pub fn load(
    core: &Arc<Core>,
    f: impl Fn(&mut ModuleContext) -> Result<(), LoadError> + Send + Sync + 'static,
) -> Result<(), ModuleError> {
    load_on(core, "localhost", f)
}

/// Loads a probe running `f` on `host` (`*` for the global host).
pub fn load_on(
    core: &Arc<Core>,
    host: &str,
    f: impl Fn(&mut ModuleContext) -> Result<(), LoadError> + Send + Sync + 'static,
) -> Result<(), ModuleError> {
    let h = if host == "*" {
        core.global_host()
    } else {
        core.host(host).cloned().expect("host")
    };
    h.load(Arc::downgrade(core), &Probe(Box::new(f)))
}
