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

/// Sends one HTTP/1.1 request with a body of `size` bytes (declared, or chunked when
/// `declared` is false) in a task of its own, and returns the response head and body text.
async fn http_with_big_body(
    addr: SocketAddr,
    auth: Option<&str>,
    size: usize,
    declared: bool,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let mut head =
        "POST /admin_rest/user/x HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            .to_string();
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if declared {
        head.push_str(&format!("Content-Length: {size}\r\n\r\n"));
    } else {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    }
    let writer = tokio::spawn(async move {
        w.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            if declared {
                w.write_all(&chunk[..n]).await?;
            } else {
                w.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                w.write_all(&chunk[..n]).await?;
                w.write_all(b"\r\n").await?;
            }
            left -= n;
        }
        if !declared {
            w.write_all(b"0\r\n\r\n").await?;
        }
        w.flush().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, r.read(&mut buf))
            .await
            .expect("an answer within 30 s")
            .expect("an answer, not a reset connection");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let _ = writer.await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_20_mib_rest_body_gets_413_with_the_json_error() {
    let srv = TestServer::start_with(|c| c.admins = vec!["admin@localhost".into()]).await;
    srv.add_user("admin@localhost", "secret").await;
    let size = 20 * 1024 * 1024;
    // Declared, before authentication is even looked at.
    let r = http_with_big_body(srv.http(), None, size, true).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("\"error\":\"body_too_large\""), "{r}");
    // Chunked (no length), from an admin.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin@localhost:secret")
    );
    let r = http_with_big_body(srv.http(), Some(&basic), size, false).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("\"error\":\"body_too_large\""), "{r}");
    // The API still answers.
    let r = http_with_big_body(srv.http(), Some(&basic), 0, true).await;
    assert!(!r.starts_with("HTTP/1.1 413"), "{r}");
}
