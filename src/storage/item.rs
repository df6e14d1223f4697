//! The stored form of an archive item. Version 2 (written now): the byte `2`, then the id
//! (u32 LE length + UTF-8), the time (i64 LE), the partner (u32 LE length + UTF-8) and the
//! payload as JSON up to the end, so writing one costs two copies and no escaping, and reading
//! its id or partner parses no JSON. Version 1 items (`1` + the whole item as JSON, written
//! before) still decode.

use super::{ArchiveItem, Result, StorageError, VALUE_VERSION, decode};

/// Version byte of the length-prefixed item encoding.
pub(super) const ITEM_VERSION: u8 = 2;

/// An item's fields borrowed from its stored bytes (version 2).
struct Parts<'a> {
    id: &'a str,
    when: i64,
    with: &'a str,
    value_json: &'a [u8],
}

/// Appends `s` with its u32 LE length.
fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u32::try_from(s.len())
        .map_err(|_| StorageError::Io("archive item field too long".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Encodes an item around its already serialised JSON payload.
pub(super) fn encode_item(id: &str, when: i64, with: &str, value_json: &[u8]) -> Result<Vec<u8>> {
    let len = 1 + 4 + id.len() + 8 + 4 + with.len() + value_json.len();
    let mut out = Vec::with_capacity(len);
    out.push(ITEM_VERSION);
    put_str(&mut out, id)?;
    out.extend_from_slice(&when.to_le_bytes());
    put_str(&mut out, with)?;
    out.extend_from_slice(value_json);
    Ok(out)
}

fn corrupt() -> StorageError {
    StorageError::Corrupt("truncated or malformed archive item".into())
}

/// Takes `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if rest.len() < n {
        return Err(corrupt());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Takes a u32-length-prefixed UTF-8 string off the front of `rest`.
fn take_str<'a>(rest: &mut &'a [u8]) -> Result<&'a str> {
    let len = u32::from_le_bytes(take(rest, 4)?.try_into().map_err(|_| corrupt())?);
    let len = usize::try_from(len).map_err(|_| corrupt())?;
    std::str::from_utf8(take(rest, len)?).map_err(|_| corrupt())
}

/// Splits a version 2 item (without its version byte).
fn split(mut rest: &[u8]) -> Result<Parts<'_>> {
    let id = take_str(&mut rest)?;
    let when = i64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| corrupt())?);
    let with = take_str(&mut rest)?;
    Ok(Parts {
        id,
        when,
        with,
        value_json: rest,
    })
}

/// Decodes a stored item of either version.
pub(super) fn decode_item(bytes: &[u8]) -> Result<ArchiveItem> {
    match bytes.split_first() {
        Some((&ITEM_VERSION, rest)) => {
            let p = split(rest)?;
            let value = serde_json::from_slice(p.value_json)
                .map_err(|e| StorageError::Corrupt(format!("undecodable archive payload: {e}")))?;
            Ok(ArchiveItem {
                id: p.id.to_string(),
                when: p.when,
                with: p.with.to_string(),
                value,
            })
        }
        Some((&VALUE_VERSION, _)) => decode(bytes),
        Some((v, _)) => Err(StorageError::Corrupt(format!(
            "unknown archive item version {v}"
        ))),
        None => Err(StorageError::Corrupt("empty archive item".into())),
    }
}

/// The id and partner of a stored item, without decoding its payload (version 2).
pub(super) fn item_id_with(bytes: &[u8]) -> Result<(String, String)> {
    match bytes.split_first() {
        Some((&ITEM_VERSION, rest)) => {
            let p = split(rest)?;
            Ok((p.id.to_string(), p.with.to_string()))
        }
        _ => decode_item(bytes).map(|i| (i.id, i.with)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_round_trip_and_old_items_decode() {
        let v = json!({"xml": "<m a=\"'\"/>", "dir": "in"});
        let json = serde_json::to_vec(&v).unwrap();
        let bytes = encode_item("a\"b", -5, "x@y", &json).unwrap();
        assert_eq!(bytes[0], ITEM_VERSION);
        let item = decode_item(&bytes).unwrap();
        assert_eq!(
            (item.id.as_str(), item.when, item.with.as_str()),
            ("a\"b", -5, "x@y")
        );
        assert_eq!(item.value, v);
        assert_eq!(
            item_id_with(&bytes).unwrap(),
            ("a\"b".to_string(), "x@y".to_string())
        );
        let old = super::super::encode(&item).unwrap();
        assert_eq!(old[0], VALUE_VERSION);
        assert_eq!(decode_item(&old).unwrap(), item);
        assert_eq!(item_id_with(&old).unwrap().1, "x@y");
    }

    #[test]
    fn damaged_items_are_corrupt_not_a_panic() {
        let json = serde_json::to_vec(&json!(1)).unwrap();
        let bytes = encode_item("id", 1, "w", &json).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_item(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_item(&huge), Err(StorageError::Corrupt(_))));
        assert!(matches!(
            decode_item(b"\x07x"),
            Err(StorageError::Corrupt(_))
        ));
    }
}
