//! XEP-0227 (PIEFXIS) files: writing a store as one, and reading one account at a time.
//!
//! Standard elements carry what other servers understand: `scram-credentials` (and a clear
//! `password` attribute from ejabberd), the roster (pending inbound requests as Prosody writes
//! them, `<presence type='subscribe'/>` in the user), the vCard, private XML, offline messages,
//! the blocking list, MAM archives (`urn:xmpp:pie:0#mam`) and PEP nodes (`pubsub` items and
//! `pubsub#owner` configuration, also read from other servers' files). Everything else — and any record
//! a standard element would not give back exactly — travels in an Oxpecker extension element
//! `<records xmlns='urn:oxpecker:pie:0'>` holding the stored JSON, so that export → import is
//! lossless. Offline and archived messages carry a `<stored xmlns='urn:oxpecker:pie:0'/>`
//! child with their id, time and partner; other importers ignore it.

use std::io::{BufRead, Write};

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::MigrateError;
use super::import::{AccountImport, Secret};
use super::model::{Dump, Record};
use crate::auth::credentials::ScramKeys;
use crate::auth::{ScramHash, decode_b64, encode_b64};
use crate::core::accounts::ACCOUNTS_STORE;
use crate::core::roster::{self, RosterItem, Subscription};
use crate::modules::{blocking, mam, offline, private, vcard};
use crate::xmpp::element::Node;
use crate::xmpp::{Element, Jid, datetime, ns};

/// XInclude, with which ejabberd's export puts each host in a file of its own.
const XINCLUDE: &str = "http://www.w3.org/2001/XInclude";
/// Deepest element nesting accepted inside a file.
const MAX_DEPTH: usize = 64;

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes `dump` as a XEP-0227 document; returns the number of accounts written.
pub fn write(dump: &Dump, mut out: impl Write) -> Result<u64, MigrateError> {
    let io = |e: std::io::Error| MigrateError::Io(e.to_string());
    let mut n = 0u64;
    out.write_all(b"<?xml version='1.0' encoding='UTF-8'?>\n")
        .map_err(io)?;
    out.write_all(format!("<server-data xmlns=\"{}\">\n", ns::PIE).as_bytes())
        .map_err(io)?;
    for (host, data) in &dump.hosts {
        let mut buf = String::new();
        buf.push_str("<host jid=\"");
        crate::xmpp::element::escape_into(&mut buf, host, true);
        buf.push_str("\">\n");
        for (user, records) in &data.accounts {
            user_element(user, records).write_xml(&mut buf, ns::PIE);
            buf.push('\n');
            n += 1;
            if buf.len() > 1 << 16 {
                out.write_all(buf.as_bytes()).map_err(io)?;
                buf.clear();
            }
        }
        if !data.other.is_empty() {
            let mut el = Element::new("records", ns::PIE_OXPECKER);
            for r in &data.other {
                el.push(record_element(r, true));
            }
            el.write_xml(&mut buf, ns::PIE);
            buf.push('\n');
        }
        buf.push_str("</host>\n");
        out.write_all(buf.as_bytes()).map_err(io)?;
    }
    out.write_all(b"</server-data>\n").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(n)
}

/// The `<user/>` element of one account.
pub fn user_element(user: &str, records: &[Record]) -> Element {
    let mut el = Element::new("user", ns::PIE).attr("name", user);
    let mut roster_q = Element::new("query", ns::ROSTER);
    let mut private_q = Element::new("query", ns::PRIVATE);
    let mut offline_el = Element::new("offline-messages", ns::PIE);
    let mut blocklist = Element::new("blocklist", ns::BLOCKING);
    let mut archive = Element::new("archive", ns::PIE_MAM);
    let mut vcard_el = None;
    let mut pending = Vec::new();
    let mut extra = Element::new("records", ns::PIE_OXPECKER);
    let mut index = 0usize;
    for r in records {
        let (host, store, _) = r.owner();
        index += 1;
        if let Record::Keyval { value, .. } = r
            && store == ACCOUNTS_STORE
        {
            for sc in scram_elements(value) {
                el.push(sc);
            }
            extra.push(record_element(r, false));
            continue;
        }
        let standard = match standard_element(r) {
            // Only if reading it back gives exactly this record.
            Some(s) if standard_record(host, user, &s, index).as_ref() == Some(r) => Some(s),
            _ => None,
        };
        match (store, standard) {
            (roster::ITEMS, Some(s)) => roster_q.push(s),
            (roster::PENDING, Some(s)) => pending.push(s),
            (private::STORE, Some(s)) => private_q.push(s),
            (blocking::STORE, Some(s)) => blocklist.push(s),
            (offline::STORE, Some(s)) => offline_el.push(s),
            (mam::STORE, Some(s)) => archive.push(s),
            (vcard::STORE, Some(s)) => vcard_el = Some(s),
            _ => extra.push(record_element(r, false)),
        }
    }
    for section in [roster_q, blocklist, private_q, offline_el, archive] {
        if section.children().next().is_some() {
            el.push(section);
        }
    }
    for p in pending {
        el.push(p);
    }
    if let Some(v) = vcard_el {
        el.push(v);
    }
    // PEP nodes also as XEP-0227 has them, for other servers; the records stay exact.
    for pep in super::pep::standard_elements(records) {
        el.push(pep);
    }
    if extra.children().next().is_some() {
        el.push(extra);
    }
    el
}

/// `scram-credentials` elements for the SCRAM keys in an account record.
fn scram_elements(record: &Value) -> Vec<Element> {
    let mut out = Vec::new();
    for (field, hash) in [
        ("scram_sha1", ScramHash::Sha1),
        ("scram_sha256", ScramHash::Sha256),
    ] {
        let Some(keys) = record["credentials"]
            .get(field)
            .and_then(|k| serde_json::from_value::<ScramKeys>(k.clone()).ok())
        else {
            continue;
        };
        if !keys.is_valid_for(hash) {
            continue;
        }
        let text = |name: &str, t: String| Element::new(name, ns::PIE_SCRAM).text(t);
        out.push(
            Element::new("scram-credentials", ns::PIE_SCRAM)
                .attr("mechanism", hash.mechanism_name())
                .child(text("iter-count", keys.iterations.to_string()))
                .child(text("salt", encode_b64(&keys.salt)))
                .child(text("server-key", encode_b64(&keys.server_key)))
                .child(text("stored-key", encode_b64(&keys.stored_key))),
        );
    }
    out
}

/// An Oxpecker `<keyval/>`, `<map/>` or `<archive/>` record element (with `user` if asked).
fn record_element(r: &Record, with_user: bool) -> Element {
    let (_, store, user) = r.owner();
    let (mut el, value) = match r {
        Record::Keyval { value, .. } => (Element::new("keyval", ns::PIE_OXPECKER), value),
        Record::Map { key, value, .. } => (
            Element::new("map", ns::PIE_OXPECKER).attr("key", key.clone()),
            value,
        ),
        Record::Archive {
            id,
            when,
            with,
            value,
            ..
        } => (
            Element::new("archive", ns::PIE_OXPECKER)
                .attr("id", id.clone())
                .attr("when", when.to_string())
                .attr("with", with.clone()),
            value,
        ),
    };
    el.set_attr("store", Some(store.to_string()));
    if with_user {
        el.set_attr("user", Some(user.to_string()));
    }
    el.text(value.to_string())
}

/// The standard element for a record of a store XEP-0227 describes, if it has that shape.
fn standard_element(r: &Record) -> Option<Element> {
    let xml_of = |v: &Value| {
        v.get("xml")
            .and_then(Value::as_str)
            .and_then(|x| crate::xmpp::parser::parse_element(x).ok())
    };
    match r {
        Record::Map {
            store, key, value, ..
        } => match store.as_str() {
            // A pending inbound request: Prosody writes it as a `<presence type='subscribe'/>`.
            roster::PENDING => value
                .as_str()
                .and_then(|x| crate::xmpp::parser::parse_element(x).ok())
                .filter(|p| p.is("presence", ns::CLIENT)),
            roster::ITEMS => serde_json::from_value::<RosterItem>(value.clone())
                .ok()
                .filter(|i| &i.jid == key)
                .map(|i| i.to_element()),
            private::STORE => xml_of(value),
            blocking::STORE if value == &Value::Bool(true) => {
                Some(Element::new("item", ns::BLOCKING).attr("jid", key.clone()))
            }
            _ => None,
        },
        Record::Keyval { store, value, .. } if store == vcard::STORE => xml_of(value),
        Record::Archive {
            store,
            id,
            when,
            with,
            value,
            ..
        } => {
            let mut msg = xml_of(value)?;
            let mut rest = value.as_object()?.clone();
            rest.remove("xml");
            let mut stored = Element::new("stored", ns::PIE_OXPECKER)
                .attr("when", when.to_string())
                .attr("with", with.clone());
            if !rest.is_empty() {
                stored.push_text(Value::Object(rest).to_string());
            }
            match store.as_str() {
                offline::STORE => {
                    msg.push(stored.attr("id", id.clone()));
                    Some(msg)
                }
                mam::STORE => {
                    let forwarded = Element::new("forwarded", ns::FORWARD)
                        .child(
                            Element::new("delay", ns::DELAY).attr("stamp", datetime::format(*when)),
                        )
                        .child(msg);
                    Some(
                        Element::new("result", ns::MAM)
                            .attr("id", id.clone())
                            .child(forwarded)
                            .child(stored),
                    )
                }
                _ => None,
            }
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading: standard elements back into records

/// The record a standard element stands for (`index` makes ids for messages without one).
fn standard_record(host: &str, user: &str, el: &Element, index: usize) -> Option<Record> {
    if el.is("item", ns::ROSTER) {
        return roster_record(host, user, el).ok();
    }
    if el.is("item", ns::BLOCKING) {
        let jid = Jid::parse(el.get_attr("jid")?).ok()?;
        return Some(Record::map(
            host,
            blocking::STORE,
            user,
            jid.as_str(),
            Value::Bool(true),
        ));
    }
    if el.is("presence", ns::CLIENT) && el.get_attr("type") == Some("subscribe") {
        let from = Jid::parse(el.get_attr("from")?).ok()?.bare();
        return Some(Record::map(
            host,
            roster::PENDING,
            user,
            from.as_str(),
            Value::String(el.to_xml(ns::CLIENT)),
        ));
    }
    if el.is("vCard", ns::VCARD) {
        return Some(Record::keyval(
            host,
            vcard::STORE,
            user,
            json!({ "xml": el.to_xml("") }),
        ));
    }
    if el.is("message", ns::CLIENT) {
        return Some(message_record(
            host,
            user,
            offline::STORE,
            el.clone(),
            None,
            index,
        ));
    }
    if el.is("result", ns::MAM) {
        let fwd = el.get_child("forwarded", ns::FORWARD)?;
        let mut msg = fwd.get_child("message", ns::CLIENT)?.clone();
        if let Some(s) = el.get_child("stored", ns::PIE_OXPECKER) {
            msg.push(s.clone());
        }
        let stamp = fwd
            .get_child("delay", ns::DELAY)
            .and_then(|d| d.get_attr("stamp"))
            .and_then(datetime::parse);
        return Some(message_record(
            host,
            user,
            mam::STORE,
            msg,
            el.get_attr("id").map(|i| (i.to_string(), stamp)),
            index,
        ));
    }
    // Private XML: any other element directly inside the private query.
    Some(Record::map(
        host,
        private::STORE,
        user,
        el.ns(),
        json!({ "xml": el.to_xml("") }),
    ))
}

fn roster_record(host: &str, user: &str, el: &Element) -> Result<Record, String> {
    let jid = el
        .get_attr("jid")
        .ok_or("roster item without a jid")
        .and_then(|j| Jid::parse(j).map_err(|_| "roster item with an invalid jid"))
        .map_err(str::to_string)?
        .bare();
    let subscription = match el.get_attr("subscription").unwrap_or("none") {
        "none" => Subscription::None,
        "to" => Subscription::To,
        "from" => Subscription::From,
        "both" => Subscription::Both,
        other => return Err(format!("roster item {jid}: subscription '{other}'")),
    };
    let item = RosterItem {
        jid: jid.to_string(),
        name: el.get_attr("name").map(str::to_string),
        subscription,
        ask: el.get_attr("ask") == Some("subscribe"),
        approved: matches!(el.get_attr("approved"), Some("true" | "1")),
        groups: el
            .children()
            .filter(|g| g.is("group", ns::ROSTER))
            .map(|g| g.text_content())
            .collect(),
    };
    let value = serde_json::to_value(&item).map_err(|e| e.to_string())?;
    Ok(Record::map(host, roster::ITEMS, user, jid.as_str(), value))
}

/// An offline or archived message; `known` is the archive id and time from a MAM result.
fn message_record(
    host: &str,
    user: &str,
    store: &str,
    mut msg: Element,
    known: Option<(String, Option<i64>)>,
    index: usize,
) -> Record {
    let stored = msg.get_child("stored", ns::PIE_OXPECKER).cloned();
    msg.remove_children("stored", ns::PIE_OXPECKER);
    let xml = msg.to_xml(ns::CLIENT);
    let bare = |a: &str| {
        msg.get_attr(a)
            .and_then(|j| Jid::parse(j).ok())
            .map(|j| j.bare())
    };
    let own = format!("{user}@{host}");
    let outgoing = bare("from").is_some_and(|j| j.as_str() == own);
    let partner = if outgoing { bare("to") } else { bare("from") };
    let delay = msg
        .get_child("delay", ns::DELAY)
        .and_then(|d| d.get_attr("stamp"))
        .and_then(datetime::parse);
    let (known_id, known_when) = known.map_or((None, None), |(i, w)| (Some(i), w));
    let when = stored
        .as_ref()
        .and_then(|s| s.get_attr("when")?.parse().ok())
        .or(known_when)
        .or(delay)
        .unwrap_or_else(crate::core::accounts::now);
    let with = stored
        .as_ref()
        .and_then(|s| s.get_attr("with").map(str::to_string))
        .or_else(|| partner.as_ref().map(|p| p.to_string()))
        .unwrap_or_default();
    let id = stored
        .as_ref()
        .and_then(|s| s.get_attr("id").map(str::to_string))
        .or(known_id)
        .unwrap_or_else(|| derived_id(host, user, store, index, &xml));
    let mut value = match stored.as_ref().map(|s| s.text_content()) {
        Some(t) if !t.trim().is_empty() => {
            serde_json::from_str::<Map<String, Value>>(&t).unwrap_or_default()
        }
        Some(_) => Map::new(),
        None if store == mam::STORE => {
            let mut m = Map::new();
            m.insert("dir".into(), json!(if outgoing { "out" } else { "in" }));
            let full = msg.get_attr(if outgoing { "to" } else { "from" });
            m.insert("with".into(), json!(full.unwrap_or(&with)));
            m
        }
        None => Map::new(),
    };
    value.insert("xml".into(), Value::String(xml));
    Record::archive(host, store, user, &id, when, &with, Value::Object(value))
}

/// A stable id for a message that came without one, so a repeated import replaces it.
fn derived_id(host: &str, user: &str, store: &str, index: usize, xml: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in [host, user, store, &index.to_string(), xml] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses one Oxpecker record element; `user` applies when it has no `user` attribute.
fn parse_record(host: &str, user: Option<&str>, el: &Element) -> Result<Record, String> {
    let attr = |a: &str| {
        el.get_attr(a)
            .map(str::to_string)
            .ok_or_else(|| format!("<{}/> record without '{a}'", el.name()))
    };
    let store = attr("store")?;
    let user = match el.get_attr("user") {
        Some(u) => u.to_string(),
        None => user
            .map(str::to_string)
            .ok_or_else(|| format!("<{}/> record without 'user'", el.name()))?,
    };
    let value: Value = serde_json::from_str(&el.text_content())
        .map_err(|e| format!("<{}/> record in store {store}: {e}", el.name()))?;
    let r = match el.name() {
        "keyval" => Record::keyval(host, &store, &user, value),
        "map" => Record::map(host, &store, &user, &attr("key")?, value),
        "archive" => {
            let when = attr("when")?
                .parse()
                .map_err(|_| "archive record with a bad 'when'".to_string())?;
            Record::archive(
                host,
                &store,
                &user,
                &attr("id")?,
                when,
                &attr("with")?,
                value,
            )
        }
        other => return Err(format!("unknown record element <{other}/>")),
    };
    if r.has_bad_name() {
        return Err(format!(
            "record in store {store}: a name is empty or has NUL"
        ));
    }
    Ok(r)
}

/// Reads one `<user/>` element of `host` into what the importer needs.
pub fn read_user(host: &str, el: &Element) -> Result<AccountImport, String> {
    let name = el.get_attr("name").ok_or("<user/> without a name")?;
    let jid = Jid::new(Some(name), host, None)
        .map_err(|e| format!("account name '{name}' on {host}: {e}"))?;
    let user = jid.node().unwrap_or_default().to_string();
    let mut records = Vec::new();
    let mut stored_account = None;
    let mut keys: [Option<ScramKeys>; 2] = [None, None];
    let mut index = 0usize;
    let mut pep_nodes: Vec<super::pep::Node> = Vec::new();
    let mut own_records = Vec::new();
    let mut push_std = |records: &mut Vec<Record>, c: &Element| -> Result<(), String> {
        index += 1;
        if c.is("item", ns::ROSTER) {
            records.push(roster_record(host, &user, c)?);
        } else if let Some(r) = standard_record(host, &user, c, index) {
            records.push(r);
        }
        Ok(())
    };
    for c in el.children() {
        match (c.name(), c.ns()) {
            ("scram-credentials", ns::PIE_SCRAM) => {
                let (slot, hash) = match c.get_attr("mechanism") {
                    Some("SCRAM-SHA-1") => (0, ScramHash::Sha1),
                    Some("SCRAM-SHA-256") => (1, ScramHash::Sha256),
                    _ => continue, // other hash families cannot be used here
                };
                keys[slot] = Some(scram_keys(c, hash)?);
            }
            ("query", ns::ROSTER) | ("blocklist", ns::BLOCKING) | ("archive", ns::PIE_MAM) => {
                for item in c.children() {
                    push_std(&mut records, item)?;
                }
            }
            ("query", ns::PRIVATE) => {
                for item in c.children() {
                    records.push(Record::map(
                        host,
                        private::STORE,
                        &user,
                        item.ns(),
                        json!({ "xml": item.to_xml("") }),
                    ));
                }
            }
            ("offline-messages", _) => {
                for m in c.children().filter(|m| m.name() == "message") {
                    let mut m = m.clone();
                    let old = m.ns().to_string();
                    if old != ns::CLIENT {
                        m.rename_ns(&old, ns::CLIENT);
                    }
                    push_std(&mut records, &m)?;
                }
            }
            ("vCard", ns::VCARD) | ("presence", ns::CLIENT) => push_std(&mut records, c)?,
            ("pubsub", ns::PUBSUB) | ("pubsub", ns::PUBSUB_OWNER) => read_pep(c, &mut pep_nodes),
            ("records", ns::PIE_OXPECKER) => {
                for r in c.children() {
                    let r = parse_record(host, Some(&user), r)?;
                    match &r {
                        Record::Keyval { store, value, .. } if store == ACCOUNTS_STORE => {
                            stored_account = Some(value.clone())
                        }
                        _ => own_records.push(r),
                    }
                }
            }
            _ => {} // not carried (e.g. privacy lists): ignored
        }
    }
    let secret = if let Some(v) = stored_account {
        Some(Secret::Stored(v))
    } else if keys.iter().any(Option::is_some) {
        let [sha1, sha256] = keys;
        Some(Secret::Keys(
            crate::auth::Credentials::from_scram(sha1, sha256).map_err(|e| e.to_string())?,
        ))
    } else {
        el.get_attr("password")
            .filter(|p| !p.is_empty())
            .map(|p| Secret::Plain(p.to_string()))
    };
    records.extend(super::pep::records(host, &user, pep_nodes)?);
    // A record of a store the standard elements fill wins over the standard element.
    records.extend(own_records);
    dedup_last_wins(&mut records);
    Ok(AccountImport {
        host: host.to_string(),
        user,
        secret,
        records,
    })
}

/// PEP nodes as XEP-0227 carries them (and Prosody's `mod_storage_xep0227` writes them): items
/// in `<pubsub xmlns='…pubsub'><items node='…'><item id='…'>payload</item></items>`, the
/// configuration in `<pubsub xmlns='…pubsub#owner'><configure node='…'><x/></configure>`.
/// Settings this server does not have, or values it refuses, keep the defaults.
fn read_pep(el: &Element, nodes: &mut Vec<super::pep::Node>) {
    fn node<'a>(nodes: &'a mut Vec<super::pep::Node>, name: &str) -> &'a mut super::pep::Node {
        let i = match nodes.iter().position(|n| n.name == name) {
            Some(i) => i,
            None => {
                nodes.push(super::pep::Node {
                    name: name.to_string(),
                    ..Default::default()
                });
                nodes.len() - 1
            }
        };
        &mut nodes[i]
    }
    let named = |c: &Element| {
        c.get_attr("node")
            .filter(|n| !n.is_empty() && n.len() <= crate::modules::pep::MAX_NODE_LEN)
            .map(str::to_string)
    };
    for c in el.children() {
        let Some(name) = named(c) else { continue };
        match (c.name(), c.ns()) {
            ("items", ns::PUBSUB) => {
                for (i, item) in c.children().filter(|i| i.name() == "item").enumerate() {
                    let Some(payload) = item.children().next() else {
                        continue;
                    };
                    let id = item
                        .get_attr("id")
                        .map_or_else(|| (i + 1).to_string(), str::to_string);
                    node(nodes, &name).items.push((id, payload.clone(), 0));
                }
            }
            ("configure", ns::PUBSUB_OWNER) => {
                let Some(x) = c.get_child("x", ns::DATA) else {
                    continue;
                };
                let Ok(form) = crate::modules::pep::form::parse_form(x) else {
                    continue;
                };
                let n = node(nodes, &name);
                for (var, values) in &form.fields {
                    let _ = n
                        .config
                        .apply_field(var, values, super::pep::SERVER_MAX_ITEMS, false);
                }
            }
            _ => {}
        }
    }
}

/// Keeps only the last record for each storage key.
fn dedup_last_wins(records: &mut Vec<Record>) {
    let key = |r: &Record| -> (u8, String, String, String, String) {
        match r {
            Record::Keyval {
                host, store, user, ..
            } => (0, host.clone(), store.clone(), user.clone(), String::new()),
            Record::Map {
                host,
                store,
                user,
                key,
                ..
            } => (1, host.clone(), store.clone(), user.clone(), key.clone()),
            Record::Archive {
                host,
                store,
                user,
                id,
                ..
            } => (2, host.clone(), store.clone(), user.clone(), id.clone()),
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    for r in records.drain(..).rev() {
        if seen.insert(key(&r)) {
            out.push(r);
        }
    }
    out.reverse();
    *records = out;
}

fn scram_keys(el: &Element, hash: ScramHash) -> Result<ScramKeys, String> {
    let mech = hash.mechanism_name();
    let text = |name: &str| {
        el.get_child(name, ns::PIE_SCRAM)
            .map(|c| c.text_content().trim().to_string())
            .ok_or_else(|| format!("{mech}: no <{name}/>"))
    };
    let b64 = |name: &str| {
        decode_b64(&text(name)?).map_err(|_| format!("{mech}: bad base64 in <{name}/>"))
    };
    let mut keys = ScramKeys {
        iterations: text("iter-count")?
            .parse()
            .map_err(|_| format!("{mech}: bad <iter-count/>"))?,
        salt: b64("salt")?,
        server_key: b64("server-key")?,
        stored_key: b64("stored-key")?,
    };
    if !keys.is_valid_for(hash) {
        // ejabberd (23.x) writes the base64 of its own base64 strings: decode once more.
        let again = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| decode_b64(s).ok());
        if let (Some(salt), Some(server_key), Some(stored_key)) = (
            again(&keys.salt),
            again(&keys.server_key),
            again(&keys.stored_key),
        ) {
            keys = ScramKeys {
                salt,
                server_key,
                stored_key,
                ..keys
            };
        }
    }
    if !keys.is_valid_for(hash) {
        return Err(format!("{mech}: keys of the wrong length"));
    }
    Ok(keys)
}

/// Reads a host-level `<records/>` element.
pub fn read_host_records(host: &str, el: &Element) -> Result<Vec<Record>, String> {
    el.children().map(|r| parse_record(host, None, r)).collect()
}

// ---------------------------------------------------------------------------------------------
// Reading: the document, one account at a time

/// One unit of a XEP-0227 document.
pub enum Item {
    /// A `<user/>` element of a host.
    User(String, Element),
    /// Oxpecker's host-level `<records/>`.
    HostRecords(String, Element),
    /// An XInclude of another file holding a `<host/>` (ejabberd's `export_piefxis`).
    Include(String),
}

/// Streams a XEP-0227 document, calling `each` with every account and host record set and the
/// byte offset where it starts. No DTDs, entities or processing instructions.
pub fn read(
    input: impl BufRead,
    mut each: impl FnMut(u64, Item) -> Result<(), MigrateError>,
) -> Result<(), MigrateError> {
    let mut reader = NsReader::from_reader(input);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let mut host: Option<String> = None;
    let mut depth = 0usize;
    let mut stack: Vec<Element> = Vec::new();
    let mut started = 0u64;
    let mut seen_root = false;
    let mut root_is_host = false;
    loop {
        let pos = reader.buffer_position();
        buf.clear();
        let bad = |m: String| MigrateError::Input {
            position: format!("byte {pos}"),
            account: None,
            message: m,
        };
        let (res, event) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        let ns = match res {
            ResolveResult::Bound(n) => n.0.to_string(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return Err(bad(format!("unknown namespace prefix {p}")));
            }
        };
        match event {
            Event::Decl(_) | Event::Comment(_) => {}
            Event::DocType(_) | Event::PI(_) => {
                return Err(bad(
                    "DTDs and processing instructions are not allowed".into()
                ));
            }
            Event::Start(s) if !stack.is_empty() || depth >= 2 => {
                open(&mut stack, &mut started, pos, &s, ns).map_err(bad)?;
            }
            Event::Empty(s) if !stack.is_empty() || depth >= 2 => {
                open(&mut stack, &mut started, pos, &s, ns).map_err(bad)?;
                close(&mut stack, host.as_deref(), started, &mut each)?;
            }
            Event::Start(s) => {
                let name = s.local_name().as_ref().to_string();
                match (depth, name.as_str()) {
                    (0, "server-data") if ns == ns::PIE => seen_root = true,
                    // A host file included by ejabberd's export.
                    (0, "host") if ns == ns::PIE => {
                        let el = make_element(&s, ns).map_err(bad)?;
                        host = Some(
                            el.get_attr("jid")
                                .ok_or_else(|| bad("<host/> without a jid".into()))?
                                .to_string(),
                        );
                        seen_root = true;
                        root_is_host = true;
                        depth = 1;
                    }
                    (0, _) => {
                        return Err(bad("not a XEP-0227 document (no <server-data/>)".into()));
                    }
                    (1, "host") => {
                        let el = make_element(&s, ns).map_err(bad)?;
                        host = Some(
                            el.get_attr("jid")
                                .ok_or_else(|| bad("<host/> without a jid".into()))?
                                .to_string(),
                        );
                    }
                    _ => return Err(bad(format!("unexpected <{name}/>"))),
                }
                depth += 1;
            }
            Event::Empty(s) if depth == 1 && s.local_name().as_ref() == "include" => {
                let el = make_element(&s, ns).map_err(bad)?;
                if el.ns() != XINCLUDE {
                    return Err(bad("unexpected element in <server-data/>".into()));
                }
                let href = el
                    .get_attr("href")
                    .ok_or_else(|| bad("<xi:include/> without href".into()))?;
                each(pos, Item::Include(href.to_string()))?;
            }
            Event::Empty(_) => {} // an empty <host/>
            Event::End(_) if !stack.is_empty() => {
                close(&mut stack, host.as_deref(), started, &mut each)?;
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    host = None;
                    if root_is_host {
                        depth = 0;
                    }
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    push_text(top, &t.xml10_content());
                } else if !t.xml10_content().trim().is_empty() {
                    return Err(bad("text outside elements".into()));
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    push_text(top, &t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref().ok().flatten()
                } else {
                    match &*r.into_inner() {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => None,
                    }
                };
                let c = c.ok_or_else(|| bad("entity references are not allowed".into()))?;
                if let Some(top) = stack.last_mut() {
                    let mut tmp = [0u8; 4];
                    push_text(top, c.encode_utf8(&mut tmp));
                }
            }
            Event::Eof => {
                if !seen_root || depth != 0 {
                    return Err(bad("the document ends early".into()));
                }
                return Ok(());
            }
        }
    }
}

/// Pushes a new element on the stack (remembering where a top-level one starts).
fn open(
    stack: &mut Vec<Element>,
    started: &mut u64,
    pos: u64,
    start: &BytesStart<'_>,
    ns: String,
) -> Result<(), String> {
    if stack.len() >= MAX_DEPTH {
        return Err("elements nested too deeply".into());
    }
    if stack.is_empty() {
        *started = pos;
    }
    stack.push(make_element(start, ns)?);
    Ok(())
}

fn close(
    stack: &mut Vec<Element>,
    host: Option<&str>,
    started: u64,
    each: &mut impl FnMut(u64, Item) -> Result<(), MigrateError>,
) -> Result<(), MigrateError> {
    let Some(el) = stack.pop() else {
        return Ok(());
    };
    if let Some(parent) = stack.last_mut() {
        parent.push(el);
        return Ok(());
    }
    let host = host.unwrap_or_default().to_string();
    match (el.name(), el.ns()) {
        ("user", ns::PIE) => each(started, Item::User(host, el)),
        ("records", ns::PIE_OXPECKER) => each(started, Item::HostRecords(host, el)),
        _ => Ok(()), // other host-level data (e.g. pubsub services) is not carried
    }
}

fn push_text(el: &mut Element, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Node::Text(prev)) = el.last_node_mut() {
        prev.push_str(text);
    } else {
        el.push_text(text);
    }
}

fn make_element(start: &BytesStart<'_>, ns: String) -> Result<Element, String> {
    let local = start.local_name().as_ref().to_string();
    let mut el = Element::new(local, ns);
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = attr.key.as_ref().to_string();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?;
        el.set_attr(&key, Some(value.into_owned()));
    }
    Ok(el)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(doc: &str) -> Result<Vec<(u64, String)>, MigrateError> {
        let mut out = Vec::new();
        read(doc.as_bytes(), |pos, item| {
            out.push((
                pos,
                match item {
                    Item::User(h, el) => format!("user {h} {}", el.to_xml(ns::PIE)),
                    Item::HostRecords(h, _) => format!("records {h}"),
                    Item::Include(href) => format!("include {href}"),
                },
            ));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn reads_users_with_positions_and_includes() {
        let doc = "<?xml version='1.0'?><server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'><xi:include href='h.xml'/><host jid='h'><user name='a'><vCard xmlns='vcard-temp'><FN>A &amp; &#66;</FN></vCard></user><user name='b'/></host></server-data>";
        let got = items(doc).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, "include h.xml");
        assert_eq!(
            got[1].1,
            "user h <user name=\"a\"><vCard xmlns=\"vcard-temp\"><FN>A &amp; B</FN></vCard></user>"
        );
        assert_eq!(&doc[got[1].0 as usize..][..17], "<user name='a'><v");
        assert_eq!(&doc[got[2].0 as usize..][..15], "<user name='b'/");
        // A host file on its own (what an include points at).
        let host = "<host xmlns='urn:xmpp:pie:0' jid='h'><user name='c'/></host>";
        assert_eq!(items(host).unwrap().len(), 1);
    }

    #[test]
    fn refuses_dtds_entities_and_broken_documents() {
        for bad in [
            "<!DOCTYPE x [<!ENTITY e 'boom'>]><server-data xmlns='urn:xmpp:pie:0'/>",
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='h'><user name='a'>&e;</user></host></server-data>",
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='h'><user name='a'></host></server-data>",
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='h'>",
            "<other/>",
            "<server-data xmlns='urn:xmpp:pie:0'><host><user name='a'/></host></server-data>",
        ] {
            let err = items(bad).unwrap_err();
            assert!(err.to_string().starts_with("byte "), "{bad}: {err}");
        }
    }

    #[test]
    fn user_elements_give_back_their_records() {
        let h = "h";
        let records = vec![
            Record::map(
                h,
                roster::ITEMS,
                "a",
                "b@h",
                json!({"jid": "b@h", "name": "B", "subscription": "both", "ask": false, "approved": false, "groups": ["G"]}),
            ),
            Record::keyval(
                h,
                vcard::STORE,
                "a",
                json!({"xml": "<vCard xmlns=\"vcard-temp\"><FN>A</FN></vCard>"}),
            ),
            Record::map(h, blocking::STORE, "a", "x@y", json!(true)),
            Record::archive(
                h,
                offline::STORE,
                "a",
                "id1",
                100,
                "b@h",
                json!({"xml": "<message from=\"b@h/r\" to=\"a@h\"><body>hi</body></message>"}),
            ),
            Record::archive(
                h,
                mam::STORE,
                "a",
                "m1",
                200,
                "b@h",
                json!({"xml": "<message from=\"a@h/r\" to=\"b@h\"><body>yo</body></message>", "dir": "out", "with": "b@h"}),
            ),
            Record::keyval(h, "last", "a", json!({"t": 5})),
            Record::map(
                h,
                roster::PENDING,
                "a",
                "c@h",
                json!("<presence from=\"c@h/x\" to=\"a@h\" type=\"subscribe\"/>"),
            ),
            // Not the shape the standard element gives back: carried as a record.
            Record::map(h, blocking::STORE, "a", "z@y", json!("odd")),
        ];
        let el = user_element("a", &records);
        let xml = el.to_xml(ns::PIE);
        assert!(
            xml.contains("<records xmlns=\"urn:oxpecker:pie:0\"><keyval store=\"last\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<map key=\"z@y\" store=\"blocklist\">\"odd\"</map>"),
            "{xml}"
        );
        assert!(
            xml.contains("<presence xmlns=\"jabber:client\" from=\"c@h/x\""),
            "{xml}"
        );
        let back = read_user(h, &crate::xmpp::parser::parse_element(&xml).unwrap()).unwrap();
        assert!(back.secret.is_none());
        let mut want = records.clone();
        let mut got = back.records;
        let key = |r: &Record| serde_json::to_string(r).unwrap();
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want);
    }

    #[test]
    fn scram_credentials_plain_and_double_base64() {
        let keys = ScramKeys::derive(ScramHash::Sha1, b"pw", b"salt", 4096);
        let twice = |v: &[u8]| encode_b64(encode_b64(v).as_bytes());
        let xml = format!(
            "<user xmlns='urn:xmpp:pie:0' name='Alice'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>{}</salt><server-key>{}</server-key><stored-key>{}</stored-key></scram-credentials><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-512'/></user>",
            twice(&keys.salt),
            twice(&keys.server_key),
            twice(&keys.stored_key)
        );
        let acc = read_user("h", &crate::xmpp::parser::parse_element(&xml).unwrap()).unwrap();
        assert_eq!(acc.user, "alice", "names are normalised");
        let Some(Secret::Keys(c)) = acc.secret else {
            panic!("expected SCRAM keys");
        };
        assert_eq!(c.scram_sha1, keys);
        assert!(c.verify("pw"));
        let short = "<user xmlns='urn:xmpp:pie:0' name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>AA==</salt><server-key>AA==</server-key><stored-key>AA==</stored-key></scram-credentials></user>";
        let err = read_user("h", &crate::xmpp::parser::parse_element(short).unwrap()).err();
        assert_eq!(
            err.as_deref(),
            Some("SCRAM-SHA-1: keys of the wrong length")
        );
    }
}
