//! The local control socket: how the CLI manages a running server (one process owns the data dir).
//!
//! A Unix socket `oxpecker.sock` in the data directory (mode 0600) takes one JSON request per
//! line and answers one JSON line. The same [`execute`] runs the request offline when no server
//! holds the data directory.

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
        Request::UserAdd { jid, password } => match accounts.account_jid(&jid) {
            Ok(j) => accounts
                .create(&j, &password)
                .await
                .map(|_| json!(j.to_string())),
            Err(e) => Err(e),
        },
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
        | Request::ConfigReload => {
            return Response::err(
                "the server is not running (module and config commands act on a running server)",
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
                    Ok(req) => execute_live(&core, req).await,
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
