//! The `s2s:*` runner: federation streams through [`crate::core::remote::Federation`], the
//! same list and close the REST `/s2s` calls.

use std::sync::Arc;

use serde_json::json;

use super::{Output, arg, opt};
use crate::core::Core;

pub(super) async fn s2s_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    match name.as_str() {
        "show" => {
            let host = opt(&args, 0).map(|h| h.to_ascii_lowercase());
            let streams: Vec<_> = core
                .federation
                .get()
                .map(|f| f.streams())
                .unwrap_or_default()
                .into_iter()
                .filter(|s| {
                    host.as_deref()
                        .is_none_or(|h| s.local == h || s.remote == h)
                })
                .collect();
            let rows = streams
                .iter()
                .map(|s| {
                    vec![
                        s.direction.to_string(),
                        s.local.clone(),
                        s.remote.clone(),
                        s.auth.to_string(),
                        match (&s.tls_version, s.tls) {
                            (Some(v), _) => v.replace('_', "."),
                            (None, true) => "tls".to_string(),
                            (None, false) => "plain".to_string(),
                        },
                        if s.cert_valid { "valid" } else { "-" }.to_string(),
                        format!("{}s", s.idle_secs),
                        s.queued.to_string(),
                    ]
                })
                .collect();
            let data = json!(streams);
            Ok(Output::table(
                &[
                    "DIRECTION",
                    "LOCAL",
                    "REMOTE",
                    "AUTH",
                    "SECURITY",
                    "CERT",
                    "IDLE",
                    "QUEUED",
                ],
                rows,
                data,
            ))
        }
        "close" => {
            let local = arg(&args, 0, "from")?.to_ascii_lowercase();
            let remote = arg(&args, 1, "to")?.to_ascii_lowercase();
            let f = core
                .federation
                .get()
                .ok_or("this server does not federate (s2s)")?;
            match f.close(&local, &remote) {
                0 => Err(format!("no s2s stream between {local} and {remote}")),
                n => Ok(Output::text(
                    format!("closed {n} s2s stream(s) between {local} and {remote}"),
                    json!({ "local": local, "remote": remote, "closed": n }),
                )),
            }
        }
        _ => Err(format!("unknown command s2s:{name}")),
    }
}
