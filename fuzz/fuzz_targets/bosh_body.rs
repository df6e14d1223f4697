//! The BOSH (XEP-0124) request body parser over arbitrary text: never panics, and what it
//! accepts is a `<body xmlns='http://jabber.org/protocol/httpbind'/>` that reads back the same
//! from its own serialisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxpecker::web::bosh::parse_body;

const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Some(body) = parse_body(text) else { return };
    assert!(body.is("body", HTTPBIND));
    let again = parse_body(&body.to_xml("")).expect("a serialised body parses");
    assert_eq!(again.to_xml(""), body.to_xml(""));
});
