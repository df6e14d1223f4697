//! The console commands of `oxpecker shell` (Prosody's `module:*`, `c2s:*`, `server:*`,
//! `config:*`, `host:*`, `user:*`, and the `s2s:*` / `muc:*` seams), run on the live core.
//!
//! [`GROUPS`] is the one dispatch table: each group names its commands (for `help` and tab
//! completion) and the function that runs them. Federation and group chat plug in by replacing
//! the [`not_configured`] runner of their group. Every command calls a manager method that the
//! REST API and the ad-hoc commands call too; this file only parses arguments and renders.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::core::Core;
use crate::core::admin;
use crate::xmpp::error::StreamErrorCondition;

/// What a command answers: a message, or a table, and the same data as JSON for `--json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// A line of text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Table column names (empty: no table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Table rows, one cell per column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Vec<String>>,
    /// The result as data.
    #[serde(default)]
    pub data: Value,
}

impl Output {
    fn text(t: impl Into<String>, data: Value) -> Self {
        Output {
            text: Some(t.into()),
            data,
            ..Default::default()
        }
    }

    fn table(columns: &[&str], rows: Vec<Vec<String>>, data: Value) -> Self {
        let n = rows.len();
        Output {
            text: Some(format!("{n} {}", if n == 1 { "item" } else { "items" })),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            data,
        }
    }
}

/// A console command as `help` lists it.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Its name within the group (`show`, `set_role`).
    pub name: &'static str,
    /// Its arguments, `?` marking optional ones.
    pub args: &'static str,
    /// What it does, in one line.
    pub help: &'static str,
}

/// The future a group's runner returns.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<Output, String>> + Send>>;

/// A command group: its commands and the function that runs them.
pub struct Group {
    /// The group name (`c2s`).
    pub name: &'static str,
    /// What the group is about.
    pub help: &'static str,
    /// Its commands.
    pub commands: &'static [CommandSpec],
    /// Runs `command` with `args` on the live core.
    pub run: fn(Arc<Core>, String, Vec<String>) -> RunFuture,
}

const fn cmd(name: &'static str, args: &'static str, help: &'static str) -> CommandSpec {
    CommandSpec { name, args, help }
}

/// Every command group of the console.
pub const GROUPS: &[Group] = &[
    Group {
        name: "module",
        help: "load, unload, reload and inspect modules",
        commands: &[
            cmd(
                "load",
                "name, host?",
                "load a module (no host: on every host)",
            ),
            cmd(
                "unload",
                "name, host?",
                "unload a module (no host: from every host)",
            ),
            cmd(
                "reload",
                "name, host?",
                "reload a module keeping its data (no host: every host)",
            ),
            cmd(
                "list",
                "host?",
                "modules loaded on a host (no host: every host)",
            ),
            cmd(
                "info",
                "name, host?",
                "where a module is loaded and its status",
            ),
            cmd(
                "loaded",
                "name, host",
                "whether a module is loaded on a host",
            ),
        ],
        run: |c, n, a| Box::pin(module_cmd(c, n, a)),
    },
    Group {
        name: "c2s",
        help: "client sessions",
        commands: &[
            cmd("show", "host?", "client sessions (no host: every host)"),
            cmd("show_secure", "", "encrypted client sessions"),
            cmd("show_insecure", "", "unencrypted client sessions"),
            cmd("count", "host?", "how many client sessions"),
            cmd(
                "close",
                "jid, text?, condition?",
                "close a bare JID's sessions or one full JID's (condition: policy-violation or reset)",
            ),
        ],
        run: |c, n, a| Box::pin(c2s_cmd(c, n, a)),
    },
    Group {
        name: "s2s",
        help: "server-to-server connections",
        commands: &[
            cmd("show", "host?", "server-to-server connections"),
            cmd("close", "from, to", "close a server-to-server connection"),
        ],
        run: |_, _, _| Box::pin(not_configured("federation (s2s)")),
    },
    Group {
        name: "server",
        help: "the server process",
        commands: &[
            cmd(
                "shutdown",
                "reason?",
                "stop the server; clients get the reason",
            ),
            cmd("uptime", "", "how long the server has run"),
            cmd("version", "", "the server's version"),
            cmd(
                "memory",
                "",
                "memory use and counts of sessions and queued stanzas",
            ),
        ],
        run: |c, n, a| Box::pin(server_cmd(c, n, a)),
    },
    Group {
        name: "config",
        help: "the configuration",
        commands: &[
            cmd("reload", "", "re-read the configuration file and apply it"),
            cmd(
                "get",
                "host?, key",
                "a configuration value (dotted keys: c2s.listen)",
            ),
        ],
        run: |c, n, a| Box::pin(config_cmd(c, n, a)),
    },
    Group {
        name: "host",
        help: "virtual hosts",
        commands: &[
            cmd("list", "", "configured hosts and whether each is active"),
            cmd("activate", "host", "start serving a configured host"),
            cmd("deactivate", "host", "stop serving a host (its data stays)"),
        ],
        run: |c, n, a| Box::pin(host_cmd(c, n, a)),
    },
    Group {
        name: "muc",
        help: "group chat rooms",
        commands: &[
            cmd("list", "host", "rooms of a MUC host"),
            cmd("create", "jid, options?", "create a room"),
            cmd(
                "room",
                "jid",
                "a room, with :get_affiliation, :set_affiliation, :get_role, :destroy, :save",
            ),
        ],
        run: |_, _, _| Box::pin(not_configured("group chat (muc)")),
    },
    Group {
        name: "user",
        help: "accounts and roles",
        commands: &[
            cmd("create", "jid, password, role?", "create an account"),
            cmd("password", "jid, password", "set an account's password"),
            cmd("delete", "jid", "delete an account and its data"),
            cmd(
                "list",
                "host, pattern?",
                "accounts of a host, optionally matching a glob",
            ),
            cmd("roles", "jid", "an account's role"),
            cmd("set_role", "jid, role", "set an account's role"),
            cmd("clients", "jid", "an account's authorised clients"),
            cmd("revoke_client", "jid, id", "revoke an authorised client"),
        ],
        run: |c, n, a| Box::pin(user_cmd(c, n, a)),
    },
];

/// The group named `name`.
pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

/// Runs `group:command(args)` on the live core.
pub async fn run(
    core: &Arc<Core>,
    group_name: &str,
    command: &str,
    args: Vec<String>,
) -> Result<Output, String> {
    let g = group(group_name)
        .ok_or_else(|| format!("unknown command group {group_name} (try help)"))?;
    // `muc:room(jid):set_affiliation(...)` arrives as `room:set_affiliation`.
    let head = command.split(':').next().unwrap_or(command);
    if !g.commands.iter().any(|c| c.name == head) {
        return Err(format!(
            "unknown command {group_name}:{command} (try help {group_name})"
        ));
    }
    (g.run)(core.clone(), command.to_string(), args).await
}

async fn not_configured(what: &str) -> Result<Output, String> {
    Err(format!("{what} is not configured on this server yet"))
}

fn arg(args: &[String], i: usize, name: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("missing argument: {name}"))
}

fn opt(args: &[String], i: usize) -> Option<String> {
    args.get(i).cloned().filter(|s| !s.is_empty())
}

/// The hosts a module command acts on: the one named, or every active host.
fn target_hosts(core: &Core, host: Option<String>) -> Vec<String> {
    match host {
        Some(h) => vec![h],
        None => core.hosts().iter().map(|h| h.name.clone()).collect(),
    }
}

async fn module_cmd(core: Arc<Core>, name: String, args: Vec<String>) -> Result<Output, String> {
    match name.as_str() {
        "load" | "unload" | "reload" => {
            let module = arg(&args, 0, "name")?;
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for host in target_hosts(&core, opt(&args, 1)) {
                let r = match name.as_str() {
                    "load" => core.load_module(&host, &module),
                    "unload" => core.unload_module(&host, &module),
                    _ => core.reload_module(&host, &module),
                };
                match r {
                    Ok(()) => done.push(host),
                    Err(e) => failed.push(format!("{host}: {e}")),
                }
            }
            let data = json!({ "module": module, "done": done, "failed": failed });
            if done.is_empty() {
                return Err(failed.join("; "));
            }
            let mut text = format!("{name}ed {module} on {}", done.join(", "));
            if !failed.is_empty() {
                text.push_str(&format!(" (failed: {})", failed.join("; ")));
            }
            Ok(Output::text(text, data))
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

fn host_of(core: &Core, host: &str) -> Result<Arc<crate::core::modules::Host>, String> {
    if host == "*" {
        return Ok(core.global_host());
    }
    core.host(host)
        .cloned()
        .ok_or_else(|| format!("unknown host {host}"))
}

fn sessions_output(list: Vec<admin::SessionInfo>) -> Output {
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.jid.clone(),
                s.ip.clone(),
                if s.secure { "tls" } else { "plain" }.to_string(),
                s.sm.to_string(),
                s.csi.to_string(),
                if s.available { "available" } else { "-" }.to_string(),
                s.queued.to_string(),
            ]
        })
        .collect();
    let data = json!(list);
    Output::table(
        &["JID", "IP", "SECURITY", "SM", "CSI", "PRESENCE", "QUEUED"],
        rows,
        data,
    )
}

async fn c2s_cmd(core: Arc<Core>, name: String, args: Vec<String>) -> Result<Output, String> {
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
                .close_sessions(&jid, condition, &text)
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

async fn server_cmd(core: Arc<Core>, name: String, args: Vec<String>) -> Result<Output, String> {
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
            let rows = vec![
                vec!["rss".into(), rss],
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

async fn config_cmd(core: Arc<Core>, name: String, args: Vec<String>) -> Result<Output, String> {
    match name.as_str() {
        "reload" => {
            let c = core.clone();
            let report = tokio::task::spawn_blocking(move || c.reload_config())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let data = serde_json::to_value(&report).unwrap_or(Value::Null);
            Ok(Output::text(
                format!(
                    "configuration reloaded: {} loaded, {} unloaded, {} reloaded, {} failed",
                    report.loaded.len(),
                    report.unloaded.len(),
                    report.reloaded.len(),
                    report.failed.len()
                ),
                data,
            ))
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

async fn host_cmd(core: Arc<Core>, name: String, args: Vec<String>) -> Result<Output, String> {
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
            let loaded = core.activate_host(&host).map_err(|e| e.to_string())?;
            Ok(Output::text(
                format!("{host} activated ({} modules loaded)", loaded.len()),
                json!({ "host": host, "loaded": loaded }),
            ))
        }
        "deactivate" => {
            let host = arg(&args, 0, "host")?;
            let closed = core.deactivate_host(&host).map_err(|e| e.to_string())?;
            Ok(Output::text(
                format!("{host} deactivated ({closed} sessions closed)"),
                json!({ "host": host, "closed": closed }),
            ))
        }
        _ => Err(format!("unknown command host:{name}")),
    }
}

async fn user_cmd(core: Arc<Core>, name: String, args: Vec<String>) -> Result<Output, String> {
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
        "clients" | "revoke_client" => {
            Err("client management is not available on this server yet".into())
        }
        _ => Err(format!("unknown command user:{name}")),
    }
}

/// Read-only internals for the `>` mode: `hosts`, `sessions [jid]`, `modules host`, `config`, `server`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_commands_and_unique_names() {
        let mut seen = std::collections::HashSet::new();
        for g in GROUPS {
            assert!(seen.insert(g.name), "{}", g.name);
            assert!(!g.commands.is_empty(), "{}", g.name);
        }
        for want in [
            "module", "c2s", "s2s", "server", "config", "host", "muc", "user",
        ] {
            assert!(group(want).is_some(), "{want}");
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3700), "1h 1m 40s");
        assert_eq!(human_duration(90000), "1d 1h 0m");
    }
}
