//! Writing imported accounts into a store: checked whole before anything is written (all or
//! nothing per account), written in batches through the JSON-lines importer (each batch one
//! backend batch per tree, account records last) with one flush per batch, repeatable (the
//! same input writes the same records again). Clear passwords are SASLprepped before hashing;
//! XEP-0048 bookmarks in private XML gain their XEP-0402 node
//! ([`super::pep::add_legacy_bookmarks`]).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::MigrateError;
use super::model::Record;
use crate::auth::Credentials;
use crate::core::accounts::{ACCOUNTS_STORE, AccountRecord, now};
use crate::storage::{StorageError, Store};

/// Accounts per write batch (one flush each).
const BATCH_ACCOUNTS: usize = 2000;
/// Bytes of JSON lines per write batch.
const BATCH_BYTES: usize = 8 << 20;

/// How an imported account logs in.
pub enum Secret {
    /// A complete Oxpecker account record (from an Oxpecker export).
    Stored(Value),
    /// SCRAM keys carried over as they are (Prosody, ejabberd, XEP-0227 `scram-credentials`).
    Keys(Credentials),
    /// A clear password (ejabberd's default storage); SASLprepped and hashed on import.
    Plain(String),
}

/// One account read from a source, not yet checked.
pub struct AccountImport {
    /// Its host.
    pub host: String,
    /// Its user name (node).
    pub user: String,
    /// How it logs in; `None` is an error.
    pub secret: Option<Secret>,
    /// Everything else it owns (roster, vCard, messages, …).
    pub records: Vec<Record>,
}

/// What an import wrote, or with `--check` would write.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Accounts imported.
    pub accounts: u64,
    /// Of those, accounts that existed already (their records were replaced key by key).
    pub existing: u64,
    /// Records imported besides the account records, by store.
    pub records: BTreeMap<String, u64>,
    /// Accounts and record sets that were not imported, each with its position and reason.
    pub errors: Vec<String>,
    /// Whether this was a dry run.
    pub check: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.check {
            "would import"
        } else {
            "imported"
        };
        let total: u64 = self.records.values().sum();
        write!(
            f,
            "{verb} {} accounts ({} existing) and {total} records",
            self.accounts, self.existing
        )?;
        if !self.records.is_empty() {
            let parts: Vec<String> = self
                .records
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        if !self.errors.is_empty() {
            write!(f, "; {} not imported:", self.errors.len())?;
            for e in &self.errors {
                write!(f, "\n  {e}")?;
            }
        }
        Ok(())
    }
}

/// Who imports: which hosts take accounts, how clear passwords are hashed, dry run or not.
#[derive(Clone, Debug)]
pub struct Options {
    /// The user hosts served (accounts of other hosts are refused).
    pub hosts: Vec<String>,
    /// PBKDF2 iterations for hashing clear passwords.
    pub iterations: u32,
    /// Dry run: check and count, write nothing.
    pub check: bool,
}

impl Options {
    /// Options for the hosts and iteration count of `cfg`.
    pub fn from_config(cfg: &crate::config::Config, check: bool) -> Options {
        Options {
            hosts: cfg.hosts.iter().map(|h| h.name.clone()).collect(),
            iterations: cfg.auth.scram_iterations,
            check,
        }
    }
}

/// Checks accounts and writes them in batches.
pub struct Importer {
    store: Store,
    opts: Options,
    batch: Vec<u8>,
    /// Last line number of each account in the batch, with the account's label.
    batch_accounts: Vec<(u64, String)>,
    batch_lines: u64,
    report: Report,
}

impl Importer {
    /// An importer into `store`.
    pub fn new(store: Store, opts: Options) -> Importer {
        let report = Report {
            check: opts.check,
            ..Report::default()
        };
        Importer {
            store,
            opts,
            batch: Vec::new(),
            batch_accounts: Vec::new(),
            batch_lines: 0,
            report,
        }
    }

    /// Checks one account and queues it (an error in it is reported, and skips only it);
    /// fails only when the store does.
    pub async fn account(
        &mut self,
        position: &str,
        acc: AccountImport,
    ) -> Result<(), MigrateError> {
        let label = format!("{}@{}", acc.user, acc.host);
        match self.prepare(acc).await {
            Ok((account, records, existed)) => {
                self.report.accounts += 1;
                self.report.existing += u64::from(existed);
                let mut lines = Vec::with_capacity(records.len() + 1);
                lines.push(account);
                lines.extend(records);
                self.queue(lines, label).await
            }
            Err(e) => {
                self.report.errors.push(format!("{position}: {label}: {e}"));
                Ok(())
            }
        }
    }

    /// Queues records that belong to no account (host-wide values, group chat rooms).
    pub async fn host_records(
        &mut self,
        position: &str,
        host: &str,
        records: Vec<Record>,
    ) -> Result<(), MigrateError> {
        if let Some(bad) = records.iter().find(|r| r.has_bad_name()) {
            let (_, store, user) = bad.owner();
            self.report.errors.push(format!(
                "{position}: {host}: record {store}/{user}: a name is empty or has NUL"
            ));
            return Ok(());
        }
        self.queue(records, format!("records of {host}")).await
    }

    /// Records an account or record set the reader could not take apart.
    pub fn reject(&mut self, problem: String) {
        self.report.errors.push(problem);
    }

    /// Writes what is queued and returns the report.
    pub async fn finish(mut self) -> Result<Report, MigrateError> {
        self.write_batch().await?;
        Ok(self.report)
    }

    /// Turns an account into its account record and other records, or says why not.
    async fn prepare(&self, acc: AccountImport) -> Result<(Record, Vec<Record>, bool), String> {
        if !self.opts.hosts.iter().any(|h| h == &acc.host) {
            return Err(format!("host {} is not served here", acc.host));
        }
        if let Some(bad) = acc
            .records
            .iter()
            .find(|r| r.has_bad_name() || r.owner().0 != acc.host || r.owner().2 != acc.user)
        {
            let (_, store, _) = bad.owner();
            return Err(format!(
                "a record of store {store} has a bad name or another owner"
            ));
        }
        let mut records = acc.records;
        if records
            .iter()
            .any(|r| r.owner().1 == crate::modules::private::STORE)
        {
            let stored_index: Vec<String> = self
                .store
                .map(&acc.host, crate::modules::pep::store::STORE)
                .get(&acc.user, crate::modules::pep::store::INDEX)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            super::pep::add_legacy_bookmarks(&mut records, &acc.host, &acc.user, &stored_index)?;
        }
        let existing: Option<AccountRecord> = self
            .store
            .keyval(&acc.host, ACCOUNTS_STORE)
            .get(&acc.user)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|v| serde_json::from_value(v).ok());
        let existed = existing.is_some();
        let value = match acc.secret {
            None => return Err("no credentials (no scram-credentials and no password)".into()),
            Some(Secret::Stored(v)) => {
                serde_json::from_value::<AccountRecord>(v.clone())
                    .map_err(|e| format!("account record: {e}"))?;
                v
            }
            Some(Secret::Keys(credentials)) => record_value(credentials, existing)?,
            // A dry run does not spend Argon2 on every account: nothing is written.
            Some(Secret::Plain(password)) if self.opts.check => {
                saslprep(&password)?;
                Value::Null
            }
            Some(Secret::Plain(password)) => {
                let password = saslprep(&password)?;
                let iterations = self.opts.iterations;
                let (credentials, existing) = tokio::task::spawn_blocking(move || match existing {
                    // Unchanged password: keep its hashes, so a repeated import changes nothing.
                    Some(rec) if rec.credentials.verify(&password) => {
                        Ok((rec.credentials.clone(), Some(rec)))
                    }
                    other => Credentials::new(&password, iterations).map(|c| (c, other)),
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                record_value(credentials, existing)?
            }
        };
        let account = Record::keyval(&acc.host, ACCOUNTS_STORE, &acc.user, value);
        Ok((account, records, existed))
    }

    async fn queue(&mut self, records: Vec<Record>, label: String) -> Result<(), MigrateError> {
        for r in records {
            let (_, store, _) = r.owner();
            if store != ACCOUNTS_STORE {
                *self.report.records.entry(store.to_string()).or_default() += 1;
            }
            if self.opts.check {
                continue;
            }
            serde_json::to_writer(&mut self.batch, &r)
                .map_err(|e| MigrateError::Io(e.to_string()))?;
            self.batch.push(b'\n');
            self.batch_lines += 1;
        }
        self.batch_accounts.push((self.batch_lines, label));
        if self.batch_accounts.len() >= BATCH_ACCOUNTS || self.batch.len() >= BATCH_BYTES {
            self.write_batch().await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self) -> Result<(), MigrateError> {
        let accounts = std::mem::take(&mut self.batch_accounts);
        self.batch_lines = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let store = self.store.clone();
        let written =
            tokio::task::spawn_blocking(move || crate::storage::import(&store, &batch[..]))
                .await
                .map_err(|e| MigrateError::Io(e.to_string()))?;
        match written {
            Ok(_) => Ok(()),
            Err(StorageError::Import { line, message }) => {
                let who = accounts
                    .iter()
                    .find(|(last, _)| *last >= line)
                    .map(|(_, l)| l.clone())
                    .unwrap_or_default();
                Err(MigrateError::Input {
                    position: format!("write batch line {line}"),
                    account: Some(who),
                    message: format!(
                        "{message} (this and later accounts of the batch may be incomplete; the import can be repeated)"
                    ),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A stored clear password as SASLprep (RFC 4013) prepares it, so the SCRAM keys made from it
/// match what clients derive from the same password; one SASLprep forbids is refused.
fn saslprep(password: &str) -> Result<String, String> {
    stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .map_err(|e| format!("the password is not allowed by SASLprep (RFC 4013): {e}"))
}

/// The account record for new credentials, keeping an existing account's creation time and role.
fn record_value(
    credentials: Credentials,
    existing: Option<AccountRecord>,
) -> Result<Value, String> {
    let (created, role) = existing.map_or((now(), None), |r| (r.created, r.role));
    serde_json::to_value(AccountRecord {
        v: 1,
        credentials,
        created,
        role,
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_passwords_are_saslprepped() {
        // Decomposed "ä" composes (NFKC), a non-ASCII space maps to a space, soft hyphen goes.
        assert_eq!(saslprep("pa\u{308}ssword").unwrap(), "p\u{e4}ssword");
        assert_eq!(saslprep("a\u{a0}b\u{ad}c").unwrap(), "a bc");
        assert_eq!(saslprep("plain ascii").unwrap(), "plain ascii");
        assert!(saslprep("bad\u{7}control").is_err());
    }
}
