//! State shared between module instances by path (Prosody's `module:shared`).

use std::any::Any;
use std::sync::Arc;

use super::ModuleHandle;

/// Shared-state entries: value and how many module instances hold it.
pub type SharedMap = std::collections::HashMap<String, (Arc<dyn Any + Send + Sync>, usize)>;

impl ModuleHandle {
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

    /// Drops this module's references to shared values (at unload); unreferenced ones go.
    pub(super) fn release_shared(&self, paths: Vec<String>) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let mut map = core.shared.lock().unwrap_or_else(|e| e.into_inner());
        for path in paths {
            if let Some(entry) = map.get_mut(&path) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    map.remove(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::core::module_api::probe::{core, load};

    #[tokio::test]
    async fn shared_state_is_shared_between_modules_by_path() {
        let core = core();
        load(&core, |ctx| {
            let a: Arc<Mutex<Vec<u8>>> = ctx.shared("/localhost/other/list").unwrap();
            a.lock().unwrap().push(1);
            let b: Arc<Mutex<Vec<u8>>> = ctx.shared("other/list").unwrap();
            assert_eq!(*b.lock().unwrap(), vec![1]);
            assert!(
                ctx.shared::<String>("other/list").is_none(),
                "type mismatch"
            );
            let c: Arc<AtomicUsize> = ctx.shared("counter").unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let has = |p: &str| core.shared.lock().unwrap().contains_key(p);
        assert!(has("/localhost/probe/counter") && has("/localhost/other/list"));
        core.unload_module("localhost", "probe").unwrap();
        assert!(
            !has("/localhost/probe/counter") && !has("/localhost/other/list"),
            "released when no loaded module holds them"
        );
    }
}
