//! XEP-0163 PEP over real sockets: caps-filtered (+notify) notifications with disco#info caps
//! resolution and its cache, last items on coming online, access models, publish-options
//! preconditions, max_items, retract/delete notifications, persistence across restarts,
//! XEP-0223 private PEP storage, XEP-0402/0411 bookmarks, XEP-0398/0153 avatars, unloading.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::{RawClient, TestServer, jid, login, nothing_pending, read_until_contains};
use sha1::{Digest, Sha1};

const DISCO: &str = "http://jabber.org/protocol/disco#info";
const CAPS_NODE: &str = "https://oxpecker.test/client";

async fn server(users: &[&str]) -> TestServer {
    TestServer::with_users(users, |_| {}).await
}

async fn befriend(srv: &TestServer, a: &str, b: &str) {
    srv.server()
        .core
        .add_mutual(
            &jid(&format!("{a}@localhost")),
            &jid(&format!("{b}@localhost")),
        )
        .await
        .unwrap();
}

/// Sends an IQ and returns its answer (the IQ with this id).
async fn iq(c: &mut RawClient, id: &str, xml: &str) -> String {
    c.send(xml).await;
    read_until_contains(c, "iq", &format!("id=\"{id}\"")).await
}

/// The value of attribute `name` in the first tag of `xml` that has it.
fn attr(xml: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = xml.find(&key)? + key.len();
    let end = xml[start..].find('"')? + start;
    Some(xml[start..end].to_string())
}

/// The XEP-0115 §5 ver of a client with identity client/pc/"Test" and `features` (SHA-1).
fn caps_ver(features: &[&str]) -> String {
    let mut f: Vec<&str> = features.to_vec();
    f.sort();
    let mut s = String::from("client/pc//Test<");
    for x in f {
        s.push_str(x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

fn caps_presence(ver: &str) -> String {
    format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>"
    )
}

/// Waits for the server's disco#info query about our caps and answers it with `features`.
async fn answer_disco(c: &mut RawClient, features: &[&str]) {
    let q = read_until_contains(c, "iq", DISCO).await;
    assert!(q.contains("type=\"get\""), "{q}");
    let id = attr(&q, "id").unwrap();
    let node = attr(&q, "node").unwrap();
    assert!(node.starts_with(&format!("{CAPS_NODE}#")), "{q}");
    let mut body = String::from("<identity category='client' type='pc' name='Test'/>");
    for f in features {
        body.push_str(&format!("<feature var='{f}'/>"));
    }
    c.send(&format!(
        "<iq type='result' id='{id}' to='localhost'><query xmlns='{DISCO}' node='{node}'>{body}</query></iq>"
    ))
    .await;
}

/// Logs in and sends caps presence advertising `features`, answering the caps query.
async fn online_with_caps(srv: &TestServer, user: &str, features: &[&str]) -> RawClient {
    let mut c = login(srv, user, "r").await;
    c.send(&caps_presence(&caps_ver(features))).await;
    answer_disco(&mut c, features).await;
    c
}

fn publish(id: &str, node: &str, item: &str, payload: &str, options: &[(&str, &str)]) -> String {
    let mut opts = String::new();
    if !options.is_empty() {
        opts.push_str("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>");
        for (k, v) in options {
            opts.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
        }
        opts.push_str("</x></publish-options>");
    }
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item id='{item}'>{payload}</item></publish>{opts}</pubsub></iq>"
    )
}

fn items(id: &str, to: &str, node: &str) -> String {
    format!(
        "<iq type='get' id='{id}' to='{to}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'/></pubsub></iq>"
    )
}

const TUNE: &str = "http://jabber.org/protocol/tune";
const TUNE_PAYLOAD: &str =
    "<tune xmlns='http://jabber.org/protocol/tune'><title>Yesterday</title></tune>";

fn notify_features(nodes: &[&str]) -> Vec<String> {
    let mut f = vec![
        DISCO.to_string(),
        "http://jabber.org/protocol/caps".to_string(),
    ];
    for n in nodes {
        f.push(format!("{n}+notify"));
    }
    f
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn publish_reaches_only_contacts_with_notify_caps() {
    let srv = server(&["alice", "bob", "carol"]).await;
    befriend(&srv, "alice", "bob").await;
    befriend(&srv, "alice", "carol").await;
    let with = notify_features(&[TUNE]);
    let without = notify_features(&["urn:example:other"]);
    let mut bob = online_with_caps(&srv, "bob", &strs(&with)).await;
    let mut carol = online_with_caps(&srv, "carol", &strs(&without)).await;
    let mut alice = login(&srv, "alice", "a").await;
    alice.send("<presence/>").await;

    alice
        .send(&publish("p1", TUNE, "t1", TUNE_PAYLOAD, &[]))
        .await;
    // The owner's own resource is notified too (before the result).
    let own = read_until_contains(&mut alice, "message", "pubsub#event").await;
    assert!(own.contains("<item id=\"t1\">"), "{own}");
    let r = read_until_contains(&mut alice, "iq", "id=\"p1\"").await;
    assert!(
        r.contains("type=\"result\"") && r.contains("<item id=\"t1\"/>"),
        "{r}"
    );

    let m = read_until_contains(&mut bob, "message", "pubsub#event").await;
    assert!(
        m.contains("type=\"headline\"")
            && m.contains("from=\"alice@localhost\"")
            && m.contains(&format!("<items node=\"{TUNE}\">"))
            && m.contains("<title>Yesterday</title>"),
        "{m}"
    );
    nothing_pending(&mut carol).await;

    // The account advertises PEP.
    let info = iq(
        &mut bob,
        "d1",
        &format!("<iq type='get' id='d1' to='alice@localhost'><query xmlns='{DISCO}'/></iq>"),
    )
    .await;
    for f in [
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#auto-create",
        "http://jabber.org/protocol/pubsub#access-whitelist",
        "http://jabber.org/protocol/pubsub#last-published",
    ] {
        assert!(info.contains(&format!("var=\"{f}\"")), "{f}: {info}");
    }
    assert!(
        info.contains("category=\"pubsub\"") && info.contains("type=\"pep\""),
        "{info}"
    );
}

#[tokio::test]
async fn last_item_on_coming_online_with_one_caps_query_per_ver_and_no_poisoning() {
    let srv = server(&["alice", "bob", "dave", "mallory", "erin"]).await;
    for u in ["bob", "dave", "mallory"] {
        befriend(&srv, "alice", u).await;
    }
    let mut alice = login(&srv, "alice", "a").await;
    alice.send("<presence/>").await;
    let r = iq(
        &mut alice,
        "p1",
        &publish("p1", TUNE, "t1", TUNE_PAYLOAD, &[]),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");

    let features = notify_features(&[TUNE]);
    let ver = caps_ver(&strs(&features));
    // Mallory claims the ver of the +notify feature set but answers something else: the answer
    // does not hash to the ver, so it is used for mallory only.
    let mut mallory = login(&srv, "mallory", "m").await;
    mallory.send(&caps_presence(&ver)).await;
    answer_disco(&mut mallory, &strs(&notify_features(&[]))).await;

    // Bob advertises the same ver: not cached, so he is asked, and gets the last item.
    let mut bob = login(&srv, "bob", "b").await;
    bob.send(&caps_presence(&ver)).await;
    answer_disco(&mut bob, &strs(&features)).await;
    let m = read_until_contains(&mut bob, "message", "pubsub#event").await;
    assert!(
        m.contains("<item id=\"t1\">") && m.contains("urn:xmpp:delay"),
        "{m}"
    );

    // Dave has the same ver, now verified and cached: no query, the item comes straight away.
    let mut dave = login(&srv, "dave", "d").await;
    dave.send(&caps_presence(&ver)).await;
    let before = dave.read_until("pubsub#event").await;
    assert!(!before.contains(DISCO), "asked again: {before}");
    assert!(before.contains("<item id=\"t1\">") || dave.buf.contains("<item id=\"t1\">"));
    assert_eq!(srv.server().core.iq.in_flight(), 0);
    // Mallory's own (unverified) answer lacks +notify: she got nothing.
    nothing_pending(&mut mallory).await;

    // Erin (same caps) is not a contact yet: once alice approves her subscription request,
    // she gets the last item.
    let mut erin = login(&srv, "erin", "e").await;
    erin.send(&caps_presence(&ver)).await;
    nothing_pending(&mut erin).await;
    erin.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    read_until_contains(&mut alice, "presence", "type=\"subscribe\"").await;
    alice
        .send("<presence to='erin@localhost' type='subscribed'/>")
        .await;
    let m = read_until_contains(&mut erin, "message", "pubsub#event").await;
    assert!(m.contains("<item id=\"t1\">"), "{m}");
}

#[tokio::test]
async fn access_models_govern_item_retrieval() {
    let srv = server(&["alice", "bob", "frank"]).await;
    befriend(&srv, "alice", "bob").await;
    let mut alice = login(&srv, "alice", "a").await;
    let mut bob = login(&srv, "bob", "b").await;
    let mut frank = login(&srv, "frank", "f").await;
    let payload = "<p xmlns='urn:example:p'>x</p>";
    for (id, node, opts) in [
        ("c1", "urn:example:presence", vec![]),
        (
            "c2",
            "urn:example:open",
            vec![("pubsub#access_model", "open")],
        ),
        (
            "c3",
            "urn:example:wl",
            vec![("pubsub#access_model", "whitelist")],
        ),
    ] {
        let r = iq(&mut alice, id, &publish(id, node, "i1", payload, &opts)).await;
        assert!(r.contains("type=\"result\""), "{r}");
    }
    let a = "alice@localhost";
    let r = iq(&mut bob, "g1", &items("g1", a, "urn:example:presence")).await;
    assert!(
        r.contains("type=\"result\"") && r.contains("<p xmlns=\"urn:example:p\">x</p>"),
        "{r}"
    );
    let r = iq(&mut frank, "g2", &items("g2", a, "urn:example:presence")).await;
    assert!(
        r.contains("<not-authorized ") && r.contains("<presence-subscription-required "),
        "{r}"
    );
    let r = iq(&mut frank, "g3", &items("g3", a, "urn:example:open")).await;
    assert!(
        r.contains("type=\"result\"") && r.contains("<item id=\"i1\">"),
        "{r}"
    );
    let r = iq(&mut bob, "g4", &items("g4", a, "urn:example:wl")).await;
    assert!(
        r.contains("<not-allowed ") && r.contains("<closed-node "),
        "{r}"
    );
    // The owner whitelists bob.
    let r = iq(&mut alice, "a1", "<iq type='set' id='a1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><affiliations node='urn:example:wl'><affiliation jid='bob@localhost' affiliation='member'/></affiliations></pubsub></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(&mut bob, "g5", &items("g5", a, "urn:example:wl")).await;
    assert!(
        r.contains("type=\"result\"") && r.contains("<item id=\"i1\">"),
        "{r}"
    );
    let r = iq(&mut alice, "a2", "<iq type='get' id='a2'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><affiliations node='urn:example:wl'/></pubsub></iq>").await;
    assert!(
        r.contains("jid=\"bob@localhost\" affiliation=\"member\""),
        "{r}"
    );
    // Only the owner publishes; unknown nodes are not found.
    let r = iq(
        &mut frank,
        "x1",
        &publish("x1", "urn:example:open", "i2", payload, &[])
            .replace("<iq ", "<iq to='alice@localhost' "),
    )
    .await;
    assert!(r.contains("<forbidden "), "{r}");
    let r = iq(&mut bob, "g6", &items("g6", a, "urn:example:none")).await;
    assert!(r.contains("<item-not-found "), "{r}");
    // disco#items lists what the requester may see.
    let r = iq(
        &mut frank,
        "di",
        "<iq type='get' id='di' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert!(
        r.contains("node=\"urn:example:open\"")
            && !r.contains("urn:example:presence")
            && !r.contains("urn:example:wl"),
        "{r}"
    );
}

#[tokio::test]
async fn publish_options_max_items_retract_and_delete() {
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.options
            .insert("pep_max_item_size".into(), toml::Value::Integer(1024));
    })
    .await;
    befriend(&srv, "alice", "bob").await;
    const NODE: &str = "urn:example:list";
    let mut bob = online_with_caps(&srv, "bob", &strs(&notify_features(&[NODE]))).await;
    let mut alice = login(&srv, "alice", "a").await;
    let p = |n: &str| format!("<entry xmlns='urn:example:list'>{n}</entry>");
    let opts = [("pubsub#access_model", "open"), ("pubsub#max_items", "2")];
    let r = iq(&mut alice, "p1", &publish("p1", NODE, "i1", &p("1"), &opts)).await;
    assert!(r.contains("type=\"result\""), "{r}");
    // A precondition that does not hold.
    let r = iq(
        &mut alice,
        "p2",
        &publish(
            "p2",
            NODE,
            "i2",
            &p("2"),
            &[("pubsub#access_model", "presence")],
        ),
    )
    .await;
    assert!(
        r.contains("<conflict ") && r.contains("<precondition-not-met "),
        "{r}"
    );
    let r = iq(&mut alice, "p3", &publish("p3", NODE, "i2", &p("2"), &opts)).await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(&mut alice, "p4", &publish("p4", NODE, "i3", &p("3"), &[])).await;
    assert!(r.contains("type=\"result\""), "{r}");
    // max_items = 2: the oldest is gone.
    let r = iq(&mut bob, "g1", &items("g1", "alice@localhost", NODE)).await;
    assert!(
        !r.contains("id=\"i1\"") && r.contains("id=\"i2\"") && r.contains("id=\"i3\""),
        "{r}"
    );
    let r = iq(
        &mut bob,
        "g2",
        &items("g2", "alice@localhost", NODE).replace("<items ", "<items max_items='1' "),
    )
    .await;
    assert!(!r.contains("id=\"i2\"") && r.contains("id=\"i3\""), "{r}");
    // The configuration shows what publish-options created.
    let r = iq(&mut alice, "cf", &format!("<iq type='get' id='cf'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{NODE}'/></pubsub></iq>")).await;
    assert!(
        r.contains("var=\"pubsub#max_items\" type=\"text-single\"><value>2</value>")
            && r.contains("var=\"pubsub#access_model\" type=\"list-single\"><value>open</value>"),
        "{r}"
    );
    // Too big.
    let big = "x".repeat(2000);
    let r = iq(&mut alice, "p5", &publish("p5", NODE, "i4", &p(&big), &[])).await;
    assert!(
        r.contains("<not-acceptable ") && r.contains("<payload-too-big "),
        "{r}"
    );

    // Retract and delete are notified to +notify contacts.
    let r = iq(&mut alice, "r1", &format!("<iq type='set' id='r1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='{NODE}' notify='true'><item id='i3'/></retract></pubsub></iq>")).await;
    assert!(r.contains("type=\"result\""), "{r}");
    let m = read_until_contains(&mut bob, "message", "<retract ").await;
    assert!(m.contains("<retract id=\"i3\"/>"), "{m}");
    let r = iq(&mut alice, "r2", &format!("<iq type='set' id='r2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='{NODE}'><item id='nope'/></retract></pubsub></iq>")).await;
    assert!(r.contains("<item-not-found "), "{r}");
    let r = iq(&mut alice, "dl", &format!("<iq type='set' id='dl'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='{NODE}'/></pubsub></iq>")).await;
    assert!(r.contains("type=\"result\""), "{r}");
    let m = read_until_contains(&mut bob, "message", "<delete ").await;
    assert!(m.contains(&format!("<delete node=\"{NODE}\"/>")), "{m}");
    let r = iq(&mut bob, "g3", &items("g3", "alice@localhost", NODE)).await;
    assert!(r.contains("<item-not-found "), "{r}");
}

#[tokio::test]
async fn items_survive_restart_and_private_pep_storage_works() {
    let srv = server(&["alice", "bob"]).await;
    befriend(&srv, "alice", "bob").await;
    let mut alice = login(&srv, "alice", "a").await;
    // XEP-0223: persistent, whitelisted storage of private data.
    let private = [
        ("pubsub#persist_items", "true"),
        ("pubsub#access_model", "whitelist"),
    ];
    let r = iq(
        &mut alice,
        "p1",
        &publish(
            "p1",
            "urn:example:secret",
            "current",
            "<s xmlns='urn:example:secret'>42</s>",
            &private,
        ),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    // Publishing again with the same options meets the preconditions.
    let r = iq(
        &mut alice,
        "p2",
        &publish(
            "p2",
            "urn:example:secret",
            "current",
            "<s xmlns='urn:example:secret'>43</s>",
            &private,
        ),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(
        &mut alice,
        "p3",
        &publish("p3", TUNE, "t1", TUNE_PAYLOAD, &[]),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    drop(alice);

    let srv = srv.restart().await;
    let mut alice = login(&srv, "alice", "a").await;
    let mut bob = login(&srv, "bob", "b").await;
    let r = iq(
        &mut alice,
        "g1",
        &items("g1", "alice@localhost", "urn:example:secret"),
    )
    .await;
    assert!(r.contains(">43</s>") && !r.contains(">42</s>"), "{r}");
    let r = iq(
        &mut bob,
        "g2",
        &items("g2", "alice@localhost", "urn:example:secret"),
    )
    .await;
    assert!(r.contains("<closed-node "), "{r}");
    let r = iq(&mut bob, "g3", &items("g3", "alice@localhost", TUNE)).await;
    assert!(r.contains("<title>Yesterday</title>"), "{r}");
}

const BM: &str = "urn:xmpp:bookmarks:1";

#[tokio::test]
async fn bookmarks_are_shared_between_pep_and_private_storage() {
    let srv = server(&["alice"]).await;
    let mut alice = login(&srv, "alice", "a").await;
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    let conf = "<conference xmlns='urn:xmpp:bookmarks:1' name='Lobby' autojoin='true'><nick>al</nick></conference>";
    let r = iq(
        &mut alice,
        "b1",
        &publish("b1", BM, "lobby@muc.localhost", conf, &opts),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    // XEP-0402 → XEP-0411: the private-storage view.
    let r = iq(&mut alice, "pg", "<iq type='get' id='pg'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert!(
        r.contains("jid=\"lobby@muc.localhost\"")
            && r.contains("name=\"Lobby\"")
            && r.contains("autojoin=\"true\"")
            && r.contains("<nick>al</nick>"),
        "{r}"
    );
    // XEP-0411 → XEP-0402: a private set replaces the bookmarks.
    let r = iq(&mut alice, "ps", "<iq type='set' id='ps'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='dev@muc.localhost' name='Dev' autojoin='false'><nick>a</nick></conference><url name='Site' url='https://example.org'/></storage></query></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(&mut alice, "g1", &items("g1", "alice@localhost", BM)).await;
    assert!(
        r.contains("<item id=\"dev@muc.localhost\"><conference xmlns=\"urn:xmpp:bookmarks:1\" name=\"Dev\" autojoin=\"false\"><nick>a</nick></conference>")
            && !r.contains("lobby@muc.localhost"),
        "{r}"
    );
    let r = iq(&mut alice, "pg2", "<iq type='get' id='pg2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert!(
        r.contains("jid=\"dev@muc.localhost\"") && r.contains("url=\"https://example.org\""),
        "{r}"
    );
    // The node kept the XEP-0402 configuration.
    let r = iq(&mut alice, "cf", &format!("<iq type='get' id='cf'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{BM}'/></pubsub></iq>")).await;
    assert!(
        r.contains("<value>whitelist</value>") && r.contains("<value>max</value>"),
        "{r}"
    );
    let info = iq(
        &mut alice,
        "d1",
        &format!("<iq type='get' id='d1'><query xmlns='{DISCO}'/></iq>"),
    )
    .await;
    assert!(info.contains("urn:xmpp:bookmarks:1#compat"), "{info}");
}

#[tokio::test]
async fn vcard_photo_and_pep_avatar_convert_both_ways_with_presence_hash() {
    let srv = server(&["alice", "bob"]).await;
    befriend(&srv, "alice", "bob").await;
    let mut bob = login(&srv, "bob", "b").await;
    bob.send("<presence/>").await;
    let mut alice = login(&srv, "alice", "a").await;
    // "hello" as the vCard photo.
    let r = iq(&mut alice, "v1", "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let hello = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let r = iq(
        &mut bob,
        "m1",
        &items("m1", "alice@localhost", "urn:xmpp:avatar:metadata"),
    )
    .await;
    assert!(
        r.contains(&format!("<item id=\"{hello}\">"))
            && r.contains("bytes=\"5\"")
            && r.contains("type=\"image/png\""),
        "{r}"
    );
    let r = iq(
        &mut bob,
        "d1",
        &items("d1", "alice@localhost", "urn:xmpp:avatar:data"),
    )
    .await;
    assert!(r.contains(">aGVsbG8=</data>"), "{r}");
    // XEP-0153: the hash rides on alice's presence.
    alice.send("<presence/>").await;
    let p = read_until_contains(&mut bob, "presence", "alice@localhost/a").await;
    assert!(
        p.contains(&format!(
            "<x xmlns=\"vcard-temp:x:update\"><photo>{hello}</photo></x>"
        )),
        "{p}"
    );

    // A PEP avatar ("world") updates the vCard.
    let world = "7c211433f02071597741e6ff5a8ea34789abbf43";
    let r = iq(
        &mut alice,
        "a1",
        &publish(
            "a1",
            "urn:xmpp:avatar:data",
            world,
            "<data xmlns='urn:xmpp:avatar:data'>d29ybGQ=</data>",
            &[],
        ),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let meta = format!(
        "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='5' id='{world}' type='image/webp'/></metadata>"
    );
    let r = iq(
        &mut alice,
        "a2",
        &publish("a2", "urn:xmpp:avatar:metadata", world, &meta, &[]),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(
        &mut alice,
        "vg",
        "<iq type='get' id='vg'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert!(
        r.contains("<BINVAL>d29ybGQ=</BINVAL>")
            && r.contains("<TYPE>image/webp</TYPE>")
            && r.contains("<FN>Alice</FN>"),
        "{r}"
    );
    alice.send("<presence><show>away</show></presence>").await;
    let p = read_until_contains(&mut bob, "presence", "<show>away</show>").await;
    assert!(p.contains(&format!("<photo>{world}</photo>")), "{p}");
    // Probes answer with the stamped presence too.
    let mut bob2 = login(&srv, "bob", "b2").await;
    bob2.send("<presence/>").await;
    let p = read_until_contains(&mut bob2, "presence", "alice@localhost/a").await;
    assert!(p.contains(&format!("<photo>{world}</photo>")), "{p}");
    let info = iq(
        &mut alice,
        "d1",
        &format!("<iq type='get' id='d1'><query xmlns='{DISCO}'/></iq>"),
    )
    .await;
    assert!(info.contains("urn:xmpp:pep-vcard-conversion:0"), "{info}");
}

#[tokio::test]
async fn unloading_pep_removes_its_iqs_and_features() {
    let srv = server(&["alice"]).await;
    let mut alice = login(&srv, "alice", "a").await;
    let info_q = format!("<iq type='get' id='d1'><query xmlns='{DISCO}'/></iq>");
    let info = iq(&mut alice, "d1", &info_q).await;
    assert!(
        info.contains("pubsub#publish") && info.contains("type=\"pep\""),
        "{info}"
    );
    srv.server().core.unload_module("localhost", "pep").unwrap();
    let r = iq(
        &mut alice,
        "p1",
        &publish("p1", TUNE, "t1", TUNE_PAYLOAD, &[]),
    )
    .await;
    assert!(r.contains("<service-unavailable "), "{r}");
    let r = iq(&mut alice, "g1", &items("g1", "alice@localhost", TUNE)).await;
    assert!(r.contains("<service-unavailable "), "{r}");
    let info = iq(&mut alice, "d1", &info_q).await;
    assert!(
        !info.contains("http://jabber.org/protocol/pubsub") && !info.contains("type=\"pep\""),
        "{info}"
    );
    // Bookmarks and vCard conversion step aside without PEP.
    let r = iq(&mut alice, "ps", "<iq type='set' id='ps'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='x@muc.localhost'/></storage></query></iq>").await;
    assert!(r.contains("type=\"result\""), "{r}");
    srv.server().core.load_module("localhost", "pep").unwrap();
    let r = iq(
        &mut alice,
        "p2",
        &publish("p2", TUNE, "t1", TUNE_PAYLOAD, &[]),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
}
