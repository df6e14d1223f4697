//! Embedded on-disk [`Backend`] on sled 0.34.

use super::{Backend, FlushFuture, Result, StorageError, decode, encode};
use std::path::Path;

/// Current on-disk schema version, kept in the `meta` tree. Version 2 stores archive items in
/// their length-prefixed form with a per-partner index; a version 1 directory is upgraded when
/// opened (its items still decode, the index is built by the store), and older binaries then
/// refuse it instead of misreading it.
pub const SCHEMA_VERSION: u64 = 2;
const META_TREE: &str = "meta";
const SCHEMA_KEY: &[u8] = b"schema_version";

/// sled-backed storage in one data directory (exclusively locked while open).
pub struct SledBackend {
    db: ::sled::Db,
}

/// Maps a sled error into a storage error.
fn map_err(e: ::sled::Error) -> StorageError {
    match e {
        ::sled::Error::Io(e) => StorageError::Io(e.to_string()),
        ::sled::Error::Corruption { at, .. } => {
            StorageError::Corrupt(format!("sled detected corruption at {at:?}"))
        }
        ::sled::Error::Unsupported(m) => StorageError::Unsupported(m),
        other => StorageError::Io(other.to_string()),
    }
}

impl SledBackend {
    /// Opens (creating if needed) the database in `path` with the given page-cache size.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        // sled releases its directory lock only once its own I/O threads let go of the files,
        // a moment after the last handle is dropped: a reopen in the same process waits that
        // moment out instead of failing.
        super::patient_open(|| Self::open_once(path, cache_capacity_bytes))
    }

    fn open_once(path: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        let db = ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .mode(::sled::Mode::LowSpace)
            // Every acknowledged write is flushed by the store's single flush thread; sled's own
            // periodic flusher would flush concurrently with it (spacejam/sled#1308).
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                ::sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StorageError::Locked(format!(
                        "data directory {} is in use by another oxpecker process ({io})",
                        path.display()
                    ))
                }
                other => map_err(other),
            })?;
        let meta = db.open_tree(META_TREE).map_err(map_err)?;
        match meta.get(SCHEMA_KEY).map_err(map_err)? {
            None => {
                meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION)?)
                    .map_err(map_err)?;
                db.flush().map_err(map_err)?;
            }
            Some(v) => {
                let version: u64 = decode(&v)?;
                if version > SCHEMA_VERSION {
                    return Err(StorageError::Unsupported(format!(
                        "data directory {} has storage schema version {version}, \
                         newer than the supported version {SCHEMA_VERSION}; \
                         use a newer oxpecker",
                        path.display()
                    )));
                }
                if version < 1 {
                    return Err(StorageError::Corrupt(format!(
                        "invalid storage schema version {version}"
                    )));
                }
                if version < SCHEMA_VERSION {
                    meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION)?)
                        .map_err(map_err)?;
                    db.flush().map_err(map_err)?;
                    tracing::info!(
                        path = %path.display(),
                        from = version,
                        to = SCHEMA_VERSION,
                        "upgraded the storage schema"
                    );
                }
            }
        }
        tracing::debug!(path = %path.display(), "opened sled storage");
        Ok(SledBackend { db })
    }

    /// Approximate bytes used on disk (0 if it cannot be determined).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot determine storage size on disk");
            0
        })
    }

    /// The names of the trees in the database (sled's own default tree and `meta` left out).
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|n| std::str::from_utf8(n).ok())
            .filter(|n| *n != "__sled__default" && *n != META_TREE)
            .map(str::to_owned)
            .collect()
    }

    fn tree(&self, name: &str) -> Result<::sled::Tree> {
        self.db.open_tree(name).map_err(map_err)
    }
}

impl Backend for SledBackend {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(map_err)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(map_err))
            .collect()
    }

    fn scan_range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let iter = self.tree(tree)?.range(start..end);
        let limit = limit.unwrap_or(usize::MAX);
        let conv = |r: ::sled::Result<(::sled::IVec, ::sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(map_err)
        };
        if reverse {
            iter.rev().take(limit).map(conv).collect()
        } else {
            iter.take(limit).map(conv).collect()
        }
    }

    fn count_prefix(&self, tree: &str, prefix: &[u8]) -> Result<usize> {
        let mut n = 0;
        for r in self.tree(tree)?.scan_prefix(prefix).keys() {
            r.map_err(map_err)?;
            n += 1;
        }
        Ok(n)
    }

    fn apply(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut batch = ::sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree(tree)?.apply_batch(batch).map_err(map_err)
    }

    fn clear(&self, tree: &str) -> Result<usize> {
        let t = self.tree(tree)?;
        let n = t.len();
        t.clear().map_err(map_err)?;
        Ok(n)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(map_err)
    }

    fn flush_async(&self) -> FlushFuture {
        let db = self.db.clone();
        Box::pin(async move { db.flush_async().await.map(|_| ()).map_err(map_err) })
    }

    fn next_id(&self) -> Result<u64> {
        self.db.generate_id().map_err(map_err)
    }

    fn size_on_disk(&self) -> Option<u64> {
        Some(SledBackend::size_on_disk(self))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_sled(dir.path(), 1 << 20).unwrap();
            store
                .keyval("h", "s")
                .set("u", Some(json!(1)))
                .await
                .unwrap();
            store
                .map("h", "m")
                .set("u", "k", Some(json!("v")))
                .await
                .unwrap();
            store
                .archive("h", "a")
                .append("u", Some("id1".into()), 5, "w", json!({"x": 1}))
                .await
                .unwrap();
            assert!(store.size_on_disk().unwrap() > 0);
        }
        let store = Store::open_sled(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.keyval("h", "s").get("u").await.unwrap(),
            Some(json!(1))
        );
        assert_eq!(
            store.map("h", "m").get("u", "k").await.unwrap(),
            Some(json!("v"))
        );
        let page = store
            .archive("h", "a")
            .find("u", &Default::default())
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].id, "id1");
        // generated ids stay unique after restart
        let id = store
            .archive("h", "a")
            .append("u", None, 6, "w", json!(2))
            .await
            .unwrap();
        assert_ne!(id, "id1");
        assert_eq!(store.archive("h", "a").count("u").await.unwrap(), 2);
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledBackend::open(dir.path(), 1 << 20).unwrap();
        let err = SledBackend::open(dir.path(), 1 << 20).err().unwrap();
        assert!(matches!(err, StorageError::Locked(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("in use by another oxpecker process")
        );
    }

    #[test]
    fn newer_schema_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledBackend::open(dir.path(), 1 << 20).unwrap());
        {
            let db = ::sled::Config::new().path(dir.path()).open().unwrap();
            let meta = db.open_tree(META_TREE).unwrap();
            assert_eq!(
                decode::<u64>(&meta.get(SCHEMA_KEY).unwrap().unwrap()).unwrap(),
                SCHEMA_VERSION
            );
            meta.insert(SCHEMA_KEY, encode(&3u64).unwrap()).unwrap();
            db.flush().unwrap();
        }
        let err = SledBackend::open(dir.path(), 1 << 20).err().unwrap();
        assert!(matches!(err, StorageError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("schema version 3"));
    }

    /// A version 1 directory (JSON items, no partner index) opens, is marked version 2, and
    /// its items are found by `with` through the index built on open.
    #[tokio::test]
    async fn version_1_dirs_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = ::sled::Config::new().path(dir.path()).open().unwrap();
            let meta = db.open_tree(META_TREE).unwrap();
            meta.insert(SCHEMA_KEY, encode(&1u64).unwrap()).unwrap();
            let archive = db.open_tree(super::super::ARCHIVE_TREE).unwrap();
            for seq in 0..10u64 {
                let item = super::super::ArchiveItem {
                    id: format!("old{seq}"),
                    when: 0,
                    with: if seq < 4 { "a@h" } else { "b@h" }.into(),
                    value: json!(seq),
                };
                let prefix = b"h\0archive\0u\0";
                let key = super::super::item_key(prefix, seq);
                archive.insert(key, encode(&item).unwrap()).unwrap();
                let index = super::super::index_key(prefix, &item.id);
                archive.insert(index, encode(&seq).unwrap()).unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open_sled(dir.path(), 1 << 20).unwrap();
        let query = super::super::ArchiveQuery {
            with: Some("a@h".into()),
            after: Some("old1".into()),
            total: true,
            ..Default::default()
        };
        let page = store
            .archive("h", "archive")
            .find("u", &query)
            .await
            .unwrap();
        let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!((ids, page.total), (vec!["old2", "old3"], Some(4)));
        drop(store);
        let db = ::sled::Config::new().path(dir.path()).open().unwrap();
        let meta = db.open_tree(META_TREE).unwrap();
        let v: u64 = decode(&meta.get(SCHEMA_KEY).unwrap().unwrap()).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}
