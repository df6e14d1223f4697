//! The per-partner archive index: one empty entry `user_prefix + 'w' + with + NUL + seq (u64 BE)`
//! per item, written in the same atomic batch as the item and removed with it, so a query with
//! `with` walks only that partner's items, in sequence order: O(page) per page, and its total
//! is a key count. A partner name containing NUL is not indexed (such queries scan).
//!
//! Data directories written before the index existed are indexed once when the store opens
//! (marked by [`MARK_KEY`] in [`META_TREE`]); until that has succeeded, queries scan.

use super::item::{decode_item, item_id_with};
use super::{
    ARCHIVE_TREE, ArchiveItem, ArchiveQuery, Backend, ITEM_TAG, Result, SCAN_CHUNK, encode,
    item_key, matches, prefix_end,
};

/// Key tag of index entries (after the user prefix).
pub(super) const WITH_TAG: u8 = b'w';
/// Tree of the archive's own bookkeeping (the index mark).
pub(super) const META_TREE: &str = "archive_meta";
/// Present once every item of the data directory has its index entry.
const MARK_KEY: &[u8] = b"with_index";

/// Prefix of `with`'s index entries in one user's archive (None if `with` holds a NUL).
pub(super) fn with_prefix(user_prefix: &[u8], with: &str) -> Option<Vec<u8>> {
    if with.contains('\0') {
        return None;
    }
    Some([user_prefix, &[WITH_TAG], with.as_bytes(), &[0]].concat())
}

/// Index key of item `seq` with partner `with` (None if `with` holds a NUL).
pub(super) fn with_key(user_prefix: &[u8], with: &str, seq: u64) -> Option<Vec<u8>> {
    if with.contains('\0') {
        return None;
    }
    // Built once at its final size: one allocation per index entry.
    let len = user_prefix.len() + with.len() + 10;
    let mut key = Vec::with_capacity(len);
    key.extend_from_slice(user_prefix);
    key.push(WITH_TAG);
    key.extend_from_slice(with.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    Some(key)
}

/// `(user_prefix, seq)` of an item key (`host\0store\0user\0` + `i` + 8 bytes), else None.
fn split_item_key(key: &[u8]) -> Option<(&[u8], u64)> {
    let mut nuls = 0;
    let at = key.iter().position(|&b| {
        nuls += usize::from(b == 0);
        nuls == 3
    })?;
    let (prefix, rest) = key.split_at(at.checked_add(1)?);
    let (&tag, seq) = rest.split_first()?;
    if tag != ITEM_TAG {
        return None;
    }
    Some((prefix, u64::from_be_bytes(seq.try_into().ok()?)))
}

/// Indexes every item that has no index entry yet, once per data directory; returns how many
/// entries were written (0 when the mark was there already).
pub(super) fn ensure(backend: &dyn Backend) -> Result<usize> {
    if backend.get(META_TREE, MARK_KEY)?.is_some() {
        return Ok(0);
    }
    let end = [0xFFu8];
    let mut from = Vec::new();
    let mut written = 0usize;
    loop {
        let chunk = backend.scan_range(ARCHIVE_TREE, &from, &end, false, Some(SCAN_CHUNK))?;
        let mut ops = Vec::new();
        for (k, v) in &chunk {
            if let Some((prefix, seq)) = split_item_key(k) {
                let (_, with) = item_id_with(v)?;
                if let Some(key) = with_key(prefix, &with, seq) {
                    ops.push((key, Some(Vec::new())));
                }
            }
        }
        written = written.saturating_add(ops.len());
        if !ops.is_empty() {
            backend.apply(ARCHIVE_TREE, ops)?;
        }
        match chunk.last() {
            Some((k, _)) if chunk.len() == SCAN_CHUNK => from = [&k[..], &[0]].concat(),
            _ => break,
        }
    }
    backend.apply(META_TREE, vec![(MARK_KEY.to_vec(), Some(encode(&1u64)?))])?;
    backend.flush()?;
    Ok(written)
}

/// The 8 sequence bytes of an item key of this user, if `key` is one.
fn seq_bytes<'a>(user_prefix: &[u8], key: &'a [u8]) -> Option<&'a [u8]> {
    let rest = key.strip_prefix(user_prefix)?.strip_prefix(&[ITEM_TAG])?;
    (rest.len() == 8).then_some(rest)
}

/// Like `collect_items` for a query with `with` (prefix `wprefix`): walks the partner's index
/// entries within the item-key bounds and reads only those items.
pub(super) fn collect(
    backend: &dyn Backend,
    user_prefix: &[u8],
    wprefix: &[u8],
    q: &ArchiveQuery,
    bounds: (Vec<u8>, Vec<u8>),
    want: Option<usize>,
) -> Result<Vec<(Vec<u8>, ArchiveItem)>> {
    let (lo, hi) = bounds;
    let mut out = Vec::new();
    if lo >= hi || want == Some(0) {
        return Ok(out);
    }
    let mut wlo = match seq_bytes(user_prefix, &lo) {
        Some(seq) => [wprefix, seq].concat(),
        None => wprefix.to_vec(),
    };
    let mut whi = match seq_bytes(user_prefix, &hi) {
        Some(seq) => [wprefix, seq].concat(),
        None => prefix_end(wprefix),
    };
    loop {
        let chunk_len = want.map_or(SCAN_CHUNK, |w| {
            w.saturating_sub(out.len()).clamp(1, SCAN_CHUNK)
        });
        let chunk = backend.scan_range(ARCHIVE_TREE, &wlo, &whi, q.reverse, Some(chunk_len))?;
        let got = chunk.len();
        let last = chunk.last().map(|(k, _)| k.clone());
        for (k, _) in chunk {
            let Some(seq) = k
                .get(wprefix.len()..)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
            else {
                continue;
            };
            let key = item_key(user_prefix, u64::from_be_bytes(seq));
            let Some(v) = backend.get(ARCHIVE_TREE, &key)? else {
                continue;
            };
            let item = decode_item(&v)?;
            if matches(q, &item) {
                out.push((key, item));
                if want.is_some_and(|w| out.len() >= w) {
                    return Ok(out);
                }
            }
        }
        match last {
            Some(last) if got == chunk_len => {
                if q.reverse {
                    whi = last;
                } else {
                    wlo = [&last[..], &[0]].concat();
                }
            }
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::item::encode_item;
    use super::super::{ArchiveQuery, MemoryBackend, Store};
    use super::*;
    use serde_json::json;

    #[test]
    fn item_keys_split_and_others_do_not() {
        let prefix = b"h\0s\0u\0";
        assert_eq!(split_item_key(&item_key(prefix, 7)), Some((&prefix[..], 7)));
        assert_eq!(split_item_key(&with_key(prefix, "w", 7).unwrap()), None);
        assert_eq!(split_item_key(b"h\0s\0u\0i\0\0"), None);
        assert_eq!(split_item_key(b"h\0s"), None);
        assert_eq!(with_prefix(prefix, "a\0b"), None);
        assert_eq!(with_key(prefix, "a\0b", 1), None);
        let key = with_key(prefix, "w@h", 7).unwrap();
        assert_eq!(
            key,
            [
                &with_prefix(prefix, "w@h").unwrap()[..],
                &7u64.to_be_bytes()
            ]
            .concat()
        );
        assert_eq!(key.capacity(), key.len());
    }

    /// An archive written without index entries (an older data dir) is indexed when the store
    /// opens, once, and `with` queries then find exactly the partner's items.
    #[tokio::test]
    async fn old_archives_are_indexed_once_on_open() {
        let backend = std::sync::Arc::new(MemoryBackend::new());
        let prefix = b"h\0archive\0u\0";
        let mut ops = Vec::new();
        for seq in 0..1200u64 {
            let with = if seq % 3 == 0 { "a@h" } else { "b@h" };
            let v = serde_json::to_vec(&json!(seq)).unwrap();
            let item = if seq % 2 == 0 {
                encode_item(&format!("o{seq}"), 0, with, &v).unwrap()
            } else {
                let item = ArchiveItem {
                    id: format!("o{seq}"),
                    when: 0,
                    with: with.into(),
                    value: json!(seq),
                };
                encode(&item).unwrap()
            };
            ops.push((item_key(prefix, seq), Some(item)));
        }
        backend.apply(ARCHIVE_TREE, ops).unwrap();
        assert_eq!(ensure(&*backend).unwrap(), 1200);
        assert_eq!(ensure(&*backend).unwrap(), 0, "indexed once");
        let store = Store::new(backend);
        let a = store.archive("h", "archive");
        let query = ArchiveQuery {
            with: Some("a@h".into()),
            total: true,
            limit: Some(3),
            reverse: true,
            ..Default::default()
        };
        let page = a.find("u", &query).await.unwrap();
        let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["o1197", "o1194", "o1191"]);
        assert_eq!(page.total, Some(400));
    }
}
