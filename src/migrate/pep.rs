//! PEP nodes as stored records (the `pep` map store of [`crate::modules::pep::store`]): nodes
//! read from another server, and XEP-0048 bookmarks kept in private XML turned into the
//! XEP-0402 node `urn:xmpp:bookmarks:1` (one item per conference), as the `bookmarks` module
//! serves them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::Record;
use crate::modules::pep::form::NodeConfig;
use crate::modules::pep::store::{self, Affiliation, ItemRecord, NodeRecord};
use crate::modules::{bookmarks, pep, private};
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, ns};

/// The server's item limit an imported node's `max_items` is checked against.
pub const SERVER_MAX_ITEMS: u32 = pep::DEFAULT_MAX_ITEMS as u32;

/// One imported node with its items.
#[derive(Debug, Default)]
pub struct Node {
    /// The node name.
    pub name: String,
    /// Its configuration.
    pub config: NodeConfig,
    /// Affiliations other than the owner's.
    pub affiliations: BTreeMap<String, Affiliation>,
    /// Items oldest first: id, payload, when (unix seconds).
    pub items: Vec<(String, Element, i64)>,
}

/// The records of `user`'s nodes: one per node, one per item (only the newest the node keeps),
/// and the index of node names. An item id seen twice keeps its last payload.
pub fn records(host: &str, user: &str, nodes: Vec<Node>) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut index = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut items: Vec<(String, Element, i64)> = Vec::with_capacity(node.items.len());
        for item in node.items {
            items.retain(|(id, _, _)| *id != item.0);
            items.push(item);
        }
        let keep = node.config.effective_max(SERVER_MAX_ITEMS) as usize;
        let skip = items.len().saturating_sub(keep);
        let items: Vec<_> = items.into_iter().skip(skip).collect();
        let rec = NodeRecord {
            config: node.config,
            items: items.iter().map(|(id, _, _)| id.clone()).collect(),
            affiliations: node.affiliations,
        };
        out.push(Record::map(
            host,
            store::STORE,
            user,
            &store::node_key(&node.name),
            to_value(&rec)?,
        ));
        for (id, payload, when) in items {
            let item = ItemRecord {
                xml: payload.to_xml(""),
                when,
            };
            out.push(Record::map(
                host,
                store::STORE,
                user,
                &store::item_key(&node.name, &id),
                to_value(&item)?,
            ));
        }
        if !index.contains(&node.name) {
            index.push(node.name);
        }
    }
    if !index.is_empty() {
        out.push(Record::map(
            host,
            store::STORE,
            user,
            store::INDEX,
            to_value(&index)?,
        ));
    }
    Ok(out)
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("pep record: {e}"))
}

/// When an account brings XEP-0048 bookmarks in private XML and no `urn:xmpp:bookmarks:1`
/// node, adds that node with one item per valid conference (the private copy stays, for its
/// `<url/>` entries), and the node to the account's PEP index. `stored_index` is the index the
/// store already holds for the account, kept in the new one. Returns whether it added the node.
pub fn add_legacy_bookmarks(
    records: &mut Vec<Record>,
    host: &str,
    user: &str,
    stored_index: &[String],
) -> Result<bool, String> {
    let node_key = store::node_key(ns::BOOKMARKS2);
    let is_pep = |r: &Record, key: &str| matches!(r, Record::Map { store: s, key: k, .. } if s == store::STORE && k == key);
    if records.iter().any(|r| is_pep(r, &node_key)) {
        return Ok(false);
    }
    let Some(storage) = records.iter().find_map(|r| match r {
        Record::Map {
            store, key, value, ..
        } if store == private::STORE && key == ns::BOOKMARKS => value
            .get("xml")
            .and_then(Value::as_str)
            .and_then(|x| parse_element(x).ok())
            .filter(|s| s.is("storage", ns::BOOKMARKS)),
        _ => None,
    }) else {
        return Ok(false);
    };
    let items: Vec<(String, Element, i64)> = storage
        .children()
        .filter(|c| c.is("conference", ns::BOOKMARKS))
        .filter_map(|c| bookmarks::from_legacy(c, None))
        .map(|(jid, payload)| (jid, payload, 0))
        .collect();
    if items.is_empty() {
        return Ok(false);
    }
    let mut config = NodeConfig::default();
    config
        .apply(&bookmarks::node_options(), SERVER_MAX_ITEMS, false)
        .map_err(|e| format!("bookmarks node options: {e}"))?;
    let node = Node {
        name: ns::BOOKMARKS2.to_string(),
        config,
        affiliations: BTreeMap::new(),
        items,
    };
    // The account's index: the one imported with it, else the stored one, plus the new node.
    let mut index: Vec<String> = match records.iter().position(|r| is_pep(r, store::INDEX)) {
        Some(i) => match records.remove(i) {
            Record::Map { value, .. } => serde_json::from_value(value)
                .map_err(|e| format!("the PEP index of the account: {e}"))?,
            _ => Vec::new(),
        },
        None => stored_index.to_vec(),
    };
    let mut added = self::records(host, user, vec![node])?;
    added.retain(|r| !is_pep(r, store::INDEX));
    if !index.iter().any(|n| n == ns::BOOKMARKS2) {
        index.push(ns::BOOKMARKS2.to_string());
    }
    added.push(Record::map(
        host,
        store::STORE,
        user,
        store::INDEX,
        to_value(&index)?,
    ));
    records.extend(added);
    Ok(true)
}

/// The standard XEP-0227 elements for an account's PEP records (other servers read them):
/// `<pubsub xmlns='…pubsub'>` with each node's items, oldest first, and
/// `<pubsub xmlns='…pubsub#owner'>` with each node's configuration. Empty without nodes.
pub fn standard_elements(records: &[Record]) -> Vec<Element> {
    let mut nodes: Vec<(String, NodeRecord)> = Vec::new();
    let mut items: BTreeMap<String, ItemRecord> = BTreeMap::new();
    for r in records {
        let Record::Map {
            store: s,
            key,
            value,
            ..
        } = r
        else {
            continue;
        };
        if s != store::STORE {
            continue;
        }
        if let Some(name) = key.strip_prefix("n:") {
            if let Ok(rec) = serde_json::from_value::<NodeRecord>(value.clone()) {
                nodes.push((name.to_string(), rec));
            }
        } else if key.starts_with("i:")
            && let Ok(item) = serde_json::from_value::<ItemRecord>(value.clone())
        {
            items.insert(key.clone(), item);
        }
    }
    if nodes.is_empty() {
        return Vec::new();
    }
    let mut pubsub = Element::new("pubsub", ns::PUBSUB);
    let mut owner = Element::new("pubsub", ns::PUBSUB_OWNER);
    for (name, rec) in &nodes {
        let mut list = Element::new("items", ns::PUBSUB).attr("node", name.clone());
        for id in &rec.items {
            if let Some(payload) = items
                .get(&store::item_key(name, id))
                .and_then(ItemRecord::payload)
            {
                list.push(
                    Element::new("item", ns::PUBSUB)
                        .attr("id", id.clone())
                        .child(payload),
                );
            }
        }
        pubsub.push(list);
        let mut form = rec.config.to_form();
        form.set_attr("type", Some("submit".to_string()));
        owner.push(
            Element::new("configure", ns::PUBSUB_OWNER)
                .attr("node", name.clone())
                .child(form),
        );
    }
    vec![pubsub, owner]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn legacy(xml: &str) -> Record {
        Record::map(
            "h",
            private::STORE,
            "a",
            ns::BOOKMARKS,
            json!({ "xml": xml }),
        )
    }

    fn pep_value<'a>(records: &'a [Record], key: &str) -> Option<&'a Value> {
        records.iter().find_map(|r| match r {
            Record::Map {
                store: s,
                key: k,
                value,
                ..
            } if s == store::STORE && k == key => Some(value),
            _ => None,
        })
    }

    #[test]
    fn legacy_bookmarks_become_one_item_per_conference() {
        let mut recs = vec![legacy(
            "<storage xmlns='storage:bookmarks'><conference jid='Room@Conf.h/nick' name='R' autojoin='1'><nick>al</nick></conference><conference jid='bad@@'/><url url='http://x'/></storage>",
        )];
        let added = add_legacy_bookmarks(&mut recs, "h", "a", &["other".into()]).unwrap();
        assert!(added);
        let node: NodeRecord =
            serde_json::from_value(pep_value(&recs, "n:urn:xmpp:bookmarks:1").unwrap().clone())
                .unwrap();
        assert_eq!(node.items, vec!["room@conf.h"]);
        assert_eq!(node.config.max_items, None);
        assert_eq!(
            node.config.access_model,
            crate::modules::pep::form::AccessModel::Whitelist
        );
        let item: ItemRecord = serde_json::from_value(
            pep_value(&recs, &store::item_key(ns::BOOKMARKS2, "room@conf.h"))
                .unwrap()
                .clone(),
        )
        .unwrap();
        let payload = item.payload().unwrap();
        assert!(payload.is("conference", ns::BOOKMARKS2));
        assert_eq!(payload.get_attr("autojoin"), Some("true"));
        assert_eq!(
            payload
                .get_child("nick", ns::BOOKMARKS2)
                .map(|n| n.text_content()),
            Some("al".into())
        );
        assert_eq!(
            pep_value(&recs, store::INDEX),
            Some(&json!(["other", ns::BOOKMARKS2]))
        );
        // The private copy stays; a second pass (the node is there now) adds nothing.
        assert!(recs.iter().any(|r| r == &recs[0]) && recs.len() == 4);
        assert!(!add_legacy_bookmarks(&mut recs, "h", "a", &[]).unwrap());
        assert_eq!(recs.len(), 4);
    }

    #[test]
    fn standard_elements_read_back_as_the_same_records() {
        let config = NodeConfig {
            max_items: Some(10),
            access_model: crate::modules::pep::form::AccessModel::Open,
            ..NodeConfig::default()
        };
        let node = Node {
            name: "urn:x".into(),
            config,
            items: vec![
                ("1".into(), Element::new("a", "urn:p").text("one"), 0),
                ("2".into(), Element::new("b", "urn:p"), 0),
            ],
            ..Node::default()
        };
        let recs = records("h", "u", vec![node]).unwrap();
        let els = standard_elements(&recs);
        assert_eq!(els.len(), 2);
        let mut user = Element::new("user", ns::PIE).attr("name", "u");
        for e in els {
            user.push(e);
        }
        let back = crate::migrate::xep0227::read_user("h", &user).unwrap();
        assert_eq!(back.records, recs);
    }

    #[test]
    fn nodes_keep_their_newest_items_and_join_an_imported_index() {
        let item = |id: &str, t: i64| {
            (
                id.to_string(),
                Element::new("nick", "http://jabber.org/protocol/nick").text(id),
                t,
            )
        };
        let node = Node {
            name: "http://jabber.org/protocol/nick".into(),
            items: vec![item("a", 1), item("b", 2), item("a", 3)],
            ..Node::default()
        };
        let mut recs = records("h", "u", vec![node]).unwrap();
        // max_items 1 (the default): only the newest, the second "a".
        let key = store::node_key("http://jabber.org/protocol/nick");
        let n: NodeRecord =
            serde_json::from_value(pep_value(&recs, &key).unwrap().clone()).unwrap();
        assert_eq!(n.items, vec!["a"]);
        assert_eq!(recs.len(), 3);
        // No bookmarks without a conference; with one, the index imported with it grows.
        recs.push(legacy("<storage xmlns='storage:bookmarks'/>"));
        assert!(!add_legacy_bookmarks(&mut recs, "h", "u", &[]).unwrap());
        recs.pop();
        recs.push(legacy(
            "<storage xmlns='storage:bookmarks'><conference jid='r@c'/></storage>",
        ));
        assert!(add_legacy_bookmarks(&mut recs, "h", "u", &["stale".into()]).unwrap());
        assert_eq!(
            pep_value(&recs, store::INDEX),
            Some(&json!(["http://jabber.org/protocol/nick", ns::BOOKMARKS2]))
        );
    }
}
