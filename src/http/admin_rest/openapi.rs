//! `GET /ping` (tests the caller's credentials) and `GET /openapi.json` (the spec of this API).

use std::sync::OnceLock;

use axum::Extension;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Ctx, json_response, ok};

/// The OpenAPI 3.1 document of the admin API (`openapi/admin_rest.yaml`, converted to JSON at build time).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/admin_rest.json")))
            .unwrap_or(Value::Null)
    })
}

/// `GET /ping`: 200 `"PONG"` once the allowlist and the credentials have passed.
pub async fn ping() -> Response {
    ok("PONG")
}

/// `GET /openapi.json`: the spec, with `servers` pointing at this server's base path.
pub async fn spec(Extension(ctx): Extension<Ctx>) -> Response {
    let mut doc = document().clone();
    doc["servers"] = json!([{ "url": ctx.base, "description": "this server" }]);
    json_response(doc)
}

/// Every (method, path) the spec documents, methods upper-case (for the route/spec sync test).
pub fn documented_routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = document().get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    if ["get", "put", "post", "delete", "patch", "head", "options"]
                        .contains(&method.as_str())
                    {
                        out.push((method.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_and_routes_agree() {
        assert_eq!(document()["openapi"], "3.1.0");
        let documented = documented_routes();
        let mut served: Vec<(String, String)> = super::super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        let missing: Vec<_> = served.iter().filter(|r| !documented.contains(r)).collect();
        let extra: Vec<_> = documented.iter().filter(|r| !served.contains(r)).collect();
        assert!(
            missing.is_empty(),
            "routes missing from openapi/admin_rest.yaml: {missing:?}"
        );
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }

    #[test]
    fn every_operation_documents_its_failures() {
        let paths = document()["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let responses = op["responses"].as_object().unwrap();
                for code in ["403", "404"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
                let public = op
                    .get("security")
                    .is_some_and(|s| s == &serde_json::json!([]));
                if !public {
                    for code in ["401", "429"] {
                        assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                    }
                }
            }
        }
    }
}
