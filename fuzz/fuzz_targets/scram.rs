//! The server side of SCRAM over arbitrary client messages: the client-first message, then
//! (after the server-first for an unknown user) the client-final message. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxpecker::auth::scram::{ScramHash, ScramServer};

fuzz_target!(|input: &[u8]| {
    let (first, last) = match input.iter().position(|b| *b == 0xff) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &b""[..]),
    };
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let mut s = ScramServer::new(hash);
        if s.client_first(first).is_ok() {
            let _ = s.server_first(None);
            let _ = s.client_final(last);
        }
    }
});
