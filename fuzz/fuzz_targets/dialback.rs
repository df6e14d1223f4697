//! Server Dialback (XEP-0220) as a peer sends it: arbitrary text read as a `<db:result/>` or
//! `<db:verify/>` element, its `from`/`to`/`id` and key checked against this server's secret.
//! Never panics; a key the peer made up does not verify, the key this server made does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxpecker::s2s::dialback::Secret;
use oxpecker::xmpp::parser::parse_element;

const DIALBACK: &str = "jabber:server:dialback";

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(el) = parse_element(text) else { return };
    if !(el.is("result", DIALBACK) || el.is("verify", DIALBACK)) {
        return;
    }
    let from = el.get_attr("from").unwrap_or_default();
    let to = el.get_attr("to").unwrap_or_default();
    let id = el.get_attr("id").unwrap_or_default();
    let key = el.text_content();
    let secret = Secret::generate();
    let made = secret.key(to, from, id);
    // A 256-bit MAC the input could only guess.
    assert_eq!(secret.verify(to, from, id, &key), key.trim().eq_ignore_ascii_case(&made));
    assert!(secret.verify(to, from, id, &made));
    assert!(!secret.verify(from, to, id, &made) || from == to);
});
