//! Storage (Prosody's `module:open_store`) and what happens to it when an account is deleted:
//! every store a module opens is per-account data and is emptied for a deleted account, so
//! modules do not write their own cleanup for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::ModuleHandle;
use crate::core::Core;
use crate::storage::{ArchiveQuery, ArchiveStore, KeyValStore, MapStore, StorageError};
use crate::xmpp::Jid;

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

impl StoreHandle {
    /// Removes everything stored for the user `node`.
    pub async fn delete_user(&self, node: &str) -> Result<(), StorageError> {
        match self {
            StoreHandle::KeyVal(s) => s.set(node, None).await,
            StoreHandle::Map(s) => s.delete_user(node).await,
            StoreHandle::Archive(s) => s.delete(node, &ArchiveQuery::default()).await.map(|_| ()),
        }
    }
}

type CleanupFn = Arc<
    dyn Fn(Arc<Core>, Jid) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>
        + Send
        + Sync,
>;

/// Work run for each account deleted on the module's host, named for the log.
#[derive(Clone)]
pub struct UserCleanup {
    module: &'static str,
    what: String,
    run: CleanupFn,
}

impl UserCleanup {
    /// The module that registered it.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// What it removes (a store name, or `cleanup` for a module's own).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Runs it for the deleted account `jid`.
    pub async fn run(&self, core: Arc<Core>, jid: Jid) -> Result<(), StorageError> {
        (self.run)(core, jid).await
    }
}

impl ModuleHandle {
    /// Opens this host's store `name` of `kind` (Prosody's `open_store`); what it holds for an
    /// account is removed when the account is deleted.
    pub fn open_store(&self, name: &str, kind: StoreKind) -> Option<StoreHandle> {
        let core = self.core.upgrade()?;
        let host = self.host.name.clone();
        let store = name.to_string();
        self.add_cleanup(name, move |core, jid| {
            let (host, store) = (host.clone(), store.clone());
            async move {
                let Some(node) = jid.node() else {
                    return Ok(());
                };
                open(&core, &host, &store, kind).delete_user(node).await
            }
        });
        Some(open(&core, &self.host.name, name, kind))
    }

    /// Registers `cleanup`, run by [`Core::delete_account`] for each account deleted on this
    /// host, for data a module keeps beyond its stores (caches, say); its error is logged.
    pub fn on_user_deleted<F, Fut>(&self, cleanup: F)
    where
        F: Fn(Arc<Core>, Jid) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StorageError>> + Send + 'static,
    {
        self.add_cleanup("cleanup", cleanup);
    }

    fn add_cleanup<F, Fut>(&self, what: &str, cleanup: F)
    where
        F: Fn(Arc<Core>, Jid) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StorageError>> + Send + 'static,
    {
        let mut reg = self.reg();
        if what != "cleanup" && reg.cleanups.iter().any(|c| c.what == what) {
            return;
        }
        reg.cleanups.push(UserCleanup {
            module: self.name,
            what: what.to_string(),
            run: Arc::new(move |core, jid| Box::pin(cleanup(core, jid))),
        });
    }

    pub(in crate::core) fn user_cleanups(&self) -> Vec<UserCleanup> {
        self.reg().cleanups.clone()
    }
}

fn open(core: &Core, host: &str, name: &str, kind: StoreKind) -> StoreHandle {
    match kind {
        StoreKind::KeyVal => StoreHandle::KeyVal(core.store.keyval(host, name)),
        StoreKind::Map => StoreHandle::Map(core.store.map(host, name)),
        StoreKind::Archive => StoreHandle::Archive(core.store.archive(host, name)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::module_api::probe::{core, load};

    #[tokio::test]
    async fn opened_stores_are_emptied_for_a_deleted_account_and_errors_are_not_swallowed() {
        let core = core();
        let alice = Jid::parse("alice@localhost").unwrap();
        core.accounts.create(&alice, "pw").await.unwrap();
        load(&core, |ctx| {
            for kind in [StoreKind::KeyVal, StoreKind::Map, StoreKind::Archive] {
                ctx.open_store(&format!("{kind:?}"), kind).unwrap();
            }
            ctx.open_store("KeyVal", StoreKind::KeyVal).unwrap();
            ctx.on_user_deleted(|_, _| async { Err(StorageError::Io("disk gone".into())) });
            Ok(())
        })
        .unwrap();
        let kv = core.store.keyval("localhost", "KeyVal");
        let map = core.store.map("localhost", "Map");
        let archive = core.store.archive("localhost", "Archive");
        kv.set("alice", Some(json!(1))).await.unwrap();
        kv.set("bob", Some(json!(2))).await.unwrap();
        map.set("alice", "k", Some(json!(1))).await.unwrap();
        archive
            .append("alice", None, 1, "x", json!("item"))
            .await
            .unwrap();
        let host = core.host("localhost").cloned().unwrap();
        let cleanups = host.user_cleanups();
        assert_eq!(
            cleanups.iter().map(|c| c.what()).collect::<Vec<_>>(),
            vec!["KeyVal", "Map", "Archive", "cleanup"],
            "one cleanup per store"
        );
        let results = core.run_user_cleanups(&alice).await;
        assert_eq!(results, 1, "the failing cleanup is counted");
        assert_eq!(kv.get("alice").await.unwrap(), None);
        assert_eq!(kv.get("bob").await.unwrap(), Some(json!(2)), "others kept");
        assert!(map.get_all("alice").await.unwrap().is_empty());
        assert_eq!(archive.count("alice").await.unwrap(), 0);
        core.unload_module("localhost", "probe").unwrap();
        assert!(host.user_cleanups().is_empty());
    }
}
