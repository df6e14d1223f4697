//! The module's own files (Prosody's `module:get_directory` and `module:load_resource`):
//! templates and data files under `<module_resources>/<module>/`, by default the `modules`
//! folder next to the configuration file.

use std::path::{Component, Path, PathBuf};

use super::ModuleHandle;

/// Why a resource file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A relative path climbs out of the module's folder (`..`).
    #[error("resource path {0} leaves the module folder")]
    OutsideFolder(PathBuf),
    /// The file could not be read.
    #[error("cannot read resource {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ModuleHandle {
    /// The folder this module reads its own files from (`<module_resources>/<module>/`).
    pub fn get_directory(&self) -> PathBuf {
        let base = match self.core.upgrade() {
            Some(core) => core.config.load().module_resources.clone(),
            None => PathBuf::new(),
        };
        base.join(self.name)
    }

    /// Reads a resource file: a relative `path` is taken inside [`Self::get_directory`], an
    /// absolute one as it is. It reads synchronously, so call it while loading, not per stanza.
    pub fn load_resource(&self, path: impl AsRef<Path>) -> Result<Vec<u8>, ResourceError> {
        let path = path.as_ref();
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(ResourceError::OutsideFolder(path.to_path_buf()));
        } else {
            self.get_directory().join(path)
        };
        std::fs::read(&full).map_err(|source| ResourceError::Read { path: full, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::module_api::probe::{core_with, load};
    use crate::storage::Store;

    #[tokio::test]
    async fn resources_come_from_the_configured_module_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxpecker.toml");
        std::fs::write(&file, "modules_enabled = []\nmodule_resources = \"res\"\n").unwrap();
        let folder = dir.path().join("res").join("probe");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("greeting.txt"), "hello").unwrap();
        let core = core_with(Config::load(&file).unwrap(), Store::memory());
        let root = dir.path().to_path_buf();
        load(&core, move |ctx| {
            assert_eq!(ctx.get_directory(), root.join("res").join("probe"));
            assert_eq!(ctx.load_resource("greeting.txt").unwrap(), b"hello");
            let abs = root.join("res").join("probe").join("greeting.txt");
            assert_eq!(ctx.load_resource(&abs).unwrap(), b"hello");
            assert!(matches!(
                ctx.load_resource("../other/x"),
                Err(ResourceError::OutsideFolder(_))
            ));
            assert!(matches!(
                ctx.load_resource("missing.txt"),
                Err(ResourceError::Read { .. })
            ));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_default_folder_is_modules_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxpecker.toml");
        std::fs::write(&file, "").unwrap();
        let cfg = Config::load(&file).unwrap();
        assert_eq!(cfg.module_resources, dir.path().join("modules"));
        assert_eq!(cfg.config_dir(), dir.path());
    }
}
