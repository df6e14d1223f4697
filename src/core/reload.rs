//! Configuration reload (`PUT /admin_rest/reload`, and the console's `config:reload`): re-read
//! the file the server started from, validate it, swap it in, and load, unload or reload
//! modules per host so the running server matches it.
//!
//! A `[[host]]` added to the file is not served until `host:activate` (`PUT /hosts/{host}`)
//! starts it; one removed is served until `host:deactivate` or a restart. What cannot change
//! without a restart (adding or removing a `[[component]]` or changing its parent, listeners,
//! data dir, TLS, storage) is kept as it was and named in the report's warnings. A component served since the start follows its `module`,
//! `modules_enabled` and options like a user host.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::Core;
use crate::config::{Config, ConfigError};

/// What a reload changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// The file re-read (`None`: the server runs on built-in defaults, which were re-applied).
    pub source: Option<PathBuf>,
    /// Modules newly loaded, as `host/module`.
    pub loaded: Vec<String>,
    /// Modules unloaded, as `host/module`.
    pub unloaded: Vec<String>,
    /// Modules reloaded because one of their options changed, as `host/module`.
    pub reloaded: Vec<String>,
    /// Modules that failed to load, as `host/module: reason`.
    pub failed: Vec<String>,
    /// Changes that need a restart to take effect.
    pub warnings: Vec<String>,
}

/// Why a reload was refused (the running configuration is kept).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl Core {
    /// Re-reads the configuration file, swaps it in and brings every host's modules in line.
    pub fn reload_config(&self) -> Result<ReloadReport, ReloadError> {
        let old = self.config.load_full();
        let new = match &old.source {
            Some(path) => Config::load(path)?,
            None => (*old).clone(),
        };
        new.check_modules(&self.modules.catalog())?;
        let mut report = ReloadReport {
            source: new.source.clone(),
            warnings: restart_warnings(&old, &new),
            ..ReloadReport::default()
        };
        self.config.store(Arc::new(new.clone()));
        // Global modules are wanted on `*` when any host lists them.
        let is_global = |m: &String| self.modules.get(m).is_some_and(|m| m.global());
        let mut plan = Vec::new();
        let mut global_want: Vec<String> = Vec::new();
        for host in self.hosts() {
            let Some(hc) = new.hosts.iter().find(|h| h.name == host.name) else {
                continue;
            };
            let (global, local): (Vec<String>, Vec<String>) =
                new.modules_for(hc).into_iter().partition(is_global);
            for m in global {
                if !global_want.contains(&m) {
                    global_want.push(m);
                }
            }
            plan.push((host, local));
        }
        // Components served since the start follow their module list and options; adding or
        // removing one needs a restart (see `restart_warnings`).
        for c in new.components() {
            let Some(host) = self.host(&c.name).cloned() else {
                continue;
            };
            let (global, local): (Vec<String>, Vec<String>) = std::iter::once(c.module.clone())
                .chain(c.modules_enabled.iter().cloned())
                .partition(is_global);
            for m in global {
                if !global_want.contains(&m) {
                    global_want.push(m);
                }
            }
            plan.push((host, local));
        }
        plan.push((self.global_host(), global_want));
        for (host, want) in plan {
            for name in host.modules() {
                if !want.contains(&name) {
                    match self.unload_module(&host.name, &name) {
                        Ok(()) => report.unloaded.push(format!("{}/{name}", host.name)),
                        Err(e) => report.failed.push(format!("{}/{name}: {e}", host.name)),
                    }
                }
            }
            for name in &want {
                let id = format!("{}/{name}", host.name);
                if !host.is_loaded(name) {
                    match self.load_module(&host.name, name) {
                        Ok(()) => report.loaded.push(id),
                        Err(e) => report.failed.push(format!("{id}: {e}")),
                    }
                } else if options_changed(&self.modules, &old, &new, &host.name, name) {
                    let result = self
                        .unload_module(&host.name, name)
                        .and_then(|()| self.load_module(&host.name, name));
                    match result {
                        Ok(()) => report.reloaded.push(id),
                        Err(e) => report.failed.push(format!("{id}: {e}")),
                    }
                }
            }
        }
        tracing::info!(
            source = ?report.source,
            loaded = ?report.loaded,
            unloaded = ?report.unloaded,
            reloaded = ?report.reloaded,
            failed = ?report.failed,
            "configuration reloaded"
        );
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        Ok(report)
    }
}

/// Whether any option the module declares has a different value for `host`.
fn options_changed(
    modules: &super::modules::ModuleTable,
    old: &Config,
    new: &Config,
    host: &str,
    module: &str,
) -> bool {
    modules.get(module).is_some_and(|m| {
        m.options()
            .iter()
            .any(|o| old.option(host, o) != new.option(host, o))
    })
}

/// Settings that only take effect at start.
fn restart_warnings(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let names = |c: &Config| c.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
    let (before, after) = (names(old), names(new));
    for name in after.iter().filter(|n| !before.contains(n)) {
        out.push(format!(
            "host {name} was added; host:activate(\"{name}\") (PUT /hosts/{name}) starts serving it"
        ));
    }
    for name in before.iter().filter(|n| !after.contains(n)) {
        out.push(format!(
            "host {name} was removed; it is served until host:deactivate(\"{name}\") or a restart"
        ));
    }
    let components = |c: &Config| {
        c.components()
            .into_iter()
            .map(|c| (c.name, c.parent))
            .collect::<Vec<_>>()
    };
    let (before, after) = (components(old), components(new));
    for (name, parent) in &after {
        match before.iter().find(|(n, _)| n == name) {
            None => out.push(format!(
                "component {name} was added; it is served after a restart"
            )),
            Some((_, p)) if p != parent => out.push(format!(
                "the parent of component {name} changed; it takes effect at the next restart"
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &before {
        if !after.iter().any(|(n, _)| n == name) {
            out.push(format!(
                "component {name} was removed; it is served until a restart"
            ));
        }
    }
    let mut check = |changed: bool, what: &str| {
        if changed {
            out.push(format!(
                "`{what}` changed; it takes effect at the next restart"
            ));
        }
    };
    check(old.data_dir != new.data_dir, "data_dir");
    check(old.c2s.listen != new.c2s.listen, "c2s.listen");
    check(
        old.c2s.direct_tls_listen != new.c2s.direct_tls_listen,
        "c2s.direct_tls_listen",
    );
    check(old.http.listen != new.http.listen, "http.listen");
    check(
        old.http.tls_listen != new.http.tls_listen,
        "http.tls_listen",
    );
    check(
        old.tls.certificate != new.tls.certificate || old.tls.key != new.tls.key,
        "tls",
    );
    check(
        old.storage.cache_capacity_mb != new.storage.cache_capacity_mb
            || old.storage.backend != new.storage.backend,
        "storage",
    );
    check(old.log_level != new.log_level, "log_level");
    check(
        old.log_format != new.log_format
            || old.log_file != new.log_file
            || old.log_rotation != new.log_rotation
            || old.log_max_files != new.log_max_files
            || old.audit_log_file != new.audit_log_file,
        "log_format/log_file/log_rotation/log_max_files/audit_log_file",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    #[test]
    fn reload_applies_module_lists_and_keeps_bad_files_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxpecker.toml");
        std::fs::write(&path, "modules_enabled = [\"ping\", \"disco\"]\n").unwrap();
        let cfg = Config::load(&path).unwrap();
        let core = Core::new(cfg, Store::memory(), crate::modules::BUILTIN).unwrap();
        let host = core.host("localhost").unwrap().clone();
        assert_eq!(host.modules(), vec!["disco", "ping"]);

        std::fs::write(&path, "modules_enabled = [\"ping\", \"admin_rest\"]\n").unwrap();
        let r = core.reload_config().unwrap();
        assert_eq!(r.loaded, vec!["localhost/admin_rest"]);
        assert_eq!(r.unloaded, vec!["localhost/disco"]);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(host.modules(), vec!["admin_rest", "ping"]);

        // An option of a loaded module changed: that module is reloaded.
        std::fs::write(
            &path,
            "modules_enabled = [\"ping\", \"admin_rest\"]\nadmin_rest_message_prefix = \"x\"\n",
        )
        .unwrap();
        let r = core.reload_config().unwrap();
        assert_eq!(r.reloaded, vec!["localhost/admin_rest"]);
        assert_eq!(
            core.config
                .load()
                .option("localhost", "admin_rest_message_prefix"),
            Some(&toml::Value::String("x".into()))
        );

        // A broken file is refused and the running configuration stays.
        std::fs::write(&path, "modules_enabled = [\"nope\"]\n").unwrap();
        assert!(core.reload_config().is_err());
        assert_eq!(host.modules(), vec!["admin_rest", "ping"]);

        std::fs::write(&path, "[[host]]\nname = \"other\"\n").unwrap();
        let r = core.reload_config().unwrap();
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("host other was added; host:activate")),
            "{r:?}"
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("host localhost was removed")),
            "{r:?}"
        );
        // Activation serves the new host: its modules load and its accounts can be made.
        assert!(core.host("other").is_none());
        let loaded = core.activate_host("other").unwrap();
        assert!(!loaded.is_empty(), "{loaded:?}");
        assert!(core.user_host("other").is_some_and(|h| h.is_loaded("ping")));
        assert!(
            core.host_list()
                .iter()
                .any(|h| h.host == "other" && h.active)
        );
        assert!(core.accounts.account_jid("u@other").is_ok());
    }

    #[test]
    fn global_modules_are_loaded_once_and_unloaded_when_no_host_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxpecker.toml");
        let two_hosts = "[[host]]\nname = \"a.example\"\n[[host]]\nname = \"b.example\"\n";
        std::fs::write(&path, format!("modules_enabled = [\"ping\"]\n{two_hosts}")).unwrap();
        let core = Core::new(
            Config::load(&path).unwrap(),
            Store::memory(),
            crate::modules::BUILTIN,
        )
        .unwrap();
        std::fs::write(
            &path,
            format!("modules_enabled = [\"ping\", \"metrics\"]\n{two_hosts}"),
        )
        .unwrap();
        let r = core.reload_config().unwrap();
        assert_eq!(r.loaded, vec!["*/metrics"]);
        assert!(core.global_host().is_loaded("metrics"));
        let r = core.reload_config().unwrap();
        assert!(r.loaded.is_empty() && r.unloaded.is_empty(), "{r:?}");
        std::fs::write(&path, format!("modules_enabled = [\"ping\"]\n{two_hosts}")).unwrap();
        let r = core.reload_config().unwrap();
        assert_eq!(r.unloaded, vec!["*/metrics"]);
        assert!(core.http_routes.find("GET", "/metrics").is_none());
    }
}
