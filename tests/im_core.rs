//! RFC 6121 over real sockets: rosters and pushes, the subscription state machine, presence
//! broadcast/probes/directed presence, bare-JID delivery rules, offline messages, shared groups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    RawClient, TestServer, jid, login, nothing_pending, read_until_contains, wait_offline,
};

async fn server(users: &[&str]) -> TestServer {
    TestServer::with_users(users, |_| {}).await
}

/// Fetches the roster (marking the session interested in pushes); returns the result stanza.
async fn roster_get(c: &mut RawClient) -> String {
    c.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    read_until_contains(c, "iq", "id=\"rg\"").await
}

#[tokio::test]
async fn roster_set_pushes_to_every_interested_resource_and_versions() {
    let srv = server(&["alice", "bob"]).await;
    let mut a1 = login(&srv, "alice", "one").await;
    let mut a2 = login(&srv, "alice", "two").await;
    let r = roster_get(&mut a1).await;
    assert!(r.contains("type=\"result\"") && r.contains("ver=\""), "{r}");
    roster_get(&mut a2).await;
    a1.send("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>").await;
    let push1 = read_until_contains(&mut a1, "iq", "type=\"set\"").await;
    assert!(
        push1.contains("jid=\"bob@localhost\"") && push1.contains("<group>Friends</group>"),
        "{push1}"
    );
    assert!(push1.contains("subscription=\"none\""), "{push1}");
    let push2 = read_until_contains(&mut a2, "iq", "type=\"set\"").await;
    assert!(push2.contains("name=\"Bob\""), "{push2}");
    let result = read_until_contains(&mut a1, "iq", "id=\"s1\"").await;
    assert!(result.contains("type=\"result\""), "{result}");

    // Versioning: asking with the current version gives an empty result.
    let full = roster_get(&mut a1).await;
    let ver_start = full.find("ver=\"").unwrap() + 5;
    let ver = &full[ver_start..ver_start + full[ver_start..].find('"').unwrap()];
    a1.send(&format!(
        "<iq type='get' id='rv'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>"
    ))
    .await;
    let r = a1.read_stanza("iq").await;
    assert!(r.contains("type=\"result\"") && !r.contains("<item"), "{r}");

    // Remove: pushed as subscription='remove'.
    a2.send("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>").await;
    let push = read_until_contains(&mut a1, "iq", "subscription=\"remove\"").await;
    assert!(push.contains("bob@localhost"), "{push}");
    let r = roster_get(&mut a1).await;
    assert!(!r.contains("bob@localhost"), "{r}");
    // Bad sets are refused.
    a1.send("<iq type='set' id='b1'><query xmlns='jabber:iq:roster'><item jid='not@@valid'/></query></iq>").await;
    let r = read_until_contains(&mut a1, "iq", "id=\"b1\"").await;
    assert!(r.contains("<bad-request "), "{r}");
    a1.send("<iq type='get' id='o1' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let r = read_until_contains(&mut a1, "iq", "id=\"o1\"").await;
    assert!(r.contains("<forbidden "), "{r}");
}

#[tokio::test]
async fn roster_item_limit_gives_a_clear_error() {
    let srv = TestServer::with_users(&["alice"], |c| {
        c.options
            .insert("roster_max_items".into(), toml::Value::Integer(1));
    })
    .await;
    let mut a = login(&srv, "alice", "r").await;
    a.send("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/></query></iq>").await;
    assert!(
        read_until_contains(&mut a, "iq", "id=\"s1\"")
            .await
            .contains("result")
    );
    a.send("<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='y@localhost'/></query></iq>").await;
    let r = read_until_contains(&mut a, "iq", "id=\"s2\"").await;
    assert!(
        r.contains("<resource-constraint ") && r.contains("roster is full"),
        "{r}"
    );
}

#[tokio::test]
async fn subscription_handshake_ends_at_both_and_presence_flows() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "a").await;
    let mut b = login(&srv, "bob", "b").await;
    roster_get(&mut a).await;
    roster_get(&mut b).await;
    a.send("<presence/>").await;
    b.send("<presence/>").await;
    a.read_stanza("presence").await;
    b.read_stanza("presence").await;

    a.send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let push = read_until_contains(&mut a, "iq", "bob@localhost").await;
    assert!(push.contains("ask=\"subscribe\""), "{push}");
    let req = read_until_contains(&mut b, "presence", "subscribe").await;
    assert!(req.contains("from=\"alice@localhost\""), "bare from: {req}");

    b.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    b.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    let got = read_until_contains(&mut a, "presence", "type=\"subscribed\"").await;
    assert!(got.contains("from=\"bob@localhost\""), "{got}");
    // Bob's presence arrives once alice is subscribed to it.
    read_until_contains(&mut a, "presence", "from=\"bob@localhost/b\"").await;
    read_until_contains(&mut a, "presence", "type=\"subscribe\"").await;
    a.send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    read_until_contains(&mut b, "presence", "from=\"alice@localhost/a\"").await;

    let ra = roster_get(&mut a).await;
    assert!(ra.contains("subscription=\"both\""), "{ra}");
    let rb = roster_get(&mut b).await;
    assert!(
        rb.contains("jid=\"alice@localhost\"") && rb.contains("subscription=\"both\""),
        "{rb}"
    );

    // Presence updates reach the subscriber; disconnect sends unavailable.
    b.send("<presence><show>away</show></presence>").await;
    let p = read_until_contains(&mut a, "presence", "<show>away</show>").await;
    assert!(p.contains("from=\"bob@localhost/b\""), "{p}");
    drop(b);
    let p = read_until_contains(&mut a, "presence", "type=\"unavailable\"").await;
    assert!(p.contains("from=\"bob@localhost/b\""), "{p}");

    // A later login of bob probes alice and gets her presence.
    let mut b2 = login(&srv, "bob", "again").await;
    b2.send("<presence/>").await;
    read_until_contains(&mut b2, "presence", "from=\"alice@localhost/a\"").await;
}

#[tokio::test]
async fn subscription_request_is_stored_while_offline_and_delivered_on_login() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "a").await;
    a.send("<presence to='bob@localhost' type='subscribe'><status>let me in</status></presence>")
        .await;
    nothing_pending(&mut a).await;
    drop(a);
    wait_offline(&srv, "alice@localhost").await;
    let srv = srv.restart().await;
    let mut b = login(&srv, "bob", "b").await;
    b.send("<presence/>").await;
    let req = read_until_contains(&mut b, "presence", "type=\"subscribe\"").await;
    assert!(
        req.contains("from=\"alice@localhost\"") && req.contains("let me in"),
        "{req}"
    );
    // Denying it leaves both sides at none.
    b.send("<presence to='alice@localhost' type='unsubscribed'/>")
        .await;
    nothing_pending(&mut b).await;
    let mut a = login(&srv, "alice", "a").await;
    let r = roster_get(&mut a).await;
    assert!(
        r.contains("subscription=\"none\"") && !r.contains("ask="),
        "{r}"
    );
}

#[tokio::test]
async fn pre_approval_accepts_the_later_request_automatically() {
    let srv = server(&["alice", "bob"]).await;
    let mut b = login(&srv, "bob", "b").await;
    roster_get(&mut b).await;
    b.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let push = read_until_contains(&mut b, "iq", "alice@localhost").await;
    assert!(push.contains("approved=\"true\""), "{push}");
    let mut a = login(&srv, "alice", "a").await;
    roster_get(&mut a).await;
    a.send("<presence/>").await;
    a.send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    read_until_contains(&mut a, "presence", "type=\"subscribed\"").await;
    let r = roster_get(&mut a).await;
    assert!(r.contains("subscription=\"to\""), "{r}");
    let push = read_until_contains(&mut b, "iq", "subscription=\"from\"").await;
    assert!(!push.contains("approved"), "{push}");
}

#[tokio::test]
async fn directed_presence_gets_unavailable_on_disconnect() {
    let srv = server(&["alice", "carol"]).await;
    let mut c = login(&srv, "carol", "c").await;
    c.send("<presence/>").await;
    c.read_stanza("presence").await;
    let mut a = login(&srv, "alice", "a").await;
    a.send("<presence/>").await;
    a.send("<presence to='carol@localhost/c'><status>hi</status></presence>")
        .await;
    read_until_contains(&mut c, "presence", "<status>hi</status>").await;
    drop(a);
    let p = read_until_contains(&mut c, "presence", "type=\"unavailable\"").await;
    assert!(p.contains("from=\"alice@localhost/a\""), "{p}");
}

#[tokio::test]
async fn bare_jid_messages_follow_priority_rules() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "a").await;
    let mut b1 = login(&srv, "bob", "one").await;
    let mut b2 = login(&srv, "bob", "two").await;
    let mut b3 = login(&srv, "bob", "hidden").await;
    b1.send("<presence><priority>5</priority></presence>").await;
    b2.send("<presence><priority>1</priority></presence>").await;
    b3.send("<presence><priority>-1</priority></presence>")
        .await;
    nothing_pending(&mut b1).await;
    a.send("<message to='bob@localhost' type='chat'><body>to all</body></message>")
        .await;
    read_until_contains(&mut b1, "message", "to all").await;
    read_until_contains(&mut b2, "message", "to all").await;
    // The negative-priority resource gets nothing addressed to the bare JID.
    nothing_pending(&mut b3).await;
    // Headline to an account with no available resource is dropped, chat goes offline.
    drop(b1);
    drop(b2);
    drop(b3);
    wait_offline(&srv, "bob@localhost").await;
    a.send("<message to='bob@localhost' type='headline'><body>news</body></message>")
        .await;
    a.send("<message to='bob@localhost' type='chat'><body>later</body></message>")
        .await;
    nothing_pending(&mut a).await;
    let bob = jid("bob@localhost");
    let core = srv.server().core.clone();
    for _ in 0..50 {
        if oxpecker::modules::offline::count(&core, &bob).await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(oxpecker::modules::offline::count(&core, &bob).await, 1);
}

#[tokio::test]
async fn offline_messages_survive_restart_and_arrive_with_delay() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "a").await;
    for i in 0..3 {
        a.send(&format!(
            "<message to='bob@localhost' type='chat' id='o{i}'><body>msg {i}</body></message>"
        ))
        .await;
    }
    nothing_pending(&mut a).await;
    drop(a);
    wait_offline(&srv, "alice@localhost").await;
    let srv = srv.restart().await;
    let mut b = login(&srv, "bob", "b").await;
    // Nothing before initial presence.
    nothing_pending(&mut b).await;
    b.send("<presence/>").await;
    for i in 0..3 {
        let m = read_until_contains(&mut b, "message", &format!("msg {i}")).await;
        assert!(m.contains("<delay xmlns=\"urn:xmpp:delay\""), "{m}");
        assert!(
            m.contains("stamp=\"") && m.contains("from=\"alice@localhost/a\""),
            "{m}"
        );
    }
    // Delivered once: a second login gets nothing.
    drop(b);
    let mut b = login(&srv, "bob", "c").await;
    b.send("<presence/>").await;
    b.read_stanza("presence").await;
    nothing_pending(&mut b).await;
}

#[tokio::test]
async fn offline_storage_is_bounded() {
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.options
            .insert("offline_max_messages".into(), toml::Value::Integer(2));
    })
    .await;
    let mut a = login(&srv, "alice", "a").await;
    for i in 0..3 {
        a.send(&format!(
            "<message to='bob@localhost' type='chat' id='o{i}'><body>m{i}</body></message>"
        ))
        .await;
    }
    let err = read_until_contains(&mut a, "message", "type=\"error\"").await;
    assert!(
        err.contains("id=\"o2\"") && err.contains("<service-unavailable "),
        "{err}"
    );
}

#[tokio::test]
async fn shared_group_members_see_each_other() {
    let srv = server(&["alice", "bob", "carol"]).await;
    let core = srv.server().core.clone();
    let mut a = login(&srv, "alice", "a").await;
    roster_get(&mut a).await;
    a.send("<presence/>").await;
    a.read_stanza("presence").await;
    let id = core.groups.create("localhost", None, "Team").await.unwrap();
    assert!(
        core.group_add_member("localhost", &id, &jid("alice@localhost"))
            .await
            .unwrap()
    );
    assert!(
        core.group_add_member("localhost", &id, &jid("bob@localhost"))
            .await
            .unwrap()
    );
    let push = read_until_contains(&mut a, "iq", "bob@localhost").await;
    assert!(
        push.contains("subscription=\"both\"") && push.contains("<group>Team</group>"),
        "{push}"
    );
    // Bob logs in: his presence reaches alice through the group, and his roster lists alice.
    let mut b = login(&srv, "bob", "b").await;
    let r = roster_get(&mut b).await;
    assert!(r.contains("alice@localhost") && !r.contains("carol"), "{r}");
    b.send("<presence/>").await;
    read_until_contains(&mut a, "presence", "from=\"bob@localhost/b\"").await;
    read_until_contains(&mut b, "presence", "from=\"alice@localhost/a\"").await;
    // Removing bob pushes a removal to alice.
    assert!(
        core.group_remove_member("localhost", &id, &jid("bob@localhost"))
            .await
            .unwrap()
    );
    read_until_contains(&mut a, "iq", "subscription=\"remove\"").await;
    assert!(
        core.groups
            .create("localhost", Some(&id), "Again")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unloading_roster_makes_it_unavailable() {
    let srv = server(&["alice"]).await;
    let mut a = login(&srv, "alice", "a").await;
    srv.server()
        .core
        .unload_module("localhost", "roster")
        .unwrap();
    let r = roster_get(&mut a).await;
    assert!(r.contains("<service-unavailable "), "{r}");
    srv.server()
        .core
        .load_module("localhost", "roster")
        .unwrap();
    let r = roster_get(&mut a).await;
    assert!(r.contains("type=\"result\""), "{r}");
}

#[tokio::test]
async fn stream_features_advertise_roster_versioning_and_pre_approval() {
    let srv = server(&["alice"]).await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    c.auth_plain("alice", "pw").await;
    let f = c.open().await;
    assert!(f.contains("urn:xmpp:features:rosterver"), "{f}");
    assert!(f.contains("urn:xmpp:features:pre-approval"), "{f}");
}

#[tokio::test]
async fn deleting_an_account_removes_its_data_everywhere() {
    let srv = server(&["alice", "bob"]).await;
    let core = srv.server().core.clone();
    let alice = jid("alice@localhost");
    core.add_mutual(&alice, &jid("bob@localhost"))
        .await
        .unwrap();
    let vcard = oxpecker::xmpp::Element::new("vCard", "vcard-temp")
        .child(oxpecker::xmpp::Element::new("FN", "vcard-temp").text("Alice"));
    oxpecker::modules::vcard::set_vcard(&core, &alice, Some(vcard))
        .await
        .unwrap();
    let mut b = login(&srv, "bob", "b").await;
    b.send("<message to='alice@localhost' type='chat'><body>stored</body></message>")
        .await;
    nothing_pending(&mut b).await;
    assert_eq!(oxpecker::modules::offline::count(&core, &alice).await, 1);
    assert!(core.delete_account(&alice).await.unwrap());
    assert!(!core.delete_account(&alice).await.unwrap(), "gone");
    // A new account of the same name starts empty.
    srv.add_user("alice@localhost", "pw").await;
    assert!(core.roster_items(&alice).await.unwrap().is_empty());
    assert_eq!(oxpecker::modules::offline::count(&core, &alice).await, 0);
    assert!(
        oxpecker::modules::vcard::get_vcard(&core, &alice)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn highest_priority_delivery_is_configurable() {
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.bare_message_delivery = oxpecker::config::BareMessageDelivery::Highest;
    })
    .await;
    let mut a = login(&srv, "alice", "a").await;
    let mut b1 = login(&srv, "bob", "one").await;
    let mut b2 = login(&srv, "bob", "two").await;
    b1.send("<presence><priority>5</priority></presence>").await;
    b2.send("<presence><priority>1</priority></presence>").await;
    nothing_pending(&mut b1).await;
    nothing_pending(&mut b2).await;
    a.send("<message to='bob@localhost' type='chat'><body>top only</body></message>")
        .await;
    read_until_contains(&mut b1, "message", "top only").await;
    nothing_pending(&mut b2).await;
}
