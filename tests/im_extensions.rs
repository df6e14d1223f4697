//! The everyday extensions of issue #3 over real sockets: entity time, software version, last
//! activity, vcard-temp, private XML storage, the blocking command and in-band registration —
//! answered, listed in disco#info, gone (service-unavailable) once their module is unloaded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer};
use oxpecker::config::Config;
use oxpecker::xmpp::Jid;

const DISCO: &str = "<iq type='get' id='disco' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";

async fn server_with(users: &[&str]) -> TestServer {
    let srv = TestServer::start().await;
    for u in users {
        srv.add_user(&format!("{u}@localhost"), "secret").await;
    }
    srv
}

/// Module options (top-level keys) from TOML text, as a config file would set them.
fn with_options(c: &mut Config, toml_text: &str) {
    let parsed = Config::parse(toml_text).unwrap();
    c.options.extend(parsed.options);
}

/// Reads IQs until the one with `id`; returns it and everything skipped before it.
async fn reply_to(c: &mut RawClient, id: &str) -> (String, String) {
    let marker = format!("id=\"{id}\"");
    let mut skipped = String::new();
    loop {
        let before = c.buf.clone();
        let iq = c.read_stanza("iq").await;
        if iq.contains(&marker) {
            let pos = before.find(&iq).unwrap_or(0);
            skipped.push_str(&before[..pos]);
            return (iq, skipped);
        }
        skipped.push_str(&iq);
    }
}

/// Sends an IQ and returns its answer.
async fn iq(c: &mut RawClient, id: &str, xml: &str) -> String {
    c.send(xml).await;
    reply_to(c, id).await.0
}

async fn disco_features(c: &mut RawClient) -> String {
    iq(c, "disco", DISCO).await
}

/// Sends a ping and returns everything the client received before its answer.
async fn ping_barrier(c: &mut RawClient, id: &str) -> String {
    c.send(&format!(
        "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let (reply, skipped) = reply_to(c, id).await;
    assert!(reply.contains("type=\"result\""), "{reply}");
    skipped
}

#[tokio::test]
async fn time_version_and_uptime_are_answered_and_advertised() {
    let srv = server_with(&["alice"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;

    let r = iq(
        &mut a,
        "t1",
        "<iq type='get' id='t1' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
    )
    .await;
    assert!(
        r.contains("type=\"result\"") && r.contains("<tzo>+00:00</tzo>"),
        "{r}"
    );
    let utc = &r[r.find("<utc>").unwrap() + 5..r.find("</utc>").unwrap()];
    assert!(
        utc.len() == 20 && utc.ends_with('Z') && utc.starts_with("20"),
        "{utc}"
    );

    let r = iq(
        &mut a,
        "v1",
        "<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    assert!(r.contains("<name>Oxpecker</name>"), "{r}");
    assert!(
        r.contains(&format!("<version>{}</version>", env!("CARGO_PKG_VERSION"))),
        "{r}"
    );
    assert!(!r.contains("<os>"), "the OS is hidden by default: {r}");

    let r = iq(
        &mut a,
        "l1",
        "<iq type='get' id='l1' to='localhost'><query xmlns='jabber:iq:last'/></iq>",
    )
    .await;
    assert!(
        r.contains("type=\"result\"") && r.contains("seconds=\""),
        "{r}"
    );

    let d = disco_features(&mut a).await;
    for f in [
        "urn:xmpp:time",
        "jabber:iq:version",
        "jabber:iq:last",
        "vcard-temp",
        "jabber:iq:private",
        "urn:xmpp:blocking",
    ] {
        assert!(d.contains(&format!("var=\"{f}\"")), "{f} missing: {d}");
    }
    assert!(
        !d.contains("jabber:iq:register"),
        "register is off by default: {d}"
    );
}

#[tokio::test]
async fn version_options_rename_hide_and_show_os() {
    let srv = TestServer::start_with(|c| {
        with_options(c, "version_name = \"Wren\"\nversion_show_os = true\n")
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let r = iq(
        &mut a,
        "v",
        "<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    assert!(
        r.contains("<name>Wren</name>") && r.contains("<version>"),
        "{r}"
    );
    assert!(
        r.contains(&format!("<os>{}</os>", std::env::consts::OS)),
        "{r}"
    );

    let srv = TestServer::start_with(|c| {
        with_options(c, "version_hide = true\nversion_show_os = true\n")
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let r = iq(
        &mut a,
        "v",
        "<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    assert!(r.contains("<name>Oxpecker</name>"), "{r}");
    assert!(!r.contains("<version>") && !r.contains("<os>"), "{r}");
}

#[tokio::test]
async fn unloaded_modules_answer_service_unavailable_and_leave_disco() {
    let srv = server_with(&["alice"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let core = srv.server().core.clone();
    let cases = [
        (
            "time",
            "urn:xmpp:time",
            "<iq type='get' id='q' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
        ),
        (
            "version",
            "jabber:iq:version",
            "<iq type='get' id='q' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
        ),
        (
            "last",
            "jabber:iq:last",
            "<iq type='get' id='q' to='localhost'><query xmlns='jabber:iq:last'/></iq>",
        ),
        (
            "vcard",
            "vcard-temp",
            "<iq type='get' id='q'><vCard xmlns='vcard-temp'/></iq>",
        ),
        (
            "private",
            "jabber:iq:private",
            "<iq type='get' id='q'><query xmlns='jabber:iq:private'><x xmlns='urn:x'/></query></iq>",
        ),
        (
            "blocking",
            "urn:xmpp:blocking",
            "<iq type='get' id='q'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
        ),
    ];
    for (module, feature, request) in cases {
        let r = iq(&mut a, "q", request).await;
        assert!(r.contains("type=\"result\""), "{module} loaded: {r}");
        core.unload_module("localhost", module).unwrap();
        let r = iq(&mut a, "q", request).await;
        assert!(
            r.contains("<service-unavailable "),
            "{module} unloaded: {r}"
        );
        let d = disco_features(&mut a).await;
        assert!(!d.contains(&format!("var=\"{feature}\"")), "{module}: {d}");
        core.load_module("localhost", module).unwrap();
        let r = iq(&mut a, "q", request).await;
        assert!(r.contains("type=\"result\""), "{module} reloaded: {r}");
    }
}

#[tokio::test]
async fn last_activity_of_a_user() {
    let srv = server_with(&["alice", "bob"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "desk").await;
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;
    a.send("<presence/>").await;
    let ask = "<iq type='get' id='la' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>";
    let r = iq(&mut a, "la", ask).await;
    assert!(r.contains("seconds=\"0\""), "online user: {r}");
    let r = iq(&mut b, "la", ask).await;
    assert!(
        r.contains("<forbidden "),
        "only the user may ask for now: {r}"
    );

    // Going unavailable with a status records it; the still-connected session can read it.
    a.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        .await;
    let r = iq(&mut a, "la", ask).await;
    assert!(
        r.contains("type=\"result\"") && r.contains("gone fishing"),
        "{r}"
    );
    assert!(
        !r.contains("seconds=\"0\"") || r.contains("seconds=\"0\">gone"),
        "{r}"
    );

    // An available session that just disconnects is recorded from the server's own unavailable.
    let mut p = RawClient::login(&srv, "alice", "secret", "phone").await;
    p.send("<presence/>").await;
    ping_barrier(&mut p, "pb").await;
    p.send("</stream:stream>").await;
    p.read_to_close().await;
    let core = srv.server().core.clone();
    let alice = Jid::parse("alice@localhost").unwrap();
    let mut la = None;
    for _ in 0..50 {
        la = oxpecker::modules::last::last_activity(&core, &alice)
            .await
            .unwrap();
        if la.as_ref().is_some_and(|l| l.status.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(la.map(|l| l.status), Some(String::new()));
    let r = iq(&mut a, "la", ask).await;
    assert!(
        r.contains("seconds=\"") && !r.contains("gone fishing"),
        "{r}"
    );
}

#[tokio::test]
async fn vcard_set_get_by_another_user_and_after_restart() {
    let srv = server_with(&["alice", "bob"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;

    let r = iq(
        &mut a,
        "g0",
        "<iq type='get' id='g0'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert!(
        r.contains("<vCard xmlns=\"vcard-temp\"/>"),
        "empty at first: {r}"
    );

    let r = iq(
        &mut a,
        "s1",
        "<iq type='set' id='s1'><vCard xmlns='vcard-temp'><FN>Alice &amp; Co &lt;3</FN><NICKNAME>al</NICKNAME><PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO></vCard></iq>",
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");

    let get_alice = "<iq type='get' id='g1' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>";
    let r = iq(&mut b, "g1", get_alice).await;
    assert!(
        r.contains("type=\"result\"") && r.contains("from=\"alice@localhost\""),
        "{r}"
    );
    assert!(
        r.contains("<FN>Alice &amp; Co &lt;3</FN>") && r.contains("<BINVAL>iVBORw0KGgo=</BINVAL>"),
        "{r}"
    );

    // Nobody sets another user's vCard; unknown users have none to give.
    let r = iq(&mut b, "s2", "<iq type='set' id='s2' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>evil</FN></vCard></iq>").await;
    assert!(r.contains("<forbidden "), "{r}");
    let r = iq(
        &mut b,
        "g2",
        "<iq type='get' id='g2' to='ghost@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert!(r.contains("<service-unavailable "), "{r}");

    // Over the size limit.
    let big = format!(
        "<iq type='set' id='s3'><vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard></iq>",
        "x".repeat(70_000)
    );
    let r = iq(&mut b, "s3", &big).await;
    assert!(
        r.contains("<not-acceptable "),
        "{}",
        &r[r.len().saturating_sub(300)..]
    );

    // The API the admin REST side uses sees the same vCard.
    let core = srv.server().core.clone();
    let alice = Jid::parse("alice@localhost").unwrap();
    let v = oxpecker::modules::vcard::get_vcard(&core, &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        v.get_child("NICKNAME", "vcard-temp")
            .unwrap()
            .text_content(),
        "al"
    );

    drop((a, b, core));
    let srv = srv.restart().await;
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;
    let r = iq(&mut b, "g1", get_alice).await;
    assert!(
        r.contains("<FN>Alice &amp; Co &lt;3</FN>"),
        "after restart: {r}"
    );

    // Setting an empty vCard deletes it.
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let r = iq(
        &mut a,
        "s4",
        "<iq type='set' id='s4'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let core = srv.server().core.clone();
    assert!(
        oxpecker::modules::vcard::get_vcard(&core, &alice)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn private_storage_round_trip_and_access_rules() {
    let srv = server_with(&["alice", "bob"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;
    let r = iq(
        &mut a,
        "p1",
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='room@muc.example' autojoin='true'><nick>al</nick></conference></storage></query></iq>",
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(&mut a, "p2", "<iq type='get' id='p2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert!(r.contains("<storage xmlns=\"storage:bookmarks\"><conference jid=\"room@muc.example\" autojoin=\"true\"><nick>al</nick></conference></storage>"), "{r}");
    // Nothing stored under another namespace: the empty element comes back.
    let r = iq(&mut a, "p3", "<iq type='get' id='p3'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>").await;
    assert!(r.contains("<prefs xmlns=\"urn:example:prefs\"/>"), "{r}");
    // Another user's storage is forbidden, for reading and writing.
    let r = iq(&mut b, "p4", "<iq type='get' id='p4' to='alice@localhost'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert!(
        r.contains("<forbidden ") && !r.contains("muc.example"),
        "{r}"
    );
    let r = iq(&mut b, "p5", "<iq type='set' id='p5' to='alice@localhost'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert!(r.contains("<forbidden "), "{r}");
    // Reserved namespaces.
    for (id, ns) in [
        ("p6", "jabber:client"),
        ("p7", "jabber:iq:private"),
        ("p8", "jabber:server"),
    ] {
        let r = iq(&mut a, id, &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'><x xmlns='{ns}'/></query></iq>")).await;
        assert!(r.contains("<not-acceptable "), "{ns}: {r}");
    }
    // Bob's own storage is separate.
    let r = iq(&mut b, "p9", "<iq type='get' id='p9'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert!(r.contains("<storage xmlns=\"storage:bookmarks\"/>"), "{r}");
}

#[tokio::test]
async fn blocking_drops_bounces_pushes_and_unblocks() {
    let srv = server_with(&["alice", "bob"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "desk").await;
    let mut a2 = RawClient::login(&srv, "alice", "secret", "phone").await;
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;
    for c in [&mut a, &mut a2, &mut b] {
        c.send("<presence/>").await;
        ping_barrier(c, "init").await;
    }
    // Delivery works before blocking.
    b.send("<message to='alice@localhost/desk' type='chat' id='m0'><body>hello</body></message>")
        .await;
    assert!(a.read_stanza("message").await.contains("hello"));

    let r = iq(&mut a, "b1", "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    // The push reaches the other resource (and the blocker's own).
    let push = a2.read_stanza("iq").await;
    assert!(
        push.contains("type=\"set\"")
            && push.contains(
                "<block xmlns=\"urn:xmpp:blocking\"><item jid=\"bob@localhost\"/></block>"
            ),
        "{push}"
    );
    let push = a.read_stanza("iq").await;
    assert!(
        push.contains("<block xmlns=\"urn:xmpp:blocking\">"),
        "{push}"
    );
    // The blocked contact sees the blocker go offline.
    let p = b.read_stanza("presence").await;
    assert!(
        p.contains("type=\"unavailable\"") && p.contains("from=\"alice@localhost/"),
        "{p}"
    );

    let r = iq(
        &mut a2,
        "bl",
        "<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(r.contains("<item jid=\"bob@localhost\"/>"), "{r}");

    // A blocked contact's message (to bare and full JID) is dropped silently.
    b.send("<message to='alice@localhost' type='chat' id='m1'><body>SPAM1</body></message>")
        .await;
    b.send("<message to='alice@localhost/desk' type='chat' id='m2'><body>SPAM2</body></message>")
        .await;
    b.send("<presence to='alice@localhost/desk'/>").await;
    let seen = ping_barrier(&mut b, "bp1").await;
    assert!(
        !seen.contains("<message"),
        "no error goes back to the blocked contact: {seen}"
    );
    let seen = ping_barrier(&mut a, "ap1").await;
    assert!(
        !seen.contains("SPAM") && !seen.contains("<message") && !seen.contains("<presence"),
        "{seen}"
    );
    // An IQ from the blocked contact is refused.
    let r = iq(
        &mut b,
        "bi",
        "<iq type='get' id='bi' to='alice@localhost/desk'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert!(r.contains("<service-unavailable "), "{r}");
    let seen = ping_barrier(&mut a, "ap2").await;
    assert!(!seen.contains("id=\"bi\""), "{seen}");

    // The blocker cannot message the blocked contact.
    a.send("<message to='bob@localhost' type='chat' id='m3'><body>psst</body></message>")
        .await;
    let err = a.read_stanza("message").await;
    assert!(
        err.contains("type=\"error\"")
            && err.contains("<not-acceptable ")
            && err.contains("<blocked xmlns=\"urn:xmpp:blocking:errors\"/>"),
        "{err}"
    );
    let r = iq(
        &mut a,
        "ai",
        "<iq type='get' id='ai' to='bob@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert!(
        r.contains("<blocked xmlns=\"urn:xmpp:blocking:errors\"/>"),
        "{r}"
    );
    let seen = ping_barrier(&mut b, "bp2").await;
    assert!(
        !seen.contains("psst") && !seen.contains("id=\"ai\""),
        "{seen}"
    );

    // Unblocking restores delivery and is pushed too.
    let r = iq(&mut a, "u1", "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let push = a2.read_stanza("iq").await;
    assert!(
        push.contains(
            "<unblock xmlns=\"urn:xmpp:blocking\"><item jid=\"bob@localhost\"/></unblock>"
        ),
        "{push}"
    );
    b.send(
        "<message to='alice@localhost/desk' type='chat' id='m4'><body>back again</body></message>",
    )
    .await;
    assert!(a.read_stanza("message").await.contains("back again"));

    // Domain blocking and unblock-all.
    let r = iq(&mut a, "b2", "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='evil.example'/><item jid='bob@localhost/r'/></block></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    b.send("<message to='alice@localhost/desk' type='chat'><body>SPAM3</body></message>")
        .await;
    ping_barrier(&mut b, "bp3").await;
    let seen = ping_barrier(&mut a, "ap3").await;
    assert!(
        !seen.contains("SPAM3"),
        "full-JID item blocks that resource: {seen}"
    );
    let r = iq(
        &mut a,
        "u2",
        "<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(
        &mut a,
        "bl2",
        "<iq type='get' id='bl2'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(
        r.contains("<blocklist xmlns=\"urn:xmpp:blocking\"/>"),
        "{r}"
    );
    // Invalid requests.
    let r = iq(
        &mut a,
        "b3",
        "<iq type='set' id='b3'><block xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(r.contains("<bad-request "), "{r}");
    let r = iq(
        &mut a,
        "b4",
        "<iq type='set' id='b4'><block xmlns='urn:xmpp:blocking'><item jid='a@@b'/></block></iq>",
    )
    .await;
    assert!(r.contains("<jid-malformed "), "{r}");
}

#[tokio::test]
async fn blocklist_survives_a_restart() {
    let srv = server_with(&["alice", "bob"]).await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let r = iq(&mut a, "b1", "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    drop(a);
    let srv = srv.restart().await;
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;
    let r = iq(
        &mut a,
        "bl",
        "<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(r.contains("<item jid=\"bob@localhost\"/>"), "{r}");
    b.send("<message to='alice@localhost/r' type='chat'><body>SPAM</body></message>")
        .await;
    ping_barrier(&mut b, "bp").await;
    let seen = ping_barrier(&mut a, "ap").await;
    assert!(!seen.contains("SPAM"), "{seen}");
}

const REG_GET: &str = "<iq type='get' id='rg'><query xmlns='jabber:iq:register'/></iq>";

fn reg_set(id: &str, user: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
    )
}

#[tokio::test]
async fn registration_is_off_by_default() {
    let srv = server_with(&["alice"]).await;
    let mut c = RawClient::connect(srv.c2s()).await;
    let features = c.starttls(&srv.cert_pem()).await;
    assert!(!features.contains("iq-register"), "{features}");
    let r = iq(&mut c, "rs", &reg_set("rs", "mallory", "pw")).await;
    assert!(r.contains("<service-unavailable "), "{r}");
    assert!(
        !srv.server()
            .core
            .accounts
            .exists(&Jid::parse("mallory@localhost").unwrap())
            .await
            .unwrap()
    );
    // Loaded but not allowed: still no.
    let srv = TestServer::start_with(|c| c.modules_enabled.push("register".into())).await;
    let mut c = RawClient::connect(srv.c2s()).await;
    let features = c.starttls(&srv.cert_pem()).await;
    assert!(!features.contains("iq-register"), "{features}");
    let r = iq(&mut c, "rs", &reg_set("rs", "mallory", "pw")).await;
    assert!(r.contains("<service-unavailable "), "{r}");
}

#[tokio::test]
async fn in_band_registration_creates_accounts_over_tls() {
    let srv = TestServer::start_with(|c| {
        c.modules_enabled.push("register".into());
        with_options(
            c,
            "allow_registration = true\nregistration_throttle_max = 3\n",
        );
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;

    // Not before TLS.
    let mut c = RawClient::connect(srv.c2s()).await;
    let features = c.open().await;
    assert!(!features.contains("iq-register"), "{features}");
    let r = iq(&mut c, "rs", &reg_set("rs", "carol", "pw")).await;
    assert!(r.contains("<policy-violation "), "{r}");

    let mut c = RawClient::connect(srv.c2s()).await;
    let features = c.starttls(&srv.cert_pem()).await;
    assert!(
        features.contains("<register xmlns=\"http://jabber.org/features/iq-register\"/>"),
        "{features}"
    );
    let r = iq(&mut c, "rg", REG_GET).await;
    assert!(
        r.contains("<username/>") && r.contains("<password/>") && r.contains("<instructions>"),
        "{r}"
    );
    let r = iq(&mut c, "r1", &reg_set("r1", "Carol", "carol-pw")).await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(&mut c, "r2", &reg_set("r2", "carol", "other")).await;
    assert!(r.contains("<conflict "), "{r}");
    let r = iq(&mut c, "r3", &reg_set("r3", "bad@name", "pw")).await;
    assert!(r.contains("<not-acceptable "), "{r}");
    let r = iq(&mut c, "r4", &reg_set("r4", "dave", "")).await;
    assert!(r.contains("<not-acceptable "), "{r}");
    let r = iq(&mut c, "r5", &reg_set("r5", "dave", "dave-pw")).await;
    assert!(r.contains("type=\"result\""), "{r}");
    // The throttle (3 attempts per minute per address) stops the next one.
    let r = iq(&mut c, "r6", &reg_set("r6", "erin", "erin-pw")).await;
    assert!(r.contains("<resource-constraint "), "{r}");
    // The stream still authenticates afterwards, as the new user.
    assert!(c.auth_plain("carol", "carol-pw").await.contains("<success"));
    assert_eq!(c.bind("r").await, "carol@localhost/r");

    // Logged in: disco lists registration, the password can be changed, the account removed.
    let d = disco_features(&mut c).await;
    assert!(d.contains("var=\"jabber:iq:register\""), "{d}");
    let r = iq(
        &mut c,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert!(
        r.contains("<registered/>") && r.contains("<username>carol</username>"),
        "{r}"
    );
    let r = iq(&mut c, "pw0", &reg_set("pw0", "alice", "hijack")).await;
    assert!(r.contains("<forbidden "), "{r}");
    let r = iq(&mut c, "pw", &reg_set("pw", "carol", "new-pw")).await;
    assert!(r.contains("type=\"result\""), "{r}");
    let mut c2 = RawClient::login(&srv, "carol", "new-pw", "second").await;
    c.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    let out = c.read_to_close().await;
    assert!(
        out.contains("id=\"rm\"") && out.contains("type=\"result\""),
        "{out}"
    );
    assert!(out.contains("<not-authorized "), "{out}");
    let out = c2.read_to_close().await;
    assert!(
        out.contains("<not-authorized "),
        "every session ends: {out}"
    );
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    assert!(
        c.auth_plain("carol", "new-pw")
            .await
            .contains("<not-authorized")
    );
    // Alice was never touched.
    let _ = RawClient::login(&srv, "alice", "secret", "r").await;
}

#[tokio::test]
async fn blocking_covers_presence_broadcasts_between_contacts() {
    let srv = server_with(&["alice", "bob"]).await;
    let core = srv.server().core.clone();
    let (alice, bob) = (
        Jid::parse("alice@localhost").unwrap(),
        Jid::parse("bob@localhost").unwrap(),
    );
    core.add_mutual(&alice, &bob).await.unwrap();
    let mut a = RawClient::login(&srv, "alice", "secret", "r").await;
    let r = iq(&mut a, "b1", "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let mut b = RawClient::login(&srv, "bob", "secret", "r").await;
    b.send("<presence/>").await;
    ping_barrier(&mut b, "b0").await;
    a.send("<presence/>").await;
    let seen = ping_barrier(&mut a, "a0").await;
    assert!(!seen.contains("from=\"bob@localhost"), "{seen}");
    a.send("<presence><show>away</show></presence>").await;
    ping_barrier(&mut a, "a1").await;
    let seen = ping_barrier(&mut b, "b1").await;
    assert!(!seen.contains("from=\"alice@localhost"), "{seen}");
    b.send("<presence><show>dnd</show></presence>").await;
    ping_barrier(&mut b, "b2").await;
    let seen = ping_barrier(&mut a, "a2").await;
    assert!(!seen.contains("from=\"bob@localhost"), "{seen}");

    // Once unblocked, broadcasts flow again.
    let r = iq(
        &mut a,
        "u1",
        "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    a.send("<presence><show>chat</show></presence>").await;
    let p = b.read_stanza("presence").await;
    assert!(
        p.contains("from=\"alice@localhost/r\"") && p.contains("<show>chat</show>"),
        "{p}"
    );
}
