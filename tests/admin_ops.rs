//! Admin operations over the REST API, against a server with real sessions: list and close
//! sessions (bare and full JID), switch a host off and on at run time, server info, shutdown
//! with a reason (refused unless `admin_rest_allow_shutdown`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer, login, wait_offline};
use oxpecker::config::HostConfig;
use serde_json::{Value, json};

const ADMIN: &str = "admin@example.org";
const ADMIN_PW: &str = "admin-pw";

async fn server(allow_shutdown: bool) -> TestServer {
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.hosts.push(HostConfig {
            name: "example.org".into(),
            ..Default::default()
        });
        c.admins = vec![ADMIN.into()];
        if allow_shutdown {
            c.options.insert(
                "admin_rest_allow_shutdown".into(),
                toml::Value::Boolean(true),
            );
        }
    })
    .await;
    srv.add_user(ADMIN, ADMIN_PW).await;
    srv
}

async fn call(srv: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/admin_rest{path}", srv.http());
    let mut req = client
        .request(method.parse().unwrap(), url)
        .basic_auth(ADMIN, Some(ADMIN_PW));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sessions_are_listed_and_closed_by_bare_and_full_jid() {
    let srv = server(false).await;
    let mut a1 = login(&srv, "alice", "one").await;
    let mut a2 = login(&srv, "alice", "two").await;
    let mut b = login(&srv, "bob", "phone").await;

    let (st, v) = call(&srv, "GET", "/sessions", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["count"], 3, "{v}");
    let jids: Vec<&str> = v["result"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["jid"].as_str().unwrap())
        .collect();
    assert_eq!(
        jids,
        [
            "alice@localhost/one",
            "alice@localhost/two",
            "bob@localhost/phone"
        ]
    );
    assert_eq!(v["result"]["sessions"][0]["secure"], true);
    let (_, v) = call(&srv, "GET", "/sessions?secure=false", None).await;
    assert_eq!(v["result"]["count"], 0, "{v}");
    let (_, v) = call(&srv, "GET", "/sessions?host=example.org", None).await;
    assert_eq!(v["result"]["count"], 0, "{v}");
    let (_, v) = call(&srv, "GET", "/sessions?host=localhost&secure=true", None).await;
    assert_eq!(v["result"]["count"], 3, "{v}");

    // A full JID: that session only.
    let (st, v) = call(&srv, "DELETE", "/sessions/alice@localhost%2Fone", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["closed"], json!(["alice@localhost/one"]));
    let end = a1.read_to_close().await;
    assert!(end.contains("<policy-violation"), "{end}");
    assert!(end.contains("closed by an administrator"), "{end}");
    // The others are still served.
    a2.send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a2.read_until("id=\"p2\"").await;

    // A bare JID: every session of the account, and not bob's.
    let _a3 = login(&srv, "alice", "three").await;
    let (st, v) = call(&srv, "DELETE", "/sessions/alice@localhost", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["count"], 2, "{v}");
    assert!(a2.read_to_close().await.contains("<policy-violation"));
    wait_offline(&srv, "alice@localhost").await;
    b.send("<iq type='get' id='p3'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    b.read_until("id=\"p3\"").await;

    let (st, v) = call(&srv, "DELETE", "/sessions/alice@localhost", None).await;
    assert_eq!((st, v["error"].as_str()), (404, Some("no_session")), "{v}");
}

#[tokio::test]
async fn a_host_is_deactivated_and_activated_at_run_time() {
    let srv = server(false).await;
    let mut a = login(&srv, "alice", "one").await;

    let (st, v) = call(&srv, "GET", "/hosts", None).await;
    assert_eq!(st, 200);
    assert_eq!(v["result"]["hosts"][0]["host"], "localhost");
    assert_eq!(v["result"]["hosts"][0]["active"], true);
    assert_eq!(v["result"]["hosts"][0]["sessions"], 1);

    let (st, v) = call(&srv, "DELETE", "/hosts/localhost", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["closed"], 1);
    let end = a.read_to_close().await;
    assert!(end.contains("<host-gone"), "{end}");
    assert!(srv.server().core.host("localhost").is_none());
    assert!(
        srv.server().core.host_list()[0].modules == 0,
        "modules unloaded"
    );
    // The host refuses new streams; the other host still serves.
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(common::HEADER).await;
    assert!(c.read_to_close().await.contains("host-unknown"));
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(&common::HEADER.replace("to='localhost'", "to='example.org'"))
        .await;
    assert!(
        c.read_until("</stream:features>")
            .await
            .contains("starttls")
    );
    let (st, v) = call(&srv, "DELETE", "/hosts/localhost", None).await;
    assert_eq!(st, 409, "{v}");

    // Back on: modules loaded, its (kept) accounts log in again.
    let (st, v) = call(&srv, "PUT", "/hosts/localhost", None).await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"]["loaded"].as_array().unwrap().is_empty(), "{v}");
    let mut a = login(&srv, "alice", "again").await;
    a.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.read_until("id=\"p\"").await;
    let (st, _) = call(&srv, "PUT", "/hosts/nowhere.example", None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn server_info_and_shutdown_refused_by_default() {
    let srv = server(false).await;
    let _a = login(&srv, "alice", "one").await;
    let (st, v) = call(&srv, "GET", "/server", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["name"], "oxpecker");
    assert_eq!(v["result"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["result"]["memory"]["sessions"], 1);
    assert!(v["result"]["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    let (st, v) = call(
        &srv,
        "POST",
        "/server/shutdown",
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (403, Some("shutdown_disabled")));
    assert!(!srv.server().core.stop.is_requested());
}

#[tokio::test]
async fn shutdown_delivers_the_reason() {
    let mut srv = server(true).await;
    let mut a = login(&srv, "alice", "one").await;
    let (st, v) = call(
        &srv,
        "POST",
        "/server/shutdown",
        Some(json!({"reason": "bye"})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    // What main does when the request arrives: drain and stop.
    srv.server().core.stop.requested().await;
    srv.server.take().unwrap().shutdown().await;
    let end = a.read_to_close().await;
    assert!(end.contains("<system-shutdown"), "{end}");
    assert!(end.contains(">bye</text>"), "{end}");
}

#[tokio::test]
async fn a_closed_session_is_not_resumed_by_stream_management() {
    const SM: &str = "urn:xmpp:sm:3";
    let srv = server(false).await;
    let mut a = login(&srv, "alice", "phone").await;
    a.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = a.read_stanza("enabled").await;
    let start = enabled.find("id=\"").unwrap() + 4;
    let id = enabled[start..start + enabled[start..].find('"').unwrap()].to_string();

    let (st, v) = call(&srv, "DELETE", "/sessions/alice@localhost", None).await;
    assert_eq!(st, 200, "{v}");
    assert!(a.read_to_close().await.contains("<policy-violation"));
    wait_offline(&srv, "alice@localhost").await;

    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    assert!(
        c.auth_plain("alice", common::PASSWORD)
            .await
            .contains("<success")
    );
    c.open().await;
    c.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let failed = c.read_stanza("failed").await;
    assert!(failed.contains("item-not-found"), "{failed}");
}

#[tokio::test]
async fn sessions_show_transport_tls_mechanism_since_and_idle() {
    let srv = server(false).await;
    let mut a = login(&srv, "alice", "desk").await;
    a.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.read_until("id=\"p\"").await;
    let (st, v) = call(&srv, "GET", "/sessions", None).await;
    assert_eq!(st, 200, "{v}");
    let s = &v["result"]["sessions"][0];
    assert_eq!(s["jid"], "alice@localhost/desk", "{v}");
    assert_eq!(s["transport"], "tcp", "{s}");
    assert!(
        s["tls"]["version"].as_str().unwrap().starts_with("TLSv1"),
        "{s}"
    );
    assert!(
        s["tls"]["cipher"].as_str().unwrap().starts_with("TLS"),
        "{s}"
    );
    assert_eq!(s["mechanism"], "PLAIN", "{s}");
    assert!(s["client"].is_null(), "no SASL2 user agent: {s}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let since = s["since"].as_u64().unwrap();
    assert!(since > 1_700_000_000 && since <= now, "{s}");
    // Idle counts from the last stanza (the ping), which came after the bind.
    assert!(s["idle_secs"].as_u64().unwrap() <= now - since, "{s}");
}
