//! Federation: two Oxpecker servers in one process (`a.example`, `b.example`) joined by their
//! `[s2s.hosts]` tables, plus raw server peers on real sockets for the faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{PASSWORD, RawClient, TestServer, client_tls, read_until_contains};
use oxpecker::config::Config;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const A: &str = "a.example";
const B: &str = "b.example";

fn host(cfg: &mut Config, name: &str) {
    cfg.hosts = vec![oxpecker::config::HostConfig {
        name: name.into(),
        ..Default::default()
    }];
}

fn s2s_addr(srv: &TestServer) -> SocketAddr {
    srv.server().s2s_addrs[0]
}

/// Points `srv`'s `[s2s.hosts]` entry for `domain` at `addr` (a live config swap, as a reload does).
fn point(srv: &TestServer, domain: &str, addr: SocketAddr) {
    let core = &srv.server().core;
    let mut cfg = (**core.config.load()).clone();
    cfg.s2s.hosts.insert(domain.into(), addr);
    core.config.store(Arc::new(cfg));
}

/// `a.example` with alice and `b.example` with bob, each knowing where the other listens.
async fn pair(tweak_b: impl FnOnce(&mut Config)) -> (TestServer, TestServer) {
    let a = TestServer::start_with(|c| host(c, A)).await;
    let b = TestServer::start_with(|c| {
        host(c, B);
        tweak_b(c);
    })
    .await;
    point(&a, B, s2s_addr(&b));
    point(&b, A, s2s_addr(&a));
    a.add_user("alice@a.example", PASSWORD).await;
    b.add_user("bob@b.example", PASSWORD).await;
    (a, b)
}

fn client_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// A client of `srv` logged in as `user@domain/resource` over STARTTLS + PLAIN.
async fn login(srv: &TestServer, domain: &str, user: &str, resource: &str) -> RawClient {
    login_trusting(srv, domain, user, resource, &srv.cert_pem(), domain).await
}

/// [`login`] trusting the certificates in `roots` (PEM) for the TLS name `tls_name`.
async fn login_trusting(
    srv: &TestServer,
    domain: &str,
    user: &str,
    resource: &str,
    roots: &[u8],
    tls_name: &str,
) -> RawClient {
    let header = client_header(domain);
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    c.read_until("<proceed").await;
    c.read_until("/>").await;
    let io = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
    let name = rustls_pki_types::ServerName::try_from(tls_name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_tls(roots))
        .connect(name, io)
        .await
        .unwrap();
    c.io = Box::new(tls);
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    let r = c.auth_plain(user, PASSWORD).await;
    assert!(r.contains("<success"), "{r}");
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    c.send(&format!(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ))
    .await;
    let reply = c.read_until("</iq>").await;
    assert!(
        reply.contains(&format!("{user}@{domain}/{resource}")),
        "{reply}"
    );
    c.jid = format!("{user}@{domain}/{resource}");
    c
}

/// Sends a message to `to` and expects it back as a `remote-server-not-found` error.
async fn assert_bounces(c: &mut RawClient, to: &str, id: &str) {
    c.send(&format!(
        "<message to='{to}' id='{id}'><body>?</body></message>"
    ))
    .await;
    let got = read_until_contains(c, "message", id).await;
    assert!(got.contains("remote-server-not-found"), "{got}");
}

/// Logged in and available (initial presence sent, its echo read).
async fn online(srv: &TestServer, domain: &str, user: &str, resource: &str) -> RawClient {
    let mut c = login(srv, domain, user, resource).await;
    c.send("<presence/>").await;
    read_until_contains(&mut c, "presence", &format!("{user}@{domain}/{resource}")).await;
    c
}

#[tokio::test]
async fn messages_cross_both_ways_over_dialback() {
    let (a, b) = pair(|_| {}).await;
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.example' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let got = read_until_contains(&mut bob, "message", "hi bob").await;
    assert!(got.contains("from=\"alice@a.example/pc\""), "{got}");
    bob.send(
        "<message to='alice@a.example/pc' type='chat' id='m2'><body>hi alice</body></message>",
    )
    .await;
    let got = read_until_contains(&mut alice, "message", "hi alice").await;
    assert!(got.contains("from=\"bob@b.example/phone\""), "{got}");

    // Each side now has an authenticated outgoing and incoming stream, both over TLS.
    let streams = a.server().core.federation.get().unwrap().streams();
    let out = streams
        .iter()
        .find(|s| s.direction == "outgoing" && s.remote == B)
        .expect("outgoing a→b");
    assert_eq!(
        (out.local.as_str(), out.auth, out.tls),
        (A, "dialback", true)
    );
    assert_eq!(out.tls_version.as_deref(), Some("TLSv1_3"), "{out:?}");
    assert!(
        out.cipher
            .as_deref()
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{out:?}"
    );
    assert!(
        streams
            .iter()
            .any(|s| s.direction == "incoming" && s.remote == B && s.auth == "dialback"),
        "{streams:?}"
    );
    let metrics = a.server().core.metrics.render();
    assert!(
        metrics.contains("oxpecker_s2s_connections{direction=\"outgoing\",auth=\"dialback\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn message_to_an_offline_remote_user_waits_offline() {
    let (a, b) = pair(|_| {}).await;
    let mut alice = online(&a, A, "alice", "pc").await;
    alice
        .send("<message to='bob@b.example' type='chat'><body>while you were out</body></message>")
        .await;
    // The message is stored on b.example once it arrived there.
    let offline = b.server().core.store.archive(B, "offline");
    let mut stored = false;
    for _ in 0..200 {
        let n = offline.count("bob").await.unwrap_or(0);
        if n > 0 {
            stored = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(stored, "message not stored offline on b.example");
    let mut bob = online(&b, B, "bob", "phone").await;
    let got = read_until_contains(&mut bob, "message", "while you were out").await;
    assert!(got.contains("alice@a.example"), "{got}");
}

#[tokio::test]
async fn ping_of_the_remote_server_is_an_iq_round_trip() {
    let (a, _b) = pair(|_| {}).await;
    let mut alice = login(&a, A, "alice", "pc").await;
    alice
        .send("<iq type='get' to='b.example' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let got = read_until_contains(&mut alice, "iq", "p1").await;
    assert!(got.contains("type=\"result\""), "{got}");
    assert!(got.contains("from=\"b.example\""), "{got}");
    alice
        .send("<iq type='get' to='b.example' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let got = read_until_contains(&mut alice, "iq", "d1").await;
    assert!(got.contains("urn:xmpp:ping"), "{got}");
}

#[tokio::test]
async fn unknown_and_unreachable_domains_bounce() {
    let (a, _b) = pair(|_| {}).await;
    // A port nothing listens on.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    point(&a, "dead.example", dead);
    let mut alice = login(&a, A, "alice", "pc").await;
    assert_bounces(&mut alice, "x@nowhere.example", "n1").await;
    assert_bounces(&mut alice, "x@dead.example", "n2").await;
    let metrics = a.server().core.metrics.render();
    assert!(
        metrics.contains("oxpecker_s2s_failed_connects_total{reason=\"not_found\"} 1"),
        "{metrics}"
    );
    // Local delivery and the other domain's stream are unaffected.
    alice
        .send("<iq type='get' to='b.example' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let got = read_until_contains(&mut alice, "iq", "p2").await;
    assert!(got.contains("type=\"result\""), "{got}");
}

// ---- raw server peers (b.example accepts plaintext streams for these) ----

const PEER_HEADER_NS: &str = "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'";

fn peer_header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream {PEER_HEADER_NS} from='{from}' to='{to}' version='1.0'>"
    )
}

fn attr<'a>(s: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let alt = format!("{name}='");
    let (start, quote) = match s.find(&key) {
        Some(i) => (i + key.len(), '"'),
        None => (s.find(&alt).expect(name) + alt.len(), '\''),
    };
    let end = s[start..].find(quote).unwrap() + start;
    &s[start..end]
}

/// An authoritative server for `domain` that confirms every key it is asked about.
async fn yes_authority(domain: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut c = RawClient {
                    io: Box::new(tcp),
                    buf: String::new(),
                    jid: String::new(),
                };
                c.read_until("version='1.0'>").await;
                c.send(&format!(
                    "<stream:stream {PEER_HEADER_NS} id='auth1' from='{domain}' version='1.0'><stream:features/>"
                ))
                .await;
                let v = c.read_until("</verify>").await;
                let (id, from) = (attr(&v, "id").to_string(), attr(&v, "from").to_string());
                c.send(&format!(
                    "<db:verify from='{domain}' to='{from}' id='{id}' type='valid'/>"
                ))
                .await;
                let _ = c.io.read(&mut [0u8; 64]).await;
            });
        }
    });
    addr
}

/// A raw plaintext server stream to `srv` that authenticated as `from` by dialback.
async fn raw_peer(srv: &TestServer, from: &str, key: &str) -> (RawClient, String) {
    let mut p = RawClient::connect(s2s_addr(srv)).await;
    p.send(&peer_header(from, B)).await;
    p.read_until("</stream:features>").await;
    p.send(&format!(
        "<db:result from='{from}' to='{B}'>{key}</db:result>"
    ))
    .await;
    let r = p.read_stanza("result").await;
    (p, r)
}

fn plaintext_b(c: &mut Config) {
    c.s2s.require_encryption = false;
    c.s2s.max_stanza_size = 10_000;
    c.s2s.negotiation_timeout_secs = 2;
}

#[tokio::test]
async fn authenticated_peer_delivers_and_is_held_to_its_domain() {
    let (_a, b) = pair(plaintext_b).await;
    point(&b, "c.example", yes_authority("c.example").await);
    let mut bob = online(&b, B, "bob", "phone").await;
    let (mut peer, r) = raw_peer(&b, "c.example", "anykey").await;
    assert!(r.contains("type=\"valid\""), "{r}");
    peer.send("<message from='carol@c.example/x' to='bob@b.example' type='chat'><body>from c</body></message>")
        .await;
    let got = read_until_contains(&mut bob, "message", "from c").await;
    assert!(got.contains("carol@c.example/x"), "{got}");
    // A spoofed sender domain ends the stream with invalid-from.
    peer.send("<message from='mallory@a.example' to='bob@b.example'><body>spoof</body></message>")
        .await;
    let closed = peer.read_to_close().await;
    assert!(closed.contains("<invalid-from"), "{closed}");
    assert!(!closed.contains("spoof"));
}

#[tokio::test]
async fn stanza_to_a_domain_not_served_is_host_unknown() {
    let (_a, b) = pair(plaintext_b).await;
    point(&b, "c.example", yes_authority("c.example").await);
    let (mut peer, _) = raw_peer(&b, "c.example", "k").await;
    peer.send(
        "<message from='carol@c.example' to='x@elsewhere.example'><body>relay?</body></message>",
    )
    .await;
    let closed = peer.read_to_close().await;
    assert!(closed.contains("<host-unknown"), "{closed}");
    // A stream header for a domain not served is refused the same way.
    let mut p = RawClient::connect(s2s_addr(&b)).await;
    p.send(&peer_header("c.example", "elsewhere.example")).await;
    let closed = p.read_to_close().await;
    assert!(closed.contains("<host-unknown"), "{closed}");
}

#[tokio::test]
async fn oversized_stanza_is_a_policy_violation() {
    let (_a, b) = pair(plaintext_b).await;
    point(&b, "c.example", yes_authority("c.example").await);
    let (mut peer, _) = raw_peer(&b, "c.example", "k").await;
    let body = "x".repeat(20_000);
    let _ = peer
        .try_send(&format!(
            "<message from='carol@c.example' to='bob@b.example'><body>{body}</body></message>"
        ))
        .await;
    let closed = peer.read_to_close().await;
    assert!(closed.contains("<policy-violation"), "{closed}");
}

#[tokio::test]
async fn wrong_dialback_key_is_refused_by_the_authoritative_server() {
    let (_a, b) = pair(plaintext_b).await;
    // a.example is real: it never made this key, so b.example hears `invalid` from it.
    let (mut peer, r) = raw_peer(&b, A, "00ff00ff").await;
    assert!(r.contains("type=\"invalid\""), "{r}");
    let closed = peer.read_to_close().await;
    assert!(closed.contains("<not-authorized"), "{closed}");
}

#[tokio::test]
async fn stanzas_before_authentication_and_stalled_negotiation_are_refused() {
    let (_a, b) = pair(plaintext_b).await;
    let mut p = RawClient::connect(s2s_addr(&b)).await;
    p.send(&peer_header("c.example", B)).await;
    p.read_until("</stream:features>").await;
    p.send("<message from='carol@c.example' to='bob@b.example'><body>early</body></message>")
        .await;
    let closed = p.read_to_close().await;
    assert!(closed.contains("<not-authorized"), "{closed}");
    // A peer that opens a stream and then says nothing is closed at the negotiation deadline.
    let mut p = RawClient::connect(s2s_addr(&b)).await;
    p.send(&peer_header("c.example", B)).await;
    let closed = p.read_to_close().await;
    assert!(closed.contains("<connection-timeout"), "{closed}");
}

#[tokio::test]
async fn encryption_is_required_by_default() {
    let (a, _b) = pair(|_| {}).await;
    let mut p = RawClient::connect(s2s_addr(&a)).await;
    p.send(&peer_header("c.example", A)).await;
    let features = p.read_until("</stream:features>").await;
    assert!(features.contains("<required"), "{features}");
    assert!(
        !features.contains("urn:xmpp:features:dialback"),
        "{features}"
    );
    p.send(&format!(
        "<db:result from='c.example' to='{A}'>k</db:result>"
    ))
    .await;
    let closed = p.read_to_close().await;
    assert!(closed.contains("<policy-violation"), "{closed}");
}

async fn subscription(core: &oxpecker::core::Core, user: &str, contact: &str) -> &'static str {
    core.roster
        .item(&common::jid(user), &common::jid(contact))
        .await
        .unwrap()
        .map(|i| i.subscription.as_str())
        .unwrap_or("absent")
}

/// Waits until `user`'s roster item for `contact` reaches `want`.
async fn wait_subscription(core: &oxpecker::core::Core, user: &str, contact: &str, want: &str) {
    for _ in 0..250 {
        if subscription(core, user, contact).await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "{user} → {contact}: {} instead of {want}",
        subscription(core, user, contact).await
    );
}

#[tokio::test]
async fn subscription_handshake_ends_in_both_on_both_sides_with_presence_and_probes() {
    let (a, b) = pair(|_| {}).await;
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    alice
        .send("<presence to='bob@b.example' type='subscribe'/>")
        .await;
    let req = read_until_contains(&mut bob, "presence", "subscribe").await;
    assert!(req.contains("from=\"alice@a.example\""), "{req}");
    bob.send("<presence to='alice@a.example' type='subscribed'/>")
        .await;
    // The approval arrives, followed by bob's current presence.
    read_until_contains(&mut alice, "presence", "subscribed").await;
    let p = read_until_contains(&mut alice, "presence", "bob@b.example/phone").await;
    assert!(!p.contains("type="), "{p}");
    bob.send("<presence to='alice@a.example' type='subscribe'/>")
        .await;
    read_until_contains(&mut alice, "presence", "type=\"subscribe\"").await;
    alice
        .send("<presence to='bob@b.example' type='subscribed'/>")
        .await;
    read_until_contains(&mut bob, "presence", "alice@a.example/pc").await;
    let (ca, cb) = (&a.server().core, &b.server().core);
    wait_subscription(ca, "alice@a.example", "bob@b.example", "both").await;
    wait_subscription(cb, "bob@b.example", "alice@a.example", "both").await;

    // Logging out sends unavailable across; logging in probes the remote contact.
    drop(alice);
    let gone = read_until_contains(&mut bob, "presence", "alice@a.example/pc").await;
    assert!(gone.contains("unavailable"), "{gone}");
    common::wait_offline(&a, "alice@a.example").await;
    let mut alice = online(&a, A, "alice", "laptop").await;
    let seen = read_until_contains(&mut alice, "presence", "bob@b.example/phone").await;
    assert!(!seen.contains("unavailable"), "{seen}");
}

/// A REST call to `srv`'s admin API as `admin@domain` (password [`PASSWORD`]).
async fn rest(
    srv: &TestServer,
    domain: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .request(method, format!("http://{}/admin_rest{path}", srv.http()))
        .basic_auth(format!("admin@{domain}"), Some(PASSWORD));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn rest_roster_add_of_a_remote_contact_sends_the_request_and_s2s_admin_lists_and_closes() {
    let (a, b) = pair(|_| {}).await;
    {
        let core = &a.server().core;
        let mut cfg = (**core.config.load()).clone();
        cfg.admins = vec!["admin@a.example".into()];
        core.config.store(Arc::new(cfg));
    }
    a.add_user("admin@a.example", PASSWORD).await;
    let mut bob = online(&b, B, "bob", "phone").await;
    let (status, body) = rest(
        &a,
        A,
        reqwest::Method::POST,
        "/roster/alice",
        Some(serde_json::json!({"contact": "bob@b.example"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        "Subscription requested: alice@a.example to bob@b.example"
    );
    let req = read_until_contains(&mut bob, "presence", "type=\"subscribe\"").await;
    assert!(req.contains("from=\"alice@a.example\""), "{req}");
    bob.send("<presence to='alice@a.example' type='subscribed'/>")
        .await;
    wait_subscription(&a.server().core, "alice@a.example", "bob@b.example", "to").await;

    // GET /s2s shows the streams; DELETE closes them; the next stanza reconnects.
    let (status, body) = rest(&a, A, reqwest::Method::GET, "/s2s", None).await;
    assert_eq!(status, 200, "{body}");
    let streams = body["result"]["s2s"].as_array().unwrap();
    assert!(
        streams.iter().any(|s| s["direction"] == "outgoing"
            && s["remote"] == B
            && s["auth"] == "dialback"
            && s["tls"] == true),
        "{body}"
    );
    let (status, body) = rest(
        &a,
        A,
        reqwest::Method::DELETE,
        "/s2s/a.example/b.example",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let federation = a.server().core.federation.get().unwrap().clone();
    for _ in 0..250 {
        if !federation
            .streams()
            .iter()
            .any(|s| s.direction == "outgoing")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !federation
            .streams()
            .iter()
            .any(|s| s.direction == "outgoing"),
        "{:?}",
        federation.streams()
    );
    let mut alice = login(&a, A, "alice", "pc").await;
    alice
        .send("<message to='bob@b.example' type='chat'><body>after close</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "after close").await;
    let (status, _) = rest(
        &a,
        A,
        reqwest::Method::DELETE,
        "/s2s/a.example/nowhere.example",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

// ---- certificates from a test CA: SASL EXTERNAL and secure_auth ----

/// A CA made for one test, issuing server certificates into `dir`.
struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        TestCa {
            cert,
            issuer: rcgen::Issuer::new(p, key),
            dir,
        }
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    /// Issues a certificate naming `dns` and configures `cfg` to use it and to trust this CA only.
    fn use_for(&self, cfg: &mut Config, dns: &str) {
        let mut p = rcgen::CertificateParams::new(vec![dns.to_string()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{dns}.pem")),
            self.dir.path().join(format!("{dns}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        cfg.tls.certificate = Some(c);
        cfg.tls.key = Some(k);
        cfg.s2s.system_roots = false;
        cfg.s2s.ca_files = vec![self.dir.path().join("ca.pem")];
    }
}

#[tokio::test]
async fn sasl_external_with_certificates_from_a_test_ca() {
    let ca = TestCa::new();
    let a = TestServer::start_with(|c| {
        host(c, A);
        ca.use_for(c, A);
        c.s2s.secure_auth = true;
    })
    .await;
    let b = TestServer::start_with(|c| {
        host(c, B);
        ca.use_for(c, B);
        c.s2s.secure_auth = true;
    })
    .await;
    point(&a, B, s2s_addr(&b));
    point(&b, A, s2s_addr(&a));
    a.add_user("alice@a.example", PASSWORD).await;
    b.add_user("bob@b.example", PASSWORD).await;
    let mut alice = login_trusting(&a, A, "alice", "pc", &ca.pem(), A).await;
    let mut bob = login_trusting(&b, B, "bob", "phone", &ca.pem(), B).await;
    alice
        .send("<message to='bob@b.example/phone' type='chat'><body>signed</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "signed").await;
    bob.send("<message to='alice@a.example/pc' type='chat'><body>sealed</body></message>")
        .await;
    read_until_contains(&mut alice, "message", "sealed").await;
    for (srv, remote) in [(&a, B), (&b, A)] {
        let streams = srv.server().core.federation.get().unwrap().streams();
        for direction in ["outgoing", "incoming"] {
            let s = streams
                .iter()
                .find(|s| s.direction == direction && s.remote == remote)
                .unwrap_or_else(|| panic!("no {direction} stream: {streams:?}"));
            assert_eq!(
                (s.auth, s.tls, s.cert_valid),
                ("external", true, true),
                "{s:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_certificate_for_another_domain_is_refused_with_secure_auth() {
    let ca = TestCa::new();
    // a.example presents a valid certificate, but for other.example.
    let a = TestServer::start_with(|c| {
        host(c, A);
        ca.use_for(c, "other.example");
    })
    .await;
    let b = TestServer::start_with(|c| {
        host(c, B);
        ca.use_for(c, B);
        c.s2s.secure_auth = true;
    })
    .await;
    point(&a, B, s2s_addr(&b));
    point(&b, A, s2s_addr(&a));
    a.add_user("alice@a.example", PASSWORD).await;
    let mut alice = login_trusting(&a, A, "alice", "pc", &ca.pem(), "other.example").await;
    alice
        .send("<message to='bob@b.example' id='s1'><body>let me in</body></message>")
        .await;
    let got = read_until_contains(&mut alice, "message", "s1").await;
    assert!(got.contains("type=\"error\""), "{got}");
    assert!(got.contains("remote-server-not-found"), "{got}");
    assert!(
        !b.server()
            .core
            .federation
            .get()
            .unwrap()
            .streams()
            .iter()
            .any(|s| s.remote == A && s.auth != "none"),
        "a.example must not be authenticated on b.example"
    );
}

#[tokio::test]
async fn insecure_domains_may_still_use_dialback_and_denied_domains_bounce() {
    let ca = TestCa::new();
    let a = TestServer::start_with(|c| {
        host(c, A);
        ca.use_for(c, "other.example");
        c.s2s.deny_domains = vec!["denied.example".into()];
    })
    .await;
    let b = TestServer::start_with(|c| {
        host(c, B);
        ca.use_for(c, B);
        c.s2s.secure_auth = true;
        c.s2s.insecure_domains = vec![A.into()];
    })
    .await;
    point(&a, B, s2s_addr(&b));
    point(&b, A, s2s_addr(&a));
    point(&a, "denied.example", s2s_addr(&b));
    a.add_user("alice@a.example", PASSWORD).await;
    b.add_user("bob@b.example", PASSWORD).await;
    let mut bob = login_trusting(&b, B, "bob", "phone", &ca.pem(), B).await;
    let mut alice = login_trusting(&a, A, "alice", "pc", &ca.pem(), "other.example").await;
    alice
        .send("<message to='bob@b.example/phone' type='chat'><body>by dialback</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "by dialback").await;
    let streams = b.server().core.federation.get().unwrap().streams();
    let s = streams
        .iter()
        .find(|s| s.direction == "incoming" && s.remote == A)
        .unwrap();
    assert_eq!((s.auth, s.cert_valid), ("dialback", false), "{s:?}");
    alice
        .send("<message to='x@denied.example' id='d1'><body>no</body></message>")
        .await;
    let got = read_until_contains(&mut alice, "message", "d1").await;
    assert!(got.contains("not-allowed"), "{got}");
}

// ---- peers that misbehave on our outgoing streams ----

/// A receiving server for `domain` that accepts any dialback key from a.example and then never
/// reads again.
async fn deaf_peer(domain: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut c = RawClient {
                    io: Box::new(tcp),
                    buf: String::new(),
                    jid: String::new(),
                };
                c.read_until("version='1.0'>").await;
                c.send(&format!(
                    "<stream:stream {PEER_HEADER_NS} id='deaf1' from='{domain}' version='1.0'><stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
                ))
                .await;
                c.read_until("</result>").await;
                c.send(&format!(
                    "<db:result from='{domain}' to='{A}' type='valid'/>"
                ))
                .await;
                // Hold the connection open without reading.
                std::future::pending::<()>().await;
                drop(c);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_peer_that_stops_reading_times_out_and_never_blocks_local_delivery() {
    let a = TestServer::start_with(|c| {
        host(c, A);
        c.s2s.require_encryption = false;
        c.s2s.send_timeout_secs = 1;
        c.s2s.queue_size = 4000;
        c.c2s.send_queue = 8192;
    })
    .await;
    point(&a, "deaf.example", deaf_peer("deaf.example").await);
    a.add_user("alice@a.example", PASSWORD).await;
    a.add_user("carol@a.example", PASSWORD).await;
    let mut carol = online(&a, A, "carol", "pc").await;
    let mut alice = login(&a, A, "alice", "pc").await;
    // Far more than the socket buffers hold.
    let body = "x".repeat(8000);
    for i in 0..1500 {
        alice
            .send(&format!(
                "<message to='x@deaf.example' id='f{i}'><body>{body}</body></message>"
            ))
            .await;
    }
    alice
        .send("<message to='carol@a.example' type='chat'><body>still here</body></message>")
        .await;
    read_until_contains(&mut carol, "message", "still here").await;
    let got = read_until_contains(&mut alice, "message", "remote-server-timeout").await;
    assert!(got.contains("type=\"error\""), "{got}");
    // Everything that was queued for the dead stream left the queue (bounced).
    let mut metrics = String::new();
    for _ in 0..250 {
        metrics = a.server().core.metrics.render();
        if metrics.contains("oxpecker_s2s_queued 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(metrics.contains("oxpecker_s2s_queued 0"), "{metrics}");
}

#[tokio::test]
async fn idle_streams_close_and_reconnect_on_demand() {
    let (a, b) = pair(|_| {}).await;
    {
        let core = &a.server().core;
        let mut cfg = (**core.config.load()).clone();
        cfg.s2s.idle_timeout_secs = 1;
        core.config.store(Arc::new(cfg));
    }
    let mut alice = login(&a, A, "alice", "pc").await;
    let mut bob = login(&b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.example/phone' type='chat'><body>one</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "one").await;
    let federation = a.server().core.federation.get().unwrap().clone();
    let outgoing = || {
        federation
            .streams()
            .iter()
            .filter(|s| s.direction == "outgoing")
            .count()
    };
    for _ in 0..250 {
        if outgoing() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(outgoing(), 0, "the idle stream was not closed");
    alice
        .send("<message to='bob@b.example/phone' type='chat'><body>two</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "two").await;
    assert_eq!(outgoing(), 1);
}

/// Records the s2s lifecycle events of its host with their data.
struct S2sRecorder(Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>);

impl oxpecker::core::modules::Module for S2sRecorder {
    fn name(&self) -> &'static str {
        "s2s_recorder"
    }
    fn load(
        &self,
        ctx: &mut oxpecker::core::modules::ModuleContext,
    ) -> Result<(), oxpecker::core::modules::LoadError> {
        use oxpecker::core::lifecycle as ev;
        for event in [
            ev::S2S_AUTHENTICATED,
            ev::S2SIN_ESTABLISHED,
            ev::S2SOUT_ESTABLISHED,
        ] {
            let seen = self.0.clone();
            ctx.hook_event(
                event,
                0,
                Arc::new(move |d: &mut serde_json::Value| {
                    seen.lock().unwrap().push((event.to_string(), d.clone()));
                    None
                }),
            );
        }
        Ok(())
    }
}

#[tokio::test]
async fn s2s_streams_are_announced_as_lifecycle_events() {
    let (a, b) = pair(|_| {}).await;
    let record = |srv: &TestServer, domain: &str| {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let core = &srv.server().core;
        let host = core.host(domain).cloned().unwrap();
        host.load(Arc::downgrade(core), &S2sRecorder(seen.clone()))
            .unwrap();
        seen
    };
    let (seen_a, seen_b) = (record(&a, A), record(&b, B));
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.example' type='chat' id='e1'><body>hello</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "hello").await;
    let find = |seen: &Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>, e: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n == e)
            .map(|(_, d)| d.clone())
    };
    // The stream a→b: a announces it outgoing; b announces the authenticated domain incoming.
    let out = find(&seen_a, "s2sout-established").expect("s2sout-established on a");
    assert_eq!(
        (out["local"].as_str(), out["remote"].as_str()),
        (Some(A), Some(B))
    );
    assert_eq!(
        (out["auth"].as_str(), out["tls"].as_bool()),
        (Some("dialback"), Some(true))
    );
    for event in ["s2s-authenticated", "s2sin-established"] {
        let d = find(&seen_b, event).unwrap_or_else(|| panic!("{event} on b"));
        assert_eq!(
            (d["local"].as_str(), d["remote"].as_str()),
            (Some(B), Some(A)),
            "{event}"
        );
        assert!(
            d["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{d}"
        );
    }
    // Nothing was announced for a stream that does not exist yet (b→a carries no stanza).
    assert!(find(&seen_b, "s2sout-established").is_none());
    drop(alice);
}

// ---- DNS: SRV (RFC 6120 §3.2.1, XEP-0368) and address records from a DNS server on loopback ----

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::rdata::{A as ARecord, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record};
use oxpecker::s2s::resolve::DEFAULT_PORT;

/// A DNS server on a loopback UDP port answering from `records` (name with its trailing dot),
/// with an empty answer for anything else.
async fn fake_dns(records: Vec<(String, RData)>) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
            resp.metadata.authoritative = true;
            resp.metadata.recursion_desired = q.metadata.recursion_desired;
            for query in &q.queries {
                resp.add_query(query.clone());
                for (name, data) in &records {
                    if query.name.to_ascii().eq_ignore_ascii_case(name)
                        && data.record_type() == query.query_type
                    {
                        resp.add_answer(Record::from_rdata(query.name.clone(), 60, data.clone()));
                    }
                }
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), from).await;
        }
    });
    addr
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(
        priority,
        weight,
        port,
        Name::from_ascii(target).unwrap(),
    ))
}

fn a_record(ip: [u8; 4]) -> RData {
    RData::A(ARecord(ip.into()))
}

/// `a.example` finding `b.example` only through `dns` (b knows a statically); alice and bob exist.
async fn pair_over_dns(
    records: impl FnOnce(&TestServer) -> Vec<(String, RData)>,
    tweak_b: impl FnOnce(&mut Config),
) -> (TestServer, TestServer) {
    let b = TestServer::start_with(|c| {
        host(c, B);
        tweak_b(c);
    })
    .await;
    let dns = fake_dns(records(&b)).await;
    let a = TestServer::start_with(|c| {
        host(c, A);
        c.s2s.dns = true;
        c.s2s.dns_servers = vec![dns];
    })
    .await;
    point(&b, A, s2s_addr(&a));
    a.add_user("alice@a.example", PASSWORD).await;
    b.add_user("bob@b.example", PASSWORD).await;
    (a, b)
}

#[tokio::test]
async fn srv_records_are_followed_past_a_dead_direct_tls_target() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let (a, b) = pair_over_dns(
        |b| {
            vec![
                // Tried first (direct TLS wins a priority tie), but nothing listens there.
                (
                    "_xmpps-server._tcp.b.example.".into(),
                    srv(5, 0, dead, "xmpp.b.example."),
                ),
                (
                    "_xmpp-server._tcp.b.example.".into(),
                    srv(5, 0, s2s_addr(b).port(), "xmpp.b.example."),
                ),
                ("xmpp.b.example.".into(), a_record([127, 0, 0, 1])),
            ]
        },
        |_| {},
    )
    .await;
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.example' type='chat' id='d1'><body>found you</body></message>")
        .await;
    let got = read_until_contains(&mut bob, "message", "found you").await;
    assert!(got.contains("from=\"alice@a.example/pc\""), "{got}");
}

#[tokio::test]
async fn an_xmpps_server_record_connects_with_direct_tls() {
    let (a, b) = pair_over_dns(
        |b| {
            vec![
                (
                    "_xmpps-server._tcp.b.example.".into(),
                    srv(
                        0,
                        0,
                        b.server().s2s_direct_tls_addrs[0].port(),
                        "tls.b.example.",
                    ),
                ),
                ("tls.b.example.".into(), a_record([127, 0, 0, 1])),
            ]
        },
        |c| c.s2s.direct_tls_listen = vec!["127.0.0.1:0".parse().unwrap()],
    )
    .await;
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.example' type='chat' id='d2'><body>over tls</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "over tls").await;
    let streams = a.server().core.federation.get().unwrap().streams();
    let out = streams
        .iter()
        .find(|s| s.direction == "outgoing" && s.remote == B)
        .expect("outgoing a→b");
    assert!(out.tls, "{streams:?}");
}

#[tokio::test]
async fn a_domain_refusing_federation_or_unreachable_on_5269_bounces() {
    let (a, _b) = pair_over_dns(
        |_| {
            vec![
                // RFC 2782: "." as the only target means the service is not offered.
                ("_xmpp-server._tcp.b.example.".into(), srv(0, 0, 0, ".")),
                // No SRV for c.example: its own address on the default port, where nothing listens.
                ("c.example.".into(), a_record([127, 0, 0, 1])),
            ]
        },
        |_| {},
    )
    .await;
    assert_eq!(DEFAULT_PORT, 5269);
    let mut alice = login(&a, A, "alice", "pc").await;
    assert_bounces(&mut alice, "bob@b.example", "r1").await;
    assert_bounces(&mut alice, "x@c.example", "r2").await;
}

// ---- group chat across servers ----

/// A remote user joins a room of `conference.a.example` over s2s, talks and hears the room;
/// when its server goes away, the bounced groupchat removes it (status 333) instead of leaving
/// a ghost occupant.
#[tokio::test]
async fn a_remote_occupant_chats_and_is_removed_when_its_server_goes_away() {
    let (a, b) = pair(|_| {}).await;
    point(&b, "conference.a.example", s2s_addr(&a));
    let room = "lounge@conference.a.example";
    let mut alice = online(&a, A, "alice", "pc").await;
    alice
        .send(&format!(
            "<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    read_until_contains(&mut alice, "presence", "110").await;
    // An instant room (XEP-0045 §10.1.2): accept the default configuration.
    alice
        .send(&format!(
            "<iq type='set' to='{room}' id='c1'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    read_until_contains(&mut alice, "iq", "c1").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    bob.send(&format!(
        "<presence to='{room}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let joined = read_until_contains(&mut bob, "presence", "110").await;
    assert!(joined.contains(&format!("from=\"{room}/bob\"")), "{joined}");
    read_until_contains(&mut alice, "presence", &format!("{room}/bob")).await;

    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='g1'><body>hello from b</body></message>"
    ))
    .await;
    let got = read_until_contains(&mut alice, "message", "hello from b").await;
    assert!(got.contains(&format!("from=\"{room}/bob\"")), "{got}");
    alice
        .send(&format!(
            "<message to='{room}' type='groupchat' id='g2'><body>hello from a</body></message>"
        ))
        .await;
    let got = read_until_contains(&mut bob, "message", "hello from a").await;
    assert!(got.contains(&format!("from=\"{room}/alice\"")), "{got}");

    // b.example disappears: its stream breaks, the next groupchat bounces, bob is removed.
    drop(bob);
    b.stop().await;
    let fed = a.server().core.federation.get().unwrap();
    for _ in 0..100 {
        if !fed.streams().iter().any(|s| s.remote == B) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    alice
        .send(&format!(
            "<message to='{room}' type='groupchat' id='g3'><body>anyone?</body></message>"
        ))
        .await;
    let gone = read_until_contains(&mut alice, "presence", "333").await;
    assert!(
        gone.contains(&format!("from=\"{room}/bob\"")) && gone.contains("unavailable"),
        "{gone}"
    );
}

// ---- the IM extensions with a remote contact ----

/// A message from a remote user is carbon-copied to the recipient's other resource, archived
/// for both sides (each server archives its own user's copy), found by a MAM query filtered by
/// the remote JID; once the recipient blocks the remote user, its messages no longer arrive.
#[tokio::test]
async fn carbons_archive_and_blocking_work_with_a_remote_contact() {
    let (a, b) = pair(|_| {}).await;
    let mut alice_pc = online(&a, A, "alice", "pc").await;
    let mut alice_phone = online(&a, A, "alice", "phone").await;
    alice_phone
        .send("<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    read_until_contains(&mut alice_phone, "iq", "cb").await;
    let mut bob = online(&b, B, "bob", "desk").await;

    bob.send(
        "<message to='alice@a.example/pc' type='chat' id='x1'><body>to your pc</body></message>",
    )
    .await;
    read_until_contains(&mut alice_pc, "message", "to your pc").await;
    let copy = read_until_contains(&mut alice_phone, "message", "to your pc").await;
    assert!(
        copy.contains("<received xmlns=\"urn:xmpp:carbons:2\"")
            && copy.contains("from=\"bob@b.example/desk\""),
        "{copy}"
    );

    // Both archives hold the message: alice's, filtered by the remote JID, and bob's own.
    let query = |id: &str, with: &str| {
        format!(
            "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='with'><value>{with}</value></field></x></query></iq>"
        )
    };
    alice_pc.send(&query("q1", "bob@b.example")).await;
    let found = alice_pc.read_until("</iq>").await;
    assert!(
        found.contains("to your pc") && found.contains("<fin"),
        "{found}"
    );
    bob.send(&query("q2", "alice@a.example")).await;
    let found = bob.read_until("</iq>").await;
    assert!(
        found.contains("to your pc") && found.contains("<fin"),
        "{found}"
    );

    // Blocked: bob's next message is dropped silently (XEP-0191 §3.5, as for local contacts).
    // A ping of a.example on the same stream, answered, shows a.example has handled it.
    alice_pc
        .send("<iq type='set' id='bl'><block xmlns='urn:xmpp:blocking'><item jid='bob@b.example'/></block></iq>")
        .await;
    read_until_contains(&mut alice_pc, "iq", "bl").await;
    bob.send(
        "<message to='alice@a.example' type='chat' id='x2'><body>still there?</body></message>",
    )
    .await;
    bob.send("<iq type='get' to='a.example' id='bp'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = bob.read_until("id=\"bp\"").await;
    assert!(!pong.contains("x2"), "{pong}");
    alice_pc
        .send("<iq type='get' to='a.example' id='pp'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let rest = alice_pc.read_until("id=\"pp\"").await;
    assert!(!rest.contains("still there?"), "{rest}");
}

// ---- several domain pairs on one stream (dialback piggybacking) ----

/// `a.example` also serves `x.example`; `b.example` serves its `conference.b.example`
/// component at the same address. Messages from both of A's domains and an IQ to B's component
/// all travel over A's one outgoing connection, each pair authenticated by its own dialback
/// request on it.
#[tokio::test]
async fn further_domain_pairs_ride_on_one_authenticated_stream() {
    const X: &str = "x.example";
    const MUC_B: &str = "conference.b.example";
    let a = TestServer::start_with(|c| {
        host(c, A);
        c.hosts.push(oxpecker::config::HostConfig {
            name: X.into(),
            ..Default::default()
        });
    })
    .await;
    let b = TestServer::start_with(|c| host(c, B)).await;
    point(&a, B, s2s_addr(&b));
    point(&a, MUC_B, s2s_addr(&b));
    point(&b, A, s2s_addr(&a));
    point(&b, X, s2s_addr(&a));
    a.add_user("alice@a.example", PASSWORD).await;
    a.add_user("xavier@x.example", PASSWORD).await;
    b.add_user("bob@b.example", PASSWORD).await;
    let mut bob = online(&b, B, "bob", "phone").await;
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut xavier = online(&a, X, "xavier", "pc").await;
    alice
        .send("<message to='bob@b.example' type='chat'><body>from the first pair</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "from the first pair").await;
    xavier
        .send("<message to='bob@b.example' type='chat'><body>from x</body></message>")
        .await;
    let got = read_until_contains(&mut bob, "message", "from x").await;
    assert!(got.contains("from=\"xavier@x.example/pc\""), "{got}");
    alice
        .send(&format!("<iq type='get' to='{MUC_B}' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
        .await;
    let info = read_until_contains(&mut alice, "iq", "d1").await;
    assert!(
        info.contains("type=\"result\"") && info.contains("http://jabber.org/protocol/muc"),
        "{info}"
    );

    // One connection each way of A → B, carrying three authenticated pairs.
    let (ma, mb) = (
        a.server().core.metrics.render(),
        b.server().core.metrics.render(),
    );
    assert!(
        ma.contains("oxpecker_s2s_connections{direction=\"outgoing\",auth=\"dialback\"} 1"),
        "{ma}"
    );
    assert!(
        mb.contains("oxpecker_s2s_connections{direction=\"incoming\",auth=\"dialback\"} 1"),
        "{mb}"
    );
    let streams = a.server().core.federation.get().unwrap().streams();
    for (local, remote) in [(A, B), (X, B), (A, MUC_B)] {
        assert!(
            streams.iter().any(|s| s.direction == "outgoing"
                && s.local == local
                && s.remote == remote
                && s.auth == "dialback"
                && s.tls),
            "{local} → {remote}: {streams:?}"
        );
    }
}

/// On b.example's side, each piggybacked request is verified with its own authoritative server
/// and adds exactly that pair: a refused key leaves the stream and its pairs in place, and a
/// sender domain authenticated for another pair only is still `invalid-from`.
#[tokio::test]
async fn piggybacked_pairs_are_verified_one_by_one_and_held_to_their_pairs() {
    const MUC_B: &str = "conference.b.example";
    let (_a, b) = pair(plaintext_b).await;
    point(&b, "c.example", yes_authority("c.example").await);
    point(&b, "d.example", yes_authority("d.example").await);
    let mut bob = online(&b, B, "bob", "phone").await;
    let (mut peer, r) = raw_peer(&b, "c.example", "k1").await;
    assert!(r.contains("type=\"valid\""), "{r}");
    // A second originating domain, and a second receiving domain (B's component).
    for (from, to) in [("d.example", B), ("c.example", MUC_B)] {
        peer.send(&format!(
            "<db:result from='{from}' to='{to}'>k2</db:result>"
        ))
        .await;
        let r = peer.read_stanza("result").await;
        assert!(
            r.contains("type=\"valid\"") && r.contains(&format!("from=\"{to}\"")),
            "{r}"
        );
    }
    // a.example is real and never made this key: refused, but the stream stays.
    peer.send(&format!("<db:result from='{A}' to='{B}'>00ff</db:result>"))
        .await;
    let r = peer.read_stanza("result").await;
    assert!(r.contains("type=\"invalid\""), "{r}");
    peer.send("<message from='dave@d.example/x' to='bob@b.example' type='chat'><body>from d</body></message>")
        .await;
    let got = read_until_contains(&mut bob, "message", "from d").await;
    assert!(got.contains("dave@d.example/x"), "{got}");
    // d.example is authenticated towards b.example only, not towards the component.
    peer.send(&format!(
        "<presence from='dave@d.example/x' to='room@{MUC_B}/dave'/>"
    ))
    .await;
    let closed = peer.read_to_close().await;
    assert!(closed.contains("<invalid-from"), "{closed}");
}

// ---- trust anchors follow a configuration reload ----

/// b.example requires valid certificates but its CA file holds the wrong CA: a.example is
/// refused. Once the right CA is in the file, a reload makes the next stream trust it and
/// a.example authenticates with SASL EXTERNAL.
#[tokio::test]
async fn a_reload_rereads_the_ca_files_for_new_streams() {
    let ca = TestCa::new();
    let wrong = TestCa::new();
    let anchors = tempfile::tempdir().unwrap();
    let ca_file = anchors.path().join("peers.pem");
    std::fs::write(&ca_file, wrong.pem()).unwrap();
    let a = TestServer::start_with(|c| {
        host(c, A);
        ca.use_for(c, A);
    })
    .await;
    let b = TestServer::start_with(|c| {
        host(c, B);
        ca.use_for(c, B);
        c.s2s.ca_files = vec![ca_file.clone()];
        c.s2s.secure_auth = true;
    })
    .await;
    point(&a, B, s2s_addr(&b));
    point(&b, A, s2s_addr(&a));
    a.add_user("alice@a.example", PASSWORD).await;
    b.add_user("bob@b.example", PASSWORD).await;
    let mut alice = login_trusting(&a, A, "alice", "pc", &ca.pem(), A).await;
    let mut bob = login_trusting(&b, B, "bob", "phone", &ca.pem(), B).await;
    alice
        .send("<message to='bob@b.example/phone' id='r1'><body>before</body></message>")
        .await;
    let got = read_until_contains(&mut alice, "message", "r1").await;
    assert!(got.contains("remote-server-not-found"), "{got}");

    std::fs::write(&ca_file, ca.pem()).unwrap();
    b.server().core.reload_config().unwrap();
    alice
        .send("<message to='bob@b.example/phone' type='chat'><body>after reload</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "after reload").await;
    let streams = b.server().core.federation.get().unwrap().streams();
    let s = streams
        .iter()
        .find(|s| s.direction == "incoming" && s.remote == A && s.auth != "none")
        .unwrap_or_else(|| panic!("{streams:?}"));
    assert_eq!((s.auth, s.cert_valid), ("external", true), "{s:?}");
}
// ---- PEP notifications to a remote contact ----

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const TUNE: &str = "http://jabber.org/protocol/tune";

/// Answers `n` caps queries (disco#info with a node) that `c` receives, advertising `features`.
async fn answer_caps_queries(c: &mut RawClient, n: usize, features: &[&str]) {
    for _ in 0..n {
        let q = read_until_contains(c, "iq", DISCO_INFO).await;
        assert!(q.contains("type=\"get\""), "{q}");
        let (id, from, node) = (attr(&q, "id"), attr(&q, "from"), attr(&q, "node"));
        let mut body = String::from("<identity category='client' type='pc' name='Test'/>");
        for f in features {
            body.push_str(&format!("<feature var='{f}'/>"));
        }
        c.send(&format!(
            "<iq type='result' id='{id}' to='{from}'><query xmlns='{DISCO_INFO}' node='{node}'>{body}</query></iq>"
        ))
        .await;
    }
}

/// bob on b.example, subscribed to alice on a.example, announces caps with `tune+notify`:
/// a.example asks bob's client across the servers what the caps mean, and alice's tune
/// reaches bob as a PEP event.
#[tokio::test]
async fn pep_events_reach_a_remote_contact_with_notify_caps() {
    let (a, b) = pair(|_| {}).await;
    let mut alice = online(&a, A, "alice", "pc").await;
    let mut bob = online(&b, B, "bob", "phone").await;
    alice
        .send("<presence to='bob@b.example' type='subscribe'/>")
        .await;
    read_until_contains(&mut bob, "presence", "subscribe").await;
    bob.send("<presence to='alice@a.example' type='subscribed'/>")
        .await;
    bob.send("<presence to='alice@a.example' type='subscribe'/>")
        .await;
    read_until_contains(&mut alice, "presence", "type=\"subscribe\"").await;
    alice
        .send("<presence to='bob@b.example' type='subscribed'/>")
        .await;
    let (ca, cb) = (&a.server().core, &b.server().core);
    wait_subscription(ca, "alice@a.example", "bob@b.example", "both").await;
    wait_subscription(cb, "bob@b.example", "alice@a.example", "both").await;

    bob.send("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://oxpecker.test/client' ver='unverified='/></presence>")
        .await;
    // One query from bob's own server, one from alice's (over s2s).
    let features = [DISCO_INFO, "http://jabber.org/protocol/tune+notify"];
    answer_caps_queries(&mut bob, 2, &features).await;
    alice
        .send(&format!(
            "<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{TUNE}'><item id='t1'><tune xmlns='{TUNE}'><title>Yesterday</title></tune></item></publish></pubsub></iq>"
        ))
        .await;
    let r = read_until_contains(&mut alice, "iq", "p1").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let event = read_until_contains(&mut bob, "message", "Yesterday").await;
    assert!(
        event.contains("from=\"alice@a.example\"")
            && event.contains("http://jabber.org/protocol/pubsub#event")
            && event.contains(&format!("node=\"{TUNE}\"")),
        "{event}"
    );
}
