//! The attack suite: each defence of issue #18 tried as an attacker would, over real sockets,
//! with a legitimate client checked alongside. Bounded in time; no timing assertions beyond
//! generous bounds. Attackers connect from 127.0.0.2 (loopback, not exempt from the limits);
//! legitimate clients from 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::{RawClient, TestServer};
use tokio::net::TcpSocket;

/// The attacker's source address.
const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// A plaintext connection to `addr` from the attacker's address.
async fn connect_from_attacker(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((ATTACKER, 0)))?;
    s.connect(addr).await
}

/// A raw client from the attacker's address.
async fn attacker(srv: &TestServer) -> RawClient {
    RawClient {
        io: Box::new(connect_from_attacker(srv.c2s()).await.unwrap()),
        buf: String::new(),
        jid: String::new(),
    }
}

/// A fresh legitimate login (127.0.0.1) that pings and gets its answer.
async fn legit_login_and_ping(srv: &TestServer) {
    let mut c = RawClient::login(srv, "alice", "secret", "legit").await;
    c.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = c.read_stanza("iq").await;
    assert!(r.contains("type=\"result\""), "{r}");
}

#[tokio::test]
async fn brute_force_from_one_address_is_throttled_while_another_logs_in() {
    let srv = TestServer::start_with(|c| {
        c.limits.auth_max_failures = 10;
        c.limits.auth_refusal_delay_ms = 200;
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    let cert = srv.cert_pem();
    // 30 guesses as the loop made them: three per connection.
    let mut answered = 0;
    let mut throttled = 0;
    let mut closed_after_throttle = 0;
    'conns: for _ in 0..10 {
        let mut c = attacker(&srv).await;
        c.starttls(&cert).await;
        for _ in 0..3 {
            let r = c.auth_plain("alice", "guess").await;
            if r.contains("<temporary-auth-failure/>") {
                throttled += 1;
                let end = c.read_to_close().await;
                assert!(end.contains("</stream:stream>"), "{end}");
                closed_after_throttle += 1;
                continue 'conns;
            }
            assert!(r.contains("<not-authorized/>"), "{r}");
            answered += 1;
        }
        c.read_to_close().await;
    }
    assert_eq!(answered, 10, "exactly the threshold of guesses is verified");
    assert!(throttled >= 1 && closed_after_throttle == throttled);
    // Even the right password is refused from that address now.
    let mut c = attacker(&srv).await;
    c.starttls(&cert).await;
    let r = c.auth_plain("alice", "secret").await;
    assert!(r.contains("<temporary-auth-failure/>"), "{r}");
    // The same account from another address is unaffected.
    legit_login_and_ping(&srv).await;
    let m = srv.server().core.metrics.render();
    assert!(
        m.lines()
            .any(|l| l.contains("throttled") && l.starts_with("oxpecker_auth")),
        "{m}"
    );
}

#[tokio::test]
async fn an_offline_backlog_larger_than_the_send_queue_streams_to_a_clean_login() {
    let srv = TestServer::start_with(|c| c.c2s.send_queue = 32).await;
    srv.add_user("alice@localhost", "secret").await;
    srv.add_user("bob@localhost", "secret").await;
    let mut bob = RawClient::login(&srv, "bob", "secret", "b").await;
    let backlog = 100;
    for i in 0..backlog {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='m{i}'><body>backlog {i}</body></message>"
        ))
        .await;
    }
    let alice_jid = common::jid("alice@localhost");
    for _ in 0..500 {
        if oxpecker::modules::offline::count(&srv.server().core, &alice_jid).await == backlog {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        oxpecker::modules::offline::count(&srv.server().core, &alice_jid).await,
        backlog
    );
    // Two logins in a row: each gets a clean session (the first takes everything).
    let mut alice = RawClient::login(&srv, "alice", "secret", "phone").await;
    alice.send("<presence/>").await;
    for i in 0..backlog {
        let m = alice.read_stanza("message").await;
        assert!(
            m.contains(&format!("backlog {i}<")),
            "message {i} in order: {m}"
        );
    }
    alice
        .send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let rest = alice.read_until("id=\"after\"").await;
    assert!(!rest.contains("resource-constraint"), "{rest}");
    assert_eq!(
        oxpecker::modules::offline::count(&srv.server().core, &alice_jid).await,
        0
    );
}
