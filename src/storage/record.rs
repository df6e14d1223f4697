//! One stored record as a line of `oxpecker store export` has it; the importers build the same.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored record: a line of `oxpecker store export`, and what every importer writes.
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
