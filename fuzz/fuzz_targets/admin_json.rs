//! The admin REST API's body parsing over arbitrary bytes, as JSON and as a body object, with
//! and without a JSON content type. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxpecker::http::admin_rest::{body_object, optional_body_object, parse_body};

fuzz_target!(|input: &[u8]| {
    let body = http::HeaderMap::new();
    let mut json = http::HeaderMap::new();
    json.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let bytes = bytes::Bytes::copy_from_slice(input);
    for h in [&body, &json] {
        let _ = parse_body(h, &bytes);
        if let Ok(obj) = body_object(h, &bytes) {
            for (_, v) in obj.iter() {
                let _ = v.as_str();
            }
        }
        let _ = optional_body_object(h, &bytes);
    }
});
