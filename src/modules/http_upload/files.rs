//! The files of one upload service: the bytes under `<data_dir>/http_upload/<service>/<slot>`,
//! written to `<slot>.part`, fsynced and renamed when complete (a crash never leaves a half
//! file served), and their records in the store — by slot (`http_upload_index`, what a
//! download needs) and by uploader (`http_upload_files`, for the quota and account deletion).

use std::path::PathBuf;
use std::sync::Weak;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::core::Core;
use crate::core::module_api::http::HttpBody;
use crate::storage::{KeyValStore, MapStore, StorageError};

/// The record of a stored file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The uploader's bare JID.
    pub owner: String,
    /// The file name from the slot request.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content type (empty = unknown).
    pub content_type: String,
    /// When it was stored (unix seconds).
    pub time: i64,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The slot was used already, or an upload to it is under way.
    #[error("slot already used")]
    Used,
    /// More bytes came than the slot allows.
    #[error("more bytes than the slot allows")]
    TooLarge,
    /// Fewer bytes came than the slot announced.
    #[error("the body ended before the announced size")]
    Incomplete,
    /// The client's body failed.
    #[error("request body: {0}")]
    Body(String),
    /// The disk failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The files of the service at `host`.
pub struct Files {
    /// Where the files live.
    pub dir: PathBuf,
    host: String,
    core: Weak<Core>,
}

impl Files {
    /// The files of service `host` under `dir`.
    pub fn new(core: Weak<Core>, host: &str, dir: PathBuf) -> Self {
        Files {
            dir,
            host: host.to_string(),
            core,
        }
    }

    fn stores(&self) -> Result<(KeyValStore, MapStore), StorageError> {
        let core = self
            .core
            .upgrade()
            .ok_or_else(|| StorageError::Io("server stopped".into()))?;
        Ok((
            core.store.keyval(&self.host, "http_upload_index"),
            core.store.map(&self.host, "http_upload_files"),
        ))
    }

    /// The path of slot `slot`'s file.
    pub fn path(&self, slot: &str) -> PathBuf {
        self.dir.join(slot)
    }

    /// The record of slot `slot`, if a file was stored there.
    pub async fn meta(&self, slot: &str) -> Result<Option<FileMeta>, StorageError> {
        let (index, _) = self.stores()?;
        Ok(index
            .get(slot)
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// The bytes `owner` stores.
    pub async fn usage(&self, owner: &str) -> Result<u64, StorageError> {
        let (_, by_owner) = self.stores()?;
        Ok(by_owner
            .get_all(owner)
            .await?
            .values()
            .filter_map(|v| v["size"].as_u64())
            .fold(0u64, u64::saturating_add))
    }

    /// Stores exactly `meta.size` bytes read from `body` as slot `slot` and records it.
    pub async fn store(
        &self,
        slot: &str,
        meta: &FileMeta,
        body: &mut HttpBody,
    ) -> Result<(), WriteError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let path = self.path(slot);
        if tokio::fs::try_exists(&path).await? || self.meta(slot).await?.is_some() {
            return Err(WriteError::Used);
        }
        let part = self.dir.join(format!("{slot}.part"));
        // `create_new` makes the part file the lock: one upload per slot at a time.
        let mut file = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(WriteError::Used);
            }
            Err(e) => return Err(e.into()),
        };
        let written = copy(&mut file, body, meta.size).await;
        let finished = match written {
            Ok(()) => file.sync_all().await.map_err(WriteError::from),
            Err(e) => Err(e),
        };
        drop(file);
        if let Err(e) = finished {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, &path).await?;
        if let Ok(dir) = tokio::fs::File::open(&self.dir).await {
            let _ = dir.sync_all().await;
        }
        let (index, by_owner) = self.stores()?;
        let value = serde_json::to_value(meta).map_err(|e| StorageError::Io(e.to_string()))?;
        by_owner
            .set(
                &meta.owner,
                slot,
                Some(serde_json::json!({ "size": meta.size, "time": meta.time })),
            )
            .await?;
        index.set(slot, Some(value)).await?;
        Ok(())
    }

    /// Removes slot `slot`'s file and records.
    pub async fn delete(&self, slot: &str) -> Result<(), StorageError> {
        let (index, by_owner) = self.stores()?;
        if let Some(meta) = self.meta(slot).await? {
            by_owner.set(&meta.owner, slot, None).await?;
        }
        remove(&self.path(slot)).await?;
        index.set(slot, None).await
    }

    /// Removes every file `owner` uploaded; returns how many.
    pub async fn delete_owner(&self, owner: &str) -> Result<usize, StorageError> {
        let (index, by_owner) = self.stores()?;
        let slots = by_owner.get_all(owner).await?;
        for slot in slots.keys() {
            remove(&self.path(slot)).await?;
            index.set(slot, None).await?;
        }
        by_owner.delete_user(owner).await?;
        Ok(slots.len())
    }

    /// Removes the files stored before `before` (unix seconds), and part files a crash left
    /// that are older than that; returns how many files went.
    pub async fn expire(&self, before: i64) -> Result<usize, StorageError> {
        let (index, _) = self.stores()?;
        let mut gone = 0;
        for slot in index.users().await? {
            if let Some(meta) = self.meta(&slot).await?
                && meta.time < before
            {
                self.delete(&slot).await?;
                gone += 1;
            }
        }
        if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
            while let Ok(Some(e)) = entries.next_entry().await {
                let stale = e.metadata().await.ok().and_then(|m| m.modified().ok());
                let stale = stale
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .is_some_and(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX) < before);
                if stale && e.file_name().to_string_lossy().ends_with(".part") {
                    let _ = tokio::fs::remove_file(e.path()).await;
                }
            }
        }
        Ok(gone)
    }
}

async fn copy(
    file: &mut tokio::fs::File,
    body: &mut HttpBody,
    size: u64,
) -> Result<(), WriteError> {
    let mut total: u64 = 0;
    while let Some(chunk) = body.chunk().await.map_err(|e| WriteError::Body(e.0))? {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        total = total.checked_add(len).ok_or(WriteError::TooLarge)?;
        if total > size {
            return Err(WriteError::TooLarge);
        }
        file.write_all(&chunk).await?;
    }
    if total != size {
        return Err(WriteError::Incomplete);
    }
    file.flush().await?;
    Ok(())
}

async fn remove(path: &std::path::Path) -> Result<(), StorageError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io(e.to_string())),
    }
}
