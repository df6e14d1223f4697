//! JSON-lines export/import of a whole [`Store`] (blocking; run from
//! `spawn_blocking` or outside the async runtime).

use super::appender::AppendReq;
use super::item::decode_item;
use super::with_index::WITH_TAG;
use super::{
    ARCHIVE_TREE, INDEX_TAG, ITEM_TAG, KEYVAL_TREE, MAP_TREE, Record, Result, SCAN_CHUNK,
    StorageError, Store, append_sync, decode, encode, join_names, utf8,
};
use std::io::{BufRead, Write};

/// Calls `f` for every entry of `tree` in key order, reading in chunks.
fn for_each(
    store: &Store,
    tree: &str,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let backend = &*store.inner.backend;
    // Keys are UTF-8 names joined by NUL, so no key starts with 0xFF.
    let end = [0xFFu8];
    let mut from = Vec::new();
    loop {
        let chunk = backend.scan_range(tree, &from, &end, false, Some(SCAN_CHUNK))?;
        for (k, v) in &chunk {
            f(k, v)?;
        }
        match chunk.last() {
            Some((k, _)) if chunk.len() == SCAN_CHUNK => from = [&k[..], &[0]].concat(),
            _ => return Ok(()),
        }
    }
}

/// Splits a key into `n` NUL-separated UTF-8 names plus the raw remainder.
fn split_key(key: &[u8], n: usize) -> Result<(Vec<String>, &[u8])> {
    let mut names = Vec::with_capacity(n);
    let mut rest = key;
    for _ in 0..n {
        let pos = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| StorageError::Corrupt("malformed storage key".into()))?;
        names.push(utf8(&rest[..pos])?);
        rest = &rest[pos + 1..];
    }
    Ok((names, rest))
}

fn write_line(out: &mut impl Write, line: &Record) -> Result<()> {
    serde_json::to_writer(&mut *out, line)
        .map_err(|e| StorageError::Io(format!("export write failed: {e}")))?;
    out.write_all(b"\n")
        .map_err(|e| StorageError::Io(format!("export write failed: {e}")))
}

/// Writes every keyval, map and archive record as one JSON object per line; returns the line count.
pub fn export(store: &Store, mut out: impl Write) -> Result<u64> {
    let mut lines = 0u64;
    for_each(store, KEYVAL_TREE, |k, v| {
        let (names, user) = split_key(k, 2)?;
        let [host, store] = <[String; 2]>::try_from(names)
            .map_err(|_| StorageError::Corrupt("malformed keyval key".into()))?;
        let line = Record::Keyval {
            host,
            store,
            user: utf8(user)?,
            value: decode(v)?,
        };
        lines += 1;
        write_line(&mut out, &line)
    })?;
    for_each(store, MAP_TREE, |k, v| {
        let (names, key) = split_key(k, 3)?;
        let [host, store, user] = <[String; 3]>::try_from(names)
            .map_err(|_| StorageError::Corrupt("malformed map key".into()))?;
        let line = Record::Map {
            host,
            store,
            user,
            key: utf8(key)?,
            value: decode(v)?,
        };
        lines += 1;
        write_line(&mut out, &line)
    })?;
    for_each(store, ARCHIVE_TREE, |k, v| {
        let (names, rest) = split_key(k, 3)?;
        match rest.first() {
            Some(&ITEM_TAG) => {}
            Some(&INDEX_TAG | &WITH_TAG) => return Ok(()),
            _ => return Err(StorageError::Corrupt("malformed archive key".into())),
        }
        let [host, store, user] = <[String; 3]>::try_from(names)
            .map_err(|_| StorageError::Corrupt("malformed archive key".into()))?;
        let item = decode_item(v)?;
        let line = Record::Archive {
            host,
            store,
            user,
            id: item.id,
            when: item.when,
            with: item.with,
            value: item.value,
        };
        lines += 1;
        write_line(&mut out, &line)
    })?;
    out.flush()
        .map_err(|e| StorageError::Io(format!("export write failed: {e}")))?;
    Ok(lines)
}

/// Bytes of JSON lines staged before they are written as one group (above the migration
/// importer's batch of 8 MiB, so that each of its batches is written as one group).
const GROUP_BYTES: usize = 16 << 20;

/// Key/value operations of one backend batch.
type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Parsed lines not yet written: one batch per tree.
#[derive(Default)]
struct Group {
    keyval: Ops,
    map: Ops,
    archive: Vec<AppendReq>,
    /// Line number of the group's first line (0 while empty).
    first_line: u64,
    lines: u64,
    bytes: usize,
}

impl Group {
    /// Stages one parsed line of `size` bytes.
    fn add(&mut self, line: Record, line_no: u64, size: usize) -> Result<()> {
        match line {
            Record::Keyval {
                host,
                store: name,
                user,
                value,
            } => {
                let key = join_names(&[&host, &name, &user], false)?;
                self.keyval.push((key, Some(encode(&value)?)));
            }
            Record::Map {
                host,
                store: name,
                user,
                key,
                value,
            } => {
                let key = join_names(&[&host, &name, &user, &key], false)?;
                self.map.push((key, Some(encode(&value)?)));
            }
            Record::Archive {
                host,
                store: name,
                user,
                id,
                when,
                with,
                value,
            } => {
                let prefix = join_names(&[&host, &name, &user], true)?;
                let mut req = AppendReq::unanswered(prefix, when, with, &value)?;
                req.id = Some(id);
                self.archive.push(req);
            }
        }
        if self.lines == 0 {
            self.first_line = line_no;
        }
        self.lines = self.lines.saturating_add(1);
        self.bytes = self.bytes.saturating_add(size);
        Ok(())
    }

    /// Writes the group, one batch per tree, the keyval tree (which holds account records)
    /// last; returns how many lines it held.
    fn write(&mut self, store: &Store) -> Result<u64> {
        let group = std::mem::take(self);
        if group.lines == 0 {
            return Ok(0);
        }
        let backend = &*store.inner.backend;
        let written = (|| {
            if !group.map.is_empty() {
                backend.apply(MAP_TREE, group.map)?;
            }
            append_sync(&store.inner, &group.archive)?;
            if !group.keyval.is_empty() {
                backend.apply(KEYVAL_TREE, group.keyval)?;
            }
            Ok(())
        })();
        written.map_err(|e: StorageError| StorageError::Import {
            line: group.first_line,
            message: format!("writing the lines from here on: {e}"),
        })?;
        Ok(group.lines)
    }
}

/// Imports lines written by [`export`] (blank lines skipped), flushing at the end; returns
/// the number of records imported. Lines are written in groups of up to [`GROUP_BYTES`],
/// one backend batch per tree. On a bad line, the lines before it are written and the error
/// names its line number; a failed write names the first line of its group.
pub fn import(store: &Store, input: impl BufRead) -> Result<u64> {
    let mut imported = 0u64;
    let mut group = Group::default();
    let result = (|| {
        for (n, line) in input.lines().enumerate() {
            let line_no = u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1);
            let fail = |message: String| StorageError::Import {
                line: line_no,
                message,
            };
            let line = line.map_err(|e| fail(format!("read error: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Record = serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
            group
                .add(parsed, line_no, line.len())
                .map_err(|e| fail(e.to_string()))?;
            if group.bytes >= GROUP_BYTES {
                imported += group.write(store)?;
            }
        }
        Ok(())
    })();
    // The lines before a bad one are written too.
    let written = group.write(store).map(|n| imported += n);
    let flushed = store.inner.backend.flush();
    result?;
    written?;
    flushed?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::super::tests::populate;
    use super::*;
    use serde_json::json;

    fn roundtrip(a: Store, b: Store) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(populate(&a));
        let mut buf = Vec::new();
        let n = export(&a, &mut buf).unwrap();
        assert!(n > 1000);
        assert_eq!(import(&b, &buf[..]).unwrap(), n);
        let mut again = Vec::new();
        assert_eq!(export(&b, &mut again).unwrap(), n);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            String::from_utf8(again).unwrap()
        );
        rt.block_on(async {
            let pa = a
                .archive("h1", "mam")
                .find("u", &Default::default())
                .await
                .unwrap();
            let pb = b
                .archive("h1", "mam")
                .find("u", &Default::default())
                .await
                .unwrap();
            assert_eq!(pa, pb);
            let q = super::super::ArchiveQuery {
                after: Some(pa.items[10].id.clone()),
                limit: Some(3),
                ..Default::default()
            };
            assert_eq!(
                b.archive("h1", "mam").find("u", &q).await.unwrap().items,
                pa.items[11..14]
            );
        });
    }

    #[test]
    fn roundtrip_memory() {
        roundtrip(Store::memory(), Store::memory());
    }

    #[test]
    fn roundtrip_sled() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        roundtrip(
            Store::open_sled(d1.path(), 1 << 22).unwrap(),
            Store::open_sled(d2.path(), 1 << 22).unwrap(),
        );
    }

    /// sled → PostgreSQL → sled: every record survives both moves byte for byte.
    #[test]
    #[ignore = "needs OXPECKER_TEST_POSTGRES_URL (scripts/cluster-test)"]
    fn roundtrip_sled_postgres_sled() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pg = Store::new(std::sync::Arc::new(
            super::super::postgres::scratch::backend(),
        ));
        let sled = Store::open_sled(d1.path(), 1 << 22).unwrap();
        roundtrip(sled.clone(), pg.clone());
        let (mut from_pg, mut from_sled) = (Vec::new(), Vec::new());
        let n = export(&pg, &mut from_pg).unwrap();
        let back = Store::open_sled(d2.path(), 1 << 22).unwrap();
        assert_eq!(import(&back, &from_pg[..]).unwrap(), n);
        assert_eq!(export(&back, &mut from_sled).unwrap(), n);
        assert_eq!(from_pg, from_sled);
        let mut original = Vec::new();
        export(&sled, &mut original).unwrap();
        assert_eq!(original, from_sled);
    }

    #[test]
    fn bad_line_reports_number() {
        let store = Store::memory();
        let input = concat!(
            "{\"kind\":\"keyval\",\"host\":\"h\",\"store\":\"s\",\"user\":\"a\",\"value\":1}\n",
            "\n",
            "{\"kind\":\"map\",\"host\":\"h\",\"store\":\"s\",\"user\":\"a\",\"value\":1}\n",
            "{\"kind\":\"keyval\",\"host\":\"h\",\"store\":\"s\",\"user\":\"b\",\"value\":2}\n",
        );
        let err = import(&store, input.as_bytes()).unwrap_err();
        assert!(matches!(err, StorageError::Import { line: 3, .. }), "{err}");
        let bad_name = "{\"kind\":\"keyval\",\"host\":\"h\",\"store\":\"s\",\"user\":\"a\\u0000\",\"value\":1}\n";
        let err = import(&store, bad_name.as_bytes()).unwrap_err();
        assert!(matches!(err, StorageError::Import { line: 1, .. }), "{err}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let kv = store.keyval("h", "s");
            assert_eq!(kv.get("a").await.unwrap(), Some(json!(1)));
            assert_eq!(kv.get("b").await.unwrap(), None);
            assert!(store.map("h", "s").users().await.unwrap().is_empty());
        });
    }

    #[test]
    fn grouped_archive_lines_keep_totals_and_with_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sled(dir.path(), 1 << 22).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let a = store.archive("h", "mam");
        let count = |with: Option<&str>| {
            let q = super::super::ArchiveQuery {
                with: with.map(str::to_owned),
                total: true,
                limit: Some(0),
                ..Default::default()
            };
            rt.block_on(a.find("u", &q)).unwrap().total.unwrap()
        };
        rt.block_on(a.append("u", Some("m1".into()), 1, "a@x", json!(1)))
            .unwrap();
        // Totals are known (cached) before the import.
        assert_eq!((count(None), count(Some("a@x"))), (1, 1));
        let line = |id: &str, when: i64, with: &str| {
            format!(
                "{{\"kind\":\"archive\",\"host\":\"h\",\"store\":\"mam\",\"user\":\"u\",\"id\":\"{id}\",\"when\":{when},\"with\":\"{with}\",\"value\":{when}}}\n"
            )
        };
        // m1 replaces the stored item; m2 appears twice in the group, the second one wins.
        let input = [
            line("m1", 2, "b@x"),
            line("m2", 3, "a@x"),
            line("m2", 4, "b@x"),
            line("m3", 5, "a@x"),
        ]
        .concat();
        assert_eq!(import(&store, input.as_bytes()).unwrap(), 4);
        assert_eq!(count(None), 3);
        assert_eq!(count(Some("a@x")), 1);
        assert_eq!(count(Some("b@x")), 2);
        let page = rt.block_on(a.find("u", &Default::default())).unwrap();
        let got: Vec<(&str, i64, &str)> = page
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.when, i.with.as_str()))
            .collect();
        assert_eq!(got, [("m1", 2, "b@x"), ("m2", 4, "b@x"), ("m3", 5, "a@x")]);
    }
}
