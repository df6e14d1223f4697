//! SASL2 (XEP-0388), Bind2 (XEP-0386), FAST (XEP-0484) and client management over real
//! sockets, checked on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::{RawClient, TestServer};
use hmac::{Hmac, KeyInit, Mac};
use oxpecker::auth::scram::{ScramClient, ScramHash};
use sha2::Sha256;

const SASL2: &str = "urn:xmpp:sasl:2";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn snapshot(srv: &TestServer) -> String {
    let mut out = Vec::new();
    oxpecker::storage::export(&srv.server().core.store, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

async fn server() -> TestServer {
    let srv = TestServer::start_with(|c| c.modules_enabled.push("client_management".into())).await;
    srv.add_user("alice@localhost", "secret").await;
    srv
}

/// A TLS connection with the secure stream's features read.
async fn connect(srv: &TestServer) -> (RawClient, String) {
    let mut c = RawClient::connect(srv.c2s()).await;
    let features = c.starttls(&srv.cert_pem()).await;
    (c, features)
}

fn user_agent(id: &str) -> String {
    format!(
        "<user-agent id='{id}'><software>TestApp</software><device>Laptop</device></user-agent>"
    )
}

fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// Reads a SASL2 `<success>…</success>` or `<failure>…</failure>`.
async fn outcome(c: &mut RawClient) -> String {
    let mut s = String::new();
    while !s.contains("</success>") && !s.contains("</failure>") {
        s.push_str(&c.read_until(">").await);
    }
    s
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let start = s.find(open).unwrap_or_else(|| panic!("{open} in {s}")) + open.len();
    let end = s[start..].find(close).unwrap() + start;
    &s[start..end]
}

fn ht_proof(token: &str, label: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()).unwrap();
    m.update(label);
    m.finalize().into_bytes().to_vec()
}

/// A FAST login attempt with `token` as client `id`; the outcome.
async fn fast_login(srv: &TestServer, id: &str, token: &str, extra: &str) -> (RawClient, String) {
    let (mut c, _) = connect(srv).await;
    let mut initial = b"alice\0".to_vec();
    initial.extend_from_slice(&ht_proof(token, b"Initiator"));
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'><initial-response>{}</initial-response>{}<fast xmlns='urn:xmpp:fast:0'/>{extra}</authenticate>",
        B64.encode(initial),
        user_agent(id)
    ))
    .await;
    let r = outcome(&mut c).await;
    (c, r)
}

/// Password login with a client id, asking for a FAST token; the token.
async fn password_login_with_token(srv: &TestServer, id: &str) -> (RawClient, String) {
    let (mut c, _) = connect(srv).await;
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}\
         <bind xmlns='urn:xmpp:bind:0'><tag>TestApp</tag></bind>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>",
        plain("alice", "secret"),
        user_agent(id)
    ))
    .await;
    let r = outcome(&mut c).await;
    assert!(r.contains("<success"), "{r}");
    let token = between(&r, "token=\"", "\"").to_string();
    (c, token)
}

#[tokio::test]
async fn sasl2_with_bind2_binds_from_the_tag_and_enables_carbons_sm_and_csi_inline() {
    let srv = server().await;
    let (mut c, features) = connect(&srv).await;
    assert!(
        features.contains(&format!("<authentication xmlns=\"{SASL2}\">")),
        "{features}"
    );
    assert!(
        features.contains("<mechanism>SCRAM-SHA-1</mechanism>"),
        "{features}"
    );
    for var in ["urn:xmpp:carbons:2", "urn:xmpp:sm:3", "urn:xmpp:csi:0"] {
        assert!(features.contains(&format!("var=\"{var}\"")), "{features}");
    }
    assert!(
        features.contains("<mechanism>HT-SHA-256-NONE</mechanism>"),
        "{features}"
    );
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}\
         <bind xmlns='urn:xmpp:bind:0'><tag>TestApp</tag><enable xmlns='urn:xmpp:carbons:2'/>\
         <enable xmlns='urn:xmpp:sm:3' resume='true'/><inactive xmlns='urn:xmpp:csi:0'/></bind></authenticate>",
        plain("alice", "secret"),
        user_agent("c-1")
    ))
    .await;
    let r = outcome(&mut c).await;
    assert!(r.contains(&format!("<success xmlns=\"{SASL2}\">")), "{r}");
    let aid = between(
        &r,
        "<authorization-identifier>",
        "</authorization-identifier>",
    );
    assert!(aid.starts_with("alice@localhost/TestApp."), "{aid}");
    assert!(r.contains("<bound xmlns=\"urn:xmpp:bind:0\">"), "{r}");
    assert!(r.contains("<enabled xmlns=\"urn:xmpp:sm:3\""), "{r}");
    // No restart, no bind: the session is live.
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = c.read_stanza("iq").await;
    assert!(pong.contains("type=\"result\""), "{pong}");
    let jid = oxpecker::xmpp::Jid::parse(aid).unwrap();
    let s = srv.server().core.sessions.get(&jid).expect("session");
    assert!(s.carbons());
    let agent = s.conn.client.clone().expect("client");
    assert_eq!(agent.id, "c-1");
    assert_eq!(agent.software.as_deref(), Some("TestApp"));
    assert_eq!(agent.device.as_deref(), Some("Laptop"));
    assert_eq!(s.conn.mechanism.as_deref(), Some("PLAIN"));
    // The same client id gets the same resource again.
    let (mut again, _) = connect(&srv).await;
    again
        .send(&format!(
            "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}\
             <bind xmlns='urn:xmpp:bind:0'><tag>TestApp</tag></bind></authenticate>",
            plain("alice", "secret"),
            user_agent("c-1")
        ))
        .await;
    let r2 = outcome(&mut again).await;
    assert_eq!(
        between(
            &r2,
            "<authorization-identifier>",
            "</authorization-identifier>"
        ),
        aid
    );
}

#[tokio::test]
async fn sasl2_scram_without_bind2_sends_features_and_the_client_binds() {
    let srv = server().await;
    let (mut c, _) = connect(&srv).await;
    let mut client = ScramClient::new(ScramHash::Sha1, "alice", "secret");
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-1'><initial-response>{}</initial-response>{}</authenticate>",
        B64.encode(client.client_first()),
        user_agent("c-2")
    ))
    .await;
    let ch = c.read_stanza("challenge").await;
    assert!(ch.contains(SASL2), "{ch}");
    let server_first = B64.decode(between(&ch, ">", "</challenge>")).unwrap();
    let fin = B64.encode(client.client_final(&server_first).unwrap());
    c.send(&format!("<response xmlns='{SASL2}'>{fin}</response>"))
        .await;
    let r = outcome(&mut c).await;
    let data = between(&r, "<additional-data>", "</additional-data>");
    client
        .verify_server_final(&B64.decode(data).unwrap())
        .expect("server proof");
    assert_eq!(
        between(
            &r,
            "<authorization-identifier>",
            "</authorization-identifier>"
        ),
        "alice@localhost"
    );
    let features = c.read_until("</stream:features>").await;
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>").await;
    let bound = c.read_stanza("iq").await;
    assert!(bound.contains("alice@localhost/r"), "{bound}");
}

#[tokio::test]
async fn fast_token_login_rotation_and_rejections() {
    let srv = server().await;
    let (_first, token) = password_login_with_token(&srv, "c-3").await;
    assert!(token.len() > 64, "{token}");
    // The token logs in, with the server's proof in additional-data.
    let (mut c, r) = fast_login(&srv, "c-3", &token, "").await;
    assert!(r.contains("<success"), "{r}");
    let data = B64
        .decode(between(&r, "<additional-data>", "</additional-data>"))
        .unwrap();
    assert_eq!(data, ht_proof(&token, b"Responder"));
    let features = c.read_until("</stream:features>").await;
    assert!(features.contains("xmpp-bind"), "{features}");
    // Another client id, a made-up token: not-authorized, nothing written.
    let before = snapshot(&srv);
    let (_, r) = fast_login(&srv, "c-other", &token, "").await;
    assert!(r.contains("<not-authorized"), "{r}");
    let (_, r) = fast_login(&srv, "c-3", "not-the-token", "").await;
    assert!(r.contains("<not-authorized"), "{r}");
    assert_eq!(before, snapshot(&srv));
    // Rotation: a token login may ask for a new token; the new one works.
    let (_, r) = fast_login(
        &srv,
        "c-3",
        &token,
        "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
    )
    .await;
    let rotated = between(&r, "token=\"", "\"").to_string();
    assert_ne!(rotated, token);
    let (_, r) = fast_login(&srv, "c-3", &rotated, "").await;
    assert!(r.contains("<success"), "{r}");
    let (_, r) = fast_login(&srv, "c-3", &token, "").await;
    assert!(r.contains("<not-authorized"), "old token retired: {r}");
    // A password change kills the token.
    srv.server()
        .core
        .accounts
        .set_password(&common::jid("alice@localhost"), "new")
        .await
        .unwrap();
    let (_, r) = fast_login(&srv, "c-3", &rotated, "").await;
    assert!(r.contains("<not-authorized"), "{r}");
}

#[tokio::test]
async fn inline_resume_in_sasl2_takes_the_session_back() {
    let srv = server().await;
    let (mut c, _) = connect(&srv).await;
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}\
         <bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind></authenticate>",
        plain("alice", "secret"),
        user_agent("c-4")
    ))
    .await;
    let r = outcome(&mut c).await;
    let aid = between(
        &r,
        "<authorization-identifier>",
        "</authorization-identifier>",
    )
    .to_string();
    let previd = between(&r, "id=\"", "\"").to_string();
    drop(c);
    let (mut c2, features) = connect(&srv).await;
    assert!(
        features.contains("<sm xmlns=\"urn:xmpp:sm:3\"/>"),
        "{features}"
    );
    c2.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}\
         <resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/></authenticate>",
        plain("alice", "secret"),
        user_agent("c-4")
    ))
    .await;
    let r = outcome(&mut c2).await;
    assert!(r.contains("<resumed xmlns=\"urn:xmpp:sm:3\""), "{r}");
    assert_eq!(
        between(
            &r,
            "<authorization-identifier>",
            "</authorization-identifier>"
        ),
        aid
    );
    c2.send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(c2.read_stanza("iq").await.contains("type=\"result\""));
}

#[tokio::test]
async fn bad_authenticates_fail_count_toward_the_limit_and_write_nothing() {
    let srv = server().await;
    let before = snapshot(&srv);
    let (mut c, _) = connect(&srv).await;
    c.send(&format!("<authenticate xmlns='{SASL2}'/>")).await;
    let r = outcome(&mut c).await;
    assert!(r.contains("<malformed-request"), "{r}");
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='X-UNKNOWN'><initial-response>AA==</initial-response></authenticate>"
    ))
    .await;
    let r = outcome(&mut c).await;
    assert!(r.contains("<invalid-mechanism"), "{r}");
    let long = "d".repeat(300);
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response><user-agent id='x'><device>{long}</device></user-agent></authenticate>",
        plain("alice", "secret")
    ))
    .await;
    let r = outcome(&mut c).await;
    assert!(r.contains("<malformed-request"), "{r}");
    let end = c.read_to_close().await;
    assert!(
        end.contains("policy-violation"),
        "third failure ends the stream: {end}"
    );
    assert_eq!(before, snapshot(&srv));
}

#[tokio::test]
async fn enforce_client_ids_refuses_sasl1_and_sasl2_without_an_id() {
    let srv = TestServer::start_with(|c| c.c2s.enforce_client_ids = true).await;
    srv.add_user("alice@localhost", "secret").await;
    let (mut c, _) = connect(&srv).await;
    let r = c.auth_plain("alice", "secret").await;
    assert!(
        r.contains("<not-authorized/>") && r.contains("client id"),
        "{r}"
    );
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response></authenticate>",
        plain("alice", "secret")
    ))
    .await;
    let r = outcome(&mut c).await;
    assert!(
        r.contains("<not-authorized") && r.contains("client id"),
        "{r}"
    );
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}</authenticate>",
        plain("alice", "secret"),
        user_agent("c-5")
    ))
    .await;
    assert!(outcome(&mut c).await.contains("<success"));
}

/// Polls the client listing until `pred` holds (records are written off the login path).
async fn wait_clients(
    srv: &TestServer,
    pred: impl Fn(&[oxpecker::core::grants::ClientInfo]) -> bool,
) -> Vec<oxpecker::core::grants::ClientInfo> {
    for _ in 0..100 {
        let list = srv
            .server()
            .core
            .list_clients(&common::jid("alice@localhost"))
            .await
            .unwrap();
        if pred(&list) {
            return list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("client listing never matched");
}

#[tokio::test]
async fn manage_clients_lists_and_revokes_over_xmpp() {
    let srv = server().await;
    let (mut app, token) = password_login_with_token(&srv, "c-6").await;
    let mut legacy = RawClient::login(&srv, "alice", "secret", "oldclient").await;
    wait_clients(&srv, |l| l.len() == 2).await;
    legacy
        .send("<iq type='get' id='l1'><list xmlns='xmpp:prosody.im/protocol/manage-clients'/></iq>")
        .await;
    let list = legacy.read_stanza("iq").await;
    assert!(list.contains("type=\"result\""), "{list}");
    assert!(list.contains("<software>TestApp</software>"), "{list}");
    assert!(list.contains("<device>Laptop</device>"), "{list}");
    assert!(list.contains("<legacy/>"), "{list}");
    assert!(list.contains("connected=\"true\""), "{list}");
    let infos = wait_clients(&srv, |_| true).await;
    let legacy_id = infos.iter().find(|c| c.legacy).unwrap().id.clone();
    let app_id = infos.iter().find(|c| !c.legacy).unwrap().id.clone();
    // A password-only client cannot be revoked.
    legacy
        .send(&format!("<iq type='set' id='r1'><revoke xmlns='xmpp:prosody.im/protocol/manage-clients' id='{legacy_id}'/></iq>"))
        .await;
    let r = legacy.read_stanza("iq").await;
    assert!(
        r.contains("<service-unavailable") && r.contains("<password-reset-required"),
        "{r}"
    );
    // The FAST client can: its session closes, its token fails.
    legacy
        .send(&format!("<iq type='set' id='r2'><revoke xmlns='xmpp:prosody.im/protocol/manage-clients' id='{app_id}'/></iq>"))
        .await;
    let r = legacy.read_stanza("iq").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let end = app.read_to_close().await;
    assert!(end.contains("not-authorized"), "{end}");
    let (_, r) = fast_login(&srv, "c-6", &token, "").await;
    assert!(r.contains("<not-authorized"), "{r}");
}

#[tokio::test]
async fn rest_and_shell_list_and_revoke_clients() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestServer::start_with(|c| {
        c.modules_enabled.push("client_management".into());
        c.admins = vec!["admin@localhost".into()];
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    srv.add_user("admin@localhost", "admin-pw").await;
    let (mut app, token) = password_login_with_token(&srv, "c-7").await;
    let _legacy = RawClient::login(&srv, "alice", "secret", "old").await;
    wait_clients(&srv, |l| l.len() == 2).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}/admin_rest", srv.http());
    let list: serde_json::Value = http
        .get(format!("{base}/user/alice/clients"))
        .basic_auth("admin@localhost", Some("admin-pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let clients = list["result"]["clients"].as_array().unwrap().clone();
    assert_eq!(list["result"]["count"], 2, "{list}");
    let app_entry = clients.iter().find(|c| c["legacy"] == false).unwrap();
    assert_eq!(app_entry["software"], "TestApp");
    assert_eq!(app_entry["device"], "Laptop");
    assert_eq!(app_entry["connected"], true);
    assert_eq!(app_entry["auth"], serde_json::json!(["password"]));
    let legacy_id = clients.iter().find(|c| c["legacy"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The shell sees the same.
    let core = srv.server().core.clone();
    let out =
        oxpecker::control::console::run(&core, "user", "clients", vec!["alice@localhost".into()])
            .await
            .unwrap();
    assert_eq!(out.rows.len(), 2, "{:?}", out.rows);
    let err = oxpecker::control::console::run(
        &core,
        "user",
        "revoke_client",
        vec!["alice@localhost".into(), legacy_id.clone()],
    )
    .await
    .unwrap_err();
    assert!(err.contains("password"), "{err}");
    // REST: unknown id 404, password-only 409, the FAST client 200 and it is disconnected.
    let del = |id: String| {
        let http = http.clone();
        let url = format!("{base}/user/alice/clients/{}", id.replace('/', "%2F"));
        async move {
            http.delete(url)
                .basic_auth("admin@localhost", Some("admin-pw"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(del("client/nope".into()).await, 404);
    assert_eq!(del(legacy_id).await, 409);
    let app_id = app_entry["id"].as_str().unwrap().to_string();
    assert_eq!(del(app_id.clone()).await, 200);
    assert!(app.read_to_close().await.contains("not-authorized"));
    let (_, r) = fast_login(&srv, "c-7", &token, "").await;
    assert!(r.contains("<not-authorized"), "{r}");
    assert_eq!(del(app_id).await, 404, "already revoked");
}

#[tokio::test]
async fn scram_plus_binds_to_the_tls_exporter_over_sasl1_and_sasl2() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // -PLUS is opt-in: listed first, as an operator enables channel binding.
    let srv = TestServer::start_with(|c| {
        c.c2s.sasl_mechanisms = [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "PLAIN",
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    for sasl2 in [false, true] {
        let tcp = starttls_tcp(&srv).await;
        let connector = tokio_rustls::TlsConnector::from(common::client_tls(&srv.cert_pem()));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let data = tls
            .get_ref()
            .1
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap();
        let mut c = RawClient {
            io: Box::new(tls),
            buf: String::new(),
            jid: String::new(),
        };
        let features = c.open().await;
        assert!(
            features.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"),
            "{features}"
        );
        assert!(
            features.contains("<channel-binding type=\"tls-exporter\"/>"),
            "{features}"
        );
        let cb = oxpecker::auth::scram::ChannelBinding {
            kind: "tls-exporter".into(),
            data: data.to_vec(),
        };
        let mut client =
            ScramClient::new(ScramHash::Sha256, "alice", "secret").with_channel_binding(cb);
        let first = B64.encode(client.client_first());
        let (ns, open) = if sasl2 {
            (
                SASL2,
                format!(
                    "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256-PLUS'><initial-response>{first}</initial-response>{}</authenticate>",
                    user_agent("c-8")
                ),
            )
        } else {
            (
                "urn:ietf:params:xml:ns:xmpp-sasl",
                format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{first}</auth>"
                ),
            )
        };
        c.send(&open).await;
        let ch = c.read_stanza("challenge").await;
        let server_first = B64.decode(between(&ch, ">", "</challenge>")).unwrap();
        let fin = B64.encode(client.client_final(&server_first).unwrap());
        c.send(&format!("<response xmlns='{ns}'>{fin}</response>"))
            .await;
        let ok = c.read_stanza("success").await;
        let v = if sasl2 {
            between(&ok, "<additional-data>", "</additional-data>").to_string()
        } else {
            between(&ok, ">", "</success>").to_string()
        };
        client
            .verify_server_final(&B64.decode(v).unwrap())
            .expect("server proof over the bound channel");
    }
}

/// A TCP connection that asked for STARTTLS and got `<proceed/>`.
async fn starttls_tcp(srv: &TestServer) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(srv.c2s()).await.unwrap();
    tcp.write_all(common::HEADER.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut sent = false;
    while !seen.contains("<proceed") {
        if !sent && seen.contains("</stream:features>") {
            tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await
                .unwrap();
            sent = true;
        }
        let mut buf = [0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before <proceed/>: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.ends_with("/>"), "{seen}");
    tcp
}

/// The `<mechanism/>` texts in `section`, in the order offered.
fn mechanism_names(section: &str) -> Vec<String> {
    section
        .split("<mechanism>")
        .skip(1)
        .map(|s| s[..s.find("</mechanism>").unwrap()].to_string())
        .collect()
}

/// XEP-0474 §5.1 written out again here, independent of `oxpecker::auth::ssdp`.
fn expected_ssdp(mechanisms: &[String], bindings: &[String]) -> String {
    use sha2::Digest;
    let mut m = mechanisms.to_vec();
    m.sort();
    let mut b = bindings.to_vec();
    b.sort();
    let s = format!("{}\u{1f}{}", m.join("\u{1e}"), b.join("\u{1e}"));
    B64.encode(Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn scram_server_first_carries_the_downgrade_hash_over_sasl1_and_sasl2() {
    // With channel binding enabled (-PLUS is opt-in), so that both parts of the hash show.
    let srv = TestServer::start_with(|c| {
        c.c2s.sasl_mechanisms = [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "PLAIN",
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    for sasl2 in [false, true] {
        let (mut c, features) = connect(&srv).await;
        let section = if sasl2 {
            between(&features, "<authentication", "<inline")
        } else {
            between(&features, "<mechanisms", "</mechanisms>")
        };
        let mechanisms = mechanism_names(section);
        assert!(
            mechanisms.contains(&"SCRAM-SHA-256-PLUS".to_string()),
            "{features}"
        );
        assert!(
            !mechanisms.iter().any(|m| m.starts_with("HT-")),
            "{mechanisms:?}"
        );
        let cb = between(
            &features,
            "<sasl-channel-binding",
            "</sasl-channel-binding>",
        );
        let bindings: Vec<String> = cb
            .split("type=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect();
        assert_eq!(
            bindings,
            ["tls-exporter", "tls-server-end-point"],
            "{features}"
        );
        let expected = expected_ssdp(&mechanisms, &bindings);
        // python3: base64(sha256("PLAIN\x1eSCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1eSCRAM-SHA-256\x1e
        //   SCRAM-SHA-256-PLUS\x1ftls-exporter\x1etls-server-end-point")), every mechanism over TLS 1.3.
        assert_eq!(expected, "HsVT3zgfiif56i/w96g+XTr+Rx/Yfkw1VkxOAdVb9Wk=");

        let mut client = ScramClient::new(ScramHash::Sha256, "alice", "secret")
            .expect_downgrade_hash(expected.clone());
        let first = B64.encode(client.client_first());
        let ns = if sasl2 {
            c.send(&format!(
                "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'><initial-response>{first}</initial-response>{}</authenticate>",
                user_agent("c-9")
            ))
            .await;
            SASL2
        } else {
            c.send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>"
            ))
            .await;
            "urn:ietf:params:xml:ns:xmpp-sasl"
        };
        let ch = c.read_stanza("challenge").await;
        let server_first =
            String::from_utf8(B64.decode(between(&ch, ">", "</challenge>")).unwrap()).unwrap();
        let h = server_first
            .split(',')
            .find_map(|p| p.strip_prefix("h="))
            .unwrap_or_else(|| panic!("no h= in {server_first}"));
        assert_eq!(h, expected, "{server_first}");
        // The attribute is part of what the proofs sign: the login completes both ways.
        let fin = B64.encode(client.client_final(server_first.as_bytes()).unwrap());
        c.send(&format!("<response xmlns='{ns}'>{fin}</response>"))
            .await;
        let ok = c.read_stanza("success").await;
        let v = if sasl2 {
            between(&ok, "<additional-data>", "</additional-data>")
        } else {
            between(&ok, ">", "</success>")
        };
        client
            .verify_server_final(&B64.decode(v).unwrap())
            .expect("server proof");
    }
}

/// A STARTTLS connection that knows its channel bindings as a client sees them.
struct Bound {
    c: RawClient,
    features: String,
    /// RFC 9266 `tls-exporter` (TLS 1.3 only).
    exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point`, computed here from the certificate the server presented.
    end_point: Vec<u8>,
}

/// DER of the OID ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the test certificate's signature.
const ECDSA_WITH_SHA256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// Opens a TLS stream (TLS 1.2 only when `tls12`) and reads its features and bindings.
async fn bound_connect(srv: &TestServer, tls12: bool) -> Bound {
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = if tls12 {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&srv.cert_pem()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    } else {
        common::client_tls(&srv.cert_pem())
    };
    let tcp = starttls_tcp(srv).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let conn = tls.get_ref().1;
    let exporter = (conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)).then(|| {
        conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap()
            .to_vec()
    });
    let cert = conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    // RFC 5929 §4.1: the certificate's own signature hash, here SHA-256.
    assert!(
        cert.windows(ECDSA_WITH_SHA256.len())
            .any(|w| w == ECDSA_WITH_SHA256),
        "the test certificate is signed with ecdsa-with-SHA256"
    );
    let end_point = Sha256::digest(&cert).to_vec();
    let mut c = RawClient {
        io: Box::new(tls),
        buf: String::new(),
        jid: String::new(),
    };
    let features = c.open().await;
    Bound {
        c,
        features,
        exporter,
        end_point,
    }
}

/// The channel-binding types of `<sasl-channel-binding/>` in `features`, in order.
fn binding_types(features: &str) -> Vec<String> {
    let cb = between(features, "<sasl-channel-binding", "</sasl-channel-binding>");
    cb.split("type=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

/// Server with the opt-in -PLUS mechanisms enabled.
async fn plus_server() -> TestServer {
    let srv = TestServer::start_with(|c| {
        c.c2s.sasl_mechanisms = [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "PLAIN",
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    srv
}

/// One SCRAM-SHA-256-PLUS exchange with `cb` over SASL1 or SASL2; the server's last answer.
async fn scram_plus(
    c: &mut RawClient,
    cb: oxpecker::auth::scram::ChannelBinding,
    sasl2: bool,
) -> Result<(), String> {
    let mut client =
        ScramClient::new(ScramHash::Sha256, "alice", "secret").with_channel_binding(cb);
    let first = B64.encode(client.client_first());
    let ns = if sasl2 {
        c.send(&format!(
            "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256-PLUS'><initial-response>{first}</initial-response>{}</authenticate>",
            user_agent("c-10")
        ))
        .await;
        SASL2
    } else {
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{first}</auth>"
        ))
        .await;
        "urn:ietf:params:xml:ns:xmpp-sasl"
    };
    let ch = c.read_stanza("challenge").await;
    let server_first = B64.decode(between(&ch, ">", "</challenge>")).unwrap();
    let fin = B64.encode(client.client_final(&server_first).unwrap());
    c.send(&format!("<response xmlns='{ns}'>{fin}</response>"))
        .await;
    let mut r = String::new();
    while !r.contains("</success>") && !r.contains("</failure>") {
        r.push_str(&c.read_until(">").await);
    }
    if !r.contains("<success") {
        return Err(r);
    }
    let v = if sasl2 {
        between(&r, "<additional-data>", "</additional-data>")
    } else {
        between(&r, ">", "</success>")
    };
    client
        .verify_server_final(&B64.decode(v).unwrap())
        .map_err(|e| format!("server proof: {e:?}"))
}

#[tokio::test]
async fn scram_plus_binds_to_the_tls_server_end_point_and_a_wrong_binding_fails() {
    use oxpecker::auth::scram::ChannelBinding;
    let srv = plus_server().await;
    for tls12 in [false, true] {
        for sasl2 in [false, true] {
            let mut b = bound_connect(&srv, tls12).await;
            let types = binding_types(&b.features);
            let expected: &[&str] = if tls12 {
                &["tls-server-end-point"]
            } else {
                &["tls-exporter", "tls-server-end-point"]
            };
            assert_eq!(types, expected, "{}", b.features);
            let cb = ChannelBinding {
                kind: "tls-server-end-point".into(),
                data: b.end_point.clone(),
            };
            scram_plus(&mut b.c, cb, sasl2)
                .await
                .unwrap_or_else(|e| panic!("tls12={tls12} sasl2={sasl2}: {e}"));
            // Another certificate's hash (what a relaying attacker's client would see).
            let mut b = bound_connect(&srv, tls12).await;
            let mut wrong = b.end_point.clone();
            wrong[0] ^= 1;
            let cb = ChannelBinding {
                kind: "tls-server-end-point".into(),
                data: wrong,
            };
            let r = scram_plus(&mut b.c, cb, sasl2).await.unwrap_err();
            assert!(r.contains("<not-authorized"), "{r}");
        }
    }
}

/// `username NUL HMAC(token, "Initiator" || cb)`, base64.
fn ht_initial(token: &str, cb: &[u8]) -> String {
    let mut label = b"Initiator".to_vec();
    label.extend_from_slice(cb);
    let mut initial = b"alice\0".to_vec();
    initial.extend_from_slice(&ht_proof(token, &label));
    B64.encode(initial)
}

/// A FAST attempt with `mechanism` and the binding data `cb` on an open connection.
async fn fast_attempt(
    c: &mut RawClient,
    mechanism: &str,
    token: &str,
    cb: &[u8],
    extra: &str,
) -> String {
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='{mechanism}'><initial-response>{}</initial-response>{}<fast xmlns='urn:xmpp:fast:0'/>{extra}</authenticate>",
        ht_initial(token, cb),
        user_agent("c-11")
    ))
    .await;
    outcome(c).await
}

/// The `<mechanism/>`s of the inline `<fast/>` feature.
fn fast_offered(features: &str) -> Vec<String> {
    mechanism_names(between(
        features,
        "<fast xmlns=\"urn:xmpp:fast:0\">",
        "</fast>",
    ))
}

#[tokio::test]
async fn fast_bound_mechanisms_are_offered_where_they_apply_and_verify_the_binding() {
    let srv = server().await;
    let b12 = bound_connect(&srv, true).await;
    assert_eq!(
        fast_offered(&b12.features),
        ["HT-SHA-256-ENDP", "HT-SHA-256-NONE"],
        "TLS 1.2: no exporter; never tls-unique"
    );
    let mut b = bound_connect(&srv, false).await;
    assert_eq!(
        fast_offered(&b.features),
        ["HT-SHA-256-ENDP", "HT-SHA-256-EXPR", "HT-SHA-256-NONE"]
    );
    // A password login asks for an ENDP token.
    b.c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-ENDP'/></authenticate>",
        plain("alice", "secret"),
        user_agent("c-11")
    ))
    .await;
    let r = outcome(&mut b.c).await;
    let endp = between(&r, "token=\"", "\"").to_string();
    // It works with this connection's end-point, on TLS 1.3 and 1.2, and the server's answer
    // covers the binding too.
    for tls12 in [false, true] {
        let mut b = bound_connect(&srv, tls12).await;
        let r = fast_attempt(&mut b.c, "HT-SHA-256-ENDP", &endp, &b.end_point, "").await;
        assert!(r.contains("<success"), "{r}");
        let mut label = b"Responder".to_vec();
        label.extend_from_slice(&b.end_point);
        let data = B64
            .decode(between(&r, "<additional-data>", "</additional-data>"))
            .unwrap();
        assert_eq!(data, ht_proof(&endp, &label));
    }
    // Rotating into an EXPR token, which then logs in with the exporter of its own connection.
    let mut b = bound_connect(&srv, false).await;
    let r = fast_attempt(
        &mut b.c,
        "HT-SHA-256-ENDP",
        &endp,
        &b.end_point,
        "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-EXPR'/>",
    )
    .await;
    let expr = between(&r, "token=\"", "\"").to_string();
    let mut b = bound_connect(&srv, false).await;
    let exporter = b.exporter.clone().unwrap();
    let r = fast_attempt(&mut b.c, "HT-SHA-256-EXPR", &expr, &exporter, "").await;
    assert!(r.contains("<success"), "{r}");
    // Wrong bindings: nothing written, and they count toward the brute-force guard.
    let before = snapshot(&srv);
    let mut b = bound_connect(&srv, false).await;
    let other_exporter = bound_connect(&srv, false).await.exporter.unwrap();
    let r = fast_attempt(&mut b.c, "HT-SHA-256-EXPR", &expr, &other_exporter, "").await;
    assert!(
        r.contains("<not-authorized"),
        "another connection's exporter: {r}"
    );
    let r = fast_attempt(&mut b.c, "HT-SHA-256-EXPR", &expr, b"", "").await;
    assert!(r.contains("<not-authorized"), "no binding data: {r}");
    let mut wrong = b.end_point.clone();
    wrong[0] ^= 1;
    let r = fast_attempt(&mut b.c, "HT-SHA-256-EXPR", &expr, &wrong, "").await;
    assert!(r.contains("<not-authorized"), "{r}");
    let end = b.c.read_to_close().await;
    assert!(
        end.contains("policy-violation"),
        "third failure ends the stream: {end}"
    );
    assert_eq!(before, snapshot(&srv));
    // A mechanism the connection does not offer: UNIQ never, EXPR not on TLS 1.2.
    let mut b = bound_connect(&srv, false).await;
    let r = fast_attempt(&mut b.c, "HT-SHA-256-UNIQ", &expr, b"", "").await;
    assert!(r.contains("<invalid-mechanism"), "{r}");
    let mut b = bound_connect(&srv, true).await;
    let r = fast_attempt(&mut b.c, "HT-SHA-256-EXPR", &expr, b"", "").await;
    assert!(r.contains("<invalid-mechanism"), "{r}");
    // A token is bound to its mechanism: the EXPR token is no NONE token.
    let mut b = bound_connect(&srv, false).await;
    let r = fast_attempt(&mut b.c, "HT-SHA-256-NONE", &expr, b"", "").await;
    assert!(r.contains("<not-authorized"), "{r}");
}
