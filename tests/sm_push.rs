//! XEP-0198 stream management (acks, resumption, hibernation timeout), XEP-0352 client state
//! indication and XEP-0357 push notifications, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RawClient, TestServer, read_until_contains};

const SM: &str = "urn:xmpp:sm:3";

async fn server(f: impl FnOnce(&mut oxpecker::config::Config)) -> TestServer {
    let srv = TestServer::start_with(f).await;
    for u in ["alice", "bob", "app"] {
        srv.add_user(&format!("{u}@localhost"), "pw").await;
    }
    srv
}

/// Logs in over STARTTLS + PLAIN and stops before binding (returns the post-auth features).
async fn authenticate(srv: &TestServer, user: &str) -> (RawClient, String) {
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    assert!(c.auth_plain(user, "pw").await.contains("<success"));
    let features = c.open().await;
    (c, features)
}

/// Binds, enables resumable stream management, returns the client and the resumption id.
async fn login_sm(srv: &TestServer, user: &str, resource: &str) -> (RawClient, String) {
    let (mut c, features) = authenticate(srv, user).await;
    assert!(features.contains(SM), "{features}");
    c.send(&format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ))
    .await;
    c.read_stanza("iq").await;
    c.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = c.read_stanza("enabled").await;
    let start = enabled.find("id=\"").unwrap() + 4;
    let id = enabled[start..start + enabled[start..].find('"').unwrap()].to_string();
    assert!(enabled.contains("resume=\"true\""), "{enabled}");
    (c, id)
}

/// Binds `resource` on an already opened, authenticated stream.
async fn bind_only(c: &mut RawClient, resource: &str) {
    c.send(&format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ))
    .await;
    assert!(c.read_stanza("iq").await.contains("<jid>"));
}

async fn wait_for<F: Fn() -> bool>(f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn acks_count_stanzas_both_ways() {
    let srv = server(|_| {}).await;
    let (mut a, _) = login_sm(&srv, "alice", "a").await;
    a.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.send(&format!("<r xmlns='{SM}'/>")).await;
    let before = a.read_until("<a ").await;
    let ack = a.read_until("/>").await;
    assert!(ack.contains("h='2'"), "two stanzas counted: {ack}");
    // The server asked for acks of what it sent; answering keeps the stream healthy.
    assert!(before.contains(&format!("<r xmlns='{SM}'/>")), "{before}");
    a.send(&format!("<a xmlns='{SM}' h='2'/>")).await;
    a.send("<iq type='get' id='p3' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(
        read_until_contains(&mut a, "iq", "p3")
            .await
            .contains("result")
    );
    // Acknowledging more than was sent is a stream error.
    a.send(&format!("<a xmlns='{SM}' h='99'/>")).await;
    let out = a.read_to_close().await;
    assert!(out.contains("handled-count-too-high"), "{out}");
}

#[tokio::test]
async fn a_lost_session_resumes_and_gets_every_unacked_stanza() {
    let srv = server(|_| {}).await;
    let (mut a, id) = login_sm(&srv, "alice", "phone").await;
    a.send("<presence/>").await;
    a.read_stanza("presence").await;
    let mut b = RawClient::login(&srv, "bob", "pw", "desk").await;
    for i in 0..3 {
        b.send(&format!(
            "<message to='alice@localhost/phone' type='chat'><body>before {i}</body></message>"
        ))
        .await;
    }
    read_until_contains(&mut a, "message", "before 2").await;
    // The connection dies without a close; alice never acked.
    drop(a);
    let alice = oxpecker::xmpp::Jid::parse("alice@localhost/phone").unwrap();
    let core = srv.server().core.clone();
    wait_for(|| {
        core.sessions
            .get(&alice)
            .is_some_and(|s| s.is_hibernating())
    })
    .await;
    for i in 0..2 {
        b.send(&format!(
            "<message to='alice@localhost/phone' type='chat'><body>during {i}</body></message>"
        ))
        .await;
    }
    // Resume: everything unacked and everything queued arrives, in order.
    let (mut a, features) = authenticate(&srv, "alice").await;
    assert!(features.contains(SM));
    // Alice had handled two stanzas: her own presence and "before 0".
    a.send(&format!("<resume xmlns='{SM}' previd='{id}' h='2'/>"))
        .await;
    let resumed = a.read_stanza("resumed").await;
    assert!(
        resumed.contains(&format!("previd=\"{id}\""))
            || resumed.contains(&format!("previd='{id}'")),
        "{resumed}"
    );
    let mut bodies = Vec::new();
    while bodies.len() < 4 {
        let m = a.read_stanza("message").await;
        let s = m.find("<body>").unwrap() + 6;
        bodies.push(m[s..m.find("</body>").unwrap()].to_string());
    }
    assert_eq!(
        bodies,
        ["before 1", "before 2", "during 0", "during 1"],
        "h=2 acked the first two"
    );
    // Still the same session, still online.
    a.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(
        read_until_contains(&mut a, "iq", "id=\"p\"")
            .await
            .contains("result")
    );
    // Bob never saw alice go offline.
    b.send("<iq type='get' id='q' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let seen = b.read_until("id=\"q\"").await;
    assert!(!seen.contains("unavailable"), "{seen}");
}

#[tokio::test]
async fn resume_takes_over_a_connection_that_is_still_attached() {
    let srv = server(|_| {}).await;
    let (_old, id) = login_sm(&srv, "alice", "r").await;
    let (mut a, _) = authenticate(&srv, "alice").await;
    a.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    a.read_stanza("resumed").await;
    a.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(
        read_until_contains(&mut a, "iq", "id=\"p\"")
            .await
            .contains("result")
    );
}

#[tokio::test]
async fn unknown_resumption_fails_and_binding_still_works() {
    let srv = server(|_| {}).await;
    let (mut a, _) = authenticate(&srv, "alice").await;
    a.send(&format!("<resume xmlns='{SM}' previd='nope' h='0'/>"))
        .await;
    let failed = a.read_stanza("failed").await;
    assert!(failed.contains("item-not-found"), "{failed}");
    // Another account cannot resume alice's session either.
    let (_alice, id) = login_sm(&srv, "alice", "x").await;
    let (mut b, _) = authenticate(&srv, "bob").await;
    b.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    assert!(b.read_stanza("failed").await.contains("item-not-found"));
    a.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    assert!(a.read_stanza("iq").await.contains("<jid>alice@localhost/"));
}

#[tokio::test]
async fn unacked_stanzas_go_offline_when_hibernation_ends() {
    let srv = server(|c| {
        c.options
            .insert("smacks_hibernation_time".into(), toml::Value::Integer(1));
    })
    .await;
    let (mut a, _) = login_sm(&srv, "alice", "phone").await;
    a.send("<presence/>").await;
    a.read_stanza("presence").await;
    let mut b = RawClient::login(&srv, "bob", "pw", "desk").await;
    b.send("<message to='alice@localhost' type='chat'><body>keep me</body></message>")
        .await;
    read_until_contains(&mut a, "message", "keep me").await;
    drop(a);
    let alice = oxpecker::xmpp::Jid::parse("alice@localhost").unwrap();
    let core = srv.server().core.clone();
    wait_for(|| !core.sessions.is_online(&alice)).await;
    // Never lost: it went to offline storage and arrives at the next login.
    let mut a = RawClient::login(&srv, "alice", "pw", "laptop").await;
    a.send("<presence/>").await;
    let m = read_until_contains(&mut a, "message", "keep me").await;
    assert!(m.contains("urn:xmpp:delay"), "{m}");
}

#[tokio::test]
async fn inactive_clients_get_presence_later_and_messages_at_once() {
    let srv = server(|_| {}).await;
    let core = srv.server().core.clone();
    let alice = oxpecker::xmpp::Jid::parse("alice@localhost").unwrap();
    let bob = oxpecker::xmpp::Jid::parse("bob@localhost").unwrap();
    core.add_mutual(&alice, &bob).await.unwrap();
    let (mut a, features) = authenticate(&srv, "alice").await;
    assert!(features.contains("urn:xmpp:csi:0"), "{features}");
    bind_only(&mut a, "a").await;
    a.send("<presence/>").await;
    a.read_stanza("presence").await;
    a.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    a.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.read_until("id=\"sync\"").await;
    let mut b = RawClient::login(&srv, "bob", "pw", "b").await;
    b.send("<presence><status>one</status></presence>").await;
    b.send("<presence><status>two</status></presence>").await;
    // A ping reply is not held; the presence updates are.
    b.send("<message to='alice@localhost/a' type='chat'><body>wake</body></message>")
        .await;
    let got = a.read_until("wake").await;
    assert!(
        got.contains("<status>two</status>") && !got.contains("<status>one</status>"),
        "latest presence flushed before the message: {got}"
    );
    b.send("<presence><status>three</status></presence>").await;
    a.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    read_until_contains(&mut a, "presence", "three").await;
}

#[tokio::test]
async fn push_notifications_go_to_the_app_server_while_the_session_sleeps() {
    let srv = server(|_| {}).await;
    let mut app = RawClient::login(&srv, "app", "pw", "server").await;
    let (mut a, _) = login_sm(&srv, "alice", "phone").await;
    a.send("<presence/>").await;
    a.read_stanza("presence").await;
    a.send("<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='app@localhost/server' node='n1'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>s3</value></field></x></enable></iq>").await;
    assert!(
        read_until_contains(&mut a, "iq", "id=\"en\"")
            .await
            .contains("result")
    );
    let mut b = RawClient::login(&srv, "bob", "pw", "desk").await;
    // Awake: no notification.
    b.send("<message to='alice@localhost' type='chat'><body>hello</body></message>")
        .await;
    read_until_contains(&mut a, "message", "hello").await;
    drop(a);
    let alice = oxpecker::xmpp::Jid::parse("alice@localhost/phone").unwrap();
    let core = srv.server().core.clone();
    wait_for(|| {
        core.sessions
            .get(&alice)
            .is_some_and(|s| s.is_hibernating())
    })
    .await;
    b.send("<message to='alice@localhost' type='chat'><body>secret text</body></message>")
        .await;
    let push = read_until_contains(&mut app, "iq", "urn:xmpp:push:0").await;
    assert!(
        push.contains("node=\"n1\"") && push.contains("urn:xmpp:push:summary"),
        "{push}"
    );
    assert!(!push.contains("secret text"), "no body by default: {push}");
    assert!(
        push.contains("<value>s3</value>"),
        "publish options passed on: {push}"
    );
    assert!(push.contains("from=\"alice@localhost\""), "{push}");
    let id_start = push.find("id=\"").unwrap() + 4;
    let id = &push[id_start..id_start + push[id_start..].find('"').unwrap()];
    app.send(&format!(
        "<iq type='result' id='{id}' to='alice@localhost'/>"
    ))
    .await;
}

#[tokio::test]
async fn unloading_smacks_removes_the_feature() {
    let srv = server(|_| {}).await;
    srv.server()
        .core
        .unload_module("localhost", "smacks")
        .unwrap();
    let (mut a, features) = authenticate(&srv, "alice").await;
    assert!(!features.contains(SM), "{features}");
    bind_only(&mut a, "r").await;
    a.send(&format!("<enable xmlns='{SM}'/>")).await;
    assert!(
        a.read_stanza("failed")
            .await
            .contains("feature-not-implemented")
    );
}
