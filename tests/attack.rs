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
    // Each page is deleted once queued: the last deletion may land just after the ping.
    let mut left = backlog;
    for _ in 0..250 {
        left = oxpecker::modules::offline::count(&srv.server().core, &alice_jid).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "every delivered message was deleted");
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

/// A full login (STARTTLS, PLAIN, bind) from the attacker's address.
async fn attacker_login(srv: &TestServer, user: &str, resource: &str) -> RawClient {
    let mut c = attacker(srv).await;
    c.starttls(&srv.cert_pem()).await;
    let r = c.auth_plain(user, "secret").await;
    assert!(r.contains("<success"), "{r}");
    c.bind(resource).await;
    c
}

/// This process's resident memory in KiB (server and test clients together), for the log.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Reads the value of a metric line starting with `prefix` (0 if absent).
fn metric(srv: &TestServer, prefix: &str) -> f64 {
    srv.server()
        .core
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn idle_and_slowloris_floods_leave_logins_working() {
    let srv = TestServer::start_with(|c| {
        c.limits.exempt_addresses.clear();
        c.limits.max_preauth_per_address = 150;
        c.c2s.negotiation_timeout_secs = 60;
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    let addr = srv.c2s();
    let rss_before = rss_kib();
    // 100 slowloris streams: a stream header one byte at a time, never finished.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = connect_from_attacker(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"<?xml ").await.unwrap();
        slow.push(s);
    }
    let mut ticker = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            for s in slow.iter_mut() {
                let _ = s.write_all(b" ").await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    // 5,000 idle connections: past the limits they are closed at once.
    let mut idle = Vec::new();
    for _ in 0..5_000 {
        match connect_from_attacker(addr).await {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    // A legitimate client logs in and pings meanwhile (RawClient reads time out after 10 s).
    let t = std::time::Instant::now();
    legit_login_and_ping(&srv).await;
    eprintln!(
        "flood: {} idle + 100 slowloris; legit login + ping took {:?}; RSS {} KiB -> {} KiB",
        idle.len(),
        t.elapsed(),
        rss_before,
        rss_kib()
    );
    let core = &srv.server().core;
    assert!(
        core.admission.preauth() <= 150,
        "{}",
        core.admission.preauth()
    );
    assert!(
        metric(&srv, "oxpecker_refused_connections_total") >= 4_000.0,
        "most of the idle flood was refused: {}",
        srv.server().core.metrics.render()
    );
    ticker.abort();
    let _ = (&mut ticker).await;
    drop(idle);
}

#[tokio::test]
async fn a_flooding_client_is_slowed_not_killed_and_others_still_get_through() {
    let rate = 32 * 1024;
    let burst = 256 * 1024;
    let srv = TestServer::start_with(|c| {
        c.limits.exempt_addresses.clear();
        c.limits.c2s_read_rate = rate;
        c.limits.c2s_read_burst = burst;
    })
    .await;
    for u in ["mallory", "bob", "carol"] {
        srv.add_user(&format!("{u}@localhost"), "secret").await;
    }
    let mut bob = RawClient::login(&srv, "bob", "secret", "b").await;
    let mut carol = RawClient::login(&srv, "carol", "secret", "c").await;
    let mallory = attacker_login(&srv, "mallory", "m").await;
    let mallory_jid = common::jid(&mallory.jid);
    let (_mallory_r, mut mallory_w) = tokio::io::split(mallory.io);
    let body = "x".repeat(1000);
    let stanza = format!("<message to='bob@localhost/b' type='chat'><body>{body}</body></message>");
    let start = std::time::Instant::now();
    // 1 KiB stanzas for 3 s, as fast as the socket takes them (whole stanzas only).
    let len = stanza.len();
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut written = 0usize;
        while start.elapsed() < std::time::Duration::from_secs(3) {
            if mallory_w.write_all(stanza.as_bytes()).await.is_err() {
                return (written, false);
            }
            written += stanza.len();
        }
        (written, true)
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // Carol's message still reaches bob while the server reads mallory slowly.
    carol
        .send("<message to='bob@localhost/b' type='chat' id='legit'><body>from carol</body></message>")
        .await;
    let mut from_mallory = 0usize;
    loop {
        let m = bob.read_stanza("message").await;
        if m.contains("from carol") {
            break;
        }
        from_mallory += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Upper bound on what the server can have read from mallory: the burst plus the rate.
    let most = (burst as f64 + rate as f64 * (elapsed + 1.0)) / len as f64;
    assert!(
        (from_mallory as f64) <= most,
        "{from_mallory} messages read in {elapsed:.1} s, at most {most:.0} allowed"
    );
    assert!(
        (from_mallory * len) as u64 >= burst / 2,
        "the burst went through: {from_mallory} messages"
    );
    // Slowed, not killed: mallory's session is still there.
    assert!(srv.server().core.sessions.get(&mallory_jid).is_some());
    flood.abort();
}

#[tokio::test]
async fn a_12_digit_year_in_a_mam_query_is_a_bad_request_not_a_wrap() {
    let srv = TestServer::start().await;
    srv.add_user("alice@localhost", "secret").await;
    let mut a = attacker_login(&srv, "alice", "y").await;
    for (id, value) in [
        ("y12", "999999999999-01-01T00:00:00Z"),
        ("yneg", "-99999999999-01-01T00:00:00Z"),
        ("ymax", "9223372036854775807-01-01T00:00:00Z"),
    ] {
        a.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='start'><value>{value}</value></field></x></query></iq>"
        ))
        .await;
        let r = a.read_until(&format!("id=\"{id}\"")).await;
        let rest = a.read_until("</iq>").await;
        assert!(rest.contains("<bad-request "), "{value}: {r}{rest}");
    }
    legit_login_and_ping(&srv).await;
}

#[tokio::test]
async fn hostile_xml_from_the_attacker_gets_stream_errors_and_logins_go_on() {
    let srv = TestServer::start().await;
    srv.add_user("alice@localhost", "secret").await;
    let header = common::HEADER;
    let deep = "<a>".repeat(20_000);
    let attrs: String = (0..20_000).map(|i| format!(" a{i}='x'")).collect();
    let xmlns: String = (0..20_000)
        .map(|i| format!(" xmlns:p{i}='urn:x:{i}'"))
        .collect();
    let cases = [
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]><lolz>&lol2;</lolz>".to_string(),
        format!("{header}<message>{deep}"),
        format!("{header}<message{attrs}/>"),
        format!("{header}<message{xmlns}/>"),
        format!("{header}<message><body>\u{FFFD}</body></message>").replace('\u{FFFD}', "\u{0}"),
        format!(
            "{header}<message from='admin@localhost' to='alice@localhost'><body>spoof</body></message>"
        ),
    ];
    for payload in cases.iter() {
        let mut c = attacker(&srv).await;
        let _ = c.try_send(payload).await;
        let mut bytes = payload.as_bytes().to_vec();
        bytes.truncate(40);
        let out = c.read_to_close().await;
        assert!(
            out.contains("<stream:error>"),
            "{:?} → {out}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Invalid UTF-8 (raw bytes).
    let mut c = attacker(&srv).await;
    let mut raw = header.as_bytes().to_vec();
    raw.extend_from_slice(b"<message><body>\xff\xfe</body></message>");
    {
        use tokio::io::AsyncWriteExt;
        let _ = c.io.write_all(&raw).await;
    }
    let out = c.read_to_close().await;
    assert!(out.contains("<stream:error>"), "{out}");
    legit_login_and_ping(&srv).await;
}

/// Opens a server-to-server stream to `addr` from 127.0.0.1 and reads its features.
async fn legit_s2s_stream(addr: SocketAddr) -> String {
    let mut c = RawClient::connect(addr).await;
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='peer.example' to='localhost' version='1.0'>").await;
    c.read_until("</stream:features>").await
}

#[tokio::test]
async fn an_s2s_connection_flood_is_refused_at_accept_and_idle_streams_time_out() {
    let srv = TestServer::start_with(|c| {
        c.limits.exempt_addresses.clear();
        c.s2s.max_preauth_per_ip = 5;
        c.s2s.accept_rate_per_ip = 0;
        c.s2s.negotiation_timeout_secs = 2;
    })
    .await;
    srv.add_user("alice@localhost", "secret").await;
    let addr = srv.server().s2s_addrs[0];
    let core = &srv.server().core;
    let s2s_refused = "oxpecker_refused_connections_total{listener=\"s2s\"";
    // 100 idle connections from one address: 5 are let in to negotiate, the rest closed at once.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(connect_from_attacker(addr).await.unwrap());
    }
    for _ in 0..500 {
        if metric(&srv, s2s_refused) >= 95.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&srv, s2s_refused), 95.0, "{}", core.metrics.render());
    assert!(
        core.admission
            .preauth_on(oxpecker::core::admission::Listener::S2s)
            <= 5
    );
    // Another server's address still gets a stream, and clients log in as usual.
    let features = legit_s2s_stream(addr).await;
    assert!(features.contains("<stream:features"), "{features}");
    legit_login_and_ping(&srv).await;
    assert_eq!(
        metric(&srv, "oxpecker_refused_connections_total{listener=\"c2s\""),
        0.0
    );
    // The admitted idle streams are closed by the negotiation timeout, freeing their slots.
    let mut closed = 0;
    for s in idle {
        let mut c = RawClient {
            io: Box::new(s),
            buf: String::new(),
            jid: String::new(),
        };
        c.read_to_close().await;
        closed += 1;
    }
    assert_eq!(closed, 100);
    for _ in 0..500 {
        if core
            .admission
            .preauth_on(oxpecker::core::admission::Listener::S2s)
            <= 1
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        core.admission
            .preauth_on(oxpecker::core::admission::Listener::S2s)
            <= 1
    );
    let mut c = RawClient {
        io: Box::new(connect_from_attacker(addr).await.unwrap()),
        buf: String::new(),
        jid: String::new(),
    };
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>").await;
    let out = c.read_until("</stream:features>").await;
    assert!(
        out.contains("<stream:features"),
        "the attacker's slots came back: {out}"
    );
}

/// A session that never reads, flooded until the global queue budget is spent, is closed with
/// `<policy-violation/>`; the queued bytes stay within the budget and its headroom, and a
/// session that reads keeps getting its messages.
#[tokio::test]
async fn a_spent_queue_budget_closes_the_largest_queue_with_policy_violation() {
    use tokio::io::AsyncWriteExt;
    const BUDGET: usize = 256 * 1024;
    let srv = TestServer::start_with(|c| {
        c.limits.queue_budget_bytes = BUDGET;
        // The per-session bound alone would never trigger: only the global budget can.
        c.c2s.send_queue = 1_000_000;
        c.modules_disabled = vec!["mam".into()];
    })
    .await;
    for u in ["bob", "carol", "dave"] {
        srv.add_user(&format!("{u}@localhost"), "secret").await;
    }
    // Bob logs in and then never reads: once the sockets' buffers are full his queue grows.
    let mut bob = RawClient::login(&srv, "bob", "secret", "b").await;
    let bob_jid = common::jid(&bob.jid);
    let mut carol = RawClient::login(&srv, "carol", "secret", "c").await;
    let mut dave = RawClient::login(&srv, "dave", "secret", "d").await;
    let core = srv.server().core.clone();
    // Headlines: what bob's queue held when he is shed is dropped, not stored offline or bounced.
    let body = "x".repeat(1000);
    let to_bob =
        format!("<message to='bob@localhost/b' type='headline'><body>{body}</body></message>");
    let batch = to_bob.repeat(100);
    let mut sent = 0;
    // At most 100 MiB: far more than loopback socket buffers and the budget together.
    while core.sessions.get(&bob_jid).is_some() && sent < 100_000 {
        carol.io.write_all(batch.as_bytes()).await.unwrap();
        sent += 100;
    }
    assert!(
        core.sessions.get(&bob_jid).is_none(),
        "bob was never shed after {sent} messages; queued {} bytes",
        core.budget.used()
    );
    // Every stanza went to bob, so the one that found the budget spent was his own: refused,
    // and the total never went over the budget (nothing charged past it, headroom unused).
    let peak = core.budget.high_water();
    assert!(
        peak <= BUDGET + BUDGET / 4 + 2048,
        "queued bytes peaked at {peak}, budget {BUDGET}"
    );
    assert!(core.budget.shed_count() >= 1);
    assert!(metric(&srv, "oxpecker_queue_budget_shed_total") >= 1.0);
    // Bob reads what was written to him and then the stream error.
    let rest = bob.read_to_close().await;
    assert!(
        rest.contains("<policy-violation"),
        "{}",
        &rest[rest.len().saturating_sub(500)..]
    );
    // Dave, who reads, still gets messages, and carol's session is untouched.
    carol
        .send("<message to='dave@localhost/d' type='chat' id='after'><body>still here</body></message>")
        .await;
    common::read_until_contains(&mut dave, "message", "still here").await;
    // Bob's queue was given back: nothing stays charged once his session is gone.
    let mut left = core.budget.used();
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = core.budget.used();
    }
    assert_eq!(left, 0, "bytes still charged after the shed session ended");
}
