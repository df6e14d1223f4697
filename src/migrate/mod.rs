//! Moving in and out: XEP-0227 (PIEFXIS) export and import ([`xep0227`]), and import from a
//! Prosody data directory ([`prosody`], with [`lua`] for its serialised tables). Every source
//! becomes the same stored [`model::Record`]s, checked per account and written by
//! [`import::Importer`]. Run with the server stopped (the CLI's `store` and `import` commands).

pub mod import;
pub mod lua;
pub mod model;
pub mod prosody;
pub mod xep0227;

use std::io::{BufRead, Write};

pub use import::{AccountImport, Importer, Options, Report, Secret};
pub use model::{Dump, Record};

use crate::storage::{StorageError, Store};

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading or writing a file failed.
    #[error("i/o: {0}")]
    Io(String),
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The input is malformed at `position` (and belongs to `account`, when known).
    #[error("{position}: {}{message}", account.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Input {
        /// Where: a byte offset, a file, a line.
        position: String,
        /// The account concerned.
        account: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// Writes the whole store as a XEP-0227 document (blocking); returns the number of accounts.
pub fn export_xep0227(store: &Store, out: impl Write) -> Result<u64, MigrateError> {
    xep0227::write(&Dump::read(store)?, out)
}

/// Imports a XEP-0227 document; the file is parsed on a blocking thread while accounts are written.
pub async fn import_xep0227(
    store: &Store,
    opts: Options,
    input: impl BufRead + Send + 'static,
) -> Result<Report, MigrateError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, xep0227::Item)>(256);
    let reader = tokio::task::spawn_blocking(move || {
        xep0227::read(input, |pos, item| {
            tx.blocking_send((pos, item))
                .map_err(|_| MigrateError::Io("the importer stopped".into()))
        })
    });
    let mut importer = Importer::new(store.clone(), opts);
    let mut failed = None;
    while let Some((pos, item)) = rx.recv().await {
        let position = format!("byte {pos}");
        let step = match item {
            xep0227::Item::User(host, el) => match xep0227::read_user(&host, &el) {
                Ok(acc) => importer.account(&position, acc).await,
                Err(message) => {
                    let name = el.get_attr("name").unwrap_or("?");
                    importer.reject(format!("{position}: {name}@{host}: {message}"));
                    Ok(())
                }
            },
            xep0227::Item::HostRecords(host, el) => match xep0227::read_host_records(&host, &el) {
                Ok(records) => importer.host_records(&position, &host, records).await,
                Err(message) => {
                    importer.reject(format!("{position}: records of {host}: {message}"));
                    Ok(())
                }
            },
        };
        if let Err(e) = step {
            failed = Some(e);
            break;
        }
    }
    drop(rx);
    if let Some(e) = failed {
        return Err(e);
    }
    reader
        .await
        .map_err(|e| MigrateError::Io(format!("reader task: {e}")))??;
    importer.finish().await
}

/// Imports a Prosody data directory (its `internal` files and, if present, `prosody.sqlite`).
pub async fn import_prosody(
    store: &Store,
    opts: Options,
    data_dir: &std::path::Path,
) -> Result<Report, MigrateError> {
    let source = prosody::read_dir(data_dir)?;
    let mut importer = Importer::new(store.clone(), opts);
    for problem in source.errors {
        importer.reject(problem);
    }
    for (position, acc) in source.accounts {
        importer.account(&position, acc).await?;
    }
    for (position, host, records) in source.host_records {
        importer.host_records(&position, &host, records).await?;
    }
    importer.finish().await
}
