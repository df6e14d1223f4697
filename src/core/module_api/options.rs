//! Typed options (Prosody's `module:get_option` and its `_string`, `_boolean`, `_number`,
//! `_integer`, `_period`, `_array`, `_set`, `_inherited_set`, `_path`, `_enum` variants): the
//! host's value, else the global one, else the default; a value of the wrong type logs a
//! warning naming the option and gives the default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ModuleHandle;
use crate::core::options::{self, OptionError};

/// What a relative path option is resolved against (the `parent` of Prosody's `get_option_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathBase<'a> {
    /// The module's own resource folder ([`ModuleHandle::get_directory`]), Prosody's default.
    Module,
    /// The folder of the configuration file (`"config"`).
    Config,
    /// The data directory (`"data"`).
    Data,
    /// Any other folder.
    Dir(&'a Path),
}

impl ModuleHandle {
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

    /// A path option with relative paths (and `default`) resolved against `parent`
    /// (Prosody's `get_option_path(name, default, parent)`).
    pub fn option_path(&self, name: &str, default: &str, parent: PathBase<'_>) -> PathBuf {
        let base = match parent {
            PathBase::Module => self.get_directory(),
            PathBase::Dir(dir) => dir.to_path_buf(),
            PathBase::Config | PathBase::Data => match self.core.upgrade() {
                Some(core) => {
                    let cfg = core.config.load();
                    if parent == PathBase::Data {
                        cfg.data_dir.clone()
                    } else {
                        cfg.config_dir()
                    }
                }
                None => PathBuf::new(),
            },
        };
        let default_path = base.join(default);
        self.typed(name, default_path, |v| options::path(v, &base))
    }

    /// An enum option: `default` or one of `choices`.
    pub fn option_enum(&self, name: &str, default: &str, choices: &[&str]) -> String {
        let mut all = vec![default];
        all.extend_from_slice(choices);
        self.typed(name, default.to_string(), |v| options::choice(v, &all))
    }

    /// A raw option as seen from another host, `*` = the global value only (the options half
    /// of Prosody's `module:context(host):get_option`).
    pub fn option_on(&self, host: &str, name: &str) -> Option<toml::Value> {
        let core = self.core.upgrade()?;
        let cfg = core.config.load();
        if host == "*" {
            cfg.options.get(name).cloned()
        } else {
            cfg.option(host, name).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::PathBase;
    use crate::config::Config;
    use crate::core::module_api::probe::{core_with, load};
    use crate::core::modules::HostType;
    use crate::storage::Store;

    #[tokio::test]
    async fn typed_options_prefer_host_then_global_then_default() {
        let cfg = Config::parse(
            "modules_enabled = []\nmam_max_page = 5\nroster_max_items = \"lots\"\npep_max_nodes = [\"a\", \"b\", \"a\"]\nprobe_set = [\"x\", \"x\"]\n[[host]]\nname = \"localhost\"\nmam_max_page = 7\npep_max_nodes = [\"c\"]\n",
        )
        .unwrap();
        let core = core_with(cfg, Store::memory());
        load(&core, |ctx| {
            assert_eq!(ctx.option_integer("mam_max_page", 1, 0, 100), 7);
            assert_eq!(ctx.option_number("mam_max_page", 1.0, 0.0, 100.0), 7.0);
            assert_eq!(
                ctx.option_integer("roster_max_items", 9, 0, 100),
                9,
                "wrong type → default"
            );
            assert_eq!(
                ctx.option_integer("mam_max_page", 1, 0, 6),
                1,
                "out of range → default"
            );
            assert_eq!(ctx.option_string("nope", "d"), "d");
            assert!(ctx.option_bool("nope", true));
            assert_eq!(
                ctx.option_period("nope", Some(Duration::from_secs(3))),
                Some(Duration::from_secs(3))
            );
            assert_eq!(ctx.option_enum("nope", "a", &["b"]), "a");
            assert_eq!(ctx.option_strings("pep_max_nodes", &[]), vec!["c"]);
            assert_eq!(ctx.option_set("probe_set", &[]), vec!["x"]);
            let mut inherited = ctx.option_inherited_set("pep_max_nodes");
            inherited.sort();
            assert_eq!(inherited, vec!["a", "b", "c"]);
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn path_options_resolve_against_config_data_module_or_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxpecker.toml");
        std::fs::write(
            &file,
            "modules_enabled = []\ndata_dir = \"state\"\nmam_max_page = \"/abs/file\"\n",
        )
        .unwrap();
        let cfg = Config::load(&file).unwrap();
        let core = core_with(cfg, Store::memory());
        let root = dir.path().to_path_buf();
        load(&core, move |ctx| {
            assert_eq!(
                ctx.option_path("nope", "a.pem", PathBase::Config),
                root.join("a.pem")
            );
            assert_eq!(
                ctx.option_path("nope", "a.db", PathBase::Data),
                root.join("state").join("a.db")
            );
            assert_eq!(
                ctx.option_path("nope", "t.html", PathBase::Module),
                root.join("modules").join("probe").join("t.html")
            );
            assert_eq!(
                ctx.option_path("nope", "x", PathBase::Dir(std::path::Path::new("/srv"))),
                PathBuf::from("/srv/x")
            );
            assert_eq!(
                ctx.option_path("mam_max_page", "x", PathBase::Data),
                PathBuf::from("/abs/file"),
                "absolute paths stay"
            );
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn context_reaches_other_hosts_and_the_global_options() {
        let cfg = Config::parse(
            "modules_enabled = []\nmam_max_page = 5\n[[host]]\nname = \"localhost\"\nmam_max_page = 7\n[[host]]\nname = \"other.example\"\n",
        )
        .unwrap();
        let core = core_with(cfg, Store::memory());
        load(&core, |ctx| {
            assert_eq!(ctx.context("other.example").unwrap().name, "other.example");
            assert_eq!(ctx.context("*").unwrap().kind, HostType::Global);
            assert!(ctx.context("nowhere.example").is_none());
            assert_eq!(ctx.host(), "localhost");
            assert_eq!(ctx.host_type(), HostType::Local);
            assert_eq!(
                ctx.option_on("*", "mam_max_page"),
                Some(toml::Value::Integer(5))
            );
            assert_eq!(
                ctx.option_on("other.example", "mam_max_page"),
                Some(toml::Value::Integer(5))
            );
            assert_eq!(
                ctx.option_on("localhost", "mam_max_page"),
                Some(toml::Value::Integer(7))
            );
            Ok(())
        })
        .unwrap();
    }
}
