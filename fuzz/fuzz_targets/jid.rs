//! JID parsing (RFC 7622) over arbitrary text: never panics, and a parsed JID's text parses
//! back to the same JID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxpecker::xmpp::Jid;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(jid) = Jid::parse(text) {
        let again = Jid::parse(&jid.to_string()).expect("a displayed JID parses");
        assert_eq!(jid, again);
        let _ = jid.bare();
    }
});
