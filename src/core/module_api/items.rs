//! Host item arrays (Prosody's `module:add_item`, `remove_item`, `get_host_items`,
//! `handle_items`, `provides`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::ModuleHandle;

impl ModuleHandle {
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

    /// Removes the items the module added (at unload), firing `item-removed/<key>` for each.
    pub(super) fn remove_items(&self, items: Vec<(String, Value)>) {
        for (key, item) in items {
            {
                let mut all = self.host.items.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(list) = all.get_mut(&key)
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
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::core::module_api::probe::{core, load, load_on};

    #[tokio::test]
    async fn items_are_added_watched_removed_and_include_global_ones() {
        let core = core();
        load_on(&core, "*", |ctx| {
            ctx.add_item("things", json!("global"));
            Ok(())
        })
        .unwrap();
        let (added, removed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, r) = (added.clone(), removed.clone());
        load(&core, move |ctx| {
            ctx.add_item("things", json!("one"));
            let (a, r) = (a.clone(), r.clone());
            ctx.handle_items(
                "things",
                move |_| {
                    a.fetch_add(1, Ordering::SeqCst);
                },
                move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                },
                true,
            );
            assert_eq!(
                ctx.get_host_items("things"),
                vec![json!("one"), json!("global")]
            );
            ctx.add_item("things", json!("two"));
            assert!(ctx.remove_item("things", &json!("two")));
            assert!(!ctx.remove_item("things", &json!("never added")));
            ctx.provides("auth", json!({ "kind": "x" }));
            Ok(())
        })
        .unwrap();
        assert_eq!(added.load(Ordering::SeqCst), 3, "two existing + one new");
        assert_eq!(removed.load(Ordering::SeqCst), 1);
        let host = core.host("localhost").cloned().unwrap();
        assert_eq!(host.items("things"), vec![json!("one")]);
        assert_eq!(
            host.items("auth-provider"),
            vec![json!({ "kind": "x", "name": "probe" })]
        );
        core.unload_module("localhost", "probe").unwrap();
        assert!(host.items("things").is_empty() && host.items("auth-provider").is_empty());
    }
}
