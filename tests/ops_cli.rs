//! `oxpecker serve` as an operator runs it: logs without colour codes when not on a terminal,
//! one readable line for a bad config or a busy port, startup lines per listener, `SIGHUP`
//! reloads the configuration and `SIGTERM` exits cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_oxpecker");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_output(config: &Path) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Polls `path` until it contains `needle`; returns its text (panics after ~20 s).
fn wait_for_text(path: &Path, needle: &str) -> String {
    for _ in 0..400 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{needle:?} never appeared in {path:?}: {}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[test]
fn a_busy_port_is_one_error_line_and_logs_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let path = dir.path().join("oxpecker.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\n[s2s]\nlisten = []\n[http]\nlisten = []\n"
        ),
    )
    .unwrap();
    let o = serve_output(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!(
            "oxpecker: error: cannot listen on 127.0.0.1:{port}: "
        )),
        "{err}"
    );
    // The log (stdout, a pipe here) says where the certificate went, in plain text.
    assert!(out.contains("generated a self-signed certificate"), "{out}");
    assert!(!out.contains('\u{1b}'), "no ANSI codes in a pipe: {out:?}");
}

#[test]
fn a_bad_config_is_one_error_line_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oxpecker.toml");
    std::fs::write(&path, "admins = []\n[c2s]\nlisten_on = []\n").unwrap();
    let o = serve_output(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("oxpecker: error: invalid config: line 3 (`listen_on = []`): ")
            && err.contains("listen_on"),
        "{err}"
    );
}

#[test]
fn startup_lines_then_sighup_reloads_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (c2s, http) = (free_port(), free_port());
    let path = dir.path().join("oxpecker.toml");
    let config = |modules: &str| {
        format!(
            "data_dir = \"data\"\nlog_file = \"logs/server.log\"\nlog_rotation = \"never\"\nmodules_enabled = [{modules}]\n[c2s]\nlisten = [\"127.0.0.1:{c2s}\"]\n[s2s]\nlisten = []\n[http]\nlisten = [\"127.0.0.1:{http}\"]\n"
        )
    };
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::write(&path, config("\"disco\", \"ping\"")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = dir.path().join("logs/server.log");
    let text = wait_for_text(&log, "oxpecker started");
    assert!(
        text.contains(&format!(
            "listening for clients (STARTTLS) on 127.0.0.1:{c2s}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("listening for HTTP on 127.0.0.1:{http}")),
        "{text}"
    );
    assert!(text.contains("data directory "), "{text}");
    assert!(text.contains("/tls/cert.pem (self-signed)"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI codes in a file");

    std::fs::write(&path, config("\"disco\"")).unwrap();
    signal(child.id(), "-HUP");
    let text = wait_for_text(&log, "configuration reloaded on SIGHUP");
    assert!(text.contains("localhost/ping"), "ping unloaded: {text}");
    let list = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["module", "list"])
        .output()
        .unwrap();
    let modules = String::from_utf8_lossy(&list.stdout);
    assert!(
        modules.contains("disco") && !modules.contains("ping"),
        "{modules}"
    );

    signal(child.id(), "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    wait_for_text(&log, "oxpecker stopped");
}
