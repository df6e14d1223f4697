//! XEP-0133 service administration over XEP-0050 ad-hoc commands, from a real XMPP client:
//! admins list and run commands (forms, then results), others get `forbidden`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer, online, read_until_contains, wait_offline};

const ADMIN: &str = "http://jabber.org/protocol/admin";

async fn server() -> TestServer {
    TestServer::with_users(&["admin", "alice", "bob"], |c| {
        c.admins = vec!["admin@localhost".into()];
        c.modules_enabled.push("admin_adhoc".into());
    })
    .await
}

async fn iq(c: &mut RawClient, id: &str, body: &str) -> String {
    c.send(&format!(
        "<iq type='set' id='{id}' to='localhost'>{body}</iq>"
    ))
    .await;
    read_until_contains(c, "iq", &format!("id=\"{id}\"")).await
}

fn command(node: &str, form: &str) -> String {
    format!(
        "<command xmlns='http://jabber.org/protocol/commands' node='{ADMIN}#{node}' action='execute'>{form}</command>"
    )
}

fn submit(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{ADMIN}</value></field>"
    );
    for (var, v) in fields {
        x.push_str(&format!("<field var='{var}'><value>{v}</value></field>"));
    }
    x + "</x>"
}

#[tokio::test]
async fn admins_run_commands_and_others_are_forbidden() {
    let srv = server().await;
    let mut admin = online(&srv, "admin", "console").await;
    let mut alice = online(&srv, "alice", "phone").await;

    // The command list (disco#items on the commands node): full for admins, empty for others.
    admin
        .send("<iq type='get' id='l1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>")
        .await;
    let list = read_until_contains(&mut admin, "iq", "id=\"l1\"").await;
    assert!(
        list.contains("#add-user") && list.contains("#shutdown"),
        "{list}"
    );
    alice
        .send("<iq type='get' id='l2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>")
        .await;
    let list = read_until_contains(&mut alice, "iq", "id=\"l2\"").await;
    assert!(!list.contains("#add-user"), "{list}");

    // Not an admin: forbidden.
    let r = iq(&mut alice, "f1", &command("get-online-users-num", "")).await;
    assert!(
        r.contains("type=\"error\"") && r.contains("<forbidden"),
        "{r}"
    );

    // Add a user: the form first, then the submission.
    let r = iq(&mut admin, "a1", &command("add-user", "")).await;
    assert!(
        r.contains("status=\"executing\"") && r.contains("var=\"accountjid\""),
        "{r}"
    );
    let form = submit(&[
        ("accountjid", "carol@localhost"),
        ("password", "s3cret"),
        ("password-verify", "s3cret"),
    ]);
    let r = iq(&mut admin, "a2", &command("add-user", &form)).await;
    assert!(
        r.contains("status=\"completed\"") && r.contains("created"),
        "{r}"
    );
    let carol = common::jid("carol@localhost");
    assert!(
        srv.server()
            .core
            .accounts
            .verify_password(&carol, "s3cret")
            .await
            .unwrap()
    );

    // Counts and lists.
    let r = iq(&mut admin, "n1", &command("get-online-users-num", "")).await;
    assert!(
        r.contains("var=\"onlineusersnum\"") && r.contains("<value>2</value>"),
        "{r}"
    );
    let r = iq(&mut admin, "n2", &command("get-registered-users-num", "")).await;
    assert!(r.contains("<value>4</value>"), "{r}");
    let r = iq(&mut admin, "n3", &command("get-online-users-list", "")).await;
    assert!(
        r.contains("alice@localhost") && r.contains("admin@localhost"),
        "{r}"
    );

    // Announce reaches online users.
    let form = submit(&[
        ("subject", "Notice"),
        ("announcement", "maintenance at noon"),
    ]);
    let r = iq(&mut admin, "m1", &command("announce", &form)).await;
    assert!(r.contains("sent to 2 users"), "{r}");
    let m = read_until_contains(&mut alice, "message", "maintenance at noon").await;
    assert!(m.contains("<subject>Notice</subject>"), "{m}");

    // End a user's session; the admin's stays.
    let form = submit(&[("accountjids", "alice@localhost")]);
    let r = iq(&mut admin, "e1", &command("end-user-session", &form)).await;
    assert!(r.contains("status=\"completed\""), "{r}");
    assert!(alice.read_to_close().await.contains("<policy-violation"));
    wait_offline(&srv, "alice@localhost").await;

    // Message of the day: set, shown to the next login, edited with the current text, deleted.
    let r = iq(
        &mut admin,
        "o1",
        &command("set-motd", &submit(&[("motd", "Welcome aboard")])),
    )
    .await;
    assert!(r.contains("status=\"completed\""), "{r}");
    let mut bob = online(&srv, "bob", "laptop").await;
    let m = read_until_contains(&mut bob, "message", "Welcome aboard").await;
    assert!(
        m.contains("type=\"headline\"") && m.contains("from=\"localhost\""),
        "{m}"
    );
    let r = iq(&mut admin, "o2", &command("edit-motd", "")).await;
    assert!(r.contains("<value>Welcome aboard</value>"), "{r}");
    let r = iq(&mut admin, "o3", &command("delete-motd", "")).await;
    assert!(r.contains("deleted"), "{r}");
    let r = iq(&mut admin, "o4", &command("edit-motd", "")).await;
    assert!(!r.contains("Welcome aboard"), "{r}");

    // Errors are notes, not crashes.
    let form = submit(&[
        ("accountjid", "carol@localhost"),
        ("password", "a"),
        ("password-verify", "b"),
    ]);
    let r = iq(&mut admin, "x1", &command("add-user", &form)).await;
    assert!(
        r.contains("type=\"error\"") && r.contains("do not match"),
        "{r}"
    );
    let r = iq(
        &mut admin,
        "x2",
        "<command xmlns='http://jabber.org/protocol/commands' node='nope' action='execute'/>",
    )
    .await;
    assert!(r.contains("<item-not-found"), "{r}");

    // Delete, then shut down with the announcement as the reason.
    let form = submit(&[("accountjids", "carol@localhost")]);
    let r = iq(&mut admin, "d1", &command("delete-user", &form)).await;
    assert!(r.contains("Deleted: carol@localhost"), "{r}");
    assert!(!srv.server().core.accounts.exists(&carol).await.unwrap());
    let form = submit(&[("announcement", "back soon")]);
    let r = iq(&mut admin, "s1", &command("shutdown", &form)).await;
    assert!(r.contains("status=\"completed\""), "{r}");
    assert_eq!(
        srv.server().core.stop.reason().as_deref(),
        Some("back soon")
    );
}
