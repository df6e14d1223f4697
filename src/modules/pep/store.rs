//! Durable PEP state: map store [`STORE`] of the owner's host, keyed by the owner's node, with
//! one entry per node (configuration, item ids oldest first, affiliations), one per item, and
//! an index of node names. A change to a node and its items is one atomic `set_many`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::form::NodeConfig;
use crate::core::Core;
use crate::storage::{MapStore, StorageError};
use crate::xmpp::Element;
use crate::xmpp::Jid;
use crate::xmpp::parser::parse_element;

/// The map store holding PEP nodes and items (owner node → key → value).
pub const STORE: &str = "pep";
/// The key of an owner's list of node names.
pub const INDEX: &str = "index";

/// A JID's affiliation with a node (XEP-0060 §4.1), as the owner set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affiliation {
    /// May retrieve items (whitelist member).
    Member,
    /// May retrieve items (publishing stays with the owner on PEP).
    Publisher,
    /// Barred from the node whatever the access model.
    Outcast,
}

impl Affiliation {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Member => "member",
            Affiliation::Publisher => "publisher",
            Affiliation::Outcast => "outcast",
        }
    }

    /// Parses an attribute value (`none` and `owner` are not stored).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Affiliation::Member),
            "publisher" => Some(Affiliation::Publisher),
            "outcast" => Some(Affiliation::Outcast),
            _ => None,
        }
    }
}

/// A node as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    /// Its configuration.
    pub config: NodeConfig,
    /// Ids of the stored items, oldest first.
    pub items: Vec<String>,
    /// Affiliations other than the owner's (bare JID → affiliation).
    pub affiliations: BTreeMap<String, Affiliation>,
}

/// An item as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The payload, serialised.
    pub xml: String,
    /// When it was published (unix seconds).
    pub when: i64,
}

impl ItemRecord {
    /// The payload element (`None` if the stored XML is damaged).
    pub fn payload(&self) -> Option<Element> {
        parse_element(&self.xml).ok()
    }
}

/// One owner's PEP data.
pub struct Repo {
    map: MapStore,
    user: String,
}

/// The key of a node's record.
pub fn node_key(node: &str) -> String {
    format!("n:{node}")
}

/// The key of an item's record (the node's length first, so names and ids cannot collide).
pub fn item_key(node: &str, id: &str) -> String {
    format!("i:{}:{node}{id}", node.len())
}

fn decode<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, StorageError> {
    serde_json::from_value(v).map_err(|e| StorageError::Corrupt(format!("pep record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Value, StorageError> {
    serde_json::to_value(v).map_err(|e| StorageError::Io(format!("pep record: {e}")))
}

/// One change of a [`Repo::write`] batch.
pub enum Op {
    /// Writes (or with `None` deletes) a node record and updates the index.
    Node(String, Option<NodeRecord>),
    /// Writes (or with `None` deletes) an item.
    Item(String, String, Option<ItemRecord>),
}

impl Repo {
    /// The PEP data of `owner` (a local account's bare JID).
    pub fn new(core: &Core, owner: &Jid) -> Option<Repo> {
        Some(Repo {
            map: core.store.map(owner.domain(), STORE),
            user: owner.node()?.to_string(),
        })
    }

    /// Names of the owner's nodes.
    pub async fn index(&self) -> Result<Vec<String>, StorageError> {
        match self.map.get(&self.user, INDEX).await? {
            Some(v) => decode(v),
            None => Ok(Vec::new()),
        }
    }

    /// A node's record.
    pub async fn node(&self, node: &str) -> Result<Option<NodeRecord>, StorageError> {
        self.map
            .get(&self.user, &node_key(node))
            .await?
            .map(decode)
            .transpose()
    }

    /// An item of a node.
    pub async fn item(&self, node: &str, id: &str) -> Result<Option<ItemRecord>, StorageError> {
        self.map
            .get(&self.user, &item_key(node, id))
            .await?
            .map(decode)
            .transpose()
    }

    /// Applies `ops` atomically (and durably); node creations and deletions update the index.
    /// Callers hold the owner's lock.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut index = self.index().await?;
        let before = index.clone();
        let mut batch = Vec::with_capacity(ops.len() + 1);
        for op in ops {
            match op {
                Op::Node(node, rec) => {
                    match &rec {
                        Some(_) if !index.contains(&node) => index.push(node.clone()),
                        None => index.retain(|n| *n != node),
                        _ => {}
                    }
                    batch.push((node_key(&node), rec.as_ref().map(encode).transpose()?));
                }
                Op::Item(node, id, rec) => {
                    batch.push((item_key(&node, &id), rec.as_ref().map(encode).transpose()?));
                }
            }
        }
        if index != before {
            batch.push((INDEX.to_string(), Some(encode(&index)?)));
        }
        self.map.set_many(&self.user, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::Store;

    #[tokio::test]
    async fn nodes_items_and_index_round_trip() {
        let core = Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).unwrap();
        let owner = Jid::parse("alice@localhost").unwrap();
        let repo = Repo::new(&core, &owner).unwrap();
        let rec = NodeRecord {
            items: vec!["1".into()],
            ..NodeRecord::default()
        };
        let item = ItemRecord {
            xml: "<x xmlns='urn:a'/>".into(),
            when: 5,
        };
        repo.write(vec![
            Op::Node("n".into(), Some(rec.clone())),
            Op::Item("n".into(), "1".into(), Some(item.clone())),
        ])
        .await
        .unwrap();
        assert_eq!(repo.index().await.unwrap(), vec!["n"]);
        assert_eq!(repo.node("n").await.unwrap(), Some(rec));
        assert_eq!(repo.item("n", "1").await.unwrap(), Some(item));
        // "n1" + "" must not collide with "n" + "1".
        assert_eq!(repo.item("n1", "").await.unwrap(), None);
        repo.write(vec![
            Op::Node("n".into(), None),
            Op::Item("n".into(), "1".into(), None),
        ])
        .await
        .unwrap();
        assert!(repo.index().await.unwrap().is_empty());
        assert_eq!(repo.item("n", "1").await.unwrap(), None);
    }
}
