//! The audit log: every state-changing admin call is logged with tracing target `audit` (who,
//! from where, what, result), and secrets never are. Its own test binary, because a scoped
//! tracing subscriber only sees callsites reliably in a process of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestServer;
use serde_json::json;

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

#[tokio::test(flavor = "current_thread")]
async fn state_changes_are_audited() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("audit=info")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let srv = TestServer::start_with(|c| c.admins = vec!["admin@localhost".into()]).await;
    srv.add_user("admin@localhost", "admin-pw").await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}/admin_rest", srv.http());
    let status = client
        .get(format!("{base}/users/count"))
        .basic_auth("admin@localhost", Some("admin-pw"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let status = client
        .post(format!("{base}/user/dave"))
        .basic_auth("admin@localhost", Some("admin-pw"))
        .json(&json!({"password": "secret-pw"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);
    client
        .delete(format!("{base}/user/dave"))
        .basic_auth("admin@localhost", Some("bad"))
        .send()
        .await
        .unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let created = log
        .lines()
        .find(|l| l.contains("POST") && l.contains("/user/dave"))
        .unwrap_or_else(|| panic!("no audit line for the POST: {log}"));
    assert!(
        created.contains("who=\"admin@localhost\"") || created.contains("who=admin@localhost"),
        "{created}"
    );
    assert!(
        created.contains("ip=127.0.0.1") && created.contains("status=201"),
        "{created}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("DELETE") && l.contains("authentication_failed")),
        "{log}"
    );
    assert!(!log.contains("secret-pw"), "passwords never reach the log");
    assert!(
        !log.contains("/users/count"),
        "reads are not audited: {log}"
    );
}
