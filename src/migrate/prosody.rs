//! Reading a Prosody data directory written by its `internal` storage: one folder per host
//! (`example%2eorg`), one per store, one file per user (`alice.dat`: `return {…};`, archives
//! `alice.list`: `item({…});` lines). Accounts (SCRAM-SHA-1 keys or a clear password), roster
//! (with groups, subscription, pending-out `ask` and pending-in requests), vCard, private XML,
//! offline messages, MAM archive, blocking list and PEP nodes with their items become Oxpecker
//! records; a MUC component's persistent rooms are read by [`super::prosody_muc`]. The same reading
//! serves Prosody's `sql` storage in `prosody.sqlite` ([`super::prosody_sql`]), through [`Stores`].

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::MigrateError;
use super::import::{AccountImport, Secret};
use super::lua::{self, Lua, Table};
use super::model::Record;
use crate::auth::Credentials;
use crate::auth::credentials::ScramKeys;
use crate::core::roster::{self, RosterItem, Subscription};
use crate::modules::{blocking, mam, offline, private, vcard};
use crate::xmpp::{Element, Jid, datetime, ns};

/// Largest file read (a user's archive can be big; this bounds one file).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Everything read from a data directory.
#[derive(Default)]
pub struct Source {
    /// Accounts with where each was read from.
    pub accounts: Vec<(String, AccountImport)>,
    /// Records of no account (position, host, records).
    pub host_records: Vec<(String, String, Vec<Record>)>,
    /// Accounts that could not be read, each with its file position and reason.
    pub errors: Vec<String>,
}

/// Prosody's file-name encoding of hosts, stores and users: `%xx` for every non-alphanumeric byte.
pub fn encode_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Decodes [`encode_name`]; `None` if malformed or not UTF-8.
pub fn decode_name(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads every host folder of `dir` that has accounts.
pub fn read_dir(dir: &Path) -> Result<Source, MigrateError> {
    let io = |e: std::io::Error| MigrateError::Io(format!("{}: {e}", dir.display()));
    let mut hosts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    hosts.sort();
    let mut source = Source::default();
    for host_dir in hosts {
        let Some(host) = file_name(&host_dir).and_then(|n| decode_name(&n)) else {
            continue;
        };
        let accounts_dir = host_dir.join("accounts");
        let mut users: Vec<String> = match std::fs::read_dir(&accounts_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".dat").and_then(decode_name)
                })
                .collect(),
            Err(_) => {
                // No accounts: a component (or an empty host); a MUC component lists its rooms.
                let position = host_dir.join("persistent.dat").display().to_string();
                match super::prosody_muc::read_rooms(&Files(&host_dir), &host) {
                    Ok(Some(rooms)) => source.host_records.push((position, host, rooms)),
                    Ok(None) => {}
                    Err(e) => source.errors.push(format!("{e}: rooms of {host}")),
                }
                continue;
            }
        };
        users.sort();
        for user in users {
            let position = accounts_dir.join(format!("{}.dat", encode_name(&user)));
            match read_account(&Files(&host_dir), &host, &user) {
                Ok(acc) => source.accounts.push((position.display().to_string(), acc)),
                Err(e) => source.errors.push(format!("{e}: {user}@{host}")),
            }
        }
    }
    // The `sql` driver with SQLite keeps everything in one file of the data directory.
    let sqlite = dir.join("prosody.sqlite");
    if sqlite.is_file() {
        let db = super::prosody_sql::open(&sqlite).map_err(|e| MigrateError::Io(e.0))?;
        for (host, user) in
            super::prosody_sql::accounts(&db, &sqlite).map_err(|e| MigrateError::Io(e.0))?
        {
            let src = super::prosody_sql::Sql {
                db: &db,
                path: &sqlite,
                host: host.clone(),
            };
            match read_account(&src, &host, &user) {
                Ok(acc) => source.accounts.push((src.position("accounts", &user), acc)),
                Err(e) => source.errors.push(format!("{e}: {user}@{host}")),
            }
        }
        for host in
            super::prosody_sql::room_hosts(&db, &sqlite).map_err(|e| MigrateError::Io(e.0))?
        {
            let src = super::prosody_sql::Sql {
                db: &db,
                path: &sqlite,
                host: host.clone(),
            };
            match super::prosody_muc::read_rooms(&src, &host) {
                Ok(Some(rooms)) => {
                    source
                        .host_records
                        .push((src.position("persistent", ""), host, rooms));
                }
                Ok(None) => {}
                Err(e) => source.errors.push(format!("{e}: rooms of {host}")),
            }
        }
    }
    Ok(source)
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// A file problem: the path and, for syntax errors, the byte offset.
#[derive(Debug)]
pub struct FileError(pub String);

/// One archived item as a Prosody storage driver keeps it.
pub struct ArchivedItem {
    /// Its archive id.
    pub key: Option<String>,
    /// When, unix seconds.
    pub when: Option<f64>,
    /// The conversation partner Prosody recorded (may be empty).
    pub with: Option<String>,
    /// The stanza.
    pub stanza: Element,
    /// Where it was read, for errors.
    pub position: String,
}

/// Prosody's stores of one host, whatever the driver (`internal` files or `sql`).
pub trait Stores {
    /// A keyval store's table for `user`, if any.
    fn keyval(&self, store: &str, user: &str) -> Result<Option<Table>, FileError>;
    /// A host-wide keyval store's table (Prosody's `nil` user), if any.
    fn host_keyval(&self, store: &str) -> Result<Option<Table>, FileError>;
    /// An archive store's items for `user`, oldest first.
    fn archive(&self, store: &str, user: &str) -> Result<Vec<ArchivedItem>, FileError>;
    /// Where `user`'s data of `store` lives, for errors.
    fn position(&self, store: &str, user: &str) -> String;
}

/// The `internal` driver: one folder per store, one file per user.
struct Files<'a>(&'a Path);

impl Stores for Files<'_> {
    fn keyval(&self, store: &str, user: &str) -> Result<Option<Table>, FileError> {
        keyval(self.0, store, user)
    }

    fn host_keyval(&self, store: &str) -> Result<Option<Table>, FileError> {
        table_file(&self.0.join(format!("{}.dat", encode_store(store))))
    }

    fn archive(&self, store: &str, user: &str) -> Result<Vec<ArchivedItem>, FileError> {
        let path = self.position(store, user).replace(".dat", ".list");
        list(self.0, store, user)?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let position = format!("{path} item {}", i + 1);
                Ok(ArchivedItem {
                    key: t.get("key").and_then(Lua::as_str).map(str::to_string),
                    when: t.get("when").and_then(Lua::as_f64),
                    with: t.get("with").and_then(Lua::as_str).map(str::to_string),
                    stanza: stanza(t, ns::CLIENT)
                        .map_err(|e| FileError(format!("{position}: {e}")))?,
                    position,
                })
            })
            .collect()
    }

    fn position(&self, store: &str, user: &str) -> String {
        store_dir(self.0, store)
            .join(format!("{}.dat", encode_name(user)))
            .display()
            .to_string()
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    let fail = |m: String| FileError(format!("{}: {m}", path.display()));
    match std::fs::metadata(path) {
        Err(_) => return Ok(None),
        Ok(m) if m.len() > MAX_FILE_BYTES => return Err(fail("file too large".into())),
        Ok(_) => {}
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}

/// Prosody's file-name encoding of store names: like [`encode_name`], but `_` stays (as in
/// `pep_http%3a%2f%2fjabber%2eorg%2fprotocol%2fnick`, the store of a PEP node's items).
pub fn encode_store(s: &str) -> String {
    encode_name(s).replace("%5f", "_")
}

/// The folder of `store` in a host folder: as Prosody names it, or fully encoded if only that exists.
fn store_dir(host_dir: &Path, store: &str) -> PathBuf {
    let dir = host_dir.join(encode_store(store));
    let other = host_dir.join(encode_name(store));
    if !dir.exists() && other.exists() {
        other
    } else {
        dir
    }
}

/// The table in `<store>/<user>.dat`, if the file exists.
fn keyval(host_dir: &Path, store: &str, user: &str) -> Result<Option<Table>, FileError> {
    table_file(&store_dir(host_dir, store).join(format!("{}.dat", encode_name(user))))
}

/// The table a `.dat` file returns, if the file exists.
fn table_file(path: &Path) -> Result<Option<Table>, FileError> {
    let Some(bytes) = read_file(path)? else {
        return Ok(None);
    };
    match lua::parse_return(&bytes) {
        Ok(Lua::Table(t)) => Ok(Some(t)),
        Ok(Lua::Nil) => Ok(None),
        Ok(_) => Err(FileError(format!("{}: not a table", path.display()))),
        Err(e) => Err(FileError(format!("{}: {e}", path.display()))),
    }
}

/// The items of `<store>/<user>.list`, if the file exists.
fn list(host_dir: &Path, store: &str, user: &str) -> Result<Vec<Table>, FileError> {
    let path = store_dir(host_dir, store).join(format!("{}.list", encode_name(user)));
    let Some(bytes) = read_file(&path)? else {
        return Ok(Vec::new());
    };
    let items =
        lua::parse_items(&bytes).map_err(|e| FileError(format!("{}: {e}", path.display())))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Lua::Table(t) => Ok(t),
            _ => Err(FileError(format!(
                "{}: item {} is not a table",
                path.display(),
                i + 1
            ))),
        })
        .collect()
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// One account and everything it owns; any malformed file rejects the whole account.
pub fn read_account(src: &dyn Stores, host: &str, user: &str) -> Result<AccountImport, FileError> {
    let jid =
        Jid::new(Some(user), host, None).map_err(|e| FileError(format!("account name: {e}")))?;
    let own = jid.to_string();
    let at = |store: &str, _ext: &str| src.position(store, user);
    let acc = src.keyval("accounts", user)?.unwrap_or_default();
    let secret = if let Some(pw) = acc.get("password").and_then(Lua::as_str) {
        Some(Secret::Plain(pw.to_string()))
    } else {
        let keys = (|| {
            Some(ScramKeys {
                iterations: u32::try_from(acc.get("iteration_count")?.as_i64()?).ok()?,
                salt: match acc.get("salt")? {
                    Lua::Str(s) => s.clone(),
                    _ => return None,
                },
                stored_key: hex(acc.get("stored_key")?.as_str()?)?,
                server_key: hex(acc.get("server_key")?.as_str()?)?,
            })
        })()
        .ok_or_else(|| {
            FileError(format!(
                "{}: no password and no usable SCRAM keys",
                at("accounts", "dat")
            ))
        })?;
        // Prosody's internal_hashed keeps SCRAM-SHA-1 keys only.
        Some(Secret::Keys(
            Credentials::from_scram(Some(keys), None)
                .map_err(|e| FileError(format!("{}: {e}", at("accounts", "dat"))))?,
        ))
    };
    let mut records = Vec::new();

    if let Some(r) = src.keyval("roster", user)? {
        for (key, value) in &r.fields {
            match (key, value) {
                (Lua::Bool(false), Lua::Table(meta)) => {
                    if let Some(p) = meta.get("pending").and_then(Lua::as_table) {
                        for (contact, _) in p.string_keys() {
                            let Ok(c) = Jid::parse(&contact) else {
                                continue;
                            };
                            let req = Element::new("presence", ns::CLIENT)
                                .attr("from", c.to_string())
                                .attr("to", own.clone())
                                .attr("type", "subscribe");
                            records.push(Record::map(
                                host,
                                roster::PENDING,
                                user,
                                c.as_str(),
                                Value::String(req.to_xml(ns::CLIENT)),
                            ));
                        }
                    }
                }
                (Lua::Str(_), Lua::Table(item)) => {
                    let contact = key.as_str().unwrap_or_default();
                    let Ok(c) = Jid::parse(contact).map(|j| j.bare()) else {
                        return Err(FileError(format!(
                            "{}: bad contact {contact:?}",
                            at("roster", "dat")
                        )));
                    };
                    let subscription = match item.get("subscription").and_then(Lua::as_str) {
                        Some("both") => Subscription::Both,
                        Some("to") => Subscription::To,
                        Some("from") => Subscription::From,
                        _ => Subscription::None,
                    };
                    let mut groups: Vec<String> = item
                        .get("groups")
                        .and_then(Lua::as_table)
                        .map(|g| g.string_keys().map(|(k, _)| k).collect())
                        .unwrap_or_default();
                    groups.sort();
                    let ri = RosterItem {
                        jid: c.to_string(),
                        name: item.get("name").and_then(Lua::as_str).map(str::to_string),
                        subscription,
                        ask: item.get("ask").and_then(Lua::as_str) == Some("subscribe"),
                        approved: item.get("approved").is_some_and(Lua::is_true),
                        groups,
                    };
                    let v = serde_json::to_value(&ri).map_err(|e| FileError(e.to_string()))?;
                    records.push(Record::map(host, roster::ITEMS, user, c.as_str(), v));
                }
                _ => {}
            }
        }
    }

    if let Some(v) = src.keyval("vcard", user)? {
        let el = stanza(&v, ns::CLIENT)
            .map_err(|e| FileError(format!("{}: {e}", at("vcard", "dat"))))?;
        if el.is("vCard", ns::VCARD) {
            records.push(Record::keyval(
                host,
                vcard::STORE,
                user,
                json!({ "xml": el.to_xml("") }),
            ));
        }
    }

    if let Some(p) = src.keyval("private", user)? {
        for (_, v) in p.string_keys() {
            let Some(t) = v.as_table() else { continue };
            let el = stanza(t, ns::CLIENT)
                .map_err(|e| FileError(format!("{}: {e}", at("private", "dat"))))?;
            records.push(Record::map(
                host,
                private::STORE,
                user,
                el.ns(),
                json!({ "xml": el.to_xml("") }),
            ));
        }
    }

    if let Some(b) = src.keyval("blocklist", user)? {
        for (k, v) in b.string_keys() {
            if let (true, Ok(j)) = (v.is_true(), Jid::parse(&k)) {
                records.push(Record::map(
                    host,
                    blocking::STORE,
                    user,
                    j.as_str(),
                    Value::Bool(true),
                ));
            }
        }
    }

    if let Some(nodes) = src.keyval("pep", user)? {
        let nodes = read_pep(src, user, &nodes)?;
        records.extend(
            super::pep::records(host, user, nodes)
                .map_err(|e| FileError(format!("{}: {e}", at("pep", "dat"))))?,
        );
    }

    for (store, target) in [("offline", offline::STORE), ("archive", mam::STORE)] {
        for (i, item) in src.archive(store, user)?.into_iter().enumerate() {
            let key = item.key.clone().unwrap_or_else(|| (i + 1).to_string());
            let mut el = item.stanza;
            let when = item
                .when
                .filter(|w| w.is_finite() && w.abs() < 1e13)
                .map(|w| w as i64)
                .or_else(|| el.get_attr("stamp").and_then(datetime::parse))
                .unwrap_or_else(crate::core::accounts::now);
            el.set_attr("stamp", None);
            el.set_attr("stamp_legacy", None);
            let bare = |a: &str| {
                el.get_attr(a)
                    .and_then(|j| Jid::parse(j).ok())
                    .map(|j| j.bare())
            };
            let outgoing = bare("from").is_some_and(|j| j.as_str() == own);
            let partner = if outgoing { bare("to") } else { bare("from") };
            let with = item
                .with
                .filter(|w| !w.is_empty())
                .or_else(|| partner.map(|p| p.to_string()))
                .unwrap_or_default();
            let value = if target == offline::STORE {
                if el.get_child("delay", ns::DELAY).is_none() {
                    el.push(
                        Element::new("delay", ns::DELAY)
                            .attr("from", host)
                            .attr("stamp", datetime::format(when)),
                    );
                }
                json!({ "xml": el.to_xml(ns::CLIENT) })
            } else {
                let full = el
                    .get_attr(if outgoing { "to" } else { "from" })
                    .unwrap_or(&with)
                    .to_string();
                json!({ "xml": el.to_xml(ns::CLIENT), "dir": if outgoing { "out" } else { "in" }, "with": full })
            };
            records.push(Record::archive(
                host, target, user, &key, when, &with, value,
            ));
        }
    }

    Ok(AccountImport {
        host: host.to_string(),
        user: jid.node().unwrap_or_default().to_string(),
        secret,
        records,
    })
}

/// `user`'s PEP nodes: the `pep` map (node → `{ name, config, affiliations, subscribers }`) and
/// each node's items in the archive store `pep_<node>` (item id as key, the payload as stanza).
fn read_pep(
    src: &dyn Stores,
    user: &str,
    nodes: &Table,
) -> Result<Vec<super::pep::Node>, FileError> {
    use crate::modules::pep::store::Affiliation;
    let mut out = Vec::new();
    let mut names: Vec<(String, &Table)> = nodes
        .string_keys()
        .filter_map(|(k, v)| Some((k, v.as_table()?)))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in names {
        if name.is_empty() || name.len() > crate::modules::pep::MAX_NODE_LEN {
            continue;
        }
        let mut node = super::pep::Node {
            name: name.clone(),
            ..Default::default()
        };
        if let Some(c) = t.get("config").and_then(Lua::as_table) {
            for (k, v) in c.string_keys() {
                let value = match v {
                    Lua::Str(_) => v.as_str().unwrap_or_default().to_string(),
                    Lua::Bool(b) => b.to_string(),
                    Lua::Int(n)
                        if k == "max_items" && *n > i64::from(super::pep::SERVER_MAX_ITEMS) =>
                    {
                        "max".into()
                    }
                    Lua::Int(n) => n.to_string(),
                    _ => continue,
                };
                // A setting this server does not have, or a value it refuses, keeps the default.
                let _ = node.config.apply_field(
                    &format!("pubsub#{k}"),
                    &[value],
                    super::pep::SERVER_MAX_ITEMS,
                    false,
                );
            }
        }
        if let Some(a) = t.get("affiliations").and_then(Lua::as_table) {
            for (jid, aff) in a.string_keys() {
                if let (Ok(j), Some(aff)) =
                    (Jid::parse(&jid), aff.as_str().and_then(Affiliation::parse))
                {
                    node.affiliations.insert(j.bare().to_string(), aff);
                }
            }
        }
        for (i, item) in src
            .archive(&format!("pep_{name}"), user)?
            .into_iter()
            .enumerate()
        {
            let id = item.key.unwrap_or_else(|| (i + 1).to_string());
            // The payload, or an `<item/>` wrapping it.
            let mut payload = if item.stanza.name() == "item" {
                match item.stanza.children().next() {
                    Some(p) => p.clone(),
                    None => continue,
                }
            } else {
                item.stanza
            };
            // The internal driver adds `stamp` (and `stamp_legacy`) to what it archives and
            // takes them off when Prosody reads it back: so do we.
            payload.set_attr("stamp", None);
            payload.set_attr("stamp_legacy", None);
            let when = item
                .when
                .filter(|w| w.is_finite() && w.abs() < 1e13)
                .map_or(0, |w| w as i64);
            node.items.push((id, payload, when));
        }
        out.push(node);
    }
    Ok(out)
}

/// A stanza as `util.stanza.preserialize` stores it: `{ name = …, attr = {…}, [1] = child, … }`.
pub fn stanza(t: &Table, parent_ns: &str) -> Result<Element, String> {
    let name = t
        .get("name")
        .and_then(Lua::as_str)
        .ok_or("a stanza without a name")?;
    let attr = t.get("attr").and_then(Lua::as_table);
    let ns = attr
        .and_then(|a| a.get("xmlns"))
        .and_then(Lua::as_str)
        .unwrap_or(parent_ns)
        .to_string();
    let mut el = Element::new(name, ns.clone());
    if let Some(a) = attr {
        let mut attrs: Vec<(String, String)> = a
            .string_keys()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
        attrs.sort();
        for (k, v) in attrs {
            if k == "xmlns" {
                continue;
            }
            // Namespaced attributes are stored as "namespace\1name"; only xml:lang is kept.
            match k.split_once('\u{1}') {
                Some((n, local)) if n == ns::XML => el.set_attr(&format!("xml:{local}"), Some(v)),
                Some(_) => {}
                None => el.set_attr(&k, Some(v)),
            }
        }
    }
    for child in t.array() {
        match child {
            Lua::Str(s) => el.push_text(String::from_utf8_lossy(s).into_owned()),
            Lua::Table(c) => el.push(stanza(c, &ns)?),
            _ => return Err("a stanza child that is neither text nor element".into()),
        }
    }
    Ok(el)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_like_prosody() {
        assert_eq!(encode_name("example.org"), "example%2eorg");
        assert_eq!(decode_name("example%2eorg").as_deref(), Some("example.org"));
        assert_eq!(decode_name("a%2"), None);
        assert_eq!(decode_name("%ff"), None);
    }

    #[test]
    fn preserialized_stanzas_become_elements() {
        let v = lua::parse_return(
            b"return {name=\"message\"; attr={xmlns=\"jabber:client\"; to=\"a@h\"; [\"http://www.w3.org/XML/1998/namespace\\1lang\"]=\"en\"; stamp=\"x\"}; [1]={name=\"body\"; attr={}; [1]=\"hi & <bye>\"}};",
        )
        .unwrap();
        let el = stanza(v.as_table().unwrap(), ns::CLIENT).unwrap();
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<message xml:lang=\"en\" stamp=\"x\" to=\"a@h\"><body>hi &amp; &lt;bye&gt;</body></message>"
        );
        let bad = lua::parse_return(b"return {attr={}};").unwrap();
        assert!(stanza(bad.as_table().unwrap(), ns::CLIENT).is_err());
    }
}
