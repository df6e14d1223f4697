//! The shell's actions are audited on the `audit` target: who (the Unix uid and user), from
//! where (the control socket), what (the command, passwords left out) and the result. Its own
//! test binary, as a scoped tracing subscriber needs a process of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestServer;
use oxpecker::control::{self, Request};

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn console(group: &str, command: &str, args: &[&str]) -> Request {
    Request::Console {
        group: group.into(),
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn shell_actions_are_audited_without_secrets() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("audit=info")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let srv = TestServer::start().await;
    let dir = srv.config.data_dir.clone();
    let r = control::call(
        &dir,
        &console("user", "create", &["dave@localhost", "hunter2-secret"]),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(r.ok, "{r:?}");
    let r = control::call(&dir, &console("c2s", "close", &["nobody@localhost"]))
        .await
        .unwrap()
        .unwrap();
    assert!(!r.ok);
    // Read-only commands are not audited.
    control::call(&dir, &console("c2s", "show", &[]))
        .await
        .unwrap()
        .unwrap();
    control::call(
        &dir,
        &console(
            "muc",
            "room:get_role",
            &["lounge@conference.localhost", "x"],
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let r = control::call(
        &dir,
        &console("muc", "create", &["lounge@conference.localhost"]),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(r.ok, "{r:?}");
    let r = control::call(
        &dir,
        &console("s2s", "close", &["localhost", "nowhere.example"]),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!r.ok);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let uid = std::fs::metadata(&dir).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("control call")).collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(
        lines[0].contains(&format!("who=uid={}", uid.unwrap())),
        "{log}"
    );
    assert!(lines[0].contains("from=\"control socket\""), "{log}");
    assert!(
        lines[0].contains("user:create(dave@localhost, ***)"),
        "{log}"
    );
    assert!(lines[0].contains("outcome=\"ok\""), "{log}");
    assert!(lines[1].contains("c2s:close(nobody@localhost)"), "{log}");
    assert!(lines[1].contains("outcome=\"failed\""), "{log}");
    assert!(
        lines[2].contains("muc:create(lounge@conference.localhost)")
            && lines[2].contains("outcome=\"ok\""),
        "{log}"
    );
    assert!(
        lines[3].contains("s2s:close(localhost, nowhere.example)")
            && lines[3].contains("outcome=\"failed\""),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}
