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
    // The allocator (jemalloc) says how much heap is in use: a number, not null.
    assert!(
        v["result"]["memory"]["heap_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{v}"
    );
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

/// Logs `user@host` in over STARTTLS + PLAIN on a stream to `host`, and binds `resource`.
async fn login_on(srv: &TestServer, host: &str, user: &str, pw: &str, resource: &str) -> RawClient {
    let header = common::HEADER.replace("to='localhost'", &format!("to='{host}'"));
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    c.read_until("<proceed").await;
    c.read_until("/>").await;
    let io = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
    let connector = tokio_rustls::TlsConnector::from(common::client_tls(&srv.cert_pem()));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    c.io = Box::new(connector.connect(name, io).await.unwrap());
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    let r = c.auth_plain(user, pw).await;
    assert!(r.contains("<success"), "{r}");
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    c.send(&format!(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ))
    .await;
    let bound = c.read_until("</iq>").await;
    assert!(
        bound.contains(&format!("{user}@{host}/{resource}")),
        "{bound}"
    );
    c
}

/// Runs `oxpecker shell LINE` against the server's control socket; (success, stdout).
async fn shell_line(srv: &TestServer, line: &str) -> (bool, String) {
    let cfg = srv.dir.path().join("shell.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n",
            srv.config.data_dir.display().to_string()
        ),
    )
    .unwrap();
    let line = line.to_string();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_oxpecker"))
            .arg("--config")
            .arg(&cfg)
            .arg("shell")
            .arg(&line)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

#[tokio::test]
async fn a_host_added_to_the_config_is_served_after_reload_and_activate() {
    const NEW: &str = "new.example";
    let file_dir = tempfile::tempdir().unwrap();
    let path = file_dir.path().join("oxpecker.toml");
    let file = |hosts: &[&str]| {
        let mut s = format!("admins = [\"{ADMIN}\"]\n");
        for h in hosts {
            s.push_str(&format!("[[host]]\nname = \"{h}\"\n"));
        }
        std::fs::write(&path, s).unwrap();
    };
    file(&["localhost", "example.org"]);
    let source = path.clone();
    let srv = TestServer::with_users(&["alice"], |c| {
        c.hosts.push(HostConfig {
            name: "example.org".into(),
            ..Default::default()
        });
        c.admins = vec![ADMIN.into()];
        c.source = Some(source);
    })
    .await;
    srv.add_user(ADMIN, ADMIN_PW).await;
    let mut alice = login(&srv, "alice", "one").await;

    // Not served before: REST refuses the host, c2s does not know it.
    let (st, _) = call(&srv, "PUT", &format!("/hosts/{NEW}"), None).await;
    assert_eq!(st, 404, "not in the configuration yet");
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(&common::HEADER.replace("to='localhost'", &format!("to='{NEW}'")))
        .await;
    assert!(c.read_to_close().await.contains("host-unknown"));

    // The reloaded file names it: configured, not yet active.
    file(&["localhost", "example.org", NEW]);
    let (st, v) = call(&srv, "PUT", "/reload", None).await;
    assert_eq!(st, 200, "{v}");
    let warnings = v["report"]["warnings"].to_string();
    assert!(warnings.contains(&format!("host {NEW} was added")), "{v}");
    let (_, v) = call(&srv, "GET", "/hosts", None).await;
    let entry = v["result"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == NEW)
        .cloned()
        .unwrap();
    assert_eq!(
        (entry["configured"].clone(), entry["active"].clone()),
        (json!(true), json!(false))
    );

    // Activated over REST: modules loaded, REST answers for it, its users log in.
    let (st, v) = call(&srv, "PUT", &format!("/hosts/{NEW}"), None).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["result"]["loaded"].to_string().contains("disco"), "{v}");
    let (st, v) = call(
        &srv,
        "POST",
        &format!("/user/carol?host={NEW}"),
        Some(json!({ "password": "carol-pw" })),
    )
    .await;
    assert!(st == 200 || st == 201, "{st} {v}");
    let (st, v) = call(&srv, "GET", &format!("/user/carol?host={NEW}"), None).await;
    assert_eq!(st, 200, "{v}");
    let mut carol = login_on(&srv, NEW, "carol", "carol-pw", "pad").await;
    // Disco answers for the new host (its disco module is loaded).
    carol
        .send(&format!(
            "<iq type='get' id='d1' to='{NEW}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    let info = carol.read_until("</iq>").await;
    assert!(
        info.contains("type=\"result\"") && info.contains("urn:xmpp:ping"),
        "{info}"
    );
    // Carol and Alice (another host) talk across hosts.
    carol
        .send("<message to='alice@localhost/one' type='chat'><body>hi from new</body></message>")
        .await;
    assert!(alice.read_until("</message>").await.contains("hi from new"));

    // Switched off through the control socket: carol gets <host-gone/>, alice stays.
    let (ok, text) = shell_line(&srv, &format!("host:deactivate(\"{NEW}\")")).await;
    assert!(ok, "{text}");
    assert!(carol.read_to_close().await.contains("<host-gone"));
    let (ok, text) = shell_line(&srv, "host:list()").await;
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{NEW} ")) && l.contains("inactive")),
        "{text}"
    );
    alice
        .send("<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    alice.read_until("id=\"still\"").await;
    // ...and on again from the shell: the account made at run time is still there.
    let (ok, text) = shell_line(&srv, &format!("host:activate(\"{NEW}\")")).await;
    assert!(ok, "{text}");
    let _carol = login_on(&srv, NEW, "carol", "carol-pw", "again").await;
    // server:memory shows the heap (jemalloc's count) next to RSS.
    let (ok, text) = shell_line(&srv, "server:memory()").await;
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("rss ") && l.contains("MiB")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("heap ") && l.contains("MiB")),
        "{text}"
    );
}
