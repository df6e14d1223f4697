//! Embedded on-disk [`Backend`] on fjall 2 (an LSM tree with a journal): an append costs a
//! journal write and a memtable insert, whatever the size of the tree.
//!
//! One keyspace per data directory, one partition per tree. Writes reach the operating system
//! when their batch is applied (they survive a killed process); [`Backend::flush`] syncs the
//! journal to disk. Ids come from a counter whose reserved upper bound is kept in the `meta`
//! partition: a restart continues above everything handed out before, even after kill -9.

use super::{Backend, FlushFuture, Result, StorageError, decode, encode};
use fs2::FileExt;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};

/// Current on-disk schema version, kept in the `meta` partition (the same layout as sled's
/// schema 2: the store above writes identical keys and values to either engine).
pub const SCHEMA_VERSION: u64 = 2;
const META_TREE: &str = "meta";
const SCHEMA_KEY: &[u8] = b"schema_version";
/// The upper bound (exclusive) of the ids reserved so far.
const ID_KEY: &[u8] = b"id_reserved";
/// How many ids one reservation covers (one journal write per this many ids).
const ID_BLOCK: u64 = 1 << 16;
/// The lock file that keeps a second process out of the directory.
const LOCK_FILE: &str = "oxpecker.lock";

/// fjall-backed storage in one data directory (exclusively locked while open).
pub struct FjallBackend {
    /// Open partitions by tree name (dropped before the keyspace).
    partitions: RwLock<HashMap<String, fjall::PartitionHandle>>,
    keyspace: fjall::Keyspace,
    /// The next id to hand out and the end of the reserved block.
    ids: Mutex<IdBlock>,
    /// Held for the lifetime of the backend (released when dropped, after the keyspace).
    _lock: std::fs::File,
}

/// A reserved range of ids: `next..end`.
struct IdBlock {
    next: u64,
    end: u64,
}

/// Maps a fjall error into a storage error.
fn map_err(e: fjall::Error) -> StorageError {
    match e {
        fjall::Error::Io(e) => StorageError::Io(e.to_string()),
        fjall::Error::Storage(fjall::LsmError::Io(e)) => StorageError::Io(e.to_string()),
        fjall::Error::Poisoned => StorageError::Io(
            "an earlier journal sync failed; the store accepts no more writes until restarted"
                .into(),
        ),
        other => StorageError::Corrupt(format!("fjall: {other}")),
    }
}

/// Whether `name` can name a fjall partition (our tree names always can).
fn valid_tree_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.#$".contains(&b))
}

/// Reads a big-endian u64 stored by this module.
fn read_u64(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt("malformed id counter".into()))
}

impl FjallBackend {
    /// Opens (creating if needed) the keyspace in `path` with the given block-cache size.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| StorageError::Io(e.to_string()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))
            .map_err(|e| StorageError::Io(e.to_string()))?;
        // A handle being dropped elsewhere in this process lets go of the lock a moment later.
        super::patient_open(|| {
            lock.try_lock_exclusive().map_err(|e| {
                StorageError::Locked(format!(
                    "data directory {} is in use by another oxpecker process ({e})",
                    path.display()
                ))
            })
        })?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let keyspace = fjall::Config::new(path)
            .cache_size(cache_capacity_bytes)
            .flush_workers(cores.min(2))
            .compaction_workers(cores.min(2))
            .open()
            .map_err(map_err)?;
        let backend = FjallBackend {
            partitions: RwLock::new(HashMap::new()),
            keyspace,
            ids: Mutex::new(IdBlock { next: 0, end: 0 }),
            _lock: lock,
        };
        backend.check_schema(path)?;
        let end = match backend.get(META_TREE, ID_KEY)? {
            Some(v) => read_u64(&v)?,
            None => 0,
        };
        // Everything below the last reserved bound may have been handed out before a crash.
        *backend.lock_ids()? = IdBlock { next: end, end };
        tracing::debug!(path = %path.display(), "opened fjall storage");
        Ok(backend)
    }

    fn check_schema(&self, path: &Path) -> Result<()> {
        match self.get(META_TREE, SCHEMA_KEY)? {
            None => {
                self.apply(
                    META_TREE,
                    vec![(SCHEMA_KEY.to_vec(), Some(encode(&SCHEMA_VERSION)?))],
                )?;
                self.flush()
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
                if version < SCHEMA_VERSION {
                    return Err(StorageError::Corrupt(format!(
                        "invalid storage schema version {version}"
                    )));
                }
                Ok(())
            }
        }
    }

    fn lock_ids(&self) -> Result<std::sync::MutexGuard<'_, IdBlock>> {
        self.ids
            .lock()
            .map_err(|_| StorageError::Io("id counter lock poisoned".into()))
    }

    /// Makes every id handed out from now on greater than `floor` (used when data written by
    /// another engine, with its own ids, is moved in).
    pub fn ensure_ids_above(&self, floor: u64) -> Result<()> {
        let mut ids = self.lock_ids()?;
        if ids.next > floor {
            return Ok(());
        }
        let next = floor
            .checked_add(1)
            .ok_or_else(|| StorageError::Corrupt("id counter exhausted".into()))?;
        self.reserve(&mut ids, next)
    }

    /// Reserves a fresh block starting at `next` and records its end before any id of it is used.
    fn reserve(&self, ids: &mut IdBlock, next: u64) -> Result<()> {
        let end = next
            .checked_add(ID_BLOCK)
            .ok_or_else(|| StorageError::Corrupt("id counter exhausted".into()))?;
        self.apply(
            META_TREE,
            vec![(ID_KEY.to_vec(), Some(end.to_be_bytes().to_vec()))],
        )?;
        *ids = IdBlock { next, end };
        Ok(())
    }

    fn partition(&self, tree: &str) -> Result<fjall::PartitionHandle> {
        if let Some(p) = self
            .partitions
            .read()
            .map_err(|_| StorageError::Io("partition table lock poisoned".into()))?
            .get(tree)
        {
            return Ok(p.clone());
        }
        if !valid_tree_name(tree) {
            return Err(StorageError::InvalidName(format!(
                "tree name {tree:?} is not a valid fjall partition name"
            )));
        }
        let mut map = self
            .partitions
            .write()
            .map_err(|_| StorageError::Io("partition table lock poisoned".into()))?;
        if let Some(p) = map.get(tree) {
            return Ok(p.clone());
        }
        let p = self
            .keyspace
            .open_partition(tree, fjall::PartitionCreateOptions::default())
            .map_err(map_err)?;
        map.insert(tree.to_owned(), p.clone());
        Ok(p)
    }

    /// Approximate bytes used on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.keyspace.disk_space()
    }
}

/// Converts fjall key/value pairs to owned byte vectors.
fn owned(r: fjall::Result<fjall::KvPair>) -> Result<(Vec<u8>, Vec<u8>)> {
    r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(map_err)
}

impl Backend for FjallBackend {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .partition(tree)?
            .get(key)
            .map_err(map_err)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.partition(tree)?.prefix(prefix).map(owned).collect()
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
        let p = self.partition(tree)?;
        let iter = p.range(start..end);
        let limit = limit.unwrap_or(usize::MAX);
        if reverse {
            iter.rev().take(limit).map(owned).collect()
        } else {
            iter.take(limit).map(owned).collect()
        }
    }

    fn count_prefix(&self, tree: &str, prefix: &[u8]) -> Result<usize> {
        let mut n = 0usize;
        for r in self.partition(tree)?.prefix(prefix) {
            r.map_err(map_err)?;
            n = n.saturating_add(1);
        }
        Ok(n)
    }

    fn apply(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let p = self.partition(tree)?;
        let mut batch = self.keyspace.batch();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(&p, k, v),
                None => batch.remove(&p, k),
            }
        }
        batch.commit().map_err(map_err)
    }

    fn clear(&self, tree: &str) -> Result<usize> {
        let p = self.partition(tree)?;
        let mut n = 0usize;
        loop {
            let mut batch = self.keyspace.batch();
            let mut chunk = 0usize;
            for k in p.keys().take(super::SCAN_CHUNK) {
                batch.remove(&p, k.map_err(map_err)?);
                chunk += 1;
            }
            if chunk == 0 {
                return Ok(n);
            }
            batch.commit().map_err(map_err)?;
            n = n.saturating_add(chunk);
        }
    }

    fn flush(&self) -> Result<()> {
        self.keyspace
            .persist(fjall::PersistMode::SyncAll)
            .map_err(map_err)
    }

    fn flush_async(&self) -> FlushFuture {
        let keyspace = self.keyspace.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                keyspace
                    .persist(fjall::PersistMode::SyncAll)
                    .map_err(map_err)
            })
            .await
            .map_err(super::join_err)?
        })
    }

    fn next_id(&self) -> Result<u64> {
        let mut ids = self.lock_ids()?;
        if ids.next >= ids.end {
            let next = ids.end;
            self.reserve(&mut ids, next)?;
        }
        let id = ids.next;
        ids.next = id.saturating_add(1);
        Ok(id)
    }

    fn size_on_disk(&self) -> Option<u64> {
        Some(FjallBackend::size_on_disk(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = FjallBackend::open(dir.path(), 1 << 20).unwrap();
        let err = FjallBackend::open(dir.path(), 1 << 20).err().unwrap();
        assert!(matches!(err, StorageError::Locked(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("in use by another oxpecker process")
        );
    }

    /// Ids keep growing across reopens, also when the process never closed the store (the
    /// reservation is written before any id of it is handed out).
    #[test]
    fn ids_stay_monotonic_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = None;
        for _ in 0..3 {
            let b = FjallBackend::open(dir.path(), 1 << 20).unwrap();
            for _ in 0..10 {
                let id = b.next_id().unwrap();
                assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
                last = Some(id);
            }
        }
        let b = FjallBackend::open(dir.path(), 1 << 20).unwrap();
        b.ensure_ids_above(1_000_000).unwrap();
        assert!(b.next_id().unwrap() > 1_000_000);
    }

    #[test]
    fn data_survives_reopen_and_clear_counts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = FjallBackend::open(dir.path(), 1 << 20).unwrap();
            let ops = (0..1000u32)
                .map(|i| (i.to_be_bytes().to_vec(), Some(vec![1u8; 10])))
                .collect();
            b.apply("t", ops).unwrap();
            b.flush().unwrap();
        }
        let b = FjallBackend::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.count_prefix("t", b"").unwrap(), 1000);
        let last = b.scan_range("t", b"", b"\xff", true, Some(1)).unwrap();
        assert_eq!(last[0].0, 999u32.to_be_bytes().to_vec());
        assert_eq!(b.clear("t").unwrap(), 1000);
        assert_eq!(b.count_prefix("t", b"").unwrap(), 0);
        assert!(matches!(
            b.get("no/such", b"k"),
            Err(StorageError::InvalidName(_))
        ));
    }

    #[test]
    fn newer_schema_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = FjallBackend::open(dir.path(), 1 << 20).unwrap();
            b.apply(
                META_TREE,
                vec![(SCHEMA_KEY.to_vec(), Some(encode(&3u64).unwrap()))],
            )
            .unwrap();
            b.flush().unwrap();
        }
        let err = FjallBackend::open(dir.path(), 1 << 20).err().unwrap();
        assert!(matches!(err, StorageError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("schema version 3"));
    }
}
