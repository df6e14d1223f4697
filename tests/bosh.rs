//! BOSH (XEP-0124/0206) against a real server over real HTTP: session creation, login, messages
//! with a TCP client both ways, a repeated rid answered again, requests out of order processed in
//! order, the rid window, terminate, the wait and inactivity timeouts, limits, CORS and host-meta.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::{TestServer, jid, online, read_until_contains};
use oxpecker::core::sessions::Transport;

const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// A plain-HTTP client (the ring provider installed for reqwest's rustls).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A BOSH client: the session id and the next rid.
struct Bosh {
    http: reqwest::Client,
    url: String,
    sid: String,
    rid: u64,
}

/// The value of `name='…'` in `xml` (our `<body/>` attributes are single-quoted).
fn attr(xml: &str, name: &str) -> Option<String> {
    let key = format!(" {name}='");
    let s = xml.find(&key)? + key.len();
    Some(xml[s..s + xml[s..].find('\'')?].to_string())
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> (u16, String) {
    let resp = http
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

impl Bosh {
    /// Creates a session with `wait` and `hold`; returns it and the creation response.
    async fn create(srv: &TestServer, wait: u64, hold: u64) -> (Bosh, String) {
        let http = client();
        let url = format!("http://{}/http-bind", srv.http());
        let rid = 4000;
        let (status, resp) = post(
            &http,
            &url,
            format!(
                "<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' to='localhost' wait='{wait}' hold='{hold}' ver='1.11' xml:lang='en' xmpp:version='1.0'/>"
            ),
        )
        .await;
        assert_eq!(status, 200, "{resp}");
        let sid = attr(&resp, "sid").unwrap_or_else(|| panic!("no sid in {resp}"));
        let bosh = Bosh {
            http,
            url,
            sid,
            rid: rid + 1,
        };
        (bosh, resp)
    }

    /// The next request's body with `attrs` and `content`, taking its rid.
    fn next_body(&mut self, attrs: &str, content: &str) -> String {
        let rid = self.rid;
        self.rid += 1;
        format!(
            "<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' sid='{}' {attrs}>{content}</body>",
            self.sid
        )
    }

    async fn req(&mut self, attrs: &str, content: &str) -> String {
        let body = self.next_body(attrs, content);
        let (status, resp) = post(&self.http, &self.url, body).await;
        assert_eq!(status, 200, "{resp}");
        resp
    }

    /// Sends a request in the background (it is held until output or `wait`).
    fn spawn(&mut self, content: &str) -> tokio::task::JoinHandle<(u16, String)> {
        let body = self.next_body("", content);
        let (http, url) = (self.http.clone(), self.url.clone());
        tokio::spawn(async move { post(&http, &url, body).await })
    }

    /// A logged-in, bound session of `user` with `resource`.
    async fn login(srv: &TestServer, user: &str, resource: &str, wait: u64) -> Bosh {
        let (mut b, created) = Bosh::create(srv, wait, 1).await;
        assert!(
            created.contains("<mechanism>PLAIN</mechanism>"),
            "{created}"
        );
        let creds = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{}", common::PASSWORD));
        let r = b
            .req(
                "",
                &format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
                ),
            )
            .await;
        assert!(r.contains("<success"), "{r}");
        let r = b.req("xmpp:restart='true'", "").await;
        assert!(r.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{r}");
        let r = b
            .req(
                "",
                &format!(
                    "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
                ),
            )
            .await;
        assert!(r.contains(&format!("{user}@localhost/{resource}")), "{r}");
        b
    }
}

#[tokio::test]
async fn login_over_bosh_message_a_tcp_client_both_ways_and_terminate() {
    let srv = TestServer::with_users(&["alice", "bob"], |_| {}).await;
    let (mut b, created) = Bosh::create(&srv, 5, 1).await;
    for (name, value) in [
        ("wait", "5"),
        ("hold", "1"),
        ("requests", "2"),
        ("from", "localhost"),
        ("ver", "1.11"),
    ] {
        assert_eq!(attr(&created, name).as_deref(), Some(value), "{created}");
    }
    assert!(
        attr(&created, "authid").is_some_and(|a| !a.is_empty()),
        "{created}"
    );
    assert!(!created.contains("starttls"), "{created}");
    let creds = base64::engine::general_purpose::STANDARD.encode("\0alice\0pw");
    let r = b
        .req(
            "",
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
            ),
        )
        .await;
    assert!(r.contains("<success"), "{r}");
    let r = b.req("xmpp:restart='true'", "").await;
    assert!(r.contains("<stream:features>"), "{r}");
    let r = b
        .req("", "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
        .await;
    assert!(r.contains("alice@localhost/web"), "{r}");
    let session = srv
        .server()
        .core
        .sessions
        .get(&jid("alice@localhost/web"))
        .expect("alice's session");
    assert_eq!(session.conn.transport, Transport::Bosh);
    let r = b.req("", "<presence xmlns='jabber:client'/>").await;
    assert!(r.contains("<presence"), "{r}");

    let mut bob = online(&srv, "bob", "desk").await;
    // The request carrying alice's message is held until there is something for her: bob's answer.
    let held = b.spawn(
        "<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>from bosh</body></message>",
    );
    let got = read_until_contains(&mut bob, "message", "from bosh").await;
    assert!(got.contains("from=\"alice@localhost/web\""), "{got}");
    bob.send("<message to='alice@localhost/web' type='chat'><body>from tcp</body></message>")
        .await;
    let (status, r) = held.await.unwrap();
    assert_eq!(status, 200);
    assert!(r.contains("<message xmlns=\"jabber:client\""), "{r}");
    assert!(r.contains("from tcp"), "{r}");

    let r = b
        .req(
            "type='terminate'",
            "<presence xmlns='jabber:client' type='unavailable'/>",
        )
        .await;
    assert_eq!(attr(&r, "type").as_deref(), Some("terminate"), "{r}");
    common::wait_offline(&srv, "alice@localhost").await;
    let r = b.req("", "").await;
    assert_eq!(attr(&r, "type").as_deref(), Some("terminate"), "{r}");
}

#[tokio::test]
async fn a_repeated_rid_gets_the_same_response_again() {
    let srv = TestServer::with_users(&["alice"], |_| {}).await;
    let mut b = Bosh::login(&srv, "alice", "r", 5).await;
    let body = b.next_body(
        "",
        "<iq xmlns='jabber:client' type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let (_, first) = post(&b.http, &b.url, body.clone()).await;
    assert!(first.contains("id=\"p1\""), "{first}");
    let (status, again) = post(&b.http, &b.url, body).await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "the retransmission is the original response");
    // The session goes on after the repeat.
    let r = b
        .req("", "<iq xmlns='jabber:client' type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(r.contains("id=\"p2\""), "{r}");
}

#[tokio::test]
async fn requests_out_of_order_are_processed_in_rid_order() {
    let srv = TestServer::with_users(&["alice", "bob"], |_| {}).await;
    let mut b = Bosh::login(&srv, "alice", "r", 1).await;
    let mut bob = online(&srv, "bob", "desk").await;
    let first = b.next_body(
        "",
        "<message xmlns='jabber:client' to='bob@localhost/desk'><body>first</body></message>",
    );
    let second = b.next_body(
        "",
        "<message xmlns='jabber:client' to='bob@localhost/desk'><body>second</body></message>",
    );
    // The later rid arrives first and waits for its predecessor.
    let (http, url) = (b.http.clone(), b.url.clone());
    let later = tokio::spawn(async move { post(&http, &url, second).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = post(&b.http, &b.url, first).await;
    assert_eq!(status, 200);
    let got = bob.read_stanza("message").await;
    assert!(got.contains("first"), "{got}");
    let got = bob.read_stanza("message").await;
    assert!(got.contains("second"), "{got}");
    assert_eq!(later.await.unwrap().0, 200);
}

#[tokio::test]
async fn a_rid_beyond_the_window_ends_the_session() {
    let srv = TestServer::with_users(&["alice"], |_| {}).await;
    let mut b = Bosh::login(&srv, "alice", "r", 5).await;
    b.rid += 10;
    let r = b.req("", "").await;
    assert_eq!(
        attr(&r, "condition").as_deref(),
        Some("item-not-found"),
        "{r}"
    );
    b.rid -= 11;
    let r = b.req("", "").await;
    assert_eq!(attr(&r, "type").as_deref(), Some("terminate"), "{r}");
    common::wait_offline(&srv, "alice@localhost").await;
}

#[tokio::test]
async fn an_idle_request_is_answered_empty_after_wait_and_an_inactive_session_ends() {
    let srv = TestServer::with_users(&["alice"], |c| c.web.bosh_inactivity_secs = 1).await;
    let mut b = Bosh::login(&srv, "alice", "r", 1).await;
    // Nothing to say: after `wait` the request comes back empty.
    let r = b.req("", "").await;
    assert!(r.ends_with("/>") && !r.contains("<message"), "{r}");
    assert!(attr(&r, "type").is_none(), "{r}");
    // No request for longer than `inactivity`: the session ends and its sid is forgotten.
    common::wait_offline(&srv, "alice@localhost").await;
    for _ in 0..200 {
        let r = b.req("", "").await;
        if attr(&r, "type").as_deref() == Some("terminate") {
            return;
        }
        b.rid -= 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the inactive session still answers");
}

#[tokio::test]
async fn bad_requests_unknown_sessions_and_oversized_bodies_are_refused() {
    let srv = TestServer::with_users(&["alice"], |c| c.c2s.max_stanza_size = 16 * 1024).await;
    let http = client();
    let url = format!("http://{}/http-bind", srv.http());
    let (status, _) = post(&http, &url, "<body xmlns='nope' rid='1'/>".into()).await;
    assert_eq!(status, 400);
    let (status, _) = post(&http, &url, format!("<body xmlns='{HTTPBIND}'/>")).await;
    assert_eq!(status, 400, "a rid is required");
    let (_, r) = post(
        &http,
        &url,
        format!("<body xmlns='{HTTPBIND}' rid='1' sid='nosuchsession'/>"),
    )
    .await;
    assert_eq!(
        attr(&r, "condition").as_deref(),
        Some("item-not-found"),
        "{r}"
    );
    let (_, r) = post(
        &http,
        &url,
        format!("<body xmlns='{HTTPBIND}' rid='1' to='elsewhere.example'/>"),
    )
    .await;
    assert_eq!(
        attr(&r, "condition").as_deref(),
        Some("host-unknown"),
        "{r}"
    );
    let big = "x".repeat(32 * 1024);
    let (status, _) = post(
        &http,
        &url,
        format!(
            "<body xmlns='{HTTPBIND}' rid='1' sid='s'><message><body>{big}</body></message></body>"
        ),
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let srv =
        TestServer::start_with(|c| c.http.cors_origins = vec!["https://chat.example".into()]).await;
    let http = client();
    let url = format!("http://{}/http-bind", srv.http());
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let ok = preflight("https://chat.example").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    assert!(
        ok.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The real request carries the header too.
    let resp = http
        .get(format!("http://{}/.well-known/host-meta.json", srv.http()))
        .header("Origin", "https://chat.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    // The admin API is not opened to browsers.
    let resp = http
        .get(format!("http://{}/health", srv.http()))
        .header("Origin", "https://chat.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn host_meta_lists_both_endpoints_in_xml_and_json() {
    let srv = TestServer::start().await;
    let http = client();
    let base = format!("http://{}", srv.http());
    let resp = http
        .get(format!("{base}/.well-known/host-meta"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/xrd+xml")
    );
    let xml = resp.text().await.unwrap();
    let addr = srv.http();
    assert!(
        xml.contains("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<Link rel=\"urn:xmpp:alt-connections:xbosh\" href=\"http://{addr}/http-bind\"/>"
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<Link rel=\"urn:xmpp:alt-connections:websocket\" href=\"ws://{addr}/xmpp-websocket\"/>"
        )),
        "{xml}"
    );
    let json: serde_json::Value = http
        .get(format!("{base}/.well-known/host-meta.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "links": [
            { "rel": "urn:xmpp:alt-connections:xbosh", "href": format!("http://{addr}/http-bind") },
            { "rel": "urn:xmpp:alt-connections:websocket", "href": format!("ws://{addr}/xmpp-websocket") },
        ]})
    );
    // Turning a transport off removes it from the list (and its endpoint).
    let srv = TestServer::start_with(|c| c.web.bosh = false).await;
    let json: serde_json::Value = http
        .get(format!("http://{}/.well-known/host-meta.json", srv.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["links"].as_array().unwrap().len(), 1, "{json}");
    let (status, _) = post(
        &http,
        &format!("http://{}/http-bind", srv.http()),
        format!("<body xmlns='{HTTPBIND}' rid='1' to='localhost'/>"),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn empty_polls_faster_than_polling_are_refused() {
    let srv = TestServer::with_users(&["alice"], |c| c.web.bosh_polling_secs = 30).await;
    let (mut b, created) = Bosh::create(&srv, 5, 0).await;
    assert_eq!(attr(&created, "hold").as_deref(), Some("0"), "{created}");
    assert_eq!(
        attr(&created, "requests").as_deref(),
        Some("1"),
        "{created}"
    );
    assert_eq!(
        attr(&created, "polling").as_deref(),
        Some("30"),
        "{created}"
    );
    // Even without a held request, the creation response carries the stream features.
    assert!(created.contains("<stream:features>"), "{created}");
    // hold = 0: each request comes back at once; an empty answer to an empty poll...
    let r = b.req("", "").await;
    assert!(attr(&r, "type").is_none() && r.ends_with("/>"), "{r}");
    // ...and another empty poll within `polling` seconds is overactivity (XEP-0124 §12).
    let r = b.req("", "").await;
    assert_eq!(
        attr(&r, "condition").as_deref(),
        Some("policy-violation"),
        "{r}"
    );
    let r = b.req("", "").await;
    assert_eq!(
        attr(&r, "condition").as_deref(),
        Some("item-not-found"),
        "{r}"
    );
}
