//! Stream negotiation, routing and bad input over real sockets, checked on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{HEADER, RawClient, TestServer};
use oxpecker::auth::scram::{ScramClient, ScramHash};

/// Everything in the store, as export lines (to prove bad input wrote nothing).
fn snapshot(srv: &TestServer) -> String {
    let mut out = Vec::new();
    oxpecker::storage::export(&srv.server().core.store, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// A fresh client still logs in and pings (the server keeps serving).
async fn still_serving(srv: &TestServer) {
    let mut c = RawClient::login(srv, "alice", "secret", "check").await;
    c.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("type=\"result\""), "{r}");
}

async fn server_with_alice() -> TestServer {
    let srv = TestServer::start().await;
    srv.add_user("alice@localhost", "secret").await;
    srv
}

#[tokio::test]
async fn login_ping_disco_and_message_over_starttls() {
    let srv = server_with_alice().await;
    srv.add_user("bob@localhost", "hunter2").await;
    let mut a = RawClient::login(&srv, "alice", "secret", "desk").await;
    let mut b = RawClient::login(&srv, "Bob", "hunter2", "phone").await;
    assert_eq!(a.jid, "alice@localhost/desk");
    assert_eq!(b.jid, "bob@localhost/phone", "usernames are case-folded");

    a.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = a.read_stanza("iq").await;
    assert!(
        r.contains("type=\"result\"") && r.contains("id=\"p1\""),
        "{r}"
    );

    a.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let r = a.read_stanza("iq").await;
    assert!(r.contains("category=\"server\""), "{r}");
    assert!(r.contains("var=\"urn:xmpp:ping\""), "{r}");

    b.send("<presence/>").await;
    b.read_stanza("presence").await;
    a.send(
        "<message to='bob@localhost' type='chat' id='m1'><body>hello &amp; bye</body></message>",
    )
    .await;
    let got = b.read_stanza("message").await;
    assert!(got.contains("from=\"alice@localhost/desk\""), "{got}");
    assert!(got.contains("<body>hello &amp; bye</body>"), "{got}");

    // A full-JID reply back, even though alice sent no presence.
    b.send("<message to='alice@localhost/desk' type='chat'><body>hi</body></message>")
        .await;
    let got = a.read_stanza("message").await;
    assert!(got.contains("from=\"bob@localhost/phone\""), "{got}");

    // Legacy session establishment succeeds.
    a.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    let r = a.read_stanza("iq").await;
    assert!(
        r.contains("type=\"result\"") && r.contains("id=\"s1\""),
        "{r}"
    );

    // Closing handshake.
    a.send("</stream:stream>").await;
    let rest = a.read_to_close().await;
    assert!(rest.contains("</stream:stream>"), "{rest}");
}

#[tokio::test]
async fn scram_sha1_and_sha256_over_raw_stream() {
    let srv = server_with_alice().await;
    for (hash, mech) in [
        (ScramHash::Sha256, "SCRAM-SHA-256"),
        (ScramHash::Sha1, "SCRAM-SHA-1"),
    ] {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut c = RawClient::connect(srv.c2s()).await;
        let features = c.starttls(&srv.cert_pem()).await;
        assert!(features.contains(mech), "{features}");
        let mut client = ScramClient::new(hash, "alice", "secret");
        let first = b64.encode(client.client_first());
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>"
        ))
        .await;
        let ch = c.read_stanza("challenge").await;
        let data = &ch[ch.find('>').unwrap() + 1..ch.find("</challenge>").unwrap()];
        let server_first = b64.decode(data).unwrap();
        let fin = b64.encode(client.client_final(&server_first).unwrap());
        c.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{fin}</response>"
        ))
        .await;
        let ok = c.read_stanza("success").await;
        let v = &ok[ok.find('>').unwrap() + 1..ok.find("</success>").unwrap()];
        client
            .verify_server_final(&b64.decode(v).unwrap())
            .expect("server proved it knows the key");
        assert_eq!(c.bind("r").await, "alice@localhost/r");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_and_write_nothing() {
    let srv = server_with_alice().await;
    let before = snapshot(&srv);
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    let r = c.auth_plain("alice", "wrong").await;
    assert!(r.contains("<not-authorized"), "{r}");
    let r = c.auth_plain("nobody", "secret").await;
    assert!(r.contains("<not-authorized"), "{r}");
    // The third failure closes the stream.
    let r = c.auth_plain("alice", "still wrong").await;
    assert!(r.contains("<not-authorized"), "{r}");
    let rest = c.read_to_close().await;
    assert!(rest.contains("policy-violation"), "{rest}");
    assert_eq!(before, snapshot(&srv));
    still_serving(&srv).await;
}

#[tokio::test]
async fn plaintext_auth_before_tls_is_refused() {
    let srv = server_with_alice().await;
    let mut c = RawClient::connect(srv.c2s()).await;
    let features = c.open().await;
    assert!(features.contains("<required/>"), "{features}");
    assert!(!features.contains("PLAIN"), "{features}");
    let r = c.auth_plain("alice", "secret").await;
    assert!(r.contains("<encryption-required"), "{r}");
    still_serving(&srv).await;
}

#[tokio::test]
async fn unknown_sasl_mechanism_is_refused() {
    let srv = server_with_alice().await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
        .await;
    let r = c.read_sasl_outcome().await;
    assert!(r.contains("<invalid-mechanism"), "{r}");
}

/// Sends `payload` after the stream header and returns everything until the server closes.
async fn stream_error_for(srv: &TestServer, payload: &str) -> String {
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(payload).await;
    c.read_to_close().await
}

#[tokio::test]
async fn malformed_xml_dtd_and_restricted_xml_get_stream_errors() {
    let srv = server_with_alice().await;
    let before = snapshot(&srv);
    let cases = [
        (format!("{HEADER}<message><body></message>"), "not-well-formed"),
        (
            "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>".to_string(),
            "restricted-xml",
        ),
        (format!("{HEADER}<!-- comment -->"), "restricted-xml"),
        (format!("{HEADER}<?pi x?>"), "restricted-xml"),
        (
            format!("{HEADER}<message><body>&lol;</body></message>"),
            "restricted-xml",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='nowhere.example' version='1.0'>".to_string(),
            "host-unknown",
        ),
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>".to_string(),
            "invalid-namespace",
        ),
        (
            format!("{HEADER}<message to='bob@localhost'><body>x</body></message>"),
            "not-authorized",
        ),
    ];
    for (payload, condition) in cases {
        let out = stream_error_for(&srv, &payload).await;
        assert!(
            out.contains("<stream:error>") && out.contains(&format!("<{condition} ")),
            "{payload} → {out}"
        );
        assert!(out.ends_with("</stream:stream>"), "{out}");
    }
    assert_eq!(before, snapshot(&srv));
    still_serving(&srv).await;
}

#[tokio::test]
async fn oversized_stanza_closes_with_policy_violation() {
    let srv = TestServer::start_with(|c| c.c2s.max_stanza_size = 20_000).await;
    srv.add_user("alice@localhost", "secret").await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    c.auth_plain("alice", "secret").await;
    let features = c.open().await;
    assert!(
        features.contains("<max-bytes>20000</max-bytes>"),
        "limit advertised (XEP-0478): {features}"
    );
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    c.read_stanza("iq").await;
    let big = format!(
        "<message to='alice@localhost'><body>{}</body></message>",
        "x".repeat(30_000)
    );
    c.try_send(&big).await;
    let out = c.read_to_close().await;
    assert!(out.contains("<policy-violation "), "{out}");
    // Before authentication the limit is smaller.
    let mut c = RawClient::connect(srv.c2s()).await;
    c.open().await;
    c.try_send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        "A".repeat(12_000)
    ))
    .await;
    let out = c.read_to_close().await;
    assert!(out.contains("<policy-violation "), "{out}");
    still_serving(&srv).await;
}

#[tokio::test]
async fn stalled_negotiation_times_out() {
    let srv = TestServer::start_with(|c| c.c2s.negotiation_timeout_secs = 1).await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(HEADER).await;
    let out = c.read_to_close().await;
    assert!(out.contains("<connection-timeout "), "{out}");
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_rejected() {
    let srv = server_with_alice().await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.open().await;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
        .await;
    let out = c.read_to_close().await;
    assert!(!out.contains("<proceed"), "{out}");
    assert!(out.contains("<policy-violation "), "{out}");
}

#[tokio::test]
async fn stanza_errors_for_bad_addresses_and_unknown_iqs() {
    let srv = server_with_alice().await;
    let mut c = RawClient::login(&srv, "alice", "secret", "r").await;
    c.send("<message to='not a@@jid' id='j1'><body>x</body></message>")
        .await;
    let r = c.read_stanza("message").await;
    assert!(
        r.contains("type=\"error\"") && r.contains("<jid-malformed "),
        "{r}"
    );
    c.send("<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:unknown'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("<service-unavailable "), "{r}");
    c.send(
        "<iq type='get' id='u2' to='alice@localhost/offline'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let r = c.read_stanza("iq").await;
    assert!(
        r.contains("id=\"u2\"") && r.contains("<service-unavailable "),
        "{r}"
    );
    c.send("<message to='ghost@localhost' type='chat' id='g1'><body>x</body></message>")
        .await;
    let r = c.read_stanza("message").await;
    assert!(r.contains("<service-unavailable "), "{r}");
    c.send("<message to='someone@remote.example' type='chat' id='r1'><body>x</body></message>")
        .await;
    let r = c.read_stanza("message").await;
    assert!(r.contains("<remote-server-not-found "), "{r}");
    c.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("<bad-request "), "iq without id: {r}");
    // A spoofed from closes the stream.
    c.send("<message from='bob@localhost/x' to='alice@localhost'><body>x</body></message>")
        .await;
    let out = c.read_to_close().await;
    assert!(out.contains("<invalid-from "), "{out}");
}

#[tokio::test]
async fn resource_conflict_kicks_the_old_session() {
    let srv = server_with_alice().await;
    let mut old = RawClient::login(&srv, "alice", "secret", "same").await;
    let mut new = RawClient::login(&srv, "alice", "secret", "same").await;
    let out = old.read_to_close().await;
    assert!(out.contains("<conflict "), "{out}");
    new.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(new.read_stanza("iq").await.contains("result"));
    // A server-generated resource when none is asked for.
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    c.auth_plain("alice", "secret").await;
    c.open().await;
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("<jid>alice@localhost/"), "{r}");
}

#[tokio::test]
async fn refuse_policy_answers_conflict() {
    let srv = TestServer::start_with(|c| {
        c.c2s.resource_conflict = oxpecker::config::ResourceConflict::Refuse
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    let _old = RawClient::login(&srv, "alice", "secret", "same").await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    c.auth_plain("alice", "secret").await;
    c.open().await;
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>same</resource></bind></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("<conflict "), "{r}");
}

#[tokio::test]
async fn direct_tls_login() {
    let srv = server_with_alice().await;
    let tcp = tokio::net::TcpStream::connect(srv.direct_tls())
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(common::client_tls(&srv.cert_pem()));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut c = RawClient {
        io: Box::new(tls),
        buf: String::new(),
        jid: String::new(),
    };
    let features = c.open().await;
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains("PLAIN"), "{features}");
    assert!(c.auth_plain("alice", "secret").await.contains("<success"));
    assert_eq!(c.bind("tls").await, "alice@localhost/tls");
}

#[tokio::test]
async fn module_unload_and_load_at_runtime() {
    let srv = server_with_alice().await;
    let mut c = RawClient::login(&srv, "alice", "secret", "r").await;
    let core = srv.server().core.clone();
    core.unload_module("localhost", "ping").unwrap();
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("<service-unavailable "), "{r}");
    c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let r = c.read_stanza("iq").await;
    assert!(!r.contains("urn:xmpp:ping"), "{r}");
    assert!(core.unload_module("localhost", "ping").is_err());
    core.load_module("localhost", "ping").unwrap();
    c.send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("type=\"result\""), "{r}");
    c.send("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(c.read_stanza("iq").await.contains("urn:xmpp:ping"));
}

#[tokio::test]
async fn accounts_survive_a_restart() {
    let srv = server_with_alice().await;
    let srv = srv.restart().await;
    still_serving(&srv).await;
}

#[tokio::test]
async fn disabled_module_is_not_loaded() {
    let srv = TestServer::start_with(|c| c.modules_disabled = vec!["ping".into()]).await;
    srv.add_user("alice@localhost", "secret").await;
    let mut c = RawClient::login(&srv, "alice", "secret", "r").await;
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(c.read_stanza("iq").await.contains("<service-unavailable "));
}
