//! XEP-0479 (XMPP Compliance Suites 2023) server columns this server covers: what a client sees
//! in the server's and its account's disco#info and in the stream features, on defaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer};

async fn disco(c: &mut RawClient, to: &str, id: &str) -> String {
    c.send(&format!(
        "<iq type='get' id='{id}' to='{to}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ))
    .await;
    loop {
        let s = c.read_stanza("iq").await;
        if s.contains(&format!("id=\"{id}\"")) {
            return s;
        }
    }
}

#[tokio::test]
async fn advanced_im_and_mobile_features_are_advertised() {
    let srv = TestServer::start().await;
    srv.add_user("alice@localhost", "pw").await;
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    assert!(c.auth_plain("alice", "pw").await.contains("<success"));
    let features = c.open().await;
    for f in [
        "urn:xmpp:sm:3",                    // XEP-0198
        "urn:xmpp:csi:0",                   // XEP-0352
        "urn:xmpp:features:rosterver",      // XEP-0237
        "urn:xmpp:features:pre-approval",   // RFC 6121 §3.4
        "urn:ietf:params:xml:ns:xmpp-bind", // RFC 6120
    ] {
        assert!(features.contains(f), "stream features lack {f}: {features}");
    }
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    c.read_stanza("iq").await;

    let server = disco(&mut c, "localhost", "s").await;
    for f in [
        "http://jabber.org/protocol/disco#info", // XEP-0030
        "urn:xmpp:ping",                         // XEP-0199
        "urn:xmpp:carbons:2",                    // XEP-0280
        "urn:xmpp:blocking",                     // XEP-0191
        "vcard-temp",                            // XEP-0054
        "jabber:iq:private",                     // XEP-0049
        "urn:xmpp:time",                         // XEP-0202
        "jabber:iq:version",                     // XEP-0092
        "msgoffline",                            // XEP-0160
    ] {
        assert!(
            server.contains(&format!("var=\"{f}\"")),
            "server disco lacks {f}: {server}"
        );
    }

    let account = disco(&mut c, "alice@localhost", "a").await;
    for f in [
        "urn:xmpp:mam:2",                                    // XEP-0313
        "urn:xmpp:sid:0",                                    // XEP-0359
        "urn:xmpp:push:0",                                   // XEP-0357
        "http://jabber.org/protocol/pubsub#publish",         // XEP-0163
        "http://jabber.org/protocol/pubsub#publish-options", // XEP-0223
        "urn:xmpp:bookmarks:1#compat",                       // XEP-0402/0411
        "urn:xmpp:pep-vcard-conversion:0",                   // XEP-0398
    ] {
        assert!(
            account.contains(&format!("var=\"{f}\"")),
            "account disco lacks {f}: {account}"
        );
    }
    assert!(
        account.contains("category=\"pubsub\"") && account.contains("type=\"pep\""),
        "{account}"
    );
}

#[tokio::test]
async fn server_entity_capabilities_match_its_disco_info() {
    let srv = TestServer::start().await;
    srv.add_user("alice@localhost", "pw").await;
    let mut c = RawClient::connect(srv.c2s()).await;
    let pre = c.starttls(&srv.cert_pem()).await;
    assert!(
        pre.contains("http://jabber.org/protocol/caps"),
        "before auth too: {pre}"
    );
    c.auth_plain("alice", "pw").await;
    let features = c.open().await;
    let start = features.find("ver=\"").unwrap() + 5;
    let ver = &features[start..start + features[start..].find('"').unwrap()];
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    c.read_stanza("iq").await;
    c.send(&format!(
        "<iq type='get' id='n' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:oxpecker:caps#{ver}'/></iq>"
    ))
    .await;
    let reply = c.read_stanza("iq").await;
    assert!(reply.contains("type=\"result\""), "{reply}");
    // The advertised ver is the XEP-0115 hash of what disco#info answers.
    let q_start = reply.find("<query").unwrap();
    let q_end = reply.rfind("</query>").unwrap() + "</query>".len();
    let query = oxpecker::xmpp::parser::parse_element(&reply[q_start..q_end]).unwrap();
    assert_eq!(
        oxpecker::modules::pep::caps::compute_ver(&query, "sha-1").as_deref(),
        Some(ver)
    );
    c.send("<iq type='get' id='x' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:oxpecker:caps#stale'/></iq>")
        .await;
    assert!(c.read_stanza("iq").await.contains("<item-not-found "));
}
