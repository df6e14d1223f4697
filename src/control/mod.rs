//! The local control socket: how the CLI manages a running server (one process owns the data dir).
//!
//! A Unix socket `oxpecker.sock` in the data directory (mode 0600) takes one JSON request per
//! line and answers one JSON line. The same [`execute`] runs the request offline when no server
//! holds the data directory. Every request is audited (tracing target `audit`) with the Unix
//! user that sent it; [`console`] holds the shell's commands, [`line`] how a shell line reads,
//! [`shell`] the interactive client.

pub mod console;
pub mod line;
pub mod shell;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::core::Core;
use crate::core::accounts::Accounts;

/// Largest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A control request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create an account.
    UserAdd {
        /// The account JID.
        jid: String,
        /// Its password.
        password: String,
        /// Its role (`admin`, `member`, …); none: the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// Set an account's role.
    UserSetRole {
        /// The account JID.
        jid: String,
        /// The role.
        role: String,
    },
    /// Change an account's password.
    UserPasswd {
        /// The account JID.
        jid: String,
        /// The new password.
        password: String,
    },
    /// Delete an account.
    UserDel {
        /// The account JID.
        jid: String,
    },
    /// List a host's accounts.
    UserList {
        /// The host.
        host: String,
    },
    /// Create an admin API token for an account (the secret is in the answer, once).
    TokenCreate {
        /// The owning account.
        jid: String,
        /// A note on what uses the token.
        #[serde(default)]
        label: Option<String>,
    },
    /// List a host's API tokens (ids and owners, never secrets).
    TokenList {
        /// The host.
        host: String,
    },
    /// Revoke an API token by id (or by the token itself).
    TokenRevoke {
        /// The token id.
        id: String,
    },
    /// The modules loaded on a host, with their status (running server only).
    ModuleList {
        /// The host (`*` for global modules).
        host: String,
    },
    /// Load a module on a host (running server only).
    ModuleLoad {
        /// The host.
        host: String,
        /// The module.
        name: String,
    },
    /// Unload a module from a host (running server only).
    ModuleUnload {
        /// The host.
        host: String,
        /// The module.
        name: String,
    },
    /// Reload a module on a host, keeping its data (running server only).
    ModuleReload {
        /// The host.
        host: String,
        /// The module.
        name: String,
    },
    /// Re-read the configuration file and apply it (running server only).
    ConfigReload,
    /// A shell command, `group:command(args)` (running server only; see [`console`]).
    Console {
        /// The group (`c2s`).
        group: String,
        /// The command (`show`).
        command: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
    },
    /// Read-only internals as JSON (the shell's `>` mode; running server only).
    Inspect {
        /// What to show (`hosts`, `sessions`, `modules`, `config`, `server`).
        what: String,
        /// Its argument (a JID or host).
        #[serde(default)]
        arg: Option<String>,
    },
}

impl Request {
    /// What the request does, for the audit log: its operation and arguments, secrets left out.
    pub fn describe(&self) -> String {
        match self {
            Request::UserAdd { jid, role, .. } => format!("user_add {jid} role={role:?}"),
            Request::UserPasswd { jid, .. } => format!("user_passwd {jid}"),
            Request::Console {
                group,
                command,
                args,
            } => {
                // Passwords are the second argument of user:create and user:password.
                let secret = group == "user" && (command == "create" || command == "password");
                let shown: Vec<&str> = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| if secret && i == 1 { "***" } else { a.as_str() })
                    .collect();
                format!("{group}:{command}({})", shown.join(", "))
            }
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }

    /// Whether the request changes state (read-only ones are not audited).
    pub fn mutates(&self) -> bool {
        match self {
            Request::UserList { .. }
            | Request::TokenList { .. }
            | Request::ModuleList { .. }
            | Request::Inspect { .. } => false,
            Request::Console { group, command, .. } => !matches!(
                (group.as_str(), command.as_str()),
                (
                    _,
                    "show" | "show_secure" | "show_insecure" | "count" | "list" | "info"
                ) | (_, "loaded" | "get" | "roles" | "clients")
                    | ("muc", "room" | "room:get_affiliation" | "room:get_role")
                    | ("server", "uptime" | "version" | "memory")
            ),
            _ => true,
        }
    }
}

/// A control response: `{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error message on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn ok(result: Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    fn err(e: impl ToString) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(e.to_string()),
        }
    }
}

/// Runs a request against the account manager.
pub async fn execute(accounts: &Accounts, req: Request) -> Response {
    let r = match req {
        Request::UserAdd {
            jid,
            password,
            role,
        } => {
            return match crate::core::admin::user_create(accounts, &jid, &password, role.as_deref())
                .await
            {
                Ok(j) => Response::ok(json!(j.to_string())),
                Err(e) => Response::err(e),
            };
        }
        Request::UserSetRole { jid, role } => {
            return match crate::core::admin::user_set_role(accounts, &jid, &role).await {
                Ok(j) => Response::ok(json!(j.to_string())),
                Err(e) => Response::err(e),
            };
        }
        Request::UserPasswd { jid, password } => match accounts.account_jid(&jid) {
            Ok(j) => accounts
                .set_password(&j, &password)
                .await
                .map(|_| json!(j.to_string())),
            Err(e) => Err(e),
        },
        Request::UserDel { jid } => match accounts.account_jid(&jid) {
            Ok(j) => match accounts.delete(&j).await {
                Ok(true) => Ok(json!(j.to_string())),
                Ok(false) => Err(crate::core::accounts::AccountError::NotFound(j.to_string())),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Request::UserList { host } => match crate::xmpp::jid::normalize_domain(&host) {
            Ok(h) => accounts.list(&h).await.map(|l| json!(l)),
            Err(e) => Err(crate::core::accounts::AccountError::InvalidJid(
                e.to_string(),
            )),
        },
        Request::TokenCreate { jid, label } => match accounts.account_jid(&jid) {
            Ok(j) => accounts
                .create_token(&j, label.as_deref())
                .await
                .map(|t| json!(t)),
            Err(e) => Err(e),
        },
        Request::TokenList { host } => match crate::xmpp::jid::normalize_domain(&host) {
            Ok(h) => accounts.list_tokens(&h).await.map(|l| json!(l)),
            Err(e) => Err(crate::core::accounts::AccountError::InvalidJid(
                e.to_string(),
            )),
        },
        Request::TokenRevoke { id } => match accounts.revoke_token(&id).await {
            Ok(Some(rec)) => Ok(json!(rec)),
            Ok(None) => Err(crate::core::accounts::AccountError::NotFound(format!(
                "token {id}"
            ))),
            Err(e) => Err(e),
        },
        Request::ModuleList { .. }
        | Request::ModuleLoad { .. }
        | Request::ModuleUnload { .. }
        | Request::ModuleReload { .. }
        | Request::ConfigReload
        | Request::Console { .. }
        | Request::Inspect { .. } => {
            return Response::err(
                "the server is not running (module, config and shell commands act on a running server)",
            );
        }
    };
    match r {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(e),
    }
}

/// Runs a request against a running server: module and config requests act on the live core,
/// the others go to [`execute`].
pub async fn execute_live(core: &Arc<Core>, req: Request) -> Response {
    let done = |r: Result<(), crate::core::modules::ModuleError>, what: String| match r {
        Ok(()) => Response::ok(json!(what)),
        Err(e) => Response::err(e),
    };
    match req {
        Request::ModuleList { host } => {
            let h = if host == "*" {
                Some(core.global_host())
            } else {
                core.host(&host).cloned()
            };
            match h {
                Some(h) => {
                    let list: Vec<Value> = h
                        .modules()
                        .into_iter()
                        .map(|m| json!({ "name": m, "status": h.module_status(&m) }))
                        .collect();
                    Response::ok(json!(list))
                }
                None => Response::err(format!("unknown host {host}")),
            }
        }
        Request::ModuleLoad { host, name } => done(
            core.load_module(&host, &name),
            format!("loaded {name} on {host}"),
        ),
        Request::ModuleUnload { host, name } => done(
            core.unload_module(&host, &name),
            format!("unloaded {name} from {host}"),
        ),
        Request::ModuleReload { host, name } => done(
            core.reload_module(&host, &name),
            format!("reloaded {name} on {host}"),
        ),
        Request::UserDel { jid } => match core.accounts.account_jid(&jid) {
            Ok(j) => match core.delete_account(&j).await {
                Ok(true) => Response::ok(json!(j.to_string())),
                Ok(false) => {
                    Response::err(crate::core::accounts::AccountError::NotFound(j.to_string()))
                }
                Err(e) => Response::err(e),
            },
            Err(e) => Response::err(e),
        },
        Request::Console {
            group,
            command,
            args,
        } => match console::run(core, &group, &command, args).await {
            Ok(out) => Response::ok(serde_json::to_value(out).unwrap_or(Value::Null)),
            Err(e) => Response::err(e),
        },
        Request::Inspect { what, arg } => match console::inspect(core, &what, arg.as_deref()) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        },
        Request::ConfigReload => match core.reload_config() {
            Ok(report) => Response::ok(serde_json::to_value(&report).unwrap_or(Value::Null)),
            Err(e) => Response::err(e),
        },
        other => execute(&core.accounts, other).await,
    }
}

/// The socket path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("oxpecker.sock")
}

/// Binds the control socket (replacing a stale one) with owner-only permissions.
pub fn listen(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(l)
}

/// Removes the socket file at shutdown.
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(data_dir));
}

/// Serves control connections until shutdown.
pub async fn serve(core: Arc<Core>, listener: UnixListener) {
    loop {
        let conn = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let who = peer_user(&stream);
        let core = core.clone();
        // Tracked, and idle connections end at shutdown, so the server waits for requests in flight.
        core.tasks.clone().spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r);
            let mut line = String::new();
            loop {
                line.clear();
                let mut limited = (&mut lines).take(MAX_LINE as u64);
                let read = tokio::select! {
                    _ = core.shutdown.cancelled() => return,
                    read = limited.read_line(&mut line) => read,
                };
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let resp = match serde_json::from_str::<Request>(line.trim()) {
                    Ok(req) => {
                        let (what, audited) = (req.describe(), req.mutates());
                        let resp = execute_live(&core, req).await;
                        if audited {
                            tracing::info!(
                                target: "audit",
                                who = %who,
                                from = "control socket",
                                what = %what,
                                outcome = if resp.ok { "ok" } else { "failed" },
                                error = resp.error.as_deref().unwrap_or(""),
                                "control call"
                            );
                        }
                        resp
                    }
                    Err(e) => Response::err(format!("bad request: {e}")),
                };
                let mut out =
                    serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
                out.push('\n');
                if w.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The Unix user on the other end of a control connection, as `uid=N(name)`.
fn peer_user(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(c) => {
            let uid = c.uid();
            match user_name(uid) {
                Some(n) => format!("uid={uid}({n})"),
                None => format!("uid={uid}"),
            }
        }
        Err(_) => "unknown".into(),
    }
}

/// The login name of `uid` from `/etc/passwd`, if listed.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Sends one request to a running server; `None` if no server listens on the data directory.
pub async fn call(data_dir: &Path, req: &Request) -> Option<std::io::Result<Response>> {
    let stream = UnixStream::connect(socket_path(data_dir)).await.ok()?;
    Some(
        async move {
            let (r, mut w) = stream.into_split();
            let mut body = serde_json::to_string(req).map_err(std::io::Error::other)?;
            body.push('\n');
            w.write_all(body.as_bytes()).await?;
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await?;
            serde_json::from_str(line.trim()).map_err(std::io::Error::other)
        }
        .await,
    )
}
