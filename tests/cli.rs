//! The `oxpecker` binary: account commands offline and against a running server, config errors,
//! store export/import, and durability across `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::RawClient;

const BIN: &str = env!("CARGO_BIN_EXE_oxpecker");

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a config for `dir` with fresh ports; returns (config path, c2s port).
fn write_config(dir: &Path) -> (std::path::PathBuf, u16) {
    let c2s = free_port();
    let http = free_port();
    let path = dir.join("oxpecker.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:{c2s}\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = [\"127.0.0.1:{http}\"]\n[auth]\nscram_iterations = 4096\n"
        ),
    )
    .unwrap();
    (path, c2s)
}

/// Runs the CLI with `args`, feeding `stdin`.
fn run(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `oxpecker serve` and waits until its c2s port accepts and its control socket exists
/// (the port is bound before the control socket: a CLI call in between opens the store itself).
fn serve(config: &Path, port: u16) -> Child {
    let socket = config.with_file_name("data").join("oxpecker.sock");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && socket.exists() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start");
}

#[test]
fn user_commands_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path());
    let o = run(&cfg, &["user", "add", "Alice@LocalHost"], "pw1\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("created alice@localhost"));
    let o = run(&cfg, &["user", "add", "alice@localhost"], "pw1\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = run(&cfg, &["user", "add", "bad user@localhost"], "pw\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid"), "{}", stderr(&o));
    let o = run(&cfg, &["user", "add", "carol@elsewhere.example"], "pw\n");
    assert!(stderr(&o).contains("unknown host"), "{}", stderr(&o));
    let o = run(&cfg, &["user", "add", "dave@localhost"], "\n");
    assert!(!o.status.success(), "empty password refused");
    run(&cfg, &["user", "add", "bob@localhost"], "pw2\n");
    let o = run(&cfg, &["user", "list"], "");
    assert_eq!(stdout(&o), "alice\nbob\n");
    let o = run(&cfg, &["user", "passwd", "bob@localhost"], "pw3\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&cfg, &["user", "del", "bob@localhost"], "");
    assert!(o.status.success());
    let o = run(&cfg, &["user", "del", "bob@localhost"], "");
    assert!(stderr(&o).contains("does not exist"));
    assert_eq!(stdout(&run(&cfg, &["user", "list"], "")), "alice\n");
    // No clear password anywhere in the data dir.
    for entry in walk(&dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(3).any(|w| w == b"pw1"),
            "clear password in {entry:?}"
        );
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn invalid_config_refuses_to_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[c2s]\nmax_stanza_size = 12\n").unwrap();
    let o = run(&path, &["serve"], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("c2s.max_stanza_size"), "{}", stderr(&o));
    std::fs::write(&path, "[c2s]\nlisten_on = []\n").unwrap();
    let o = run(&path, &["serve"], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("listen_on"), "{}", stderr(&o));
}

#[test]
fn store_export_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path());
    run(&cfg, &["user", "add", "alice@localhost"], "pw1\n");
    let dump = dir.path().join("dump.jsonl");
    let o = run(&cfg, &["store", "export", dump.to_str().unwrap()], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(
        text.contains("\"accounts\"") && text.contains("alice"),
        "{text}"
    );

    let other = tempfile::tempdir().unwrap();
    let (cfg2, _) = write_config(other.path());
    let o = run(&cfg2, &["store", "import", dump.to_str().unwrap()], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&run(&cfg2, &["user", "list"], "")), "alice\n");
}

#[tokio::test]
async fn user_add_while_running_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = write_config(dir.path());
    let mut server = serve(&cfg, port);
    // The CLI goes through the control socket: the server holds the data dir.
    let cfg2 = cfg.clone();
    let o = tokio::task::spawn_blocking(move || {
        run(&cfg2, &["user", "add", "alice@localhost"], "secret\n")
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The account works at once.
    let cert = std::fs::read(dir.path().join("data/tls/cert.pem")).unwrap();
    let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.starttls(&cert).await;
    assert!(c.auth_plain("alice", "secret").await.contains("<success"));
    // Acknowledged means durable: kill -9 and the account is still there.
    server.kill().unwrap();
    server.wait().unwrap();
    let cfg3 = cfg.clone();
    let o = tokio::task::spawn_blocking(move || run(&cfg3, &["user", "list"], ""))
        .await
        .unwrap();
    assert_eq!(stdout(&o), "alice\n", "{}", stderr(&o));
    let mut server = serve(&cfg, port);
    let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.starttls(&cert).await;
    assert!(c.auth_plain("alice", "secret").await.contains("<success"));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test]
async fn module_commands_act_on_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = write_config(dir.path());
    let mut server = serve(&cfg, port);
    let c = cfg.clone();
    let run_async = move |args: &'static [&'static str]| {
        let c = c.clone();
        tokio::task::spawn_blocking(move || run(&c, args, ""))
    };
    let o = run_async(&["module", "list"]).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ping\tinfo"), "{}", stdout(&o));
    let o = run_async(&["module", "unload", "ping"]).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&run_async(&["module", "list"]).await.unwrap()).contains("ping\t"));
    let o = run_async(&["module", "unload", "ping"]).await.unwrap();
    assert!(stderr(&o).contains("not loaded"), "{}", stderr(&o));
    let o = run_async(&["module", "load", "ping"]).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_async(&["module", "reload", "ping"]).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_async(&["module", "load", "nonsense"]).await.unwrap();
    assert!(stderr(&o).contains("unknown module"), "{}", stderr(&o));
    let o = run_async(&["reload"]).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    server.kill().unwrap();
    server.wait().unwrap();
    // Without a running server, module commands say so.
    let o = run_async(&["module", "list"]).await.unwrap();
    assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
}

#[tokio::test]
async fn first_admin_in_one_line_and_shutdown_from_the_shell_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = write_config(dir.path());
    // Offline: create with a role, and change a role.
    let o = run(
        &cfg,
        &["user", "add", "admin@localhost", "--role", "admin"],
        "pw\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("created admin@localhost (admin)"));
    let o = run(
        &cfg,
        &["user", "add", "x@localhost", "--role", "boss"],
        "pw\n",
    );
    assert!(stderr(&o).contains("unknown role boss"), "{}", stderr(&o));
    run(&cfg, &["user", "add", "bob@localhost"], "pw\n");
    let o = run(&cfg, &["user", "set-role", "bob@localhost", "member"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    // No server: the shell says so and fails.
    let o = run(&cfg, &["shell", "server", "uptime"], "");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no server is running"),
        "{}",
        stderr(&o)
    );

    let mut server = serve(&cfg, port);
    let c = cfg.clone();
    let run_async = move |args: &'static [&'static str]| {
        let c = c.clone();
        tokio::task::spawn_blocking(move || run(&c, args, ""))
    };
    let o = run_async(&["shell", "user", "roles", "admin@localhost"])
        .await
        .unwrap();
    assert_eq!(stdout(&o).trim(), "admin", "{}", stderr(&o));
    let o = run_async(&["shell", "user:roles('bob@localhost')"])
        .await
        .unwrap();
    assert_eq!(stdout(&o).trim(), "member", "{}", stderr(&o));
    // Online: set-role goes through the running server.
    let o = run_async(&["user", "set-role", "bob@localhost", "admin"])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_async(&["shell", "user", "roles", "bob@localhost"])
        .await
        .unwrap();
    assert_eq!(stdout(&o).trim(), "admin");

    let o = run_async(&["shell", "server:shutdown('maintenance')"])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let status = tokio::task::spawn_blocking(move || server.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// The message archive is written lazily but within its documented window
/// (`storage::LAZY_FLUSH_INTERVAL`, 200 ms): once a delivered message has been archived for
/// longer than that, `kill -9` loses neither party's copy.
#[tokio::test]
async fn archived_messages_survive_kill_9_after_the_flush_window() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = write_config(dir.path());
    for user in ["alice@localhost", "bob@localhost"] {
        let o = run(&cfg, &["user", "add", user], "secret\n");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut server = serve(&cfg, port);
    let cert = std::fs::read(dir.path().join("data/tls/cert.pem")).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut clients = Vec::new();
    for user in ["alice", "bob"] {
        let mut c = RawClient::connect(addr).await;
        c.starttls(&cert).await;
        assert!(c.auth_plain(user, "secret").await.contains("<success"));
        c.bind("r").await;
        clients.push(c);
    }
    for i in 0..20 {
        clients[0]
            .send(&format!(
                "<message to='bob@localhost/r' type='chat' id='m{i}'><body>kept-{i}</body></message>"
            ))
            .await;
        let got = clients[1].read_stanza("message").await;
        assert!(
            got.contains(&format!("kept-{i}")) && got.contains("stanza-id"),
            "{got}"
        );
    }
    // Past the durability window (with margin), then no clean shutdown at all.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let dump = dir.path().join("dump.jsonl");
    let cfg2 = cfg.clone();
    let dump2 = dump.clone();
    let o = tokio::task::spawn_blocking(move || {
        run(&cfg2, &["store", "export", dump2.to_str().unwrap()], "")
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&dump).unwrap();
    for i in 0..20 {
        for user in ["alice", "bob"] {
            let line = text
                .lines()
                .find(|l| {
                    l.contains("\"archive\"")
                        && l.contains(&format!("\"user\":\"{user}\""))
                        && l.contains(&format!("kept-{i}<"))
                })
                .unwrap_or_else(|| panic!("{user}'s copy of message {i} is lost:\n{text}"));
            assert!(line.contains("\"id\":"), "{line}");
        }
    }
}
