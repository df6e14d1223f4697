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

#[tokio::test]
async fn history_subject_nick_change_private_messages_and_multi_session() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    create_instant(&mut a, "hist", "Al").await;
    for i in 1..=4 {
        a.send(&format!(
            "<message type='groupchat' to='hist@{MUC}' id='h{i}'><body>line {i}</body></message>"
        ))
        .await;
        read_until_contains(&mut a, "message", &format!("line {i}")).await;
    }
    a.send(&format!(
        "<message type='groupchat' to='hist@{MUC}' id='s'><subject>Today: tests</subject></message>"
    ))
    .await;
    read_until_contains(&mut a, "message", "Today: tests").await;
    // maxstanzas=2: the last two lines, delayed, then the subject.
    let mut b = login(&srv, "bob", "one").await;
    b.send(&format!(
        "<presence to='hist@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='2'/></x></presence>"
    ))
    .await;
    let joined = b.read_until("</subject></message>").await;
    assert!(
        !joined.contains("line 2") && joined.contains("line 3") && joined.contains("line 4"),
        "{joined}"
    );
    assert!(joined.contains("urn:xmpp:delay"), "{joined}");
    assert!(joined.contains("Today: tests"), "{joined}");
    // A second session of Bob with the same nick is the same occupant.
    let mut b2 = login(&srv, "bob", "two").await;
    b2.send(&format!(
        "<presence to='hist@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
    ))
    .await;
    let second = b2.read_until("</subject></message>").await;
    assert!(
        second.contains("code=\"110\"") && !second.contains("line"),
        "{second}"
    );
    // Private message from Al to Bo reaches both of Bob's sessions, from Al's occupant JID.
    a.send(&format!(
        "<message type='chat' to='hist@{MUC}/Bo' id='pm'><body>psst</body></message>"
    ))
    .await;
    for c in [&mut b, &mut b2] {
        let m = read_until_contains(c, "message", "psst").await;
        assert!(
            m.contains("from=\"hist@conference.localhost/Al\"")
                && m.contains("http://jabber.org/protocol/muc#user"),
            "{m}"
        );
    }
    a.send(&format!(
        "<message type='chat' to='hist@{MUC}/Nobody' id='pm2'><body>?</body></message>"
    ))
    .await;
    let e = read_until_contains(&mut a, "message", "type=\"error\"").await;
    assert!(e.contains("item-not-found"), "{e}");
    // Nick change: 303 with the new nick, then the new presence.
    b.send(&format!("<presence to='hist@{MUC}/Bobby'/>")).await;
    let gone = read_until_contains(&mut a, "presence", "code=\"303\"").await;
    assert!(
        gone.contains("hist@conference.localhost/Bo\"") && gone.contains("nick=\"Bobby\""),
        "{gone}"
    );
    let back = read_until_contains(&mut a, "presence", "hist@conference.localhost/Bobby").await;
    assert!(!back.contains("unavailable"), "{back}");
    let own = read_until_contains(&mut b, "presence", "code=\"303\"").await;
    assert!(own.contains("code=\"110\""), "{own}");
    // Al's nick is taken for a change.
    b.send(&format!("<presence to='hist@{MUC}/Al'/>")).await;
    let e = read_until_contains(&mut b, "presence", "type=\"error\"").await;
    assert!(e.contains("<conflict"), "{e}");
}

#[tokio::test]
async fn roles_affiliations_kick_voice_and_lists() {
    let srv = server(&["alice", "bob", "carol"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    create_instant(&mut a, "mod", "Al").await;
    let admin = |id: &str, items: &str| {
        format!(
            "<iq type='set' id='{id}' to='mod@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query></iq>"
        )
    };
    join(&mut b, "mod", "Bo").await;
    read_until_contains(&mut a, "presence", "mod@conference.localhost/Bo").await;
    // Revoke voice: Bob becomes a visitor and may no longer speak.
    let r = iq(
        &mut a,
        "v0",
        &admin("v0", "<item nick='Bo' role='visitor'/>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let p = read_until_contains(&mut b, "presence", "role=\"visitor\"").await;
    assert!(p.contains("code=\"110\""), "{p}");
    b.send(&format!(
        "<message type='groupchat' to='mod@{MUC}' id='q'><body>can I?</body></message>"
    ))
    .await;
    let e = read_until_contains(&mut b, "message", "type=\"error\"").await;
    assert!(e.contains("<forbidden"), "{e}");
    // Bob, not a moderator, may not kick.
    let r = iq(&mut b, "k0", &admin("k0", "<item nick='Al' role='none'/>")).await;
    assert!(r.contains("<forbidden"), "{r}");
    // Grant membership: listed, role follows.
    let r = iq(
        &mut a,
        "m1",
        &admin("m1", "<item jid='bob@localhost' affiliation='member'/>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    read_until_contains(&mut b, "presence", "affiliation=\"member\"").await;
    a.send(&format!(
        "<iq type='get' id='l1' to='mod@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>"
    ))
    .await;
    let list = read_until_contains(&mut a, "iq", "id=\"l1\"").await;
    assert!(list.contains("jid=\"bob@localhost\""), "{list}");
    a.send(&format!(
        "<iq type='get' id='l2' to='mod@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item role='moderator'/></query></iq>"
    ))
    .await;
    let list = read_until_contains(&mut a, "iq", "id=\"l2\"").await;
    assert!(
        list.contains("nick=\"Al\"") && !list.contains("nick=\"Bo\""),
        "{list}"
    );
    // Kick with a reason: 307 to Bob and to the room.
    // (The room's presences come before the IQ result, so read them first.)
    a.send(&admin(
        "k1",
        "<item nick='Bo' role='none'><reason>calm down</reason></item>",
    ))
    .await;
    let seen = read_until_contains(&mut a, "presence", "code=\"307\"").await;
    assert!(seen.contains("unavailable"), "{seen}");
    let r = read_until_contains(&mut a, "iq", "id=\"k1\"").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let kicked = read_until_contains(&mut b, "presence", "code=\"307\"").await;
    assert!(
        kicked.contains("calm down") && kicked.contains("code=\"110\""),
        "{kicked}"
    );
    // Only owners change admins; the last owner cannot step down.
    let r = iq(
        &mut a,
        "o1",
        &admin("o1", "<item jid='alice@localhost' affiliation='member'/>"),
    )
    .await;
    assert!(r.contains("<conflict"), "{r}");
}

#[tokio::test]
async fn config_form_roominfo_public_listing_destroy_and_tombstone() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    join(&mut a, "cfg", "Al").await;
    // Locked until configured: others cannot enter.
    b.send(&format!(
        "<presence to='cfg@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("item-not-found"), "{e}");
    let form = iq(
        &mut a,
        "g",
        &format!("<iq type='get' id='g' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"),
    )
    .await;
    for var in [
        "muc#roomconfig_roomname",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_whois",
        "muc#roomconfig_enablearchiving",
        "muc#roomconfig_presencebroadcast",
    ] {
        assert!(form.contains(var), "{var}: {form}");
    }
    let r = iq(
        &mut a,
        "s",
        &format!("<iq type='set' id='s' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field><field var='muc#roomconfig_roomname'><value>Config Room</value></field><field var='muc#roomconfig_roomdesc'><value>About things</value></field><field var='muc#roomconfig_whois'><value>anyone</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let form = iq(
        &mut a,
        "g2",
        &format!("<iq type='get' id='g2' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"),
    )
    .await;
    assert!(
        form.contains("<value>Config Room</value>") && form.contains("<value>anyone</value>"),
        "{form}"
    );
    // Bad value: not-acceptable, nothing changed.
    let r = iq(
        &mut a,
        "s2",
        &format!("<iq type='set' id='s2' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_whois'><value>all</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("not-acceptable"), "{r}");
    // Non-owners may not configure.
    let bj = join(&mut b, "cfg", "Bo").await;
    assert!(
        bj.contains("code=\"100\"") && bj.contains("jid=\"alice@localhost/r\""),
        "{bj}"
    );
    let r = iq(
        &mut b,
        "g3",
        &format!("<iq type='get' id='g3' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"),
    )
    .await;
    assert!(r.contains("<forbidden"), "{r}");
    // muc#roominfo and the public listing.
    let info = iq(
        &mut b,
        "i",
        &format!("<iq type='get' id='i' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(
        info.contains("muc#roominfo")
            && info.contains("About things")
            && info.contains("muc_nonanonymous")
            && info.contains("muc_temporary")
            && info.contains("name=\"Config Room\""),
        "{info}"
    );
    let items = iq(
        &mut b,
        "it",
        &format!("<iq type='get' id='it' to='{MUC}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"),
    )
    .await;
    assert!(
        items.contains("jid=\"cfg@conference.localhost\"") && items.contains("Config Room"),
        "{items}"
    );
    // Destroy with reason and alternate venue.
    let r = iq(
        &mut a,
        "d",
        &format!("<iq type='set' id='d' to='cfg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='new@{MUC}'><reason>moved</reason></destroy></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let gone = read_until_contains(&mut b, "presence", "<destroy").await;
    assert!(
        gone.contains("jid=\"new@conference.localhost\"") && gone.contains("moved"),
        "{gone}"
    );
    // The tombstone stops re-creation; destroying it again (an admin operation) allows it.
    a.send(&format!(
        "<presence to='cfg@{MUC}/Al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = read_until_contains(&mut a, "presence", "type=\"error\"").await;
    assert!(e.contains("<gone"), "{e}");
    let svc = oxpecker::modules::muc::service(&srv.server().core, MUC).unwrap();
    svc.destroy("cfg", None, None).await.unwrap();
    let again = join(&mut a, "cfg", "Al").await;
    assert!(again.contains("code=\"201\""), "{again}");
}

#[tokio::test]
async fn invitations_mediated_and_members_only() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = common::online(&srv, "bob", "r").await;
    create_instant(&mut a, "inv", "Al").await;
    let r = iq(
        &mut a,
        "mo",
        &format!("<iq type='set' id='mo' to='inv@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    a.send(&format!(
        "<message to='inv@{MUC}' id='i1'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='bob@localhost'><reason>join us</reason></invite></x></message>"
    ))
    .await;
    let inv = read_until_contains(&mut b, "message", "<invite").await;
    assert!(
        inv.contains("from=\"inv@conference.localhost\"")
            && inv.contains("from=\"alice@localhost\"")
            && inv.contains("join us")
            && inv.contains("jabber:x:conference"),
        "{inv}"
    );
    // The owner's invitation made Bob a member, so the members-only room lets him in.
    let joined = join(&mut b, "inv", "Bo").await;
    assert!(joined.contains("affiliation=\"member\""), "{joined}");
    // A decline goes back to the inviter.
    b.send(&format!(
        "<message to='inv@{MUC}' id='d1'><x xmlns='http://jabber.org/protocol/muc#user'><decline to='alice@localhost/r'><reason>busy</reason></decline></x></message>"
    ))
    .await;
    let d = read_until_contains(&mut a, "message", "<decline").await;
    assert!(
        d.contains("busy") && d.contains("from=\"bob@localhost\""),
        "{d}"
    );
}

#[tokio::test]
async fn self_ping_and_limits() {
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.options
            .insert("muc_rate_burst".into(), toml::Value::Integer(3));
        c.options
            .insert("muc_rate_per_second".into(), toml::Value::Float(0.01));
        c.options
            .insert("muc_max_message_size".into(), toml::Value::Integer(20));
        c.options
            .insert("muc_max_occupants".into(), toml::Value::Integer(1));
        c.options.insert(
            "muc_room_creation".into(),
            toml::Value::String("admin".into()),
        );
        c.admins = vec!["alice@localhost".into()];
    })
    .await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    // Only admins create rooms.
    b.send(&format!(
        "<presence to='new@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("not-allowed"), "{e}");
    create_instant(&mut a, "lim", "Al").await;
    // Full (one occupant).
    b.send(&format!(
        "<presence to='lim@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("service-unavailable"), "{e}");
    // XEP-0410: a joined occupant pinging itself gets a result; others not-acceptable.
    let r = iq(
        &mut a,
        "p1",
        &format!("<iq type='get' id='p1' to='lim@{MUC}/Al'><ping xmlns='urn:xmpp:ping'/></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(
        &mut b,
        "p2",
        &format!("<iq type='get' id='p2' to='lim@{MUC}/Al'><ping xmlns='urn:xmpp:ping'/></iq>"),
    )
    .await;
    assert!(r.contains("not-acceptable"), "{r}");
    // Message size, then the rate limit.
    a.send(&format!(
        "<message type='groupchat' to='lim@{MUC}' id='big'><body>{}</body></message>",
        "x".repeat(21)
    ))
    .await;
    let e = read_until_contains(&mut a, "message", "type=\"error\"").await;
    assert!(e.contains("not-acceptable"), "{e}");
    for i in 0..3 {
        a.send(&format!(
            "<message type='groupchat' to='lim@{MUC}' id='r{i}'><body>r{i}</body></message>"
        ))
        .await;
        read_until_contains(&mut a, "message", &format!(">r{i}<")).await;
    }
    a.send(&format!(
        "<message type='groupchat' to='lim@{MUC}' id='r9'><body>r9</body></message>"
    ))
    .await;
    let e = read_until_contains(&mut a, "message", "type=\"error\"").await;
    assert!(
        e.contains("policy-violation") && e.contains("type=\"wait\""),
        "{e}"
    );
}

#[tokio::test]
async fn persistent_rooms_survive_a_restart_and_the_room_archive_pages() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    join(&mut a, "keep", "Al").await;
    let r = iq(
        &mut a,
        "s",
        &format!("<iq type='set' id='s' to='keep@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value></field><field var='muc#roomconfig_roomname'><value>Kept</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(
        &mut a,
        "m",
        &format!("<iq type='set' id='m' to='keep@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='bob@localhost' affiliation='member'/></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    for i in 1..=3 {
        a.send(&format!(
            "<message type='groupchat' to='keep@{MUC}' id='k{i}'><body>kept {i}</body></message>"
        ))
        .await;
        read_until_contains(&mut a, "message", &format!("kept {i}")).await;
    }
    // A temporary room vanishes with its last occupant.
    create_instant(&mut a, "temp", "Al").await;
    a.send(&format!(
        "<presence type='unavailable' to='temp@{MUC}/Al'/>"
    ))
    .await;
    read_until_contains(&mut a, "presence", "temp@conference.localhost/Al").await;
    drop(a);
    let srv = srv.restart().await;
    let mut b = login(&srv, "bob", "r").await;
    let info = iq(
        &mut b,
        "i",
        &format!("<iq type='get' id='i' to='keep@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(
        info.contains("name=\"Kept\"") && info.contains("muc_persistent"),
        "{info}"
    );
    let gone = iq(
        &mut b,
        "t",
        &format!("<iq type='get' id='t' to='temp@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(gone.contains("item-not-found"), "{gone}");
    let joined = join(&mut b, "keep", "Bo").await;
    assert!(joined.contains("affiliation=\"member\""), "{joined}");
    // History on join comes back from the room's archive after the restart, in order.
    let (k1, k3) = (
        joined.find("kept 1").unwrap(),
        joined.find("kept 3").unwrap(),
    );
    assert!(k1 < k3 && joined.contains("urn:xmpp:delay"), "{joined}");
    // The room's archive, queried at the room JID, two per page.
    b.send(&format!(
        "<iq type='set' id='q1' to='keep@{MUC}'><query xmlns='urn:xmpp:mam:2' queryid='x'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query></iq>"
    ))
    .await;
    let page = b.read_until("</iq>").await;
    assert!(
        page.contains("kept 1") && page.contains("kept 2") && !page.contains("kept 3"),
        "{page}"
    );
    assert!(
        page.contains("from=\"keep@conference.localhost/Al\""),
        "{page}"
    );
    let last = page
        .split("<last>")
        .nth(1)
        .unwrap()
        .split("</last>")
        .next()
        .unwrap()
        .to_string();
    b.send(&format!(
        "<iq type='set' id='q2' to='keep@{MUC}'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>{last}</after></set></query></iq>"
    ))
    .await;
    let page = b.read_until("</iq>").await;
    assert!(
        page.contains("kept 3") && page.contains("complete=\"true\""),
        "{page}"
    );
}

/// One admin REST call with `admin@localhost`'s credentials; returns status and JSON.
async fn rest(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .request(method, format!("http://{}/admin_rest{path}", srv.http()))
        .basic_auth("admin@localhost", Some(common::PASSWORD));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn rest_operations_act_on_a_live_room() {
    use reqwest::Method;
    let srv = TestServer::with_users(&["admin", "alice", "bob"], |c| {
        c.admins = vec!["admin@localhost".into()];
    })
    .await;
    let (s, v) = rest(
        &srv,
        Method::PUT,
        "/muc/ops",
        Some(r#"{"name":"Ops","owner":"alice@localhost","persistent":true}"#),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = rest(&srv, Method::PUT, "/muc/ops", Some("{}")).await;
    assert_eq!(s, 409);
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    let aj = join(&mut a, "ops", "Al").await;
    assert!(aj.contains("affiliation=\"owner\""), "{aj}");
    join(&mut b, "ops", "Bo").await;
    let (s, v) = rest(&srv, Method::GET, "/muc", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["result"]["rooms"][0]["occupants"], 2, "{v}");
    let (s, v) = rest(&srv, Method::GET, "/muc/ops@conference.localhost", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["result"]["config"]["name"], "Ops");
    assert_eq!(v["result"]["affiliations"]["alice@localhost"], "owner");
    assert_eq!(v["result"]["occupants"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = rest(&srv, Method::GET, "/muc/ops/role/Bo", None).await;
    assert_eq!(v["result"]["role"], "participant");
    // Making Bob an admin over REST changes his role in the room at once.
    let (s, _) = rest(
        &srv,
        Method::PUT,
        "/muc/ops/affiliation/bob@localhost",
        Some(r#"{"affiliation":"admin"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let p = read_until_contains(&mut b, "presence", "affiliation=\"admin\"").await;
    assert!(p.contains("role=\"moderator\""), "{p}");
    let (_, v) = rest(
        &srv,
        Method::GET,
        "/muc/ops/affiliation/bob@localhost",
        None,
    )
    .await;
    assert_eq!(v["result"]["affiliation"], "admin");
    let (s, _) = rest(
        &srv,
        Method::PUT,
        "/muc/ops/affiliation/bob@localhost",
        Some(r#"{"affiliation":"king"}"#),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = rest(&srv, Method::GET, "/muc/nope", None).await;
    assert_eq!(s, 404);
    // Destroy: occupants are told; the tombstone blocks re-creation until destroyed again.
    let (s, _) = rest(
        &srv,
        Method::DELETE,
        "/muc/ops",
        Some(r#"{"reason":"done"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let gone = read_until_contains(&mut a, "presence", "<destroy").await;
    assert!(gone.contains("done"), "{gone}");
    let (s, _) = rest(&srv, Method::PUT, "/muc/ops", None).await;
    assert_eq!(s, 409);
    let (s, _) = rest(&srv, Method::DELETE, "/muc/ops", None).await;
    assert_eq!(s, 200);
    let (s, _) = rest(&srv, Method::PUT, "/muc/ops", None).await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn a_groups_default_muc_follows_the_group_members() {
    use reqwest::Method;
    let srv = TestServer::with_users(&["admin", "alice", "bob"], |c| {
        c.admins = vec!["admin@localhost".into()];
    })
    .await;
    let (s, v) = rest(
        &srv,
        Method::PUT,
        "/groups",
        Some(r#"{"name":"Staff","group_id":"staff","create_default_muc":true}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["muc_jid"], "staff@conference.localhost", "{v}");
    let (s, _) = rest(&srv, Method::PUT, "/groups/staff/members/alice", None).await;
    assert_eq!(s, 200);
    let (_, v) = rest(&srv, Method::GET, "/muc/staff", None).await;
    assert_eq!(v["result"]["config"]["members_only"], true, "{v}");
    assert_eq!(v["result"]["config"]["persistent"], true, "{v}");
    assert_eq!(v["result"]["config"]["name"], "Staff", "{v}");
    let mut a = login(&srv, "alice", "r").await;
    // Alice finds the room in her bookmarks (XEP-0402), to join automatically.
    let marks = iq(
        &mut a,
        "bm",
        "<iq type='get' id='bm'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    )
    .await;
    assert!(
        marks.contains("id=\"staff@conference.localhost\"") && marks.contains("autojoin=\"true\""),
        "{marks}"
    );
    let joined = join(&mut a, "staff", "Al").await;
    assert!(joined.contains("affiliation=\"member\""), "{joined}");
    let mut b = login(&srv, "bob", "r").await;
    b.send(&format!(
        "<presence to='staff@{MUC}/Bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = b.read_stanza("presence").await;
    assert!(e.contains("registration-required"), "{e}");
    // Removed from the group: no longer a member of its room.
    a.send(&format!(
        "<presence type='unavailable' to='staff@{MUC}/Al'/>"
    ))
    .await;
    read_until_contains(&mut a, "presence", "unavailable").await;
    let (s, _) = rest(&srv, Method::DELETE, "/groups/staff/members/alice", None).await;
    assert_eq!(s, 200);
    a.send(&format!(
        "<presence to='staff@{MUC}/Al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = read_until_contains(&mut a, "presence", "type=\"error\"").await;
    assert!(e.contains("registration-required"), "{e}");
    let marks = iq(
        &mut a,
        "bm2",
        "<iq type='get' id='bm2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    )
    .await;
    assert!(!marks.contains("staff@conference.localhost"), "{marks}");
}

#[tokio::test]
async fn a_dropped_connection_leaves_the_room() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    create_instant(&mut a, "drop", "Al").await;
    // An available session's disconnect sends unavailable to its directed-presence targets.
    let mut b = common::online(&srv, "bob", "r").await;
    join(&mut b, "drop", "Bo").await;
    read_until_contains(&mut a, "presence", "drop@conference.localhost/Bo").await;
    drop(b);
    let p = read_until_contains(&mut a, "presence", "unavailable").await;
    assert!(p.contains("drop@conference.localhost/Bo"), "{p}");
    let svc = oxpecker::modules::muc::service(&srv.server().core, MUC).unwrap();
    assert_eq!(
        svc.get_role("drop", "Bo").await.unwrap(),
        oxpecker::modules::muc::room::Role::None
    );
}

#[tokio::test]
async fn config_changes_are_announced_and_members_only_removes_outsiders() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    create_instant(&mut a, "chg", "Al").await;
    join(&mut b, "chg", "Bo").await;
    // A voice request reaches the moderators.
    b.send(&format!(
        "<message to='chg@{MUC}' id='vr'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field><field var='muc#role'><value>participant</value></field></x></message>"
    ))
    .await;
    let vr = read_until_contains(&mut a, "message", "muc#request").await;
    assert!(vr.contains("from=\"chg@conference.localhost\""), "{vr}");
    a.send(&format!(
        "<iq type='set' id='s' to='chg@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_whois'><value>anyone</value></field><field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>"
    ))
    .await;
    let out = read_until_contains(&mut b, "presence", "code=\"322\"").await;
    assert!(
        out.contains("unavailable") && out.contains("code=\"110\""),
        "{out}"
    );
    let note = read_until_contains(&mut a, "message", "code=\"104\"").await;
    assert!(note.contains("code=\"172\""), "{note}");
}

#[tokio::test]
async fn room_avatar_from_the_rooms_vcard() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    create_instant(&mut a, "pic", "Al").await;
    join(&mut b, "pic", "Bo").await;
    // "hello" in base64; its SHA-1 is the avatar hash.
    let hash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let r = iq(
        &mut b,
        "v0",
        &format!("<iq type='set' id='v0' to='pic@{MUC}'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>"),
    )
    .await;
    assert!(r.contains("<forbidden"), "{r}");
    a.send(&format!(
        "<iq type='set' id='v1' to='pic@{MUC}'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>"
    ))
    .await;
    let p = read_until_contains(&mut b, "presence", "vcard-temp:x:update").await;
    assert!(
        p.contains(hash) && p.contains("from=\"pic@conference.localhost\""),
        "{p}"
    );
    let v = iq(
        &mut b,
        "v2",
        &format!("<iq type='get' id='v2' to='pic@{MUC}'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    assert!(v.contains("aGVsbG8="), "{v}");
    let info = iq(
        &mut b,
        "i",
        &format!("<iq type='get' id='i' to='pic@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(
        info.contains("muc#roominfo_avatarhash") && info.contains(hash),
        "{info}"
    );
    // A newcomer gets the hash on joining.
    let mut a2 = login(&srv, "alice", "two").await;
    let joined = join(&mut a2, "pic", "Al").await;
    assert!(joined.contains(hash), "{joined}");
}

#[tokio::test]
async fn components_are_general_hosts_with_their_own_modules() {
    let srv = TestServer::with_users(&["alice"], |c| {
        c.components = Some(vec![
            oxpecker::config::ComponentConfig {
                name: "rooms.localhost".into(),
                module: "muc".into(),
                ..Default::default()
            },
            oxpecker::config::ComponentConfig {
                name: "echo.localhost".into(),
                module: "ping".into(),
                ..Default::default()
            },
        ]);
    })
    .await;
    let core = &srv.server().core;
    assert_eq!(core.host("echo.localhost").unwrap().modules(), vec!["ping"]);
    assert!(!core.host("echo.localhost").unwrap().is_loaded("muc"));
    let mut a = login(&srv, "alice", "r").await;
    let items = iq(
        &mut a,
        "it",
        "<iq type='get' id='it' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert!(
        items.contains("jid=\"echo.localhost\"") && items.contains("jid=\"rooms.localhost\""),
        "{items}"
    );
    assert!(!items.contains("conference.localhost"), "{items}");
    // The ping module answers on the component's own bus.
    let pong = iq(
        &mut a,
        "p",
        "<iq type='get' id='p' to='echo.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert!(pong.contains("type=\"result\""), "{pong}");
    // The MUC service runs at the configured name.
    let joined = join_at(&mut a, "rooms.localhost", "r1", "Al").await;
    assert!(joined.contains("code=\"201\""), "{joined}");
}

async fn join_at(c: &mut RawClient, service: &str, room: &str, nick: &str) -> String {
    c.send(&format!("<presence to='{room}@{service}/{nick}'/>"))
        .await;
    c.read_until("</subject></message>").await
}

/// A client of a server run as a separate process (for the kill -9 test).
async fn process_client(port: u16, cert: &[u8], user: &str) -> RawClient {
    let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.starttls(cert).await;
    assert!(c.auth_plain(user, "secret").await.contains("<success"));
    c.bind("r").await;
    c
}

#[tokio::test]
async fn acknowledged_room_changes_survive_kill_9() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    const BIN: &str = env!("CARGO_BIN_EXE_oxpecker");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("oxpecker.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = [\"127.0.0.1:0\"]\n[auth]\nscram_iterations = 4096\n"
        ),
    )
    .unwrap();
    let add = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["user", "add", "alice@localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        add.stdin.as_ref().unwrap().write_all(b"secret\n").unwrap();
    }
    assert!(add.wait_with_output().unwrap().status.success());
    let serve = || {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not start");
    };
    let mut server = serve();
    let cert = std::fs::read(dir.path().join("data/tls/cert.pem")).unwrap();
    let mut a = process_client(port, &cert, "alice").await;
    join(&mut a, "durable", "Al").await;
    let r = iq(
        &mut a,
        "s",
        &format!("<iq type='set' id='s' to='durable@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value></field><field var='muc#roomconfig_roomname'><value>Durable</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    let r = iq(
        &mut a,
        "m",
        &format!("<iq type='set' id='m' to='durable@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='bob@localhost' affiliation='outcast'/></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    create_instant(&mut a, "doomed", "Al").await;
    let r = iq(
        &mut a,
        "d",
        &format!("<iq type='set' id='d' to='doomed@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    // Acknowledged means durable: kill -9, then everything acknowledged is there.
    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = serve();
    let mut a = process_client(port, &cert, "alice").await;
    let info = iq(
        &mut a,
        "i",
        &format!("<iq type='get' id='i' to='durable@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(info.contains("name=\"Durable\""), "{info}");
    let list = iq(
        &mut a,
        "l",
        &format!("<iq type='get' id='l' to='durable@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>"),
    )
    .await;
    assert!(list.contains("bob@localhost"), "{list}");
    a.send(&format!(
        "<presence to='doomed@{MUC}/Al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let e = read_until_contains(&mut a, "presence", "type=\"error\"").await;
    assert!(e.contains("<gone"), "{e}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test]
async fn a_session_without_initial_presence_leaves_its_rooms_when_it_ends() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    create_instant(&mut a, "quiet", "Al").await;
    create_instant(&mut a, "other", "Al").await;
    // Bob never sends initial presence: no unavailable presence is sent for him at the end.
    let mut b = login(&srv, "bob", "r").await;
    join(&mut b, "quiet", "Bo").await;
    join(&mut b, "other", "Bo").await;
    read_until_contains(&mut a, "presence", "quiet@conference.localhost/Bo").await;
    read_until_contains(&mut a, "presence", "other@conference.localhost/Bo").await;
    b.send("</stream:stream>").await;
    drop(b);
    // One unavailable presence per room, in either order.
    let both = [
        a.read_stanza("presence").await,
        a.read_stanza("presence").await,
    ];
    for room in ["quiet", "other"] {
        let from = format!("from=\"{room}@{MUC}/Bo\"");
        let p = both.iter().find(|p| p.contains(&from)).expect(&from);
        assert!(
            p.contains("type=\"unavailable\"") && p.contains("role=\"none\""),
            "{p}"
        );
    }
    let svc = oxpecker::modules::muc::service(&srv.server().core, MUC).unwrap();
    for room in ["quiet", "other"] {
        assert_eq!(
            svc.get_role(room, "Bo").await.unwrap(),
            oxpecker::modules::muc::room::Role::None
        );
    }
    // Al is still there, and the nick is free again.
    assert_eq!(
        svc.get_role("quiet", "Al").await.unwrap(),
        oxpecker::modules::muc::room::Role::Moderator
    );
}

#[tokio::test]
async fn a_second_session_under_the_same_nick_is_announced_and_leaves_quietly() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    create_instant(&mut a, "multi", "Al").await;
    a.send(&format!(
        "<message type='groupchat' to='multi@{MUC}' id='h'><body>before</body></message>"
    ))
    .await;
    read_until_contains(&mut a, "message", "before").await;
    let mut b1 = login(&srv, "bob", "one").await;
    join(&mut b1, "multi", "Bo").await;
    read_until_contains(&mut a, "presence", "multi@conference.localhost/Bo").await;
    // The second session gets the occupant list, its self-presence (110) and the history.
    let mut b2 = login(&srv, "bob", "two").await;
    let second = join(&mut b2, "multi", "Bo").await;
    let al = second.find("multi@conference.localhost/Al").unwrap();
    let me = second.find("code=\"110\"").unwrap();
    assert!(al < me, "{second}");
    assert!(second.contains("before"), "{second}");
    // Al sees Bo's presence again (not a new occupant, no unavailable); Bob's first session
    // sees its own occupant's presence with 110.
    let again = read_until_contains(&mut a, "presence", "multi@conference.localhost/Bo").await;
    assert!(!again.contains("unavailable"), "{again}");
    assert!(again.contains("jid=\"bob@localhost/two\""), "{again}");
    let own = read_until_contains(&mut b1, "presence", "multi@conference.localhost/Bo").await;
    assert!(own.contains("code=\"110\""), "{own}");
    // One session leaves: it gets its unavailable self-presence; Al sees nothing.
    b2.send(&format!(
        "<presence type='unavailable' to='multi@{MUC}/Bo'/>"
    ))
    .await;
    let left = read_until_contains(&mut b2, "presence", "type=\"unavailable\"").await;
    assert!(left.contains("code=\"110\""), "{left}");
    b1.send(&format!(
        "<message type='groupchat' to='multi@{MUC}' id='mark'><body>still here</body></message>"
    ))
    .await;
    let before_mark = a.read_until("still here").await;
    assert!(!before_mark.contains("unavailable"), "{before_mark}");
    let svc = oxpecker::modules::muc::service(&srv.server().core, MUC).unwrap();
    assert_eq!(
        svc.get_role("multi", "Bo").await.unwrap(),
        oxpecker::modules::muc::room::Role::Participant
    );
    // The last session leaves: now the others see Bo go.
    b1.send(&format!(
        "<presence type='unavailable' to='multi@{MUC}/Bo'/>"
    ))
    .await;
    let gone = read_until_contains(&mut a, "presence", "type=\"unavailable\"").await;
    assert!(gone.contains("multi@conference.localhost/Bo"), "{gone}");
    assert_eq!(
        svc.get_role("multi", "Bo").await.unwrap(),
        oxpecker::modules::muc::room::Role::None
    );
}

#[tokio::test]
async fn reload_follows_component_modules_and_warns_on_added_or_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oxpecker.toml");
    let write = |components: &str| {
        std::fs::write(
            &path,
            format!(
                "data_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = [\"127.0.0.1:0\"]\n[auth]\nscram_iterations = 4096\n{components}"
            ),
        )
        .unwrap();
    };
    write(
        "[[component]]\nname = \"conference.localhost\"\nmodule = \"muc\"\n[[component]]\nname = \"echo.localhost\"\nmodule = \"ping\"\n",
    );
    let config = oxpecker::config::Config::load(&path).unwrap();
    let srv = TestServer {
        server: Some(oxpecker::Server::start(config.clone()).await.unwrap()),
        dir,
        config,
    };
    srv.add_user("alice@localhost", common::PASSWORD).await;
    let core = srv.server().core.clone();
    let mut a = login(&srv, "alice", "r").await;
    join(&mut a, "before", "Al").await;
    write(
        "[[component]]\nname = \"conference.localhost\"\nmodule = \"muc\"\nmodules_enabled = [\"ping\"]\nmuc_name = \"Rooms\"\n[[component]]\nname = \"new.localhost\"\nmodule = \"ping\"\n",
    );
    let r = core.reload_config().unwrap();
    assert_eq!(r.loaded, vec!["conference.localhost/ping"], "{r:?}");
    assert_eq!(r.reloaded, vec!["conference.localhost/muc"], "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("new.localhost") && w.contains("restart")),
        "{r:?}"
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("echo.localhost") && w.contains("restart")),
        "{r:?}"
    );
    // The reloaded service's occupants are told they were removed (332), not left joined.
    let removed = read_until_contains(&mut a, "presence", "code=\"332\"").await;
    assert!(
        removed.contains("type=\"unavailable\"")
            && removed.contains("before@conference.localhost/Al")
            && removed.contains("code=\"110\""),
        "{removed}"
    );
    // Over the wire: the reloaded MUC has its new name, the added module answers.
    let info = iq(
        &mut a,
        "in",
        &format!("<iq type='get' id='in' to='{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(info.contains("name=\"Rooms\""), "{info}");
    let pong = iq(
        &mut a,
        "p",
        &format!("<iq type='get' id='p' to='{MUC}'><ping xmlns='urn:xmpp:ping'/></iq>"),
    )
    .await;
    assert!(pong.contains("type=\"result\""), "{pong}");
    let joined = join(&mut a, "after", "Al").await;
    assert!(joined.contains("code=\"201\""), "{joined}");
    // A removed module goes again.
    write("[[component]]\nname = \"conference.localhost\"\nmodule = \"muc\"\n");
    let r = core.reload_config().unwrap();
    assert_eq!(r.unloaded, vec!["conference.localhost/ping"], "{r:?}");
    assert!(!core.host(MUC).unwrap().is_loaded("ping"));
}

/// The IQ running hat command `cmd` (`don`, `doff`, `dlist`) at `room` with the submitted
/// `fields` (`None`: execute without a form).
fn hat_iq(id: &str, room: &str, cmd: &str, fields: Option<&[(&str, &str)]>) -> String {
    let form = fields.map(|fields| {
        let fields: String = fields
            .iter()
            .map(|(var, v)| format!("<field var='{var}'><value>{v}</value></field>"))
            .collect();
        format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:hats:commands</value></field>{fields}</x>")
    });
    format!(
        "<iq type='set' id='{id}' to='{room}@{MUC}'><command xmlns='http://jabber.org/protocol/commands' node='urn:xmpp:hats:commands:{cmd}' action='execute'>{}</command></iq>",
        form.unwrap_or_default()
    )
}

/// Runs a hat command (see [`hat_iq`]) and reads its answer.
async fn hat_command(
    c: &mut RawClient,
    id: &str,
    room: &str,
    cmd: &str,
    fields: Option<&[(&str, &str)]>,
) -> String {
    iq(c, id, &hat_iq(id, room, cmd, fields)).await
}

#[tokio::test]
async fn hats_are_managed_by_commands_shown_in_presence_and_kept_across_a_restart() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    create_instant(&mut a, "class", "Al").await;
    let r = iq(
        &mut a,
        "p",
        &format!("<iq type='set' id='p' to='class@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    join(&mut b, "class", "Bo").await;
    read_until_contains(&mut a, "presence", "class@conference.localhost/Bo").await;
    // Advertised: the feature in disco#info, the commands in disco#items.
    let info = iq(
        &mut b,
        "i",
        &format!("<iq type='get' id='i' to='class@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    )
    .await;
    assert!(info.contains("var=\"urn:xmpp:hats:0\""), "{info}");
    let items = iq(
        &mut a,
        "c",
        &format!("<iq type='get' id='c' to='class@{MUC}'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>"),
    )
    .await;
    for cmd in ["don", "doff", "dlist"] {
        assert!(
            items.contains(&format!("node=\"urn:xmpp:hats:commands:{cmd}\"")),
            "{items}"
        );
    }
    // A participant may not hand out hats.
    let teacher = [
        ("hats#jid", "bob@localhost"),
        ("hats#hat", "http://example.org/hats#teacher"),
        ("hats#title", "Teacher"),
    ];
    let refused = hat_command(&mut b, "x1", "class", "don", Some(&teacher)).await;
    assert!(
        refused.contains("type=\"error\"") && refused.contains("forbidden"),
        "{refused}"
    );
    // The owner: the form first, then the submission.
    let form = hat_command(&mut a, "d0", "class", "don", None).await;
    assert!(
        form.contains("status=\"executing\"")
            && form.contains("var=\"hats#jid\"")
            && form.contains("var=\"hats#hat\""),
        "{form}"
    );
    // Everyone sees Bo's presence again, wearing the hat (the owner before the command's answer).
    a.send(&hat_iq("d1", "class", "don", Some(&teacher))).await;
    let hat = "<hat uri=\"http://example.org/hats#teacher\" title=\"Teacher\"/>";
    let p = read_until_contains(&mut a, "presence", "urn:xmpp:hats:0").await;
    assert!(p.contains(hat), "{p}");
    let done = read_until_contains(&mut a, "iq", "id=\"d1\"").await;
    assert!(done.contains("status=\"completed\""), "{done}");
    let p = read_until_contains(&mut b, "presence", "urn:xmpp:hats:0").await;
    assert!(
        p.contains("from=\"class@conference.localhost/Bo\"") && p.contains(hat),
        "{p}"
    );
    // A bad hat is refused with not-acceptable.
    let bad = hat_command(
        &mut a,
        "d2",
        "class",
        "don",
        Some(&[("hats#jid", "bob@localhost"), ("hats#hat", "")]),
    )
    .await;
    assert!(bad.contains("not-acceptable"), "{bad}");
    let list = hat_command(&mut a, "l1", "class", "dlist", None).await;
    assert!(
        list.contains("<value>bob@localhost</value>")
            && list.contains("<value>http://example.org/hats#teacher</value>"),
        "{list}"
    );
    // Stored with the room: after a restart Bo wears it when he joins again.
    drop((a, b));
    let srv = srv.restart().await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    join(&mut a, "class", "Al").await;
    let joined = join(&mut b, "class", "Bo").await;
    assert!(joined.contains(hat), "{joined}");
    let p = read_until_contains(&mut a, "presence", "class@conference.localhost/Bo").await;
    assert!(p.contains(hat), "{p}");
    // Taken off: the presence goes out again without it; taking it off twice is refused.
    let off = [
        ("hats#jid", "bob@localhost"),
        ("hats#hat", "http://example.org/hats#teacher"),
    ];
    let done = hat_command(&mut a, "o1", "class", "doff", Some(&off)).await;
    assert!(done.contains("status=\"completed\""), "{done}");
    let p = read_until_contains(&mut b, "presence", "class@conference.localhost/Bo").await;
    assert!(!p.contains("urn:xmpp:hats:0"), "{p}");
    let again = hat_command(&mut a, "o2", "class", "doff", Some(&off)).await;
    assert!(again.contains("not-acceptable"), "{again}");
    let list = hat_command(&mut a, "l2", "class", "dlist", None).await;
    assert!(!list.contains("hats#teacher"), "{list}");
}

#[tokio::test]
async fn history_on_join_honours_maxchars_and_since() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    create_instant(&mut a, "chars", "Al").await;
    // Bodies of 3, 5 and 7 characters.
    for body in ["xx1", "xxxx2", "xxxxxx3"] {
        a.send(&format!(
            "<message type='groupchat' to='chars@{MUC}' id='{body}'><body>{body}</body></message>"
        ))
        .await;
        read_until_contains(&mut a, "message", body).await;
    }
    let join_with = |nick: &str, history: &str| {
        format!(
            "<presence to='chars@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'><history {history}/></x></presence>"
        )
    };
    // maxchars=12: the newest 7 + 5 fit, the 3 before them would not.
    let mut b = login(&srv, "bob", "one").await;
    b.send(&join_with("Bo", "maxchars='12'")).await;
    let joined = b.read_until("</subject></message>").await;
    assert!(
        !joined.contains("xx1") && joined.contains("xxxx2") && joined.contains("xxxxxx3"),
        "{joined}"
    );
    // since: a date before every message gives all of them, one after gives none.
    let mut b2 = login(&srv, "bob", "two").await;
    b2.send(&join_with("Bo", "since='2000-01-01T00:00:00Z'"))
        .await;
    let all = b2.read_until("</subject></message>").await;
    assert!(
        all.contains("xx1") && all.contains("xxxx2") && all.contains("xxxxxx3"),
        "{all}"
    );
    let mut b3 = login(&srv, "bob", "three").await;
    b3.send(&join_with("Bo", "since='2999-01-01T00:00:00Z'"))
        .await;
    let none = b3.read_until("</subject></message>").await;
    assert!(
        none.contains("code=\"110\"") && !none.contains("<body>"),
        "{none}"
    );
}

/// Sends a ping and returns everything `c` receives up to its reply: whatever the server
/// queued for `c` before it is in there.
async fn up_to_ping(c: &mut RawClient) -> String {
    c.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let all = c.read_until("id=\"sync\"").await;
    c.read_until("/>").await;
    all
}

#[tokio::test]
async fn a_nick_the_room_rules_change_is_announced_with_210() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    let aj = create_instant(&mut a, "rules", "Al").await;
    // A nick the room keeps gets no 210.
    assert!(!aj.contains("code=\"210\""), "{aj}");
    // Spaces are trimmed and collapsed (the PRECIS Nickname profile): Bob is "Bo Bo", and his
    // self-presence says the room changed his nick (210); Al's view does not.
    let bj = join(&mut b, "rules", "  Bo   Bo ").await;
    let own = bj
        .split("<presence")
        .find(|p| p.contains("code=\"110\""))
        .unwrap();
    assert!(
        own.contains("from=\"rules@conference.localhost/Bo Bo\"") && own.contains("code=\"210\""),
        "{bj}"
    );
    let seen = read_until_contains(&mut a, "presence", "rules@conference.localhost/Bo Bo").await;
    assert!(!seen.contains("code=\"210\""), "{seen}");
    // Presence to the nick as first asked is an update of "Bo Bo", not a nick change.
    b.send(&format!(
        "<presence to='rules@{MUC}/  Bo   Bo '><show>away</show></presence>"
    ))
    .await;
    let update = read_until_contains(&mut a, "presence", "<show>away</show>").await;
    assert!(
        update.contains("/Bo Bo\"") && !update.contains("code=\"303\""),
        "{update}"
    );
    // A nick change the rules alter (NFKC: the ligature is two letters): 303 names the nick
    // the room chose, and the new self-presence has 210.
    b.send(&format!("<presence to='rules@{MUC}/\u{fb01}sh'/>"))
        .await;
    let gone = read_until_contains(&mut b, "presence", "code=\"303\"").await;
    assert!(gone.contains("nick=\"fish\""), "{gone}");
    let now = read_until_contains(&mut b, "presence", "rules@conference.localhost/fish").await;
    assert!(
        now.contains("code=\"210\"") && now.contains("code=\"110\""),
        "{now}"
    );
    let gone = read_until_contains(&mut a, "presence", "code=\"303\"").await;
    assert!(gone.contains("nick=\"fish\""), "{gone}");
    let now = read_until_contains(&mut a, "presence", "rules@conference.localhost/fish").await;
    assert!(!now.contains("code=\"210\""), "{now}");
    // A nick of nothing but spaces breaks the rules.
    b.send(&format!("<presence to='rules@{MUC}/   '/>")).await;
    let e = read_until_contains(&mut b, "presence", "type=\"error\"").await;
    assert!(e.contains("not-acceptable"), "{e}");
}

#[tokio::test]
async fn a_moderated_room_follows_its_broadcast_pm_and_subject_settings() {
    let srv = server(&["alice", "bob"]).await;
    let mut a = login(&srv, "alice", "r").await;
    let mut b = login(&srv, "bob", "r").await;
    join(&mut a, "quiet", "Al").await;
    let r = iq(
        &mut a,
        "cfg",
        &format!("<iq type='set' id='cfg' to='quiet@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field><field var='muc#roomconfig_moderatedroom'><value>1</value></field><field var='muc#roomconfig_presencebroadcast'><value>moderator</value><value>participant</value></field><field var='muc#roomconfig_allowpm'><value>participants</value></field><field var='muc#roomconfig_changesubject'><value>1</value></field></x></query></iq>"),
    )
    .await;
    assert!(r.contains("type=\"result\""), "{r}");
    // Bob enters a moderated room as a visitor, whose presence is not broadcast.
    let bj = join(&mut b, "quiet", "Bo").await;
    assert!(bj.contains("role=\"visitor\""), "{bj}");
    let before = up_to_ping(&mut a).await;
    assert!(
        !before.contains("quiet@conference.localhost/Bo"),
        "{before}"
    );
    // A visitor may neither speak privately (participants only) nor set the subject.
    let pm =
        format!("<message to='quiet@{MUC}/Al' type='chat' id='pm'><body>psst</body></message>");
    b.send(&pm).await;
    let e = read_until_contains(&mut b, "message", "type=\"error\"").await;
    assert!(e.contains("<forbidden"), "{e}");
    let topic = format!(
        "<message to='quiet@{MUC}' type='groupchat' id='t'><subject>Bobs topic</subject></message>"
    );
    b.send(&topic).await;
    let e = read_until_contains(&mut b, "message", "type=\"error\"").await;
    assert!(e.contains("<forbidden"), "{e}");
    // With voice Bob is a participant: his presence reaches Al, and he may do both.
    a.send(&format!(
        "<iq type='set' id='voice' to='quiet@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bo' role='participant'/></query></iq>"
    ))
    .await;
    let p = read_until_contains(&mut a, "presence", "quiet@conference.localhost/Bo").await;
    assert!(p.contains("role=\"participant\""), "{p}");
    read_until_contains(&mut b, "presence", "role=\"participant\"").await;
    b.send(&pm).await;
    let got = read_until_contains(&mut a, "message", "psst").await;
    assert!(
        got.contains("from=\"quiet@conference.localhost/Bo\""),
        "{got}"
    );
    b.send(&topic).await;
    let got = read_until_contains(&mut a, "message", "Bobs topic").await;
    assert!(got.contains("<subject>"), "{got}");
}

#[tokio::test]
async fn a_roster_longer_than_the_send_queue_streams_to_the_newcomer() {
    let users = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];
    let srv = TestServer::with_users(&users, |c| c.c2s.send_queue = 8).await;
    let mut clients = Vec::new();
    for u in users.iter().take(9) {
        let mut c = login(&srv, u, "r").await;
        join(&mut c, "big", u).await;
        if clients.is_empty() {
            c.send(&format!(
                "<iq type='set' id='inst' to='big@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
            ))
            .await;
            read_until_contains(&mut c, "iq", "id=\"inst\"").await;
        }
        clients.push(c);
        // Each reads what the newcomer's presence sent it, so no queue fills meanwhile.
        for c in &mut clients {
            up_to_ping(c).await;
        }
    }
    // Nine presences, the self-presence and the subject: more than the queue of 8 holds.
    let mut last = login(&srv, "u9", "r").await;
    let joined = join(&mut last, "big", "u9").await;
    for u in users.iter().take(9) {
        assert!(
            joined.contains(&format!("from=\"big@conference.localhost/{u}\"")),
            "{u}: {joined}"
        );
    }
    assert!(joined.contains("code=\"110\""), "{joined}");
}
