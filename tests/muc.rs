//! Components and XEP-0045 group chat over real sockets: the default `conference.localhost`
//! service, joins and their status codes, presence, messages, history, nick changes, private
//! messages, affiliations and roles, the room forms, destroy and tombstones, persistence, the
//! room's archive and the limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer, login, read_until_contains};

const MUC: &str = "conference.localhost";

async fn server(users: &[&str]) -> TestServer {
    TestServer::with_users(users, |_| {}).await
}

/// Joins `room` as `nick` and reads up to the subject (the last stanza of a join).
async fn join(c: &mut RawClient, room: &str, nick: &str) -> String {
    c.send(&format!(
        "<presence to='{room}@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    c.read_until("</subject></message>").await
}

/// Creates `room` as an instant room (join, then accept the default configuration).
async fn create_instant(c: &mut RawClient, room: &str, nick: &str) -> String {
    let joined = join(c, room, nick).await;
    c.send(&format!(
        "<iq type='set' id='inst' to='{room}@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ))
    .await;
    let r = read_until_contains(c, "iq", "id=\"inst\"").await;
    assert!(r.contains("type=\"result\""), "{r}");
    joined
}

async fn iq(c: &mut RawClient, id: &str, body: &str) -> String {
    c.send(body).await;
    read_until_contains(c, "iq", &format!("id=\"{id}\"")).await
}

#[tokio::test]
async fn the_default_component_is_listed_and_refuses_logins() {
    let srv = server(&["alice"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let items = iq(
        &mut a,
        "it",
        "<iq type='get' id='it' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert!(
        items.contains("jid=\"conference.localhost\"") && items.contains("name=\"Chatrooms\""),
        "{items}"
    );
    let info = iq(
        &mut a,
        "in",
        &format!("<iq type='get' id='in' to='{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(
        info.contains("category=\"conference\"")
            && info.contains("type=\"text\"")
            && info.contains("var=\"http://jabber.org/protocol/muc\""),
        "{info}"
    );
    assert!(!info.contains("category=\"server\""), "{info}");
    // Users do not log into a component.
    let mut raw = RawClient::connect(srv.c2s()).await;
    raw.send(&common::HEADER.replace("to='localhost'", &format!("to='{MUC}'")))
        .await;
    let closed = raw.read_to_close().await;
    assert!(closed.contains("host-unknown"), "{closed}");
    let core = &srv.server().core;
    assert!(core.user_host(MUC).is_none());
    assert_eq!(
        core.host(MUC).unwrap().kind,
        oxpecker::core::modules::HostType::Component
    );
}

#[tokio::test]
async fn no_component_when_configured_empty() {
    let srv = TestServer::with_users(&["alice"], |c| c.components = Some(Vec::new())).await;
    let mut a = login(&srv, "alice", "r").await;
    let items = iq(
        &mut a,
        "it",
        "<iq type='get' id='it' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert!(!items.contains("conference"), "{items}");
    assert!(srv.server().core.host(MUC).is_none());
}

#[tokio::test]
async fn join_codes_presence_groupchat_and_leave() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    let joined = create_instant(&mut a, "lounge", "Al").await;
    assert!(
        joined.contains("code=\"201\"")
            && joined.contains("code=\"110\"")
            && joined.contains("affiliation=\"owner\"")
            && joined.contains("role=\"moderator\"")
            && joined.contains("code=\"170\""),
        "{joined}"
    );
    assert!(joined.contains("urn:xmpp:occupant-id:0"), "{joined}");
    let bj = join(&mut b, "lounge", "Bo").await;
    // Bob first sees Al, then himself (110), then the (empty) subject.
    let al = bj.find("lounge@conference.localhost/Al").unwrap();
    let me = bj.find("code=\"110\"").unwrap();
    assert!(al < me, "{bj}");
    assert!(!bj.contains("code=\"201\""), "{bj}");
    // Semi-anonymous: Bob does not see Al's real JID; Al (a moderator) sees Bob's.
    assert!(!bj.contains("jid=\"alice@localhost/r\""), "{bj}");
    let p = read_until_contains(&mut a, "presence", "lounge@conference.localhost/Bo").await;
    assert!(
        p.contains("jid=\"bob@localhost/r\"") && p.contains("role=\"participant\""),
        "{p}"
    );
    // Groupchat both ways, with the room's stanza id and the occupant id.
    b.send(&format!(
        "<message type='groupchat' to='lounge@{MUC}' id='m1'><body>hi all</body></message>"
    ))
    .await;
    for c in [&mut a, &mut b] {
        let m = read_until_contains(c, "message", "hi all").await;
        assert!(
            m.contains("from=\"lounge@conference.localhost/Bo\"")
                && m.contains("urn:xmpp:sid:0")
                && m.contains("by=\"lounge@conference.localhost\"")
                && m.contains("occupant-id"),
            "{m}"
        );
    }
    // A non-occupant may not speak.
    let mut c = login(&srv, "alice", "other").await;
    c.send(&format!(
        "<message type='groupchat' to='lounge@{MUC}' id='x'><body>sneak</body></message>"
    ))
    .await;
    let e = c.read_stanza("message").await;
    assert!(
        e.contains("type=\"error\"") && e.contains("not-acceptable"),
        "{e}"
    );
    // Leave: self gets 110, the others the unavailable presence.
    b.send(&format!(
        "<presence type='unavailable' to='lounge@{MUC}/Bo'/>"
    ))
    .await;
    let own = read_until_contains(&mut b, "presence", "unavailable").await;
    assert!(own.contains("code=\"110\""), "{own}");
    let seen = read_until_contains(&mut a, "presence", "unavailable").await;
    assert!(seen.contains("lounge@conference.localhost/Bo"), "{seen}");
}

#[tokio::test]
async fn join_errors_have_the_right_conditions() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    create_instant(&mut a, "room", "Al").await;
    // Nick taken by someone else.
    b.send(&format!(
        "<presence to='room@{MUC}/Al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = b.read_stanza("presence").await;
    assert!(
        e.contains("type=\"error\"") && e.contains("<conflict"),
        "{e}"
    );
    // Empty-looking or too long nick.
    let long = "n".repeat(65);
    b.send(&format!("<presence to='room@{MUC}/{long}'/>")).await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("not-acceptable"), "{e}");
    // No nick at all.
    b.send(&format!("<presence to='room@{MUC}'/>")).await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("jid-malformed"), "{e}");
    // Password and members-only through the configuration form.
    let form = |fields: &str| {
        format!(
            "<iq type='set' id='cfg' to='room@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>{fields}</x></query></iq>"
        )
    };
    let r = iq(
        &mut a,
        "cfg",
        &form("<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field><field var='muc#roomconfig_roomsecret'><value>s3cret</value></field>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    b.send(&format!(
        "<presence to='room@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("not-authorized"), "{e}");
    b.send(&format!("<presence to='room@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'><password>s3cret</password></x></presence>"))
        .await;
    b.read_until("</subject></message>").await;
    b.send(&format!(
        "<presence type='unavailable' to='room@{MUC}/Bo'/>"
    ))
    .await;
    read_until_contains(&mut b, "presence", "unavailable").await;
    let r = iq(
        &mut a,
        "cfg",
        &form("<field var='muc#roomconfig_passwordprotectedroom'><value>0</value></field><field var='muc#roomconfig_membersonly'><value>1</value></field>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    b.send(&format!("<presence to='room@{MUC}/Bo'/>")).await;
    let e = read_until_contains(&mut b, "presence", "type=\"error\"").await;
    assert!(e.contains("registration-required"), "{e}");
    // Banned.
    let r = iq(
        &mut a,
        "ban",
        &format!("<iq type='set' id='ban' to='room@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='bob@localhost' affiliation='outcast'/></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    b.send(&format!("<presence to='room@{MUC}/Bo'/>")).await;
    let e = read_until_contains(&mut b, "presence", "type=\"error\"").await;
    assert!(e.contains("<forbidden"), "{e}");
}
