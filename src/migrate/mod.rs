//! Moving in and out: XEP-0227 (PIEFXIS) export and import ([`xep0227`]), and import from a
//! Prosody data directory ([`prosody`], with [`lua`] for its serialised tables, [`prosody_sql`]
//! for `prosody.sqlite`, [`prosody_muc`] for its group chat rooms; PEP in [`pep`]). Every source
//! becomes the same stored [`model::Record`]s, checked per account and written by
//! [`import::Importer`]. Run with the server stopped (the CLI's `store` and `import` commands).

pub mod import;
pub mod lua;
pub mod model;
pub mod pep;
pub mod prosody;
pub mod prosody_muc;
pub mod prosody_sql;
pub mod xep0227;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

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

/// Imports a XEP-0227 document; the file is parsed on a blocking thread while accounts are
/// written. `base` is the folder `<xi:include href='…'/>` files are read from (ejabberd writes
/// one file per host next to the main one); without it an include is an error.
pub async fn import_xep0227(
    store: &Store,
    opts: Options,
    input: impl BufRead + Send + 'static,
    base: Option<PathBuf>,
) -> Result<Report, MigrateError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, xep0227::Item)>(256);
    let reader = tokio::task::spawn_blocking(move || {
        let send = |pos: String, item| {
            tx.blocking_send((pos, item))
                .map_err(|_| MigrateError::Io("the importer stopped".into()))
        };
        xep0227::read(input, |pos, item| match item {
            xep0227::Item::Include(href) => {
                let path = include_path(base.as_deref(), &href)?;
                let file = std::fs::File::open(&path)
                    .map_err(|e| MigrateError::Io(format!("{}: {e}", path.display())))?;
                xep0227::read(std::io::BufReader::new(file), |pos, item| match item {
                    xep0227::Item::Include(_) => Err(MigrateError::Input {
                        position: format!("{}: byte {pos}", path.display()),
                        account: None,
                        message: "an included file includes another".into(),
                    }),
                    item => send(format!("{}: byte {pos}", path.display()), item),
                })
            }
            item => send(format!("byte {pos}"), item),
        })
    });
    let mut importer = Importer::new(store.clone(), opts);
    let mut failed = None;
    while let Some((position, item)) = rx.recv().await {
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
            xep0227::Item::Include(_) => Ok(()),
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

/// Where an included file is: a relative path below `base`, never outside it.
fn include_path(base: Option<&Path>, href: &str) -> Result<PathBuf, MigrateError> {
    let bad = |m: &str| MigrateError::Input {
        position: format!("<xi:include href='{href}'/>"),
        account: None,
        message: m.into(),
    };
    let base =
        base.ok_or_else(|| bad("includes need the document's folder (read it from a file)"))?;
    let rel = Path::new(href);
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad(
            "only relative paths below the document's folder are included",
        ));
    }
    Ok(base.join(rel))
}

/// Imports a Prosody data directory (its `internal` files and, if present, `prosody.sqlite`).
pub async fn import_prosody(
    store: &Store,
    opts: Options,
    data_dir: &Path,
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
