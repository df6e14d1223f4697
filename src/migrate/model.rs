//! What every migration reads and writes: stored records, as the JSON-lines dump has them,
//! grouped by host and account.

use std::collections::BTreeMap;

use super::MigrateError;
use crate::core::accounts::ACCOUNTS_STORE;
pub use crate::storage::Record;
use crate::storage::Store;

/// The records of one host: per account (a user with an `accounts` record), and the rest.
#[derive(Debug, Default)]
pub struct HostData {
    /// Account name → its records (the account record included).
    pub accounts: BTreeMap<String, Vec<Record>>,
    /// Records of users without an account (host-wide values, rooms of a component).
    pub other: Vec<Record>,
}

/// A whole store, grouped by host.
#[derive(Debug, Default)]
pub struct Dump {
    /// Host → its records.
    pub hosts: BTreeMap<String, HostData>,
}

impl Dump {
    /// Groups records by host and account.
    pub fn from_records(records: Vec<Record>) -> Dump {
        let mut accounts: BTreeMap<(String, String), ()> = BTreeMap::new();
        for r in &records {
            if let Record::Keyval {
                host, store, user, ..
            } = r
                && store == ACCOUNTS_STORE
            {
                accounts.insert((host.clone(), user.clone()), ());
            }
        }
        let mut dump = Dump::default();
        for r in records {
            let (host, _, user) = r.owner();
            let key = (host.to_string(), user.to_string());
            let entry = dump.hosts.entry(key.0.clone()).or_default();
            if accounts.contains_key(&key) {
                entry.accounts.entry(key.1).or_default().push(r);
            } else {
                entry.other.push(r);
            }
        }
        dump
    }

    /// Reads a whole store through its JSON-lines export (blocking).
    pub fn read(store: &Store) -> Result<Dump, MigrateError> {
        let mut buf = Vec::new();
        crate::storage::export(store, &mut buf)?;
        let mut records = Vec::new();
        for (n, line) in buf.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let r: Record = serde_json::from_slice(line).map_err(|e| {
                MigrateError::Storage(crate::storage::StorageError::Corrupt(format!(
                    "export line {}: {e}",
                    n + 1
                )))
            })?;
            records.push(r);
        }
        Ok(Dump::from_records(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_by_account_and_serialises_like_the_dump() {
        let recs = vec![
            Record::keyval("h", ACCOUNTS_STORE, "a", json!({"v": 1})),
            Record::map("h", "roster", "a", "b@h", json!({"jid": "b@h"})),
            Record::keyval("h", "motd", "", json!("hi")),
            Record::archive("c.h", "muc_log", "room", "1", 5, "x", json!({})),
        ];
        let line = serde_json::to_string(&recs[1]).unwrap();
        assert_eq!(
            line,
            r#"{"kind":"map","host":"h","store":"roster","user":"a","key":"b@h","value":{"jid":"b@h"}}"#
        );
        let d = Dump::from_records(recs);
        assert_eq!(d.hosts["h"].accounts["a"].len(), 2);
        assert_eq!(d.hosts["h"].other.len(), 1);
        assert_eq!(d.hosts["c.h"].other.len(), 1);
        assert!(Record::keyval("h", "s", "a\0b", json!(1)).has_bad_name());
        assert!(!Record::keyval("h", "s", "", json!(1)).has_bad_name());
    }
}
