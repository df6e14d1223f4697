//! What every migration reads and writes: stored records, as the JSON-lines dump has them,
//! grouped by host and account.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::MigrateError;
use crate::core::accounts::ACCOUNTS_STORE;
use crate::storage::Store;

/// One stored record; the same shape as a line of `oxpecker store export`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Record {
    /// A keyval store's value for one user.
    Keyval {
        /// The host.
        host: String,
        /// The store name.
        store: String,
        /// The user (node), empty for host-wide values.
        user: String,
        /// The value.
        value: Value,
    },
    /// One key of a user's map.
    Map {
        /// The host.
        host: String,
        /// The store name.
        store: String,
        /// The user (node).
        user: String,
        /// The map key.
        key: String,
        /// The value.
        value: Value,
    },
    /// One archived item.
    Archive {
        /// The host.
        host: String,
        /// The store name.
        store: String,
        /// The user (node).
        user: String,
        /// The item id.
        id: String,
        /// When, unix seconds.
        when: i64,
        /// The conversation partner.
        with: String,
        /// The payload.
        value: Value,
    },
}

impl Record {
    /// A keyval record.
    pub fn keyval(host: &str, store: &str, user: &str, value: Value) -> Record {
        Record::Keyval {
            host: host.into(),
            store: store.into(),
            user: user.into(),
            value,
        }
    }

    /// A map record.
    pub fn map(host: &str, store: &str, user: &str, key: &str, value: Value) -> Record {
        Record::Map {
            host: host.into(),
            store: store.into(),
            user: user.into(),
            key: key.into(),
            value,
        }
    }

    /// An archive record.
    pub fn archive(
        host: &str,
        store: &str,
        user: &str,
        id: &str,
        when: i64,
        with: &str,
        value: Value,
    ) -> Record {
        Record::Archive {
            host: host.into(),
            store: store.into(),
            user: user.into(),
            id: id.into(),
            when,
            with: with.into(),
            value,
        }
    }

    /// The host, store and user this record belongs to.
    pub fn owner(&self) -> (&str, &str, &str) {
        match self {
            Record::Keyval {
                host, store, user, ..
            }
            | Record::Map {
                host, store, user, ..
            }
            | Record::Archive {
                host, store, user, ..
            } => (host, store, user),
        }
    }

    /// Whether a name in this record could not be stored (storage keys are NUL-joined names).
    pub fn has_bad_name(&self) -> bool {
        let (h, s, u) = self.owner();
        let extra = match self {
            Record::Map { key, .. } => key.as_str(),
            Record::Archive { id, .. } => id.as_str(),
            Record::Keyval { .. } => "",
        };
        [h, s, u, extra].iter().any(|n| n.contains('\0')) || h.is_empty() || s.is_empty()
    }
}

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
