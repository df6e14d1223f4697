//! Server storage: Prosody-style keyval, map and archive stores scoped by host
//! and store name, over a pluggable ordered byte key/value [`Backend`].
//!
//! Four backends exist: [`FjallBackend`] (embedded, the default on disk), [`SledBackend`]
//! (embedded, the engine before fjall; a sled directory is converted to fjall once, see
//! `upgrade`), [`PostgresBackend`] (networked, several nodes can share it) and
//! [`MemoryBackend`] (tests). [`Store::open_configured`] picks one for `[storage] backend`.
//! Every write method is `async` and returns only once the data has been flushed to disk or
//! committed ("acknowledged means durable").
//!
//! Key layout (names may not contain NUL, which separates components):
//! - tree `keyval`: `host\0store\0user` -> value
//! - tree `map`: `host\0store\0user\0key` -> value
//! - tree `archive`: `host\0store\0user\0` + `i` + seq (u64 BE) -> [`ArchiveItem`]
//!   (length-prefixed binary, see `item`), `host\0store\0user\0` + `x` + id -> seq (id index,
//!   only for caller-supplied ids: a generated id `{seq:x}-{hash}` names its sequence number
//!   itself), and `host\0store\0user\0` + `w` + with + `\0` + seq -> empty (the per-partner
//!   index, see `with_index`)
//!
//! Archive appends go to one writer thread that writes all queued appends as one batch
//! (see `appender`); lazy appends are durable within [`LAZY_FLUSH_INTERVAL`].
//! A query's total (all items, or one partner's) is counted once and then kept current in
//! memory (see `totals`), so paging a large archive costs O(page) per page.
//!
//! Every stored value is a version byte (`1`) followed by JSON, except archive items (version
//! `2`, length-prefixed fields around a JSON payload; version 1 items still decode).

mod appender;
mod export;
mod fjall;
mod item;
mod memory;
mod postgres;
mod record;
mod sled;
mod totals;
mod upgrade;
mod with_index;

pub use self::export::{export, import};
pub use self::fjall::FjallBackend;
pub use self::memory::MemoryBackend;
pub use self::postgres::PostgresBackend;
pub use self::record::Record;
pub use self::sled::SledBackend;
pub use self::upgrade::SLED_BACKUP_DIR;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Result type of all storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Errors reported by the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// An I/O error from the underlying backend.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored data could not be decoded or the database is damaged.
    #[error("storage data corrupt: {0}")]
    Corrupt(String),
    /// The data directory is locked by another process.
    #[error("{0}")]
    Locked(String),
    /// The operation or on-disk format is not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A host, store, user or key name is not acceptable (e.g. contains NUL).
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// An archive id given as `before`/`after` does not exist.
    #[error("archive item not found: {0}")]
    ItemNotFound(String),
    /// An import line could not be parsed or applied.
    #[error("import failed at line {line}: {message}")]
    Import {
        /// 1-based line number of the offending line.
        line: u64,
        /// What went wrong.
        message: String,
    },
}

impl StorageError {
    /// Whether the failure may go away without intervention (disk full, an I/O error): the
    /// request that hit it is refused with the protocol's "try again later" (stanza
    /// `internal-server-error`/`wait`, HTTP 503) and the server keeps serving. Every other
    /// kind (corrupt data, a bad name, a locked directory) will fail the same way on retry.
    pub fn is_temporary(&self) -> bool {
        matches!(self, StorageError::Io(_))
    }
}

/// Boxed future returned by [`Backend::flush_async`].
pub type FlushFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// Low-level ordered byte KV with named trees, implemented by each backend.
pub trait Backend: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Returns all entries whose key starts with `prefix`, ordered by key.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Returns entries with `start <= key < end`, ascending (or descending if `reverse`), at most `limit`.
    fn scan_range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Counts the entries whose key starts with `prefix`.
    fn count_prefix(&self, tree: &str, prefix: &[u8]) -> Result<usize> {
        Ok(self.scan_prefix(tree, prefix)?.len())
    }
    /// Applies an atomic batch: `Some` puts, `None` deletes.
    fn apply(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>;
    /// Deletes every entry of `tree` and returns how many there were (not flushed: the
    /// [`Store`] flushes through its single flush thread).
    fn clear(&self, tree: &str) -> Result<usize>;
    /// Blocking flush + fsync of everything written so far.
    fn flush(&self) -> Result<()>;
    /// Non-blocking flush + fsync of everything written so far.
    fn flush_async(&self) -> FlushFuture;
    /// Returns a monotonic id, unique across restarts.
    fn next_id(&self) -> Result<u64>;
    /// Approximate bytes used on disk, if the backend is on disk.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}

const KEYVAL_TREE: &str = "keyval";
const MAP_TREE: &str = "map";
const ARCHIVE_TREE: &str = "archive";
const VALUE_VERSION: u8 = 1;
const ITEM_TAG: u8 = b'i';
const INDEX_TAG: u8 = b'x';
const SCAN_CHUNK: usize = 512;

/// Encodes a value as version byte + JSON.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![VALUE_VERSION];
    serde_json::to_writer(&mut out, value)
        .map_err(|e| StorageError::Io(format!("cannot serialize value: {e}")))?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, json)) => serde_json::from_slice(json)
            .map_err(|e| StorageError::Corrupt(format!("undecodable value: {e}"))),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown value version {v}"))),
        None => Err(StorageError::Corrupt("empty value".into())),
    }
}

/// Joins name components with NUL separators, rejecting NUL inside them.
fn join_names(parts: &[&str], trailing_sep: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if part.contains('\0') {
            return Err(StorageError::InvalidName(format!(
                "name {part:?} contains a NUL character"
            )));
        }
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    if trailing_sep {
        out.push(0);
    }
    Ok(out)
}

/// Smallest key greater than every key starting with `prefix` (empty = unbounded).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// Decodes UTF-8 from a stored key component.
fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StorageError::Corrupt("key component is not UTF-8".into()))
}

/// Converts a task join failure into a storage error.
/// How long opening an embedded store waits for a directory lock that is being released: a
/// handle dropped elsewhere in this process (the importers, tests) lets go of it a moment later.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `open` until it succeeds, fails with anything but [`StorageError::Locked`], or
/// [`LOCK_PATIENCE`] has passed (the one wait both embedded engines use).
fn patient_open<T>(mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match open() {
            Err(StorageError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageError::Io(format!("storage task failed: {e}"))
}

struct Inner {
    backend: Arc<dyn Backend>,
    /// The archive writer's shared state (engine, id salt, archive lock, dirty flag).
    writer: appender::Writer,
    /// The archive writer thread (dropped before the flusher, which then flushes its writes).
    appender: appender::Appender,
    flusher: Flusher,
    /// Told the duration of every durable write (the server's storage latency metric).
    observer: std::sync::OnceLock<LatencyObserver>,
    /// Bounds concurrent blocking storage work: a few threads keep the engine busy; hundreds
    /// would only contend on its locks.
    permits: tokio::sync::Semaphore,
    /// Whether every archived item has its per-partner index entry (see `with_index`); if not,
    /// `with` queries scan.
    with_indexed: bool,
}

/// Receives the duration, in seconds, of each durable write.
pub type LatencyObserver = Arc<dyn Fn(f64) + Send + Sync>;

/// How often writes made without waiting for durability ([`ArchiveStore::append_lazy`]) are
/// flushed at the latest.
pub const LAZY_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// A flush waiter: told when a flush that covers its writes has finished.
type FlushWaiter = tokio::sync::oneshot::Sender<Result<()>>;

/// Group commit: one thread flushes for every waiting writer at once, so flushes never run
/// concurrently (concurrent `flush_async` deadlocks sled 0.34, spacejam/sled#1308) and many
/// writers share one fsync.
struct Flusher {
    tx: Option<std::sync::mpsc::Sender<FlushWaiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(backend: Arc<dyn Backend>, dirty: Arc<AtomicBool>) -> Flusher {
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("oxpecker-flush".into())
            .spawn(move || {
                loop {
                    let first = match rx.recv_timeout(LAZY_FLUSH_INTERVAL) {
                        Ok(w) => w,
                        Err(RecvTimeoutError::Timeout) => {
                            // Writes made with a bounded durability window get flushed here.
                            if dirty.swap(false, Ordering::AcqRel)
                                && let Err(e) = backend.flush()
                            {
                                // Still unflushed: the next round retries.
                                dirty.store(true, Ordering::Release);
                                tracing::error!(error = %e, "background flush failed");
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let mut waiters = vec![first];
                    while let Ok(w) = rx.try_recv() {
                        waiters.push(w);
                    }
                    dirty.store(false, Ordering::Release);
                    let result = backend.flush();
                    if result.is_err() {
                        // The waiters hear the error; what they wrote is retried in the background.
                        dirty.store(true, Ordering::Release);
                    }
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
                if dirty.load(Ordering::Acquire) {
                    let _ = backend.flush();
                }
            })
            .ok();
        Flusher {
            tx: Some(tx),
            thread,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread; joining it releases the backend (and sled's
        // directory lock) before the store is considered gone.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Cheap-to-clone handle to the server's storage.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let with_indexed = match with_index::ensure(&*backend) {
            Ok(0) => true,
            Ok(n) => {
                tracing::info!(entries = n, "indexed the archive by conversation partner");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot index the archive by partner; `with` queries scan");
                false
            }
        };
        let dirty = Arc::new(AtomicBool::new(false));
        let writer = appender::Writer {
            backend: backend.clone(),
            id_salt: std::collections::hash_map::RandomState::new(),
            lock: Arc::new(Mutex::new(())),
            dirty: dirty.clone(),
            progress: Default::default(),
            totals: Default::default(),
        };
        Store {
            inner: Arc::new(Inner {
                appender: appender::Appender::start(writer.clone()),
                flusher: Flusher::start(backend.clone(), dirty),
                writer,
                permits: tokio::sync::Semaphore::new(4),
                observer: std::sync::OnceLock::new(),
                with_indexed,
                backend,
            }),
        }
    }

    /// A fresh, empty in-memory store.
    pub fn memory() -> Self {
        Store::new(Arc::new(MemoryBackend::new()))
    }

    /// Opens (or creates) a sled database in `path`.
    pub fn open_sled(path: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        Ok(Store::new(Arc::new(SledBackend::open(
            path,
            cache_capacity_bytes,
        )?)))
    }

    /// Connects to the PostgreSQL database at `url`, creating or upgrading its schema.
    pub fn open_postgres(url: &str) -> Result<Self> {
        Ok(Store::new(Arc::new(PostgresBackend::open(url)?)))
    }

    /// Opens (or creates) a fjall keyspace in `path`.
    pub fn open_fjall(path: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        Ok(Store::new(Arc::new(FjallBackend::open(
            path,
            cache_capacity_bytes,
        )?)))
    }

    /// Opens the store in `path` with the engine `[storage] backend` names: the one place
    /// that choice is made. A sled directory under fjall is converted first (see `upgrade`);
    /// a fjall directory under sled is refused.
    pub fn open_configured(path: &Path, cfg: &crate::config::StorageConfig) -> Result<Self> {
        use crate::config::StorageBackend;
        let cache = cfg.cache_capacity_mb.saturating_mul(1024 * 1024);
        match cfg.backend {
            StorageBackend::Fjall => {
                upgrade::sled_to_fjall(path, cache)?;
                Store::open_fjall(path, cache)
            }
            StorageBackend::Sled => {
                upgrade::refuse_fjall_under_sled(path)?;
                Store::open_sled(path, cache)
            }
            StorageBackend::Postgres => match cfg.url.as_deref() {
                Some(url) => Store::open_postgres(url),
                None => Err(StorageError::Unsupported(
                    "backend = \"postgres\" needs [storage] url".into(),
                )),
            },
        }
    }

    /// The underlying backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Approximate bytes used on disk (None for in-memory backends).
    pub fn size_on_disk(&self) -> Option<u64> {
        self.inner.backend.size_on_disk()
    }

    /// Keyval store `store` of virtual host `host`.
    pub fn keyval(&self, host: &str, store: &str) -> KeyValStore {
        KeyValStore {
            store: self.clone(),
            prefix: join_names(&[host, store], true),
        }
    }

    /// Map store `store` of virtual host `host`.
    pub fn map(&self, host: &str, store: &str) -> MapStore {
        MapStore {
            store: self.clone(),
            prefix: join_names(&[host, store], true),
        }
    }

    /// Archive store `store` of virtual host `host`.
    pub fn archive(&self, host: &str, store: &str) -> ArchiveStore {
        ArchiveStore {
            store: self.clone(),
            prefix: join_names(&[host, store], true),
        }
    }

    /// Flushes all outstanding writes to disk (group commit: concurrent callers share a flush),
    /// queued archive appends included.
    pub async fn flush(&self) -> Result<()> {
        self.inner.appender.barrier(&self.inner.writer).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .inner
            .flusher
            .tx
            .as_ref()
            .is_some_and(|q| q.send(tx).is_ok());
        if !sent {
            return Err(StorageError::Io("the flush thread is gone".into()));
        }
        rx.await
            .map_err(|_| StorageError::Io("the flush thread stopped".into()))?
    }

    /// Deletes every item of every host, store and kind (the admin API's factory reset), and
    /// returns once that is durable. Returns the number of entries removed.
    pub async fn wipe(&self) -> Result<usize> {
        let started = std::time::Instant::now();
        self.inner.appender.barrier(&self.inner.writer).await?;
        let removed = self
            .blocking(|inner| {
                // No archive append may interleave with the wipe and leave a half-indexed item.
                let _guard = inner.writer.lock.lock().unwrap_or_else(|e| e.into_inner());
                let mut n = 0usize;
                inner.writer.totals.clear();
                for tree in [KEYVAL_TREE, MAP_TREE, ARCHIVE_TREE] {
                    n = n.saturating_add(inner.backend.clear(tree)?);
                }
                Ok(n)
            })
            .await?;
        self.flush().await?;
        self.observe(started);
        Ok(removed)
    }

    /// Runs blocking backend work off the async executor.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| StorageError::Io("storage is shutting down".into()))?;
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(join_err)?
    }

    /// Applies a batch then waits for durability.
    /// Sets the observer told the duration of every durable write (once; later calls are ignored).
    pub fn set_latency_observer(&self, observer: LatencyObserver) {
        let _ = self.inner.observer.set(observer);
    }

    fn observe(&self, started: std::time::Instant) {
        if let Some(o) = self.inner.observer.get() {
            o(started.elapsed().as_secs_f64());
        }
    }

    async fn apply_durable(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let started = std::time::Instant::now();
        let r = self.apply_durable_inner(tree, ops).await;
        self.observe(started);
        r
    }

    async fn apply_durable_inner(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<()> {
        // The write may wait on the engine's locks while a flush runs: keep it off the workers.
        let tree = tree.to_string();
        self.blocking(move |inner| inner.backend.apply(&tree, ops))
            .await?;
        self.flush().await
    }
}

/// Lists distinct user components below `prefix` (`host\0store\0`) by skip-scanning.
fn distinct_users(backend: &dyn Backend, tree: &str, prefix: &[u8]) -> Result<Vec<String>> {
    let end = prefix_end(prefix);
    let mut from = prefix.to_vec();
    let mut users = Vec::new();
    while let Some((key, _)) = backend
        .scan_range(tree, &from, &end, false, Some(1))?
        .into_iter()
        .next()
    {
        let rest = key.get(prefix.len()..).unwrap_or_default();
        let user = rest.split(|&b| b == 0).next().unwrap_or_default();
        from = [prefix, user, &[1]].concat();
        users.push(utf8(user)?);
    }
    Ok(users)
}

/// Per-user values of one keyval store.
#[derive(Clone)]
pub struct KeyValStore {
    store: Store,
    prefix: Result<Vec<u8>>,
}

impl KeyValStore {
    fn key(&self, user: &str) -> Result<Vec<u8>> {
        let mut key = self.prefix.clone()?;
        key.extend(join_names(&[user], false)?);
        Ok(key)
    }

    /// Reads the user's value.
    pub async fn get(&self, user: &str) -> Result<Option<Value>> {
        let key = self.key(user)?;
        self.store
            .inner
            .backend
            .get(KEYVAL_TREE, &key)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Whether the user has a value (without decoding it).
    pub async fn contains(&self, user: &str) -> Result<bool> {
        let key = self.key(user)?;
        Ok(self.store.inner.backend.get(KEYVAL_TREE, &key)?.is_some())
    }

    /// Sets (or with `None` deletes) the user's value; durable on return.
    pub async fn set(&self, user: &str, value: Option<Value>) -> Result<()> {
        let key = self.key(user)?;
        let value = value.map(|v| encode(&v)).transpose()?;
        self.store
            .apply_durable(KEYVAL_TREE, vec![(key, value)])
            .await
    }

    /// Users that have a value in this store.
    pub async fn users(&self) -> Result<Vec<String>> {
        let prefix = self.prefix.clone()?;
        self.store
            .blocking(move |i| distinct_users(&*i.backend, KEYVAL_TREE, &prefix))
            .await
    }
}

/// Per-user key -> value maps of one map store.
#[derive(Clone)]
pub struct MapStore {
    store: Store,
    prefix: Result<Vec<u8>>,
}

impl MapStore {
    fn user_prefix(&self, user: &str) -> Result<Vec<u8>> {
        let mut key = self.prefix.clone()?;
        key.extend(join_names(&[user], true)?);
        Ok(key)
    }

    fn key(&self, user: &str, key: &str) -> Result<Vec<u8>> {
        let mut out = self.user_prefix(user)?;
        out.extend(join_names(&[key], false)?);
        Ok(out)
    }

    /// Reads one key of the user's map.
    pub async fn get(&self, user: &str, key: &str) -> Result<Option<Value>> {
        let key = self.key(user, key)?;
        self.store
            .inner
            .backend
            .get(MAP_TREE, &key)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Sets (or with `None` deletes) one key; durable on return.
    pub async fn set(&self, user: &str, key: &str, value: Option<Value>) -> Result<()> {
        self.set_many(user, vec![(key.to_owned(), value)]).await
    }

    /// Atomically sets/deletes several keys; durable on return.
    pub async fn set_many(&self, user: &str, items: Vec<(String, Option<Value>)>) -> Result<()> {
        let ops = items
            .iter()
            .map(|(k, v)| Ok((self.key(user, k)?, v.as_ref().map(encode).transpose()?)))
            .collect::<Result<Vec<_>>>()?;
        self.store.apply_durable(MAP_TREE, ops).await
    }

    /// All keys and values of the user's map.
    pub async fn get_all(&self, user: &str) -> Result<BTreeMap<String, Value>> {
        let prefix = self.user_prefix(user)?;
        self.store
            .blocking(move |i| {
                let mut out = BTreeMap::new();
                for (k, v) in i.backend.scan_prefix(MAP_TREE, &prefix)? {
                    out.insert(utf8(&k[prefix.len()..])?, decode(&v)?);
                }
                Ok(out)
            })
            .await
    }

    /// Deletes the user's whole map; durable on return.
    pub async fn delete_user(&self, user: &str) -> Result<()> {
        let prefix = self.user_prefix(user)?;
        self.store
            .blocking(move |i| {
                let ops = i.backend.scan_prefix(MAP_TREE, &prefix)?;
                i.backend
                    .apply(MAP_TREE, ops.into_iter().map(|(k, _)| (k, None)).collect())
            })
            .await?;
        self.store.flush().await
    }

    /// Users that have at least one key in this store.
    pub async fn users(&self) -> Result<Vec<String>> {
        let prefix = self.prefix.clone()?;
        self.store
            .blocking(move |i| distinct_users(&*i.backend, MAP_TREE, &prefix))
            .await
    }
}

/// One archived item (e.g. a MAM message).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchiveItem {
    /// Unique (per user archive) id.
    pub id: String,
    /// Timestamp, unix seconds.
    pub when: i64,
    /// Conversation partner (bare JID or similar).
    pub with: String,
    /// Payload.
    pub value: Value,
}

/// Archive query; all set fields must match.
#[derive(Clone, Debug, Default)]
pub struct ArchiveQuery {
    /// Only items with `when >= start`.
    pub start: Option<i64>,
    /// Only items with `when <= end`.
    pub end: Option<i64>,
    /// Only items with this `with`.
    pub with: Option<String>,
    /// Only items appended before the item with this id (exclusive).
    pub before: Option<String>,
    /// Only items appended after the item with this id (exclusive).
    pub after: Option<String>,
    /// At most this many items.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
    /// Also count all items matching start/end/with/ids (ignoring before/after/limit).
    pub total: bool,
    /// Only items with one of these ids.
    pub ids: Option<Vec<String>>,
}

/// One page of archive results.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchivePage {
    /// Matching items in query order.
    pub items: Vec<ArchiveItem>,
    /// Total matches when [`ArchiveQuery::total`] was set.
    pub total: Option<usize>,
    /// True if no further matching items exist beyond this page (in query direction).
    pub complete: bool,
}

/// Per-user ordered archives of one archive store.
#[derive(Clone)]
pub struct ArchiveStore {
    store: Store,
    prefix: Result<Vec<u8>>,
}

/// Key of the item with sequence number `seq`.
fn item_key(user_prefix: &[u8], seq: u64) -> Vec<u8> {
    [user_prefix, &[ITEM_TAG], &seq.to_be_bytes()].concat()
}

/// Key of the id-index entry for `id`.
fn index_key(user_prefix: &[u8], id: &str) -> Vec<u8> {
    [user_prefix, &[INDEX_TAG], id.as_bytes()].concat()
}

/// The sequence number of the item with `id`: a generated id names it (checked against the
/// item), a caller-supplied one is looked up in the id index.
fn lookup_seq(backend: &dyn Backend, user_prefix: &[u8], id: &str) -> Result<Option<u64>> {
    if let Some(seq) = appender::claimed_seq(id)
        && let Some(v) = backend.get(ARCHIVE_TREE, &item_key(user_prefix, seq))?
        && item::item_id_with(&v)?.0 == id
    {
        return Ok(Some(seq));
    }
    backend
        .get(ARCHIVE_TREE, &index_key(user_prefix, id))?
        .map(|v| decode(&v))
        .transpose()
}

fn matches(q: &ArchiveQuery, item: &ArchiveItem) -> bool {
    q.start.is_none_or(|s| item.when >= s)
        && q.end.is_none_or(|e| item.when <= e)
        && q.with.as_ref().is_none_or(|w| &item.with == w)
}

/// Collects `(key, item)` of matching items within `[lo, hi)`, at most `want`.
fn collect_items(
    backend: &dyn Backend,
    user_prefix: &[u8],
    q: &ArchiveQuery,
    bounds: (Vec<u8>, Vec<u8>),
    want: Option<usize>,
) -> Result<Vec<(Vec<u8>, ArchiveItem)>> {
    let (mut lo, mut hi) = bounds;
    let mut out = Vec::new();
    if want == Some(0) {
        return Ok(out);
    }
    if let Some(ids) = &q.ids {
        let mut keys = Vec::new();
        for id in ids {
            if let Some(seq) = lookup_seq(backend, user_prefix, id)? {
                let key = item_key(user_prefix, seq);
                if key >= lo && key < hi {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        keys.dedup();
        if q.reverse {
            keys.reverse();
        }
        for key in keys {
            if want.is_some_and(|w| out.len() >= w) {
                break;
            }
            if let Some(v) = backend.get(ARCHIVE_TREE, &key)? {
                let item = item::decode_item(&v)?;
                if matches(q, &item) {
                    out.push((key, item));
                }
            }
        }
        return Ok(out);
    }
    loop {
        let chunk_len = want.map_or(SCAN_CHUNK, |w| (w - out.len()).clamp(1, SCAN_CHUNK));
        let chunk = backend.scan_range(ARCHIVE_TREE, &lo, &hi, q.reverse, Some(chunk_len))?;
        let got = chunk.len();
        let last = chunk.last().map(|(k, _)| k.clone());
        for (k, v) in chunk {
            let item = item::decode_item(&v)?;
            if matches(q, &item) {
                out.push((k, item));
                if want.is_some_and(|w| out.len() >= w) {
                    return Ok(out);
                }
            }
        }
        match last {
            Some(last) if got == chunk_len => {
                if q.reverse {
                    hi = last;
                } else {
                    lo = [&last[..], &[0]].concat();
                }
            }
            _ => return Ok(out),
        }
    }
}

/// Collects like [`collect_items`], through the per-partner index when `q` has an indexed `with`.
fn collect(
    inner: &Inner,
    user_prefix: &[u8],
    q: &ArchiveQuery,
    bounds: (Vec<u8>, Vec<u8>),
    want: Option<usize>,
) -> Result<Vec<(Vec<u8>, ArchiveItem)>> {
    let backend = &*inner.backend;
    if let Some(wprefix) = indexed_with(inner, user_prefix, q) {
        return with_index::collect(backend, user_prefix, &wprefix, q, bounds, want);
    }
    collect_items(backend, user_prefix, q, bounds, want)
}

/// The index prefix of `q`'s partner, if the index can answer `q` (a `with` and no `ids`).
fn indexed_with(inner: &Inner, user_prefix: &[u8], q: &ArchiveQuery) -> Option<Vec<u8>> {
    if !inner.with_indexed || q.ids.is_some() {
        return None;
    }
    with_index::with_prefix(user_prefix, q.with.as_deref()?)
}

/// Key bounds of the user's items, narrowed by `after`/`before`.
fn query_bounds(
    backend: &dyn Backend,
    user_prefix: &[u8],
    q: &ArchiveQuery,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let base = [user_prefix, &[ITEM_TAG]].concat();
    let mut lo = base.clone();
    let mut hi = prefix_end(&base);
    if let Some(after) = &q.after {
        let seq = lookup_seq(backend, user_prefix, after)?
            .ok_or_else(|| StorageError::ItemNotFound(after.clone()))?;
        lo = match seq.checked_add(1) {
            Some(next) => item_key(user_prefix, next),
            None => hi.clone(),
        };
    }
    if let Some(before) = &q.before {
        let seq = lookup_seq(backend, user_prefix, before)?
            .ok_or_else(|| StorageError::ItemNotFound(before.clone()))?;
        hi = hi.min(item_key(user_prefix, seq));
    }
    Ok((lo, hi))
}

/// Runs a query against one user's archive (blocking).
fn find_sync(inner: &Inner, user_prefix: &[u8], q: &ArchiveQuery) -> Result<ArchivePage> {
    let backend = &*inner.backend;
    let bounds = query_bounds(backend, user_prefix, q)?;
    let want = q.limit.map(|l| l.saturating_add(1));
    let mut items = collect(inner, user_prefix, q, bounds, want)?;
    let complete = q.limit.is_none_or(|l| items.len() <= l);
    if let Some(limit) = q.limit {
        items.truncate(limit);
    }
    let total = if q.total {
        Some(total(inner, user_prefix, q)?)
    } else {
        None
    };
    Ok(ArchivePage {
        items: items.into_iter().map(|(_, item)| item).collect(),
        total,
        complete,
    })
}

/// How many items of the user's archive match `q`'s start/end/with/ids (blocking). A total of
/// all items or of one partner's is counted once and then kept by [`totals`]: O(1) per page.
fn total(inner: &Inner, user_prefix: &[u8], q: &ArchiveQuery) -> Result<usize> {
    let backend = &*inner.backend;
    let base = [user_prefix, &[ITEM_TAG]].concat();
    let all = (base.clone(), prefix_end(&base));
    if q.start.is_some() || q.end.is_some() || q.ids.is_some() {
        return Ok(collect_items(backend, user_prefix, q, all, None)?.len());
    }
    let totals = &inner.writer.totals;
    let with = q.with.as_deref();
    if let Some(n) = totals.get(user_prefix, with) {
        return Ok(n);
    }
    // Counted under the archive lock, so no batch lands between the count and its caching.
    let _guard = inner.writer.lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = totals.get(user_prefix, with) {
        return Ok(n);
    }
    let n = match (with, indexed_with(inner, user_prefix, q)) {
        // Count keys, without copying or decoding any item.
        (None, _) => backend.count_prefix(ARCHIVE_TREE, &base)?,
        (Some(_), Some(wprefix)) => backend.count_prefix(ARCHIVE_TREE, &wprefix)?,
        (Some(_), None) => collect_items(backend, user_prefix, q, all, None)?.len(),
    };
    totals.insert(user_prefix, with, n);
    Ok(n)
}

/// Appends items (each replacing any item with the same id) on the caller's thread as one
/// backend batch, under the archive lock; not yet flushed. Used by imports; live appends go
/// through the writer thread.
fn append_sync(inner: &Inner, reqs: &[appender::AppendReq]) -> Result<()> {
    if reqs.is_empty() {
        return Ok(());
    }
    let mut ops = Vec::with_capacity(reqs.len().saturating_mul(3));
    let mut supplied = appender::Supplied::new();
    let _guard = inner.writer.lock.lock().unwrap_or_else(|e| e.into_inner());
    for req in reqs {
        appender::stage(&inner.writer, req, &mut ops, &mut supplied)?;
    }
    inner.backend.apply(ARCHIVE_TREE, ops)?;
    let mut prefixes: Vec<&[u8]> = reqs.iter().map(|r| r.user_prefix.as_slice()).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    for prefix in prefixes {
        inner.writer.totals.forget(prefix);
    }
    Ok(())
}

impl ArchiveStore {
    fn user_prefix(&self, user: &str) -> Result<Vec<u8>> {
        let mut key = self.prefix.clone()?;
        key.extend(join_names(&[user], true)?);
        Ok(key)
    }

    /// Queues an item for the writer thread and waits until it is written (not flushed).
    async fn append_written(
        &self,
        user: &str,
        id: Option<String>,
        when: i64,
        with: &str,
        value: &(impl Serialize + ?Sized),
    ) -> Result<String> {
        let prefix = self.user_prefix(user)?;
        let (req, rx) = appender::AppendReq::new(prefix, id, when, with.to_owned(), value)?;
        let inner = &self.store.inner;
        if !inner
            .appender
            .send(&inner.writer, appender::Job::Append(req))?
        {
            return Err(StorageError::Io("the archive writer is gone".into()));
        }
        rx.await
            .map_err(|_| StorageError::Io("the archive writer stopped".into()))?
    }

    /// Appends an item, generating a unique URL-safe id if `id` is None; an
    /// existing item with the same id is replaced. Durable on return.
    pub async fn append(
        &self,
        user: &str,
        id: Option<String>,
        when: i64,
        with: &str,
        value: Value,
    ) -> Result<String> {
        let started = std::time::Instant::now();
        let id = self.append_written(user, id, when, with, &value).await?;
        self.store.flush().await?;
        self.store.observe(started);
        Ok(id)
    }

    /// Appends like [`ArchiveStore::append`] but returns without waiting for the disk: the item
    /// is flushed within [`LAZY_FLUSH_INTERVAL`] (or with the next durable write). With a
    /// generated id it does not even wait for the write: the id is reserved and the append
    /// queued, and every later query of this store sees it. For high-volume, re-creatable data
    /// such as a message archive. `value` is anything that serialises to the JSON a query
    /// later reads back as a [`Value`] (a `Value`, or a struct borrowing its fields).
    pub async fn append_lazy(
        &self,
        user: &str,
        id: Option<String>,
        when: i64,
        with: &str,
        value: impl Serialize + Send + Sync,
    ) -> Result<String> {
        if id.is_some() {
            return self.append_written(user, id, when, with, &value).await;
        }
        let prefix = self.user_prefix(user)?;
        let req = appender::AppendReq::unanswered(prefix, when, with.to_owned(), &value)?;
        let inner = &self.store.inner;
        inner.appender.send_reserved(&inner.writer, req)
    }

    /// Queries the user's archive, in append order (newest first if `reverse`).
    pub async fn find(&self, user: &str, q: &ArchiveQuery) -> Result<ArchivePage> {
        let prefix = self.user_prefix(user)?;
        self.store
            .inner
            .appender
            .barrier(&self.store.inner.writer)
            .await?;
        let q = q.clone();
        self.store
            .blocking(move |i| find_sync(i, &prefix, &q))
            .await
    }

    /// Deletes the items matching `q` (limit respected); returns how many. Durable on return.
    pub async fn delete(&self, user: &str, q: &ArchiveQuery) -> Result<usize> {
        let prefix = self.user_prefix(user)?;
        self.store
            .inner
            .appender
            .barrier(&self.store.inner.writer)
            .await?;
        let q = q.clone();
        let n = self
            .store
            .blocking(move |i| {
                let backend = &*i.backend;
                let _guard = i.writer.lock.lock().unwrap_or_else(|e| e.into_inner());
                let bounds = query_bounds(backend, &prefix, &q)?;
                let items = collect(i, &prefix, &q, bounds, q.limit)?;
                let n = items.len();
                let mut ops = Vec::with_capacity(3 * n);
                for (key, item) in items {
                    if let Some(seq) = key.get(prefix.len() + 1..).and_then(|s| s.try_into().ok())
                        && let Some(wkey) =
                            with_index::with_key(&prefix, &item.with, u64::from_be_bytes(seq))
                    {
                        ops.push((wkey, None));
                    }
                    ops.push((key, None));
                    ops.push((index_key(&prefix, &item.id), None));
                }
                backend.apply(ARCHIVE_TREE, ops)?;
                i.writer.totals.forget(&prefix);
                Ok(n)
            })
            .await?;
        self.store.flush().await?;
        Ok(n)
    }

    /// Number of items in the user's archive.
    pub async fn count(&self, user: &str) -> Result<usize> {
        let prefix = self.user_prefix(user)?;
        self.store
            .inner
            .appender
            .barrier(&self.store.inner.writer)
            .await?;
        self.store
            .blocking(move |i| total(i, &prefix, &ArchiveQuery::default()))
            .await
    }

    /// Users that have at least one archived item.
    pub async fn users(&self) -> Result<Vec<String>> {
        let prefix = self.prefix.clone()?;
        self.store
            .inner
            .appender
            .barrier(&self.store.inner.writer)
            .await?;
        self.store
            .blocking(move |i| distinct_users(&*i.backend, ARCHIVE_TREE, &prefix))
            .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Fills a store with a bit of everything (used by the export round trip too).
    pub(crate) async fn populate(s: &Store) {
        let kv = s.keyval("h1", "accounts");
        for user in ["", "a", "ab", "b"] {
            kv.set(user, Some(json!({"u": user}))).await.unwrap();
        }
        s.keyval("h2", "accounts")
            .set("a", Some(json!(null)))
            .await
            .unwrap();
        let m = s.map("h1", "roster");
        let items = (0..20).map(|i| (format!("k{i}"), Some(json!(i)))).collect();
        m.set_many("a", items).await.unwrap();
        m.set("", "", Some(json!("empty"))).await.unwrap();
        let a = s.archive("h1", "mam");
        for i in 0..1000 {
            let id = (i % 3 == 0).then(|| format!("id{i}"));
            a.append("u", id, i, &format!("w{}", i % 4), json!({"n": i}))
                .await
                .unwrap();
        }
        a.append("", None, 1, "x", json!("host-wide"))
            .await
            .unwrap();
        s.archive("h2", "mam")
            .append("u", Some("z".into()), 7, "x", json!([1, 2]))
            .await
            .unwrap();
    }

    fn ids(page: &ArchivePage) -> Vec<&str> {
        page.items.iter().map(|i| i.id.as_str()).collect()
    }

    fn q() -> ArchiveQuery {
        ArchiveQuery::default()
    }

    async fn keyval_suite(s: &Store) {
        let kv = s.keyval("h", "s");
        assert_eq!(kv.get("a").await.unwrap(), None);
        kv.set("a", Some(json!({"x": 1}))).await.unwrap();
        kv.set("ab", Some(json!(2))).await.unwrap();
        kv.set("", Some(json!("host"))).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(json!({"x": 1})));
        assert_eq!(kv.get("").await.unwrap(), Some(json!("host")));
        assert_eq!(kv.users().await.unwrap(), ["", "a", "ab"]);
        kv.set("a", Some(json!(3))).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(json!(3)));
        assert!(kv.contains("a").await.unwrap());
        kv.set("a", None).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), None);
        assert!(!kv.contains("a").await.unwrap());
        assert_eq!(kv.get("ab").await.unwrap(), Some(json!(2)));
        assert_eq!(kv.users().await.unwrap(), ["", "ab"]);
        // isolation between hosts and stores
        assert_eq!(s.keyval("h2", "s").get("ab").await.unwrap(), None);
        assert_eq!(s.keyval("h", "s2").get("ab").await.unwrap(), None);
        assert_eq!(
            s.keyval("h", "").users().await.unwrap(),
            Vec::<String>::new()
        );
        assert!(s.keyval("h", "s2").users().await.unwrap().is_empty());
        let err = kv.set("a\0b", Some(json!(1))).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidName(_)));
        let err = s.keyval("h\0", "s").get("a").await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidName(_)));
    }

    async fn map_suite(s: &Store) {
        let m = s.map("h", "m");
        m.set("a", "k1", Some(json!(1))).await.unwrap();
        m.set("ab", "k1", Some(json!("ab"))).await.unwrap();
        m.set_many(
            "a",
            vec![
                ("k2".into(), Some(json!(2))),
                ("k1".into(), None),
                ("k3".into(), Some(json!(3))),
            ],
        )
        .await
        .unwrap();
        assert_eq!(m.get("a", "k1").await.unwrap(), None);
        assert_eq!(m.get("a", "k2").await.unwrap(), Some(json!(2)));
        let all = m.get_all("a").await.unwrap();
        assert_eq!(
            all,
            BTreeMap::from([("k2".into(), json!(2)), ("k3".into(), json!(3))])
        );
        // a batch with an invalid key writes nothing
        let err = m
            .set_many(
                "a",
                vec![
                    ("k4".into(), Some(json!(4))),
                    ("bad\0".into(), Some(json!(0))),
                ],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidName(_)));
        assert_eq!(m.get("a", "k4").await.unwrap(), None);
        assert_eq!(m.users().await.unwrap(), ["a", "ab"]);
        assert!(s.map("h", "m2").get_all("a").await.unwrap().is_empty());
        assert!(s.map("h2", "m").users().await.unwrap().is_empty());
        m.delete_user("a").await.unwrap();
        assert!(m.get_all("a").await.unwrap().is_empty());
        assert_eq!(m.get("ab", "k1").await.unwrap(), Some(json!("ab")));
        assert_eq!(m.users().await.unwrap(), ["ab"]);
    }

    async fn archive_suite(s: &Store) {
        let a = s.archive("h", "mam");
        for i in 0..10 {
            let with = if i % 2 == 0 { "x" } else { "y" };
            let id = a
                .append("u", Some(format!("i{i}")), 100 + i, with, json!(i))
                .await
                .unwrap();
            assert_eq!(id, format!("i{i}"));
        }
        a.append("ua", Some("other".into()), 100, "x", json!(0))
            .await
            .unwrap();
        let all = a.find("u", &q()).await.unwrap();
        assert_eq!(
            ids(&all),
            ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"]
        );
        assert!(all.complete);
        assert_eq!(all.total, None);
        assert_eq!(
            all.items[3],
            ArchiveItem {
                id: "i3".into(),
                when: 103,
                with: "y".into(),
                value: json!(3)
            }
        );
        let r = a
            .find(
                "u",
                &ArchiveQuery {
                    reverse: true,
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&r)[..3], ["i9", "i8", "i7"]);
        let w = a
            .find(
                "u",
                &ArchiveQuery {
                    with: Some("x".into()),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&w), ["i0", "i2", "i4", "i6", "i8"]);
        let t = a
            .find(
                "u",
                &ArchiveQuery {
                    start: Some(103),
                    end: Some(106),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&t), ["i3", "i4", "i5", "i6"]);
        let query = ArchiveQuery {
            after: Some("i2".into()),
            before: Some("i5".into()),
            ..q()
        };
        assert_eq!(ids(&a.find("u", &query).await.unwrap()), ["i3", "i4"]);
        let p = a
            .find(
                "u",
                &ArchiveQuery {
                    after: Some("i7".into()),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&p), ["i8", "i9"]);
        let p = a
            .find(
                "u",
                &ArchiveQuery {
                    limit: Some(3),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!((ids(&p), p.complete), (vec!["i0", "i1", "i2"], false));
        let p = a
            .find(
                "u",
                &ArchiveQuery {
                    limit: Some(10),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert!(p.complete && p.items.len() == 10);
        let p = a
            .find(
                "u",
                &ArchiveQuery {
                    limit: Some(0),
                    total: true,
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!((p.items.len(), p.total, p.complete), (0, Some(10), false));
        let query = ArchiveQuery {
            reverse: true,
            before: Some("i5".into()),
            limit: Some(2),
            ..q()
        };
        let p = a.find("u", &query).await.unwrap();
        assert_eq!((ids(&p), p.complete), (vec!["i4", "i3"], false));
        let query = ArchiveQuery {
            with: Some("x".into()),
            after: Some("i3".into()),
            limit: Some(2),
            total: true,
            ..q()
        };
        let p = a.find("u", &query).await.unwrap();
        assert_eq!(
            (ids(&p), p.total, p.complete),
            (vec!["i4", "i6"], Some(5), false)
        );
        let query = ArchiveQuery {
            ids: Some(vec!["i7".into(), "nope".into(), "i1".into()]),
            ..q()
        };
        assert_eq!(ids(&a.find("u", &query).await.unwrap()), ["i1", "i7"]);
        let query = ArchiveQuery {
            ids: Some(vec!["i7".into(), "i1".into()]),
            reverse: true,
            ..q()
        };
        assert_eq!(ids(&a.find("u", &query).await.unwrap()), ["i7", "i1"]);
        for bad in [
            ArchiveQuery {
                after: Some("nope".into()),
                ..q()
            },
            ArchiveQuery {
                before: Some("other".into()),
                ..q()
            },
        ] {
            let err = a.find("u", &bad).await.unwrap_err();
            assert!(matches!(err, StorageError::ItemNotFound(_)), "{err:?}");
        }
        // generated ids: unique and URL-safe
        let g1 = a.append("u", None, 200, "z", json!("g1")).await.unwrap();
        let g2 = a.append("u", None, 201, "z", json!("g2")).await.unwrap();
        assert_ne!(g1, g2);
        assert!(
            g1.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(a.count("u").await.unwrap(), 12);
        // re-appending an existing id replaces it and moves it to the end
        a.append("u", Some("i0".into()), 300, "x", json!("again"))
            .await
            .unwrap();
        assert_eq!(a.count("u").await.unwrap(), 12);
        let last = a
            .find(
                "u",
                &ArchiveQuery {
                    reverse: true,
                    limit: Some(1),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(last.items[0].value, json!("again"));
        // delete by query, limit respected
        let query = ArchiveQuery {
            limit: Some(0),
            ..q()
        };
        assert_eq!(a.delete("u", &query).await.unwrap(), 0);
        let query = ArchiveQuery {
            with: Some("y".into()),
            limit: Some(2),
            ..q()
        };
        assert_eq!(a.delete("u", &query).await.unwrap(), 2);
        let y = a
            .find(
                "u",
                &ArchiveQuery {
                    with: Some("y".into()),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&y), ["i5", "i7", "i9"]);
        assert_eq!(a.count("u").await.unwrap(), 10);
        let err = a
            .find(
                "u",
                &ArchiveQuery {
                    after: Some("i1".into()),
                    ..q()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::ItemNotFound(_)));
        assert_eq!(a.users().await.unwrap(), ["u", "ua"]);
        assert_eq!(
            a.delete(
                "u",
                &ArchiveQuery {
                    end: Some(104),
                    ..q()
                }
            )
            .await
            .unwrap(),
            2
        );
        assert_eq!(a.delete("u", &q()).await.unwrap(), 8);
        assert_eq!(a.count("u").await.unwrap(), 0);
        assert_eq!(a.users().await.unwrap(), ["ua"]);
        // isolation
        assert_eq!(a.count("ua").await.unwrap(), 1);
        assert_eq!(s.archive("h", "other").count("ua").await.unwrap(), 0);
        assert_eq!(
            s.archive("h2", "mam").find("ua", &q()).await.unwrap().items,
            vec![]
        );
        assert!(matches!(
            a.count("a\0").await,
            Err(StorageError::InvalidName(_))
        ));
    }

    async fn paging_suite(s: &Store) {
        let a = s.archive("h", "big");
        let mut expected = Vec::new();
        for i in 0..1000 {
            let id = if i % 2 == 0 {
                Some(format!("m{i}"))
            } else {
                None
            };
            expected.push(a.append("u", id, i, "w", json!(i)).await.unwrap());
        }
        let (mut got, mut after) = (Vec::new(), None);
        loop {
            let query = ArchiveQuery {
                after: after.clone(),
                limit: Some(37),
                total: true,
                ..q()
            };
            let page = a.find("u", &query).await.unwrap();
            assert_eq!(page.total, Some(1000));
            got.extend(page.items.iter().map(|i| i.id.clone()));
            after = page.items.last().map(|i| i.id.clone());
            if page.complete {
                break;
            }
        }
        assert_eq!(got, expected);
        let (mut got, mut before) = (Vec::new(), None);
        loop {
            let query = ArchiveQuery {
                before: before.clone(),
                limit: Some(100),
                reverse: true,
                ..q()
            };
            let page = a.find("u", &query).await.unwrap();
            got.extend(page.items.iter().map(|i| i.id.clone()));
            before = page.items.last().map(|i| i.id.clone());
            if page.complete {
                break;
            }
        }
        got.reverse();
        assert_eq!(got, expected);
        assert_eq!(a.count("u").await.unwrap(), 1000);
    }

    /// Totals stay right once counted (and cached): after lazy and durable appends, a
    /// replace by id, deletes, another partner, another user and a wipe.
    async fn totals_suite(s: &Store) {
        let a = s.archive("h", "t");
        let total = |with: Option<&str>| {
            let a = a.clone();
            let with = with.map(str::to_string);
            async move {
                let query = ArchiveQuery {
                    with,
                    limit: Some(1),
                    total: true,
                    ..q()
                };
                a.find("u", &query).await.unwrap().total.unwrap()
            }
        };
        assert_eq!((total(None).await, total(Some("w")).await), (0, 0));
        for i in 0..10 {
            let with = if i % 2 == 0 { "w" } else { "v" };
            a.append_lazy("u", None, i, with, json!(i)).await.unwrap();
        }
        a.append("other", None, 1, "w", json!(1)).await.unwrap();
        assert_eq!((total(None).await, total(Some("w")).await), (10, 5));
        assert_eq!(total(Some("v")).await, 5);
        a.append("u", Some("fixed".into()), 20, "w", json!(20))
            .await
            .unwrap();
        a.append("u", Some("fixed".into()), 21, "v", json!(21))
            .await
            .unwrap();
        assert_eq!((total(None).await, total(Some("w")).await), (11, 5));
        assert_eq!(total(Some("v")).await, 6);
        let gone = ArchiveQuery {
            with: Some("v".into()),
            limit: Some(2),
            ..q()
        };
        assert_eq!(a.delete("u", &gone).await.unwrap(), 2);
        assert_eq!((total(None).await, total(Some("v")).await), (9, 4));
        assert_eq!(a.count("u").await.unwrap(), 9);
        a.append_lazy("u", None, 30, "v", json!(30)).await.unwrap();
        assert_eq!((total(None).await, total(Some("v")).await), (10, 5));
        assert_eq!(a.count("other").await.unwrap(), 1);
        s.wipe().await.unwrap();
        assert_eq!((total(None).await, total(Some("w")).await), (0, 0));
    }

    async fn wipe_suite(s: &Store) {
        populate(s).await;
        let stored: usize = [KEYVAL_TREE, MAP_TREE, ARCHIVE_TREE]
            .iter()
            .map(|t| s.backend().count_prefix(t, b"").unwrap())
            .sum();
        assert!(stored > 1000);
        assert_eq!(s.wipe().await.unwrap(), stored);
        for tree in [KEYVAL_TREE, MAP_TREE, ARCHIVE_TREE] {
            assert_eq!(s.backend().count_prefix(tree, b"").unwrap(), 0, "{tree}");
        }
        assert_eq!(s.keyval("h1", "accounts").get("a").await.unwrap(), None);
        assert!(s.keyval("h1", "accounts").users().await.unwrap().is_empty());
        assert!(s.map("h1", "roster").get_all("a").await.unwrap().is_empty());
        assert_eq!(s.archive("h1", "mam").count("u").await.unwrap(), 0);
        assert!(s.archive("h2", "mam").users().await.unwrap().is_empty());
        // An empty store wipes to nothing, and stays usable.
        assert_eq!(s.wipe().await.unwrap(), 0);
        s.keyval("h1", "accounts")
            .set("a", Some(json!(1)))
            .await
            .unwrap();
        assert_eq!(
            s.keyval("h1", "accounts").get("a").await.unwrap(),
            Some(json!(1))
        );
    }

    /// Concurrent appends (batched by the writer) all land, in the order their ids were
    /// returned per caller, with distinct ids usable as paging bounds; a well-formed generated
    /// id that names no item of this user is not found, and generated ids need no index entry.
    async fn concurrent_suite(s: &Store) {
        let a = s.archive("h", "mam");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..50 {
                    ids.push(
                        a.append_lazy("u", None, i, "w", json!([t, i]))
                            .await
                            .unwrap(),
                    );
                }
                ids
            }));
        }
        let mut per_task = Vec::new();
        for t in tasks {
            per_task.push(t.await.unwrap());
        }
        let all = a.find("u", &q()).await.unwrap();
        assert_eq!(all.items.len(), 400);
        let mut seen: Vec<&str> = ids(&all);
        for ids in &per_task {
            let pos: Vec<usize> = ids
                .iter()
                .map(|id| seen.iter().position(|s| s == id).unwrap())
                .collect();
            assert!(
                pos.windows(2).all(|w| w[0] < w[1]),
                "one caller's appends keep their order"
            );
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 400);
        let mid = all.items[200].id.clone();
        let page = a
            .find(
                "u",
                &ArchiveQuery {
                    after: Some(mid.clone()),
                    limit: Some(3),
                    ..q()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&page), ids(&all)[201..204]);
        // The same id under another user names nothing there.
        a.append_lazy("v", None, 1, "w", json!(0)).await.unwrap();
        let other = ArchiveQuery {
            before: Some(mid),
            ..q()
        };
        assert!(matches!(
            a.find("v", &other).await,
            Err(StorageError::ItemNotFound(_))
        ));
        let index = [&a.user_prefix("u").unwrap()[..], &[INDEX_TAG]].concat();
        assert_eq!(s.backend().count_prefix(ARCHIVE_TREE, &index).unwrap(), 0);
    }

    macro_rules! conformance {
        ($(#[$attr:meta])* $name:ident, $make:expr) => {
            mod $name {
                use super::*;
                #[tokio::test]
                $(#[$attr])*
                async fn keyval() {
                    let (_dir, s) = $make;
                    keyval_suite(&s).await;
                }
                #[tokio::test]
                $(#[$attr])*
                async fn map() {
                    let (_dir, s) = $make;
                    map_suite(&s).await;
                }
                #[tokio::test]
                $(#[$attr])*
                async fn archive() {
                    let (_dir, s) = $make;
                    archive_suite(&s).await;
                }
                #[tokio::test]
                $(#[$attr])*
                async fn wipe() {
                    let (_dir, s) = $make;
                    wipe_suite(&s).await;
                }
                #[tokio::test(flavor = "multi_thread")]
                $(#[$attr])*
                async fn concurrent() {
                    let (_dir, s) = $make;
                    concurrent_suite(&s).await;
                }
                #[tokio::test(flavor = "multi_thread")]
                $(#[$attr])*
                async fn paging() {
                    let (_dir, s) = $make;
                    paging_suite(&s).await;
                }
                #[tokio::test]
                $(#[$attr])*
                async fn totals() {
                    let (_dir, s) = $make;
                    totals_suite(&s).await;
                }
            }
        };
    }

    fn sled_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sled(dir.path(), 1 << 22).unwrap();
        (dir, store)
    }

    fn fjall_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_fjall(dir.path(), 1 << 22).unwrap();
        (dir, store)
    }

    conformance!(memory, ((), Store::memory()));
    conformance!(sled, sled_store());
    conformance!(
        #[ignore = "needs OXPECKER_TEST_POSTGRES_URL (scripts/cluster-test)"]
        postgres,
        (
            (),
            Store::new(Arc::new(crate::storage::postgres::scratch::backend()))
        )
    );
    conformance!(fjall, fjall_store());

    #[test]
    fn value_versioning() {
        assert_eq!(
            decode::<Value>(&encode(&json!([1])).unwrap()).unwrap(),
            json!([1])
        );
        assert!(matches!(
            decode::<Value>(b"\x02[]"),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            decode::<Value>(b""),
            Err(StorageError::Corrupt(_))
        ));
        assert_eq!(prefix_end(b"a\0"), b"a\x01");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
