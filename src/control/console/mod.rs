//! The console commands of `oxpecker shell` (Prosody's `module:*`, `c2s:*`, `s2s:*`,
//! `server:*`, `config:*`, `host:*`, `muc:*` and `user:*`), run on the live core.
//!
//! [`GROUPS`] is the one dispatch table: each group names its commands (for `help` and tab
//! completion) and the function that runs them. Every command calls a manager method that the
//! REST API and the ad-hoc commands call too; the runners ([`commands`], [`s2s`] for
//! federation, [`muc`] for group chat) only parse arguments and render, and [`inspect`] serves
//! the read-only `>` mode.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::Core;

mod commands;
mod inspect;
mod muc;
mod s2s;

use commands::{c2s_cmd, config_cmd, host_cmd, module_cmd, server_cmd, user_cmd};
pub use inspect::inspect;
pub use muc::ROOM_METHODS;

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
                "name, host?, node?",
                "load a module (no host: on every host; no node: on every node of a cluster)",
            ),
            cmd(
                "unload",
                "name, host?, node?",
                "unload a module (no host: from every host; no node: on every node of a cluster)",
            ),
            cmd(
                "reload",
                "name, host?, node?",
                "reload a module keeping its data (no host: every host; no node: every node)",
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
            cmd(
                "show",
                "host?",
                "server-to-server streams: direction, domains, auth, TLS and certificate, idle, queued (host: either end)",
            ),
            cmd(
                "close",
                "from, to",
                "close every stream between local domain from and remote domain to",
            ),
        ],
        run: |c, n, a| Box::pin(s2s::s2s_cmd(c, n, a)),
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
            cmd(
                "reload",
                "node?",
                "re-read the configuration file and apply it (no node: on every node of a cluster)",
            ),
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
            cmd(
                "activate",
                "host, node?",
                "start serving a host of the (reloaded) config (no node: on every node)",
            ),
            cmd(
                "deactivate",
                "host, node?",
                "stop serving a host, its data kept (no node: on every node)",
            ),
        ],
        run: |c, n, a| Box::pin(host_cmd(c, n, a)),
    },
    Group {
        name: "muc",
        help: "group chat rooms",
        commands: &[
            cmd(
                "list",
                "host?",
                "rooms of a MUC host (no host: every MUC host)",
            ),
            cmd(
                "create",
                "jid, options?",
                "create a room; options: JSON object or key=value words (owner, persistent, name…)",
            ),
            cmd(
                "room",
                "jid",
                "a room's occupants and config; methods :get_affiliation(jid), :set_affiliation(actor, jid, affiliation, reason?) (actor: true for the server, or a user's JID acting under the room's rules), :get_role(nick), :destroy(reason?) (again: drop the tombstone), :save(force?)",
            ),
        ],
        run: |c, n, a| Box::pin(muc::muc_cmd(c, n, a)),
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

/// Argument `i`, or an error naming it.
pub(crate) fn arg(args: &[String], i: usize, name: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("missing argument: {name}"))
}

/// Argument `i` when given and not empty.
pub(crate) fn opt(args: &[String], i: usize) -> Option<String> {
    args.get(i).cloned().filter(|s| !s.is_empty())
}

/// The hosts a module command acts on: the one named, or every active host.
pub(crate) fn target_hosts(core: &Core, host: Option<String>) -> Vec<String> {
    core.target_hosts(host)
}

/// The host named, or the `*` host; an error naming it when it is not served.
pub(crate) fn host_of(core: &Core, host: &str) -> Result<Arc<crate::core::modules::Host>, String> {
    if host == "*" {
        return Ok(core.global_host());
    }
    core.host(host)
        .cloned()
        .ok_or_else(|| format!("unknown host {host}"))
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
}
