//! Prosody's `sql` storage in SQLite (`prosody.sqlite`): table `prosody` (host, user, store,
//! key, type, value) holds keyval and map stores one top-level key per row — `string`,
//! `number`, `boolean` or `json` values, where JSON tables keep their array part in `__array`
//! and their non-string keys in `__hash` (pairs), and the row with key `""` holds those parts of
//! the user's table itself; table `prosodyarchive` holds archives with the stanza as `xml`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde_json::Value;

use super::lua::{Lua, Table};
use super::prosody::{ArchivedItem, FileError, Stores};
use crate::xmpp::parser::parse_element;

/// One host's stores in an opened database.
pub struct Sql<'a> {
    /// The database.
    pub db: &'a Connection,
    /// Its file, for errors.
    pub path: &'a Path,
    /// The host.
    pub host: String,
}

/// Opens `prosody.sqlite` read-only.
pub fn open(path: &Path) -> Result<Connection, FileError> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| FileError(format!("{}: {e}", path.display())))
}

/// The hosts and users that have an `accounts` row, sorted.
pub fn accounts(db: &Connection, path: &Path) -> Result<Vec<(String, String)>, FileError> {
    let fail = |e: rusqlite::Error| FileError(format!("{}: {e}", path.display()));
    let mut stmt = db
        .prepare(
            "SELECT DISTINCT host, user FROM prosody WHERE store = 'accounts' ORDER BY host, user",
        )
        .map_err(fail)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(fail)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(fail)
}

/// The hosts that have a `persistent` row (MUC components with persistent rooms), sorted.
pub fn room_hosts(db: &Connection, path: &Path) -> Result<Vec<String>, FileError> {
    let fail = |e: rusqlite::Error| FileError(format!("{}: {e}", path.display()));
    let mut stmt = db
        .prepare("SELECT DISTINCT host FROM prosody WHERE store = 'persistent' ORDER BY host")
        .map_err(fail)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(fail)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(fail)
}

/// A JSON value as the Lua value Prosody encoded.
fn lua_of_json(v: &Value) -> Lua {
    match v {
        Value::Null => Lua::Nil,
        Value::Bool(b) => Lua::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Lua::Int(i),
            None => Lua::Num(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Lua::Str(s.clone().into_bytes()),
        Value::Array(items) => Lua::Table(array_table(items)),
        Value::Object(map) => {
            let mut t = Table::default();
            merge_object(&mut t, map);
            Lua::Table(t)
        }
    }
}

fn array_table(items: &[Value]) -> Table {
    Table {
        fields: items
            .iter()
            .zip(1i64..)
            .map(|(v, i)| (Lua::Int(i), lua_of_json(v)))
            .collect(),
    }
}

/// Adds a JSON object's fields to `t`: `__array` positional, `__hash` pairs, the rest by name.
fn merge_object(t: &mut Table, map: &serde_json::Map<String, Value>) {
    for (k, v) in map {
        match (k.as_str(), v) {
            ("__array", Value::Array(items)) => t.fields.extend(array_table(items).fields),
            ("__hash", Value::Array(pairs)) => {
                for pair in pairs.chunks(2) {
                    if let [k, v] = pair {
                        t.fields.push((lua_of_json(k), lua_of_json(v)));
                    }
                }
            }
            _ => t
                .fields
                .push((Lua::Str(k.clone().into_bytes()), lua_of_json(v))),
        }
    }
}

impl Stores for Sql<'_> {
    fn keyval(&self, store: &str, user: &str) -> Result<Option<Table>, FileError> {
        let fail = |m: String| FileError(format!("{}: {m}", self.position(store, user)));
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT key, type, value FROM prosody WHERE host = ?1 AND user = ?2 AND store = ?3",
            )
            .map_err(|e| fail(e.to_string()))?;
        let rows = stmt
            .query_map(params![self.host, user, store], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| fail(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut t = Table::default();
        for (key, ty, value) in rows {
            let v = match ty.as_str() {
                "string" => Lua::Str(value.into_bytes()),
                "number" => match value.parse::<i64>() {
                    Ok(i) => Lua::Int(i),
                    Err(_) => Lua::Num(
                        value
                            .parse()
                            .map_err(|_| fail(format!("key {key:?}: bad number {value:?}")))?,
                    ),
                },
                "boolean" => Lua::Bool(value == "true"),
                "json" => {
                    let json: Value = serde_json::from_str(&value)
                        .map_err(|e| fail(format!("key {key:?}: {e}")))?;
                    if key.is_empty() {
                        // The user's table's own array and non-string keys.
                        match &json {
                            Value::Array(items) => t.fields.extend(array_table(items).fields),
                            Value::Object(map) => merge_object(&mut t, map),
                            _ => return Err(fail("key \"\": not a table".into())),
                        }
                        continue;
                    }
                    lua_of_json(&json)
                }
                other => return Err(fail(format!("key {key:?}: unknown type {other:?}"))),
            };
            t.fields.push((Lua::Str(key.into_bytes()), v));
        }
        Ok(Some(t))
    }

    fn host_keyval(&self, store: &str) -> Result<Option<Table>, FileError> {
        // Prosody's sql driver stores the `nil` user as "".
        self.keyval(store, "")
    }

    fn archive(&self, store: &str, user: &str) -> Result<Vec<ArchivedItem>, FileError> {
        let at = format!("{} prosodyarchive {store}/{user}", self.path.display());
        let fail = |m: String| FileError(format!("{at}: {m}"));
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT sort_id, key, \"when\", \"with\", type, value FROM prosodyarchive \
                 WHERE host = ?1 AND user = ?2 AND store = ?3 ORDER BY sort_id",
            )
            .map_err(|e| fail(e.to_string()))?;
        let rows = stmt
            .query_map(params![self.host, user, store], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(|e| fail(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        rows.into_iter()
            .map(|(sort_id, key, when, with, ty, value)| {
                let position = format!("{at} sort_id {sort_id}");
                if ty != "xml" {
                    return Err(FileError(format!(
                        "{position}: type {ty:?} is not a stanza"
                    )));
                }
                let stanza =
                    parse_element(&value).map_err(|e| FileError(format!("{position}: {e:?}")))?;
                Ok(ArchivedItem {
                    key: Some(key),
                    when: Some(when as f64),
                    with: Some(with),
                    stanza,
                    position,
                })
            })
            .collect()
    }

    fn position(&self, store: &str, user: &str) -> String {
        format!("{} prosody {store}/{user}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_tables_become_lua_tables() {
        let v: Value = serde_json::from_str(
            r#"{"__hash":[false,{"version":1,"pending":{"c@h":true}}],"__array":["x"],"n":2.5}"#,
        )
        .unwrap();
        let Lua::Table(t) = lua_of_json(&v) else {
            panic!("a table");
        };
        let meta = t
            .fields
            .iter()
            .find(|(k, _)| *k == Lua::Bool(false))
            .unwrap();
        let pending = meta.1.as_table().unwrap().get("pending").unwrap();
        assert!(pending.as_table().unwrap().get("c@h").unwrap().is_true());
        assert_eq!(t.array(), vec![&Lua::Str(b"x".to_vec())]);
        assert_eq!(t.get("n"), Some(&Lua::Num(2.5)));
    }
}
