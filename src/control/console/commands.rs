//! The runners of the console groups: each parses its arguments, calls the manager method
//! every admin face shares ([`crate::core::admin`] and the module, config and account
//! managers), and renders an [`Output`].

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Output, arg, host_of, opt, target_hosts};
use crate::core::Core;
use crate::core::admin;
use crate::core::admin_ops::{AdminOp, NodeOutcome};
use crate::xmpp::error::StreamErrorCondition;

/// Runs `op` on this node (unless `node` names another) and on the other nodes `node` selects
/// (none: every node), rendering a node's result with `render`. On a single node, or scoped to
/// this one, the output is this node's alone, as it always was; otherwise one line per node,
/// and `{"nodes": [outcome]}` as data (an error when no node succeeded).
async fn everywhere(
    core: &Arc<Core>,
    op: &AdminOp,
    node: Option<String>,
    render: impl Fn(&Value) -> String,
) -> Result<Output, String> {
    let node = node.as_deref();
    let here = match core.runs_here(node) {
        true => Some(core.admin_op_here(op).await),
        false => None,
    };
    let others = core.admin_op_elsewhere(op, node).await;
    if others.is_empty() {
        let v = here.unwrap_or_else(|| Err(format!("no node {}", node.unwrap_or_default())))?;
        return Ok(Output::text(render(&v), v));
    }
    let me = core.node_name().unwrap_or_default();
    let outcomes: Vec<NodeOutcome> = here
        .map(|h| NodeOutcome::of(me, Some(h)))
        .into_iter()
        .chain(others)
        .collect();
    let lines: Vec<String> = outcomes
        .iter()
        .map(|o| match o.status {
            "ok" => format!("{}: {}", o.node, render(&o.result)),
            "error" => format!(
                "{}: error: {}",
                o.node,
                o.result.as_str().unwrap_or_default()
            ),
            _ => format!("{}: unreachable", o.node),
        })
        .collect();
    if outcomes.iter().all(|o| o.status != "ok") {
        return Err(lines.join("; "));
    }
    Ok(Output::text(lines.join("\n"), json!({ "nodes": outcomes })))
}

pub(super) async fn module_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    match name.as_str() {
        "load" | "unload" | "reload" => {
            let module = arg(&args, 0, "name")?;
            let host = opt(&args, 1);
            let op = match name.as_str() {
                "load" => AdminOp::ModuleLoad { module, host },
                "unload" => AdminOp::ModuleUnload { module, host },
                _ => AdminOp::ModuleReload { module, host },
            };
            everywhere(&core, &op, opt(&args, 2), |v| {
                let list = |k: &str| -> Vec<String> {
                    v[k].as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|h| h.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let (done, failed) = (list("done"), list("failed"));
                let module = v["module"].as_str().unwrap_or_default();
                let mut text = format!("{name}ed {module} on {}", done.join(", "));
                if !failed.is_empty() {
                    text.push_str(&format!(" (failed: {})", failed.join("; ")));
                }
                text
            })
            .await
        }
        "list" => {
            let mut rows = Vec::new();
            for host in target_hosts(&core, opt(&args, 0)) {
                let h = host_of(&core, &host)?;
                for m in h.modules() {
                    let st = h.module_status(&m);
                    rows.push(vec![
                        host.clone(),
                        m,
                        st.as_ref()
                            .map(|s| format!("{:?}", s.kind).to_lowercase())
                            .unwrap_or_default(),
                        st.map(|s| s.message).unwrap_or_default(),
                    ]);
                }
            }
            let data = json!(rows);
            Ok(Output::table(
                &["HOST", "MODULE", "STATUS", "MESSAGE"],
                rows,
                data,
            ))
        }
        "info" | "loaded" => {
            let module = arg(&args, 0, "name")?;
            let mut rows = Vec::new();
            for host in target_hosts(&core, opt(&args, 1)) {
                let h = host_of(&core, &host)?;
                let st = h.module_status(&module);
                rows.push(vec![
                    host,
                    h.is_loaded(&module).to_string(),
                    st.map(|s| s.message).unwrap_or_default(),
                ]);
            }
            if name == "loaded" {
                let loaded = rows.iter().any(|r| r[1] == "true");
                return Ok(Output::text(loaded.to_string(), json!(loaded)));
            }
            let data = json!(rows);
            Ok(Output::table(&["HOST", "LOADED", "STATUS"], rows, data))
        }
        _ => Err(format!("unknown command module:{name}")),
    }
}

fn sessions_output(list: Vec<admin::SessionInfo>) -> Output {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let rows = list
        .iter()
        .map(|s| {
            let security = match (&s.tls, s.secure) {
                (Some(t), _) => format!("{} {}", t.version, t.cipher),
                (None, true) => "tls".to_string(),
                (None, false) => "plain".to_string(),
            };
            let client = s.client.as_ref().map_or_else(
                || "-".to_string(),
                |c| {
                    let parts: Vec<&str> = [c.software.as_deref(), c.device.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect();
                    if parts.is_empty() {
                        c.id.clone()
                    } else {
                        parts.join(" on ")
                    }
                },
            );
            // A session on another cluster node shows its node where the address would be.
            let address = match &s.node {
                Some(n) if s.ip.is_empty() => format!("node {n}"),
                _ => s.ip.clone(),
            };
            vec![
                s.jid.clone(),
                address,
                s.transport.to_string(),
                security,
                s.mechanism.clone().unwrap_or_else(|| "-".into()),
                client,
                human_duration(now.saturating_sub(s.since)),
                human_duration(s.idle_secs),
                s.sm.to_string(),
                s.csi.to_string(),
                if s.available { "available" } else { "-" }.to_string(),
                s.queued.to_string(),
            ]
        })
        .collect();
    let data = json!(list);
    Output::table(
        &[
            "JID",
            "IP",
            "TRANSPORT",
            "SECURITY",
            "MECHANISM",
            "CLIENT",
            "CONNECTED",
            "IDLE",
            "SM",
            "CSI",
            "PRESENCE",
            "QUEUED",
        ],
        rows,
        data,
    )
}

pub(super) async fn c2s_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    match name.as_str() {
        "show" => {
            let host = opt(&args, 0);
            if let Some(h) = &host {
                host_of(&core, h)?;
            }
            Ok(sessions_output(core.session_list(host.as_deref(), None)))
        }
        "show_secure" => Ok(sessions_output(core.session_list(None, Some(true)))),
        "show_insecure" => Ok(sessions_output(core.session_list(None, Some(false)))),
        "count" => {
            let n = core.session_list(opt(&args, 0).as_deref(), None).len();
            Ok(Output::text(format!("{n} client sessions"), json!(n)))
        }
        "close" => {
            let jid = arg(&args, 0, "jid")?;
            let text = opt(&args, 1).unwrap_or_else(|| "session closed by an administrator".into());
            let condition = match opt(&args, 2).as_deref() {
                None | Some("policy-violation") => StreamErrorCondition::PolicyViolation,
                Some("reset") => StreamErrorCondition::Reset,
                Some(other) => {
                    return Err(format!("condition {other}: use policy-violation or reset"));
                }
            };
            let closed = core
                .close_sessions_everywhere(&jid, condition, &text)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Output::text(
                format!("closed {} session(s): {}", closed.len(), closed.join(", ")),
                json!(closed),
            ))
        }
        _ => Err(format!("unknown command c2s:{name}")),
    }
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

pub(super) async fn server_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    let info = core.server_info();
    match name.as_str() {
        "shutdown" => {
            let reason = opt(&args, 0).unwrap_or_default();
            core.request_shutdown(&reason);
            Ok(Output::text(
                "shutting down; clients get <system-shutdown/>",
                json!({ "reason": reason }),
            ))
        }
        "uptime" => Ok(Output::text(
            format!("up {}", human_duration(info.uptime_secs)),
            json!({ "uptime_secs": info.uptime_secs }),
        )),
        "version" => Ok(Output::text(
            format!("{} {}", info.name, info.version),
            json!({ "name": info.name, "version": info.version }),
        )),
        "memory" => {
            let m = &info.memory;
            let rss = m
                .rss_bytes
                .map(|b| format!("{:.1} MiB", b as f64 / 1_048_576.0))
                .unwrap_or_else(|| "unknown".into());
            let heap = m
                .heap_bytes
                .map(|b| format!("{:.1} MiB", b as f64 / 1_048_576.0))
                .unwrap_or_else(|| "unknown (the allocator does not say)".into());
            let rows = vec![
                vec!["rss".into(), rss],
                vec!["heap".into(), heap],
                vec!["sessions".into(), m.sessions.to_string()],
                vec!["queued stanzas".into(), m.queued_stanzas.to_string()],
            ];
            let data = json!(m);
            let mut out = Output::table(&["WHAT", "VALUE"], rows, data);
            out.text = None;
            Ok(out)
        }
        _ => Err(format!("unknown command server:{name}")),
    }
}

pub(super) async fn config_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    match name.as_str() {
        "reload" => {
            everywhere(&core, &AdminOp::ConfigReload, opt(&args, 0), |v| {
                let n = |k: &str| v[k].as_array().map_or(0, |a| a.len());
                format!(
                    "configuration reloaded: {} loaded, {} unloaded, {} reloaded, {} failed",
                    n("loaded"),
                    n("unloaded"),
                    n("reloaded"),
                    n("failed")
                )
            })
            .await
        }
        "get" => {
            let (host, key) = match args.len() {
                0 => return Err("missing argument: key".into()),
                1 => ("*".to_string(), args[0].clone()),
                _ => (args[0].clone(), args[1].clone()),
            };
            let v = core.config_get(&host, &key).map_err(|e| e.to_string())?;
            let text = match &v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(Output::text(text, v))
        }
        _ => Err(format!("unknown command config:{name}")),
    }
}

pub(super) async fn host_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    match name.as_str() {
        "list" => {
            let list = core.host_list();
            let rows = list
                .iter()
                .map(|h| {
                    vec![
                        h.host.clone(),
                        if h.active { "active" } else { "inactive" }.to_string(),
                        h.configured.to_string(),
                        h.modules.to_string(),
                        h.sessions.to_string(),
                    ]
                })
                .collect();
            let data = json!(list);
            Ok(Output::table(
                &["HOST", "STATE", "CONFIGURED", "MODULES", "SESSIONS"],
                rows,
                data,
            ))
        }
        "activate" => {
            let host = arg(&args, 0, "host")?;
            let op = AdminOp::HostActivate { host };
            everywhere(&core, &op, opt(&args, 1), |v| {
                let loaded = v["loaded"].as_array().map_or(0, |a| a.len());
                format!(
                    "{} activated ({loaded} modules loaded)",
                    v["host"].as_str().unwrap_or_default()
                )
            })
            .await
        }
        "deactivate" => {
            let host = arg(&args, 0, "host")?;
            let op = AdminOp::HostDeactivate { host };
            everywhere(&core, &op, opt(&args, 1), |v| {
                format!(
                    "{} deactivated ({} sessions closed)",
                    v["host"].as_str().unwrap_or_default(),
                    v["closed"]
                )
            })
            .await
        }
        _ => Err(format!("unknown command host:{name}")),
    }
}

pub(super) async fn user_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    let e = |e: admin::AdminError| e.to_string();
    match name.as_str() {
        "create" => {
            let jid = arg(&args, 0, "jid")?;
            let pw = arg(&args, 1, "password")?;
            let j = core
                .user_create(&jid, &pw, opt(&args, 2).as_deref())
                .await
                .map_err(e)?;
            Ok(Output::text(format!("created {j}"), json!(j.to_string())))
        }
        "password" => {
            let jid = arg(&args, 0, "jid")?;
            let pw = arg(&args, 1, "password")?;
            let j = core.accounts.account_jid(&jid).map_err(|x| x.to_string())?;
            core.accounts
                .set_password(&j, &pw)
                .await
                .map_err(|x| x.to_string())?;
            Ok(Output::text(
                format!("password changed for {j}"),
                json!(j.to_string()),
            ))
        }
        "delete" => {
            let jid = arg(&args, 0, "jid")?;
            let j = core.accounts.account_jid(&jid).map_err(|x| x.to_string())?;
            match core.delete_account(&j).await {
                Ok(true) => Ok(Output::text(format!("deleted {j}"), json!(j.to_string()))),
                Ok(false) => Err(format!("no account {j}")),
                Err(x) => Err(x.to_string()),
            }
        }
        "list" => {
            let host =
                opt(&args, 0).unwrap_or_else(|| core.config.load().default_host().to_string());
            let users = admin::user_list(&core.accounts, &host, opt(&args, 1).as_deref())
                .await
                .map_err(e)?;
            let rows = users.iter().map(|u| vec![format!("{u}@{host}")]).collect();
            Ok(Output::table(&["JID"], rows, json!(users)))
        }
        "roles" => {
            let jid = arg(&args, 0, "jid")?;
            let v = admin::user_roles(&core.accounts, &core.config.load().admins, &jid)
                .await
                .map_err(e)?;
            Ok(Output::text(
                v["role"].as_str().unwrap_or_default().to_string(),
                v,
            ))
        }
        "set_role" => {
            let jid = arg(&args, 0, "jid")?;
            let role = arg(&args, 1, "role")?;
            let j = admin::user_set_role(&core.accounts, &jid, &role)
                .await
                .map_err(e)?;
            Ok(Output::text(
                format!("{j} is now {role}"),
                json!({ "jid": j.to_string(), "role": role }),
            ))
        }
        "clients" => {
            let jid = arg(&args, 0, "jid")?;
            let j = core.accounts.account_jid(&jid).map_err(|x| x.to_string())?;
            let clients = core.list_clients(&j).await.map_err(|x| x.to_string())?;
            let rows = clients
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        c.kind.clone(),
                        if c.connected { "yes" } else { "no" }.to_string(),
                        c.software.clone().unwrap_or_default(),
                        c.device.clone().unwrap_or_default(),
                        c.auth.join(","),
                        human_duration(
                            u64::try_from(crate::core::accounts::now() - c.last_seen).unwrap_or(0),
                        ) + " ago",
                        if c.legacy { "legacy" } else { "" }.to_string(),
                    ]
                })
                .collect();
            Ok(Output::table(
                &[
                    "ID",
                    "TYPE",
                    "CONNECTED",
                    "SOFTWARE",
                    "DEVICE",
                    "AUTH",
                    "LAST SEEN",
                    "",
                ],
                rows,
                json!(clients),
            ))
        }
        "revoke_client" => {
            let jid = arg(&args, 0, "jid")?;
            let id = crate::core::grants::full_id(&arg(&args, 1, "id")?);
            let j = core.accounts.account_jid(&jid).map_err(|x| x.to_string())?;
            let closed = core
                .revoke_client(&j, &id)
                .await
                .map_err(|x| x.to_string())?;
            Ok(Output::text(
                format!("revoked {id} of {j} ({closed} sessions closed)"),
                json!({ "revoked": id, "closed": closed }),
            ))
        }
        _ => Err(format!("unknown command user:{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3700), "1h 1m 40s");
        assert_eq!(human_duration(90000), "1d 1h 0m");
    }
}
