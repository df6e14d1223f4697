//! Moving a data directory written by sled onto fjall, once, at start.
//!
//! Both engines hold the same keys and values (the store above writes identical bytes to
//! either), so the conversion copies every tree byte for byte: read through [`SledBackend`],
//! written through [`FjallBackend`] into `<store>.fjall-new`, counted on both sides, synced,
//! and marked complete. Then the sled files move to [`SLED_BACKUP_DIR`] beside the store and
//! the new keyspace takes the store's place. Interrupted before the mark, the next start
//! begins again from the untouched sled files; interrupted between the two renames, it
//! finishes the second one.

use super::{Backend, FjallBackend, Result, SledBackend, StorageError};
use std::path::{Path, PathBuf};

/// Where the sled files of a converted store are kept, beside the store directory.
pub const SLED_BACKUP_DIR: &str = "sled-backup";
/// Written into the staged keyspace once its copy is complete and verified.
const DONE_MARK: &str = "converted-from-sled";
/// Entries copied per batch.
const COPY_CHUNK: usize = 4096;

/// Whether `dir` holds a sled database.
fn is_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Whether `dir` holds a fjall keyspace.
fn is_fjall(dir: &Path) -> bool {
    dir.join("version").is_file() && dir.join("journals").is_dir()
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

/// The sibling of `dir` called `name`.
fn beside(dir: &Path, name: &str) -> PathBuf {
    dir.with_file_name(name)
}

/// Where the new keyspace is built before it replaces the sled files.
fn staged(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    beside(dir, &format!("{name}.fjall-new"))
}

/// Refuses to open a fjall keyspace with the sled engine (sled would start an empty database
/// beside it).
pub(super) fn refuse_fjall_under_sled(dir: &Path) -> Result<()> {
    if is_fjall(dir) {
        return Err(StorageError::Unsupported(format!(
            "data directory {} holds a fjall store but [storage] backend = \"sled\"; \
             set backend = \"fjall\", or move the data with `oxpecker store export` under \
             fjall and `oxpecker store import` under sled",
            dir.display()
        )));
    }
    Ok(())
}

/// Converts the sled database in `dir` to fjall if there is one (see the module doc).
pub(super) fn sled_to_fjall(dir: &Path, cache_capacity_bytes: u64) -> Result<()> {
    let staged = staged(dir);
    let backup = beside(dir, SLED_BACKUP_DIR);
    if !dir.exists() && staged.join(DONE_MARK).is_file() {
        // Interrupted between moving the sled files aside and moving the new keyspace in.
        std::fs::rename(&staged, dir).map_err(|e| io("cannot move into place", &staged, e))?;
        tracing::warn!(path = %dir.display(), "finished an interrupted conversion from sled");
        return Ok(());
    }
    if !is_sled(dir) {
        return Ok(());
    }
    if backup.exists() {
        return Err(StorageError::Unsupported(format!(
            "data directory {} holds a sled store to convert to fjall, but {} already \
             exists; move it away and start again",
            dir.display(),
            backup.display()
        )));
    }
    if staged.exists() {
        // An earlier attempt stopped before its copy was complete.
        std::fs::remove_dir_all(&staged).map_err(|e| io("cannot remove", &staged, e))?;
    }
    tracing::info!(path = %dir.display(), "converting the sled store to fjall");
    let counts = copy(dir, &staged, cache_capacity_bytes)?;
    std::fs::write(staged.join(DONE_MARK), b"")
        .map_err(|e| io("cannot mark complete", &staged, e))?;
    sync_dir(&staged)?;
    std::fs::rename(dir, &backup).map_err(|e| io("cannot move aside", dir, e))?;
    std::fs::rename(&staged, dir).map_err(|e| io("cannot move into place", &staged, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    let entries: usize = counts.iter().map(|(_, n)| n).sum();
    tracing::info!(
        path = %dir.display(),
        backup = %backup.display(),
        entries,
        trees = ?counts,
        "converted the sled store to fjall; the sled files are kept in the backup directory"
    );
    Ok(())
}

/// Copies every tree of the sled database in `from` into a new keyspace in `to`, checks the
/// counts and syncs; returns the entries per tree.
fn copy(from: &Path, to: &Path, cache_capacity_bytes: u64) -> Result<Vec<(String, usize)>> {
    let sled = SledBackend::open(from, cache_capacity_bytes)?;
    let fjall = FjallBackend::open(to, cache_capacity_bytes)?;
    let mut counts = Vec::new();
    for tree in sled.tree_names() {
        let mut start = Vec::new();
        let mut copied = 0usize;
        loop {
            let chunk = sled.scan_range(&tree, &start, &[u8::MAX], false, Some(COPY_CHUNK))?;
            let Some((last, _)) = chunk.last() else {
                break;
            };
            start = [&last[..], &[0]].concat();
            copied = copied.saturating_add(chunk.len());
            fjall.apply(
                &tree,
                chunk.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            )?;
        }
        let (had, has) = (
            sled.count_prefix(&tree, b"")?,
            fjall.count_prefix(&tree, b"")?,
        );
        if had != copied || has != copied {
            return Err(StorageError::Corrupt(format!(
                "converting tree {tree} from sled: {had} entries read, {has} written; \
                 the sled files in {} are untouched",
                from.display()
            )));
        }
        counts.push((tree, copied));
    }
    // Ids handed out by sled stay taken.
    fjall.ensure_ids_above(sled.next_id()?)?;
    fjall.flush()?;
    Ok(counts)
}

/// Syncs a directory so that renames and new files in it survive a power loss.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::super::{ArchiveQuery, Store};
    use super::*;
    use serde_json::json;

    /// Writes accounts, a roster and an archive through a sled store.
    async fn fill_sled(dir: &Path) -> String {
        let store = Store::open_sled(dir, 1 << 20).unwrap();
        for user in ["alice", "bob"] {
            store
                .keyval("h", "accounts")
                .set(user, Some(json!({"name": user})))
                .await
                .unwrap();
        }
        store
            .map("h", "roster")
            .set("alice", "bob@h", Some(json!({"subscription": "both"})))
            .await
            .unwrap();
        let archive = store.archive("h", "archive");
        let mut last = String::new();
        for n in 0..100 {
            let with = if n % 2 == 0 { "bob@h" } else { "carol@h" };
            last = archive
                .append("alice", None, n, with, json!({"n": n}))
                .await
                .unwrap();
        }
        last
    }

    fn config() -> crate::config::StorageConfig {
        crate::config::StorageConfig {
            cache_capacity_mb: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sled_dir_is_converted_once_with_everything_in_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        let last = fill_sled(&dir).await;
        let store = Store::open_configured(&dir, &config()).unwrap();
        assert!(is_fjall(&dir) && is_sled(&root.path().join(SLED_BACKUP_DIR)));
        assert!(!staged(&dir).exists());
        let kv = store.keyval("h", "accounts");
        assert_eq!(kv.get("bob").await.unwrap(), Some(json!({"name": "bob"})));
        assert_eq!(
            store
                .map("h", "roster")
                .get("alice", "bob@h")
                .await
                .unwrap(),
            Some(json!({"subscription": "both"}))
        );
        let archive = store.archive("h", "archive");
        assert_eq!(archive.count("alice").await.unwrap(), 100);
        let q = ArchiveQuery {
            with: Some("bob@h".into()),
            total: true,
            ..Default::default()
        };
        let page = archive.find("alice", &q).await.unwrap();
        assert_eq!(page.total, Some(50));
        let q = ArchiveQuery {
            before: Some(last.clone()),
            limit: Some(1),
            reverse: true,
            ..Default::default()
        };
        let page = archive.find("alice", &q).await.unwrap();
        assert_eq!(page.items[0].value, json!({"n": 98}));
        // New ids sort after the converted ones.
        let id = archive
            .append("alice", None, 100, "bob@h", json!({"n": 100}))
            .await
            .unwrap();
        let page = archive
            .find("alice", &ArchiveQuery::default())
            .await
            .unwrap();
        assert_eq!(page.items.last().map(|i| i.id.clone()), Some(id));
        drop((kv, archive, store));
        // A second start opens the converted store as it is.
        let store = Store::open_configured(&dir, &config()).unwrap();
        assert_eq!(
            store.archive("h", "archive").count("alice").await.unwrap(),
            101
        );
    }

    #[tokio::test]
    async fn interrupted_conversions_resume() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        fill_sled(&dir).await;
        // A copy that stopped half way is thrown away and redone.
        std::fs::create_dir_all(staged(&dir).join("journals")).unwrap();
        drop(Store::open_configured(&dir, &config()).unwrap());
        // A conversion that stopped between its two renames is finished.
        std::fs::rename(&dir, staged(&dir)).unwrap();
        let store = Store::open_configured(&dir, &config()).unwrap();
        assert_eq!(
            store.archive("h", "archive").count("alice").await.unwrap(),
            100
        );
    }

    #[tokio::test]
    async fn refusals_name_the_way_out() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        drop(Store::open_configured(&dir, &config()).unwrap());
        let sled = crate::config::StorageConfig {
            backend: crate::config::StorageBackend::Sled,
            ..config()
        };
        let err = Store::open_configured(&dir, &sled).err().unwrap();
        assert!(err.to_string().contains("oxpecker store export"), "{err}");
        let other = root.path().join("other");
        fill_sled(&other).await;
        std::fs::create_dir_all(root.path().join(SLED_BACKUP_DIR)).unwrap();
        let err = Store::open_configured(&other, &config()).err().unwrap();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(is_sled(&other));
    }
}
