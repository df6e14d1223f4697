//! The `oxpecker` command line: argument parsing and dispatch, nothing else.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use oxpecker::config::Config;
use oxpecker::control::{self, Request};
use oxpecker::storage::{StorageError, Store};

/// Oxpecker: an XMPP server with an HTTP-first admin control plane.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (default: embedded defaults, host `localhost`, data in ./data).
    #[arg(long, short, global = true, env = "OXPECKER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Manage accounts (works offline and against a running server).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage admin API tokens (works offline and against a running server).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Move data between versions and engines (server must be stopped).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Import another server's data (server must be stopped).
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Manage the modules of a running server (Prosody's `module:*` console commands).
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Re-read the configuration file of a running server and apply it (`config:reload`).
    Reload,
    /// The admin console of a running server: interactive, one command (`shell c2s show`),
    /// or lines from stdin; exits non-zero when a command fails.
    Shell {
        /// Print results as JSON.
        #[arg(long)]
        json: bool,
        /// One command to run, e.g. `c2s show localhost` or `'server:uptime()'`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// List the modules loaded on a host, with their status.
    List {
        /// The host (default: the first configured host; `*` for global modules).
        host: Option<String>,
    },
    /// Load a module.
    Load {
        /// The module.
        name: String,
        /// The host (default: the first configured host).
        #[arg(long)]
        host: Option<String>,
    },
    /// Unload a module.
    Unload {
        /// The module.
        name: String,
        /// The host (default: the first configured host).
        #[arg(long)]
        host: Option<String>,
    },
    /// Reload a module, keeping its data.
    Reload {
        /// The module.
        name: String,
        /// The host (default: the first configured host).
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is prompted for on a terminal, else read as one line from stdin.
    Add {
        /// The account, e.g. alice@localhost.
        jid: String,
        /// Its role: operator, admin, member, registered or guest (default registered).
        #[arg(long)]
        role: Option<String>,
    },
    /// Set an account's role (operator, admin, member, registered, guest).
    SetRole {
        /// The account.
        jid: String,
        /// The role.
        role: String,
    },
    /// Change an account's password (prompted, or one line from stdin).
    Passwd {
        /// The account.
        jid: String,
    },
    /// Delete an account.
    Del {
        /// The account.
        jid: String,
    },
    /// List the accounts of a host (default: the first configured host).
    List {
        /// The host.
        host: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an admin-scoped API token for an account (use it as `Authorization: Bearer TOKEN`).
    Create {
        /// The owning account, e.g. admin@localhost (it must have admin rights to use the API).
        jid: String,
        /// A note on what uses the token.
        #[arg(long)]
        label: Option<String>,
    },
    /// List the API tokens of a host (ids, owners and labels; never the secrets).
    List {
        /// The host (default: the first configured host).
        host: Option<String>,
    },
    /// Revoke an API token by its id.
    Revoke {
        /// The token id shown by `token list` (or the token itself).
        id: String,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Write every stored item as one JSON document per line, or as XEP-0227 (PIEFXIS).
    Export {
        /// `jsonl` (every record, one JSON document per line) or `xep0227`.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: StoreFormat,
        /// Output file (default: stdout).
        file: Option<PathBuf>,
    },
    /// Read items written by `store export` (either format).
    Import {
        /// `jsonl` or `xep0227` (also what Prosody and `ejabberdctl export_piefxis` write).
        #[arg(long, value_enum, default_value = "jsonl")]
        format: StoreFormat,
        /// Only check and report what would be imported (XEP-0227).
        #[arg(long)]
        check: bool,
        /// Input file (default: stdin).
        file: Option<PathBuf>,
    },
}

/// The file formats of `store export|import`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StoreFormat {
    /// Oxpecker's JSON lines: every stored record.
    Jsonl,
    /// XEP-0227 (PIEFXIS) with Oxpecker's extension for what it does not describe.
    Xep0227,
}

#[derive(Subcommand)]
enum ImportSource {
    /// A Prosody data directory (`internal` storage; Prosody stopped too).
    Prosody {
        /// Prosody's `data_path`, e.g. /var/lib/prosody.
        data_dir: PathBuf,
        /// Only check and report what would be imported.
        #[arg(long)]
        check: bool,
    },
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let cfg = match path {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::default(),
    };
    cfg.check_modules(&oxpecker::modules::BUILTIN.catalog())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cfg)
}

fn read_password(prompt: &str) -> Result<String> {
    let pw = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        if first != again {
            bail!("passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

/// Runs the command; a failure is one line on stderr (`oxpecker: error: …`) and exit status 1.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("oxpecker: error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let cfg = load_config(cli.config.as_deref())?;
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve => {
            let _logs = oxpecker::logging::init(&cfg)?;
            rt.block_on(serve(cfg))
        }
        Command::CheckConfig => {
            println!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Token { command } => {
            let req = match command {
                TokenCommand::Create { jid, label } => Request::TokenCreate { jid, label },
                TokenCommand::List { host } => Request::TokenList {
                    host: host.unwrap_or_else(|| cfg.default_host().to_string()),
                },
                TokenCommand::Revoke { id } => Request::TokenRevoke { id },
            };
            rt.block_on(user(cfg, req))
        }
        Command::User { command } => {
            let req = match command {
                UserCommand::Add { jid, role } => Request::UserAdd {
                    password: read_password(&format!("Password for {jid}: "))?,
                    jid,
                    role,
                },
                UserCommand::SetRole { jid, role } => Request::UserSetRole { jid, role },
                UserCommand::Passwd { jid } => Request::UserPasswd {
                    password: read_password(&format!("New password for {jid}: "))?,
                    jid,
                },
                UserCommand::Del { jid } => Request::UserDel { jid },
                UserCommand::List { host } => Request::UserList {
                    host: host.unwrap_or_else(|| cfg.default_host().to_string()),
                },
            };
            rt.block_on(user(cfg, req))
        }
        Command::Store { command } => rt.block_on(store(cfg, command)),
        Command::Import { source } => rt.block_on(import(cfg, source)),
        Command::Module { command } => {
            let host = |h: Option<String>| h.unwrap_or_else(|| cfg.default_host().to_string());
            let req = match command {
                ModuleCommand::List { host: h } => Request::ModuleList { host: host(h) },
                ModuleCommand::Load { name, host: h } => Request::ModuleLoad {
                    host: host(h),
                    name,
                },
                ModuleCommand::Unload { name, host: h } => Request::ModuleUnload {
                    host: host(h),
                    name,
                },
                ModuleCommand::Reload { name, host: h } => Request::ModuleReload {
                    host: host(h),
                    name,
                },
            };
            rt.block_on(user(cfg, req))
        }
        Command::Reload => rt.block_on(user(cfg, Request::ConfigReload)),
        Command::Shell { json, mut words } => {
            drop(rt);
            // `--json` after the command words counts too (`shell c2s show --json`).
            let json = json || words.iter().any(|w| w == "--json");
            words.retain(|w| w != "--json");
            let opts = oxpecker::control::shell::Options { json };
            std::process::exit(oxpecker::control::shell::run(&cfg.data_dir, words, opts));
        }
    }
}

async fn serve(cfg: Config) -> Result<()> {
    let server = oxpecker::Server::start(cfg).await?;
    let core = server.core.clone();
    tokio::spawn(reload_on_sighup(core.clone()));
    // A signal, or an admin's `server:shutdown` (shell, REST, ad-hoc): drain, then exit 0.
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = core.stop.requested() => {}
    }
    server.shutdown().await;
    Ok(())
}

/// `SIGHUP` re-reads the configuration (`config:reload`), as `systemctl reload` sends it.
async fn reload_on_sighup(core: std::sync::Arc<oxpecker::core::Core>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match core.reload_config() {
                Ok(r) => tracing::info!(
                    loaded = ?r.loaded,
                    unloaded = ?r.unloaded,
                    reloaded = ?r.reloaded,
                    failed = ?r.failed,
                    warnings = ?r.warnings,
                    "configuration reloaded on SIGHUP"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: configuration not reloaded, keeping the running one")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = core;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn open_store(cfg: &Config) -> Result<Store> {
    match Store::open_configured(&cfg.store_dir(), &cfg.storage) {
        Ok(s) => Ok(s),
        Err(StorageError::Locked(m)) => bail!("{m}; stop the server first"),
        Err(e) => Err(e).context("opening the store"),
    }
}

async fn user(cfg: Config, req: Request) -> Result<()> {
    let resp = match control::call(&cfg.data_dir, &req).await {
        Some(r) => r.context("talking to the running server")?,
        None => {
            std::fs::create_dir_all(&cfg.data_dir)?;
            let store = open_store(&cfg)?;
            if matches!(req, Request::UserDel { .. }) {
                // Deleting an account cleans every manager's and module's data: use the full core.
                let core =
                    oxpecker::core::Core::new(cfg.clone(), store, oxpecker::modules::BUILTIN)?;
                let resp = control::execute_live(&core, req.clone()).await;
                core.store.flush().await?;
                resp
            } else {
                let hosts = cfg.hosts.iter().map(|h| h.name.clone()).collect();
                let accounts = oxpecker::core::accounts::Accounts::new(
                    store,
                    hosts,
                    cfg.auth.scram_iterations,
                );
                control::execute(&accounts, req.clone()).await
            }
        }
    };
    if !resp.ok {
        bail!("{}", resp.error.unwrap_or_else(|| "failed".into()));
    }
    let mut out = std::io::stdout().lock();
    match (req, resp.result) {
        (Request::UserList { .. }, Some(serde_json::Value::Array(users))) => {
            for u in users {
                writeln!(out, "{}", u.as_str().unwrap_or_default())?;
            }
        }
        (Request::UserAdd { role, .. }, Some(j)) => match role {
            Some(r) => writeln!(out, "created {} ({r})", j.as_str().unwrap_or_default())?,
            None => writeln!(out, "created {}", j.as_str().unwrap_or_default())?,
        },
        (Request::UserSetRole { role, .. }, Some(j)) => {
            writeln!(out, "{} is now {role}", j.as_str().unwrap_or_default())?
        }
        (Request::UserPasswd { .. }, Some(j)) => writeln!(
            out,
            "password changed for {}",
            j.as_str().unwrap_or_default()
        )?,
        (Request::UserDel { .. }, Some(j)) => {
            writeln!(out, "deleted {}", j.as_str().unwrap_or_default())?
        }
        (Request::TokenCreate { .. }, Some(t)) => {
            let field = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            eprintln!(
                "created token {} for {} (shown once; store it now)",
                field("id"),
                field("owner")
            );
            writeln!(out, "{}", field("token"))?
        }
        (Request::TokenList { .. }, Some(serde_json::Value::Array(tokens))) => {
            for t in tokens {
                let field = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    field("id"),
                    field("owner"),
                    t["created"].as_i64().unwrap_or_default(),
                    field("label")
                )?;
            }
        }
        (Request::TokenRevoke { .. }, Some(t)) => {
            writeln!(out, "revoked {}", t["id"].as_str().unwrap_or_default())?
        }
        (Request::ModuleList { .. }, Some(serde_json::Value::Array(mods))) => {
            for m in mods {
                let st = &m["status"];
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    m["name"].as_str().unwrap_or_default(),
                    st["type"].as_str().unwrap_or("info"),
                    st["message"].as_str().unwrap_or_default()
                )?;
            }
        }
        (_, Some(serde_json::Value::String(msg))) => writeln!(out, "{msg}")?,
        (_, Some(v)) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        _ => {}
    }
    Ok(())
}

async fn store(cfg: Config, command: StoreCommand) -> Result<()> {
    let store = open_store(&cfg)?;
    if let StoreCommand::Import {
        format: StoreFormat::Xep0227,
        check,
        file,
    } = command
    {
        let opts = oxpecker::migrate::Options::from_config(&cfg, check);
        let report = match file {
            Some(p) => {
                let f =
                    std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                let base = p.parent().map(Path::to_path_buf);
                oxpecker::migrate::import_xep0227(&store, opts, std::io::BufReader::new(f), base)
                    .await?
            }
            None => {
                let stdin = std::io::BufReader::new(std::io::stdin());
                oxpecker::migrate::import_xep0227(&store, opts, stdin, None).await?
            }
        };
        return finish_import(report);
    }
    tokio::task::spawn_blocking(move || -> Result<()> {
        match command {
            StoreCommand::Export { format, file } => {
                let out: Box<dyn Write> = match file {
                    Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(&p)?)),
                    None => Box::new(std::io::stdout().lock()),
                };
                match format {
                    StoreFormat::Jsonl => {
                        let n = oxpecker::storage::export(&store, out)?;
                        eprintln!("exported {n} items");
                    }
                    StoreFormat::Xep0227 => {
                        let n = oxpecker::migrate::export_xep0227(&store, out)?;
                        eprintln!("exported {n} accounts");
                    }
                }
            }
            StoreCommand::Import { file, .. } => {
                let n = match file {
                    Some(p) => oxpecker::storage::import(
                        &store,
                        std::io::BufReader::new(std::fs::File::open(&p)?),
                    )?,
                    None => oxpecker::storage::import(&store, std::io::stdin().lock())?,
                };
                eprintln!("imported {n} items");
            }
        }
        Ok(())
    })
    .await?
}

async fn import(cfg: Config, source: ImportSource) -> Result<()> {
    let store = open_store(&cfg)?;
    let ImportSource::Prosody { data_dir, check } = source;
    let opts = oxpecker::migrate::Options::from_config(&cfg, check);
    let report = oxpecker::migrate::import_prosody(&store, opts, &data_dir).await?;
    store.flush().await?;
    finish_import(report)
}

/// Prints an import's report; fails (exit 1) if anything was left out.
fn finish_import(report: oxpecker::migrate::Report) -> Result<()> {
    println!("{report}");
    if !report.errors.is_empty() {
        bail!(
            "{} accounts or record sets were not imported",
            report.errors.len()
        );
    }
    Ok(())
}
