//! The shell's `>` mode: server internals as read-only JSON.

use serde_json::{Value, json};

use super::host_of;
use crate::core::Core;

/// Read-only internals for the `>` mode: `hosts`, `sessions [jid]`, `modules HOST`, `config`, `server`
/// (and `jids`, the online JIDs tab completion offers).
pub fn inspect(core: &Core, what: &str, arg: Option<&str>) -> Result<Value, String> {
    match what {
        "hosts" => Ok(json!(core.host_list())),
        "sessions" => {
            let all = core.session_list(None, None);
            Ok(match arg {
                None => json!(all),
                Some(j) => json!(
                    all.into_iter()
                        .filter(|s| s.jid == j || s.jid.split('/').next() == Some(j))
                        .collect::<Vec<_>>()
                ),
            })
        }
        "modules" => {
            let host = arg.ok_or("which host? (> modules example.org)")?;
            let h = host_of(core, host)?;
            Ok(json!(
                h.modules()
                    .into_iter()
                    .map(|m| json!({ "name": m, "status": h.module_status(&m) }))
                    .collect::<Vec<_>>()
            ))
        }
        "config" => serde_json::to_value(&**core.config.load()).map_err(|e| e.to_string()),
        "server" => Ok(json!(core.server_info())),
        "jids" => {
            let mut out: Vec<String> = Vec::new();
            for s in core.session_list(None, None) {
                let bare = s.jid.split('/').next().unwrap_or_default().to_string();
                if !out.contains(&bare) {
                    out.push(bare);
                }
                out.push(s.jid);
            }
            Ok(json!(out))
        }
        other => Err(format!(
            "nothing called {other} (try: hosts, sessions [jid], modules HOST, config, server)"
        )),
    }
}
