//! SCRAM downgrade protection (XEP-0474 v0.5.0, SSDP): the hash of what the server offered.
//!
//! The server sends it as the `h` attribute of its SCRAM server-first-message, which the
//! client's proof then covers; a client that saw a stripped mechanism or channel-binding list
//! computes a different hash and fails the exchange.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::scram::ScramHash;

/// Separates the items of one list (XEP-0474 §5.1; invalid in XML, so never in a name).
const ITEM: char = '\u{1e}';
/// Separates the mechanism list from the channel-binding list.
const LIST: char = '\u{1f}';

/// The base64 SSDP hash of the advertised `mechanisms` and, when XEP-0440 advertised any,
/// `channel_bindings` (`None` when the `<sasl-channel-binding/>` feature was not sent).
///
/// Both lists are sorted by octet (RFC 4790 `i;octet`) before joining, so the order they were
/// advertised in does not matter.
pub fn downgrade_hash(
    hash: ScramHash,
    mechanisms: &[&str],
    channel_bindings: Option<&[&str]>,
) -> String {
    let mut s = joined(mechanisms);
    if let Some(types) = channel_bindings {
        s.push(LIST);
        s.push_str(&joined(types));
    }
    STANDARD.encode(hash.h(s.as_bytes()))
}

/// The names sorted by octet and joined with the item separator.
fn joined(names: &[&str]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut out = String::new();
    for (i, n) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(ITEM);
        }
        out.push_str(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: [&str; 5] = [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ];

    #[test]
    fn matches_the_xep_example() {
        // XEP-0474 §5.3: SHA-1 of 'SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1ftls-exporter\x1etls-server-end-point'.
        let h = downgrade_hash(
            ScramHash::Sha1,
            &["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"],
            Some(&["tls-server-end-point", "tls-exporter"]),
        );
        assert_eq!(h, "G6k/rBLDqgOhRRaCuuatSDFkJ08=");
    }

    #[test]
    fn matches_independently_computed_vectors() {
        // python3: h(f, m, cb) = base64(f(("\x1e".join(sorted(m)) +
        //   ("\x1f" + "\x1e".join(sorted(cb)) if cb is not None else "")).encode()).digest())
        assert_eq!(
            downgrade_hash(ScramHash::Sha256, &DEFAULTS, Some(&["tls-exporter"])),
            "HOCahVXz+V8p+Esg88C95qG5k09nEAJUDMu7QMK43gY="
        );
        assert_eq!(
            downgrade_hash(ScramHash::Sha1, &DEFAULTS, Some(&["tls-exporter"])),
            "hop3N83xH2iyA6y2T5aMBtq/Wjo="
        );
        // No XEP-0440 feature sent: no list separator at all.
        assert_eq!(
            downgrade_hash(ScramHash::Sha256, &["SCRAM-SHA-256", "SCRAM-SHA-1"], None),
            "0/NIECGLXv63MqTb7NyUI9Tqxi40YVZyx61umRrH924="
        );
    }

    #[test]
    fn a_stripped_list_hashes_differently() {
        let full = downgrade_hash(ScramHash::Sha256, &DEFAULTS, Some(&["tls-exporter"]));
        let no_plus = downgrade_hash(ScramHash::Sha256, &DEFAULTS[2..], Some(&["tls-exporter"]));
        let no_cb = downgrade_hash(ScramHash::Sha256, &DEFAULTS, None);
        let empty_cb = downgrade_hash(ScramHash::Sha256, &DEFAULTS, Some(&[]));
        assert_ne!(full, no_plus);
        assert_ne!(full, no_cb);
        assert_ne!(no_cb, empty_cb);
        let mut reversed = DEFAULTS;
        reversed.reverse();
        assert_eq!(downgrade_hash(ScramHash::Sha1, &reversed, None), {
            downgrade_hash(ScramHash::Sha1, &DEFAULTS, None)
        });
    }
}
