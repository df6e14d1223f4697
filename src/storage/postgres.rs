//! Networked [`Backend`] on PostgreSQL (`[storage] backend = "postgres"`): every tree is a
//! range of one table keyed by `(tree, key bytea)`, so prefix and range scans are index range
//! scans; a batch is one transaction and an acknowledged write is a committed one.
//!
//! The [`Backend`] trait is synchronous and is called from the blocking pool, the archive
//! writer thread and (at start and in tests) from async code. The driver (tokio-postgres with
//! a deadpool pool) therefore runs on a small runtime of its own: each call is spawned there
//! and waited for on a plain channel, which works from any thread, inside a runtime or not
//! (the sync `postgres` crate's `block_on` panics inside one).
//!
//! The schema is created and upgraded by the versioned [`MIGRATIONS`] when the backend opens
//! (recorded in `schema_version`, under an advisory lock so that several nodes starting at once
//! migrate once); a database migrated by a newer Oxpecker is refused.
//!
//! Connections are plain TCP or a unix socket (no TLS to the database yet): keep the database
//! on loopback, a socket or a trusted network.

use super::{Backend, FlushFuture, Result, StorageError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::NoTls;

/// The schema migrations, in order: entry `n` (0-based) brings the schema to version `n + 1`.
const MIGRATIONS: &[&str] = &["CREATE TABLE entries (
        tree text NOT NULL,
        key bytea NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (tree, key)
    );
    CREATE SEQUENCE entry_ids MINVALUE 0 START 0;"];

/// Schema version this build writes (the number of [`MIGRATIONS`]).
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Advisory lock key held while migrating ("oxpecker" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f78_7065_636b_6572;

/// Most pooled connections (the store runs at most a few blocking calls at once).
const POOL_SIZE: usize = 8;
/// How long connecting, or waiting for a pooled connection, may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL-backed storage: a connection pool on a runtime of its own.
pub struct PostgresBackend {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Maps a driver error: a connection problem or a server going away is temporary ([`StorageError::Io`],
/// refused with "try again later"); what the server refuses outright (a value or key beyond its
/// limits, bad data) fails the same way on retry.
fn map_err(e: tokio_postgres::Error) -> StorageError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code)
            if code == &SqlState::PROGRAM_LIMIT_EXCEEDED
                || code.code().starts_with("22")
                || code.code().starts_with("23") =>
        {
            StorageError::Unsupported(format!("PostgreSQL refused the write: {e}"))
        }
        _ => StorageError::Io(format!("PostgreSQL: {}", error_text(&e))),
    }
}

/// The driver's message with its cause (tokio-postgres puts the useful part in the source).
fn error_text(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Maps a pool error (no connection could be made or had in time) to a temporary error.
fn pool_err(e: deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => map_err(e),
        other => StorageError::Io(format!("PostgreSQL connection pool: {other}")),
    }
}

/// Smallest key greater than every key starting with `prefix`, or None when there is none
/// (an empty or all-0xFF prefix: then the scan is bounded below only).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if let Some(next) = last.checked_add(1) {
            end.push(next);
            return Some(end);
        }
    }
    None
}

/// A row count reported by the server, as a usize.
fn count(n: i64) -> Result<usize> {
    usize::try_from(n).map_err(|_| StorageError::Corrupt(format!("negative count {n}")))
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or the
    /// key=value form), then creates or upgrades the schema.
    pub fn open(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            StorageError::Unsupported(format!("invalid PostgreSQL url in [storage] url: {e}"))
        })?;
        Self::connect(config)
    }

    /// Connects with an already parsed driver configuration, then migrates.
    pub fn connect(mut config: tokio_postgres::Config) -> Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("oxpecker-pg")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StorageError::Io(format!("cannot build the PostgreSQL pool: {e}")))?;
        let backend = PostgresBackend {
            pool,
            runtime: Some(runtime),
        };
        let pool = backend.pool.clone();
        let version = backend.run(async move { migrate(&pool).await })?;
        tracing::debug!(schema = version, "opened PostgreSQL storage");
        Ok(backend)
    }

    /// Runs `work` on the backend's runtime and waits for its result (from any thread).
    fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(StorageError::Io("the PostgreSQL runtime is gone".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv()
            .map_err(|_| StorageError::Io("the PostgreSQL runtime stopped".into()))?
    }

    /// Runs one statement returning rows, on a pooled connection.
    fn query(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<tokio_postgres::Row>> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_err)?;
            let statement = client.prepare_cached(sql).await.map_err(map_err)?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(Param::as_sql).collect();
            client.query(&statement, &refs).await.map_err(map_err)
        })
    }

    /// Entries of `tree` with `start <= key` (and `key < end` if given), in key order.
    fn scan(
        &self,
        tree: &str,
        start: &[u8],
        end: Option<Vec<u8>>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let (sql, mut params) = match (end, reverse) {
            (Some(end), false) => (
                "SELECT key, value FROM entries WHERE tree = $1 AND key >= $2 AND key < $4 \
                 ORDER BY key LIMIT $3",
                vec![Param::Bytes(end)],
            ),
            (Some(end), true) => (
                "SELECT key, value FROM entries WHERE tree = $1 AND key >= $2 AND key < $4 \
                 ORDER BY key DESC LIMIT $3",
                vec![Param::Bytes(end)],
            ),
            (None, false) => (
                "SELECT key, value FROM entries WHERE tree = $1 AND key >= $2 \
                 ORDER BY key LIMIT $3",
                vec![],
            ),
            (None, true) => (
                "SELECT key, value FROM entries WHERE tree = $1 AND key >= $2 \
                 ORDER BY key DESC LIMIT $3",
                vec![],
            ),
        };
        let mut all = vec![
            Param::Text(tree.to_owned()),
            Param::Bytes(start.to_vec()),
            Param::Limit(limit),
        ];
        all.append(&mut params);
        self.query(sql, all)?
            .into_iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(map_err)?,
                    row.try_get(1).map_err(map_err)?,
                ))
            })
            .collect()
    }
}

/// One owned statement parameter (the statement runs on another thread).
enum Param {
    Text(String),
    Bytes(Vec<u8>),
    Limit(Option<i64>),
}

impl Param {
    /// The parameter as the driver takes it.
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Bytes(b) => b,
            Param::Limit(n) => n,
        }
    }
}

/// Creates or upgrades the schema in one transaction; returns the version it is now at.
async fn migrate(pool: &Pool) -> Result<i32> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(map_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(map_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await
        .map_err(map_err)?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(map_err)?;
    let current: i32 = row.try_get(0).map_err(map_err)?;
    if current > SCHEMA_VERSION {
        return Err(StorageError::Unsupported(format!(
            "the PostgreSQL database has storage schema version {current}, newer than the \
             supported version {SCHEMA_VERSION}; use a newer oxpecker"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(map_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(map_err)?;
        tracing::info!(version, "migrated the PostgreSQL storage schema");
    }
    tx.commit().await.map_err(map_err)?;
    Ok(current.max(SCHEMA_VERSION))
}

impl Backend for PostgresBackend {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let rows = self.query(
            "SELECT value FROM entries WHERE tree = $1 AND key = $2",
            vec![Param::Text(tree.to_owned()), Param::Bytes(key.to_vec())],
        )?;
        rows.first()
            .map(|row| row.try_get(0).map_err(map_err))
            .transpose()
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = self.scan(tree, prefix, successor(prefix), false, None)?;
        // Without a successor the scan is bounded below only.
        rows.retain(|(k, _)| k.starts_with(prefix));
        Ok(rows)
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
        self.scan(tree, start, Some(end.to_vec()), reverse, limit)
    }

    fn count_prefix(&self, tree: &str, prefix: &[u8]) -> Result<usize> {
        let rows = match successor(prefix) {
            Some(end) => self.query(
                "SELECT count(*) FROM entries WHERE tree = $1 AND key >= $2 AND key < $3",
                vec![
                    Param::Text(tree.to_owned()),
                    Param::Bytes(prefix.to_vec()),
                    Param::Bytes(end),
                ],
            )?,
            None => self.query(
                "SELECT count(*) FROM entries WHERE tree = $1 AND key >= $2",
                vec![Param::Text(tree.to_owned()), Param::Bytes(prefix.to_vec())],
            )?,
        };
        let n: i64 = match rows.first() {
            Some(row) => row.try_get(0).map_err(map_err)?,
            None => 0,
        };
        count(n)
    }

    fn apply(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // The last operation on a key wins, as if applied in order; what is left is a set of
        // deletes and a set of puts on distinct keys: two statements in one transaction.
        let mut last: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::with_capacity(ops.len());
        for (k, v) in ops {
            last.insert(k, v);
        }
        let (mut deletes, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in last {
            match v {
                Some(v) => {
                    put_keys.push(k);
                    put_values.push(v);
                }
                None => deletes.push(k),
            }
        }
        let pool = self.pool.clone();
        let tree = tree.to_owned();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(map_err)?;
            if !deletes.is_empty() {
                let delete = tx
                    .prepare_cached("DELETE FROM entries WHERE tree = $1 AND key = ANY($2)")
                    .await
                    .map_err(map_err)?;
                tx.execute(&delete, &[&tree, &deletes])
                    .await
                    .map_err(map_err)?;
            }
            if !put_keys.is_empty() {
                let put = tx
                    .prepare_cached(
                        "INSERT INTO entries (tree, key, value) \
                         SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v) \
                         ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .await
                    .map_err(map_err)?;
                tx.execute(&put, &[&tree, &put_keys, &put_values])
                    .await
                    .map_err(map_err)?;
            }
            tx.commit().await.map_err(map_err)
        })
    }

    fn clear(&self, tree: &str) -> Result<usize> {
        let pool = self.pool.clone();
        let tree = tree.to_owned();
        let n = self.run(async move {
            let client = pool.get().await.map_err(pool_err)?;
            client
                .execute("DELETE FROM entries WHERE tree = $1", &[&tree])
                .await
                .map_err(map_err)
        })?;
        usize::try_from(n).map_err(|_| StorageError::Corrupt(format!("count {n} out of range")))
    }

    /// Nothing to do: every write was committed before it returned.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_async(&self) -> FlushFuture {
        Box::pin(async { Ok(()) })
    }

    fn next_id(&self) -> Result<u64> {
        let rows = self.query("SELECT nextval('entry_ids')", Vec::new())?;
        let id: i64 = match rows.first() {
            Some(row) => row.try_get(0).map_err(map_err)?,
            None => return Err(StorageError::Io("nextval returned no row".into())),
        };
        u64::try_from(id).map_err(|_| StorageError::Corrupt(format!("negative id {id}")))
    }

    /// The size of the entries table with its index and TOAST data.
    fn size_on_disk(&self) -> Option<u64> {
        let rows = self
            .query("SELECT pg_total_relation_size('entries')", Vec::new())
            .map_err(|e| tracing::warn!(error = %e, "cannot determine the storage size"))
            .ok()?;
        let n: i64 = rows.first()?.try_get(0).ok()?;
        u64::try_from(n).ok()
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside another runtime; nothing is left
        // to wait for once the last call has returned.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Test support: a PostgreSQL schema of its own per backend, in the database named by
/// `OXPECKER_TEST_POSTGRES_URL` (the tests that use it are `#[ignore]`d without one).
#[cfg(test)]
pub(crate) mod scratch {
    use super::PostgresBackend;

    /// Name of the variable holding the test database's URL.
    pub const URL_VAR: &str = "OXPECKER_TEST_POSTGRES_URL";

    /// The test database's URL (panics with a hint when unset: run these with it set).
    pub fn url() -> String {
        std::env::var(URL_VAR).unwrap_or_else(|_| {
            panic!(
                "set {URL_VAR}=postgres://… to run the PostgreSQL tests (scripts/cluster-test does)"
            )
        })
    }

    /// A backend on a fresh, empty schema of the test database.
    pub fn backend() -> PostgresBackend {
        let url = url();
        let schema = format!("t_{}_{:016x}", std::process::id(), rand::random::<u64>());
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        // A thread of its own: the callers are async tests, where a runtime cannot block.
        let admin = config.clone();
        let create = format!("CREATE SCHEMA {schema}");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let (client, conn) = admin.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(&create).await.unwrap();
            });
        })
        .join()
        .unwrap();
        config.options(format!("-c search_path={schema}"));
        PostgresBackend::connect(config).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_bounds_prefixes() {
        assert_eq!(successor(b"a\0"), Some(b"a\x01".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert_eq!(successor(b""), None);
    }

    #[test]
    fn bad_url_is_refused_clearly() {
        let err = PostgresBackend::open("postgres://host:notaport/db")
            .err()
            .unwrap();
        assert!(matches!(err, StorageError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("[storage] url"), "{err}");
    }

    #[test]
    fn unreachable_server_is_a_temporary_error() {
        // Port 1 on loopback: nothing listens there.
        let err = PostgresBackend::open("postgres://u@127.0.0.1:1/db")
            .err()
            .unwrap();
        assert!(err.is_temporary(), "{err}");
    }

    #[test]
    #[ignore = "needs OXPECKER_TEST_POSTGRES_URL (scripts/cluster-test)"]
    fn edge_keys_and_batches() {
        let b = scratch::backend();
        let ff = vec![0xFF, 0xFF];
        b.apply(
            "t",
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (ff.clone(), Some(b"2".to_vec())),
                ([&ff[..], b"x"].concat(), Some(b"3".to_vec())),
                (b"gone".to_vec(), Some(b"x".to_vec())),
                (b"gone".to_vec(), None),
                (b"a".to_vec(), Some(b"1b".to_vec())),
            ],
        )
        .unwrap();
        assert_eq!(b.get("t", b"a").unwrap(), Some(b"1b".to_vec()));
        assert_eq!(b.get("t", b"gone").unwrap(), None);
        assert_eq!(b.scan_prefix("t", &ff).unwrap().len(), 2);
        assert_eq!(b.count_prefix("t", &ff).unwrap(), 2);
        assert_eq!(b.count_prefix("t", b"").unwrap(), 3);
        assert_eq!(b.count_prefix("other", b"").unwrap(), 0);
        let rev = b
            .scan_range("t", b"", &[0xFF, 0xFF, 0xFF], true, Some(2))
            .unwrap();
        assert_eq!(rev[0].0, [&ff[..], b"x"].concat());
        assert_eq!(rev.len(), 2);
        let (i, j) = (b.next_id().unwrap(), b.next_id().unwrap());
        assert!(j > i);
        assert!(b.size_on_disk().unwrap() > 0);
        assert_eq!(b.clear("t").unwrap(), 3);
        assert_eq!(b.scan_prefix("t", b"").unwrap(), vec![]);
    }

    #[test]
    #[ignore = "needs OXPECKER_TEST_POSTGRES_URL (scripts/cluster-test)"]
    fn newer_schema_is_refused() {
        let b = scratch::backend();
        let pool = b.pool.clone();
        b.run(async move {
            let client = pool.get().await.map_err(pool_err)?;
            client
                .execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[&(SCHEMA_VERSION + 1)],
                )
                .await
                .map_err(map_err)
        })
        .unwrap();
        let pool = b.pool.clone();
        let err = b.run(async move { migrate(&pool).await }).unwrap_err();
        assert!(matches!(err, StorageError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
