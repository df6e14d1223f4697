//! XMPP over WebSocket (RFC 7395) against a real server over real sockets: the `xmpp`
//! subprotocol, `<open/>`/`<close/>` framing, login, messages with a TCP client both ways,
//! SASL refused on an unencrypted non-loopback connection, limits, and XEP-0198 resumption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::{TestServer, jid, online, read_until_contains};
use futures::{SinkExt, StreamExt};
use oxpecker::core::sessions::Transport;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const SM: &str = "urn:xmpp:sm:3";

/// A WebSocket client speaking RFC 7395.
struct Ws {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects with the `xmpp` subprotocol and the extra `headers`.
    async fn connect(srv: &TestServer, headers: &[(&'static str, &str)]) -> Ws {
        let mut req = format!("ws://{}/xmpp-websocket", srv.http())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "xmpp");
        Ws { ws }
    }

    async fn send(&mut self, xml: &str) {
        self.ws.send(Message::text(xml)).await.unwrap();
    }

    /// The next text message; `None` when the server closed the WebSocket.
    async fn recv(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match msg {
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Messages until one contains `needle`.
    async fn recv_until(&mut self, needle: &str) -> String {
        for _ in 0..50 {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("closed waiting for {needle:?}"));
            if m.contains(needle) {
                return m;
            }
        }
        panic!("no message containing {needle:?}");
    }

    /// Opens the stream; returns the `<open/>` answer and the features.
    async fn open(&mut self) -> (String, String) {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
        ))
        .await;
        let open = self.recv().await.expect("open");
        let features = self.recv().await.expect("features");
        (open, features)
    }

    /// SASL PLAIN; returns the outcome element.
    async fn auth(&mut self, user: &str) -> String {
        let creds = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{}", common::PASSWORD));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        self.recv().await.expect("sasl outcome")
    }

    /// Open, PLAIN, reopen: returns the features after authentication.
    async fn authenticate(&mut self, user: &str) -> String {
        self.open().await;
        let outcome = self.auth(user).await;
        assert!(outcome.starts_with("<success"), "{outcome}");
        self.open().await.1
    }

    /// Full login and bind.
    async fn login(srv: &TestServer, user: &str, resource: &str) -> Ws {
        let mut ws = Ws::connect(srv, &[]).await;
        ws.authenticate(user).await;
        ws.send(&format!(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let bound = ws.recv_until("<jid>").await;
        assert!(
            bound.contains(&format!("{user}@localhost/{resource}")),
            "{bound}"
        );
        ws
    }
}

#[tokio::test]
async fn login_over_websocket_and_message_a_tcp_client_both_ways() {
    let srv = TestServer::with_users(&["alice", "bob"], |_| {}).await;
    let mut ws = Ws::connect(&srv, &[]).await;
    let (open, features) = ws.open().await;
    assert!(
        open.starts_with(&format!("<open xmlns=\"{FRAMING}\"")),
        "{open}"
    );
    assert!(open.contains("from=\"localhost\""), "{open}");
    assert!(
        features.starts_with("<stream:features xmlns:stream=\"http://etherx.jabber.org/streams\""),
        "{features}"
    );
    // No STARTTLS on a WebSocket; loopback may authenticate without TLS.
    assert!(!features.contains("starttls"), "{features}");
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    assert!(ws.auth("alice").await.starts_with("<success"));
    let (_, features) = ws.open().await;
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    ws.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
        .await;
    let bound = ws.recv().await.unwrap();
    assert!(bound.starts_with("<iq xmlns=\"jabber:client\""), "{bound}");
    assert!(bound.contains("alice@localhost/web"), "{bound}");
    let session = srv
        .server()
        .core
        .sessions
        .get(&jid("alice@localhost/web"))
        .expect("alice's session");
    assert_eq!(session.conn.transport, Transport::WebSocket);
    assert!(
        !session.conn.secure,
        "plain ws:// on loopback is not encrypted"
    );
    ws.send("<presence xmlns='jabber:client'/>").await;
    ws.recv_until("<presence").await;

    let mut bob = online(&srv, "bob", "desk").await;
    ws.send("<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>from the web</body></message>")
        .await;
    let got = read_until_contains(&mut bob, "message", "from the web").await;
    assert!(got.contains("from=\"alice@localhost/web\""), "{got}");
    bob.send("<message to='alice@localhost/web' type='chat'><body>from tcp</body></message>")
        .await;
    let got = ws.recv_until("from tcp").await;
    assert!(got.starts_with("<message xmlns=\"jabber:client\""), "{got}");
    assert!(got.contains("from=\"bob@localhost/desk\""), "{got}");

    // <close/> is answered with <close/> and the session ends.
    ws.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    ws.recv_until(&format!("<close xmlns=\"{FRAMING}\"/>"))
        .await;
    assert!(ws.recv().await.is_none(), "the server closes the WebSocket");
    common::wait_offline(&srv, "alice@localhost").await;
}

#[tokio::test]
async fn the_xmpp_subprotocol_is_required_and_the_endpoint_can_be_turned_off() {
    let srv = TestServer::start().await;
    let req = format!("ws://{}/xmpp-websocket", srv.http())
        .into_client_request()
        .unwrap();
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 400)
        }
        e => panic!("expected an HTTP refusal, got {e}"),
    }
    // Turned off, the endpoint is not there at all.
    let srv = TestServer::start_with(|c| c.web.websocket = false).await;
    let mut req = format!("ws://{}/xmpp-websocket", srv.http())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await.unwrap_err() {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 404),
        e => panic!("expected 404, got {e}"),
    }
}

#[tokio::test]
async fn sasl_needs_tls_or_a_trusted_https_proxy_off_loopback() {
    let srv = TestServer::with_users(&["alice"], |c| {
        c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // A remote client through the trusted proxy over plain http: no SASL.
    let mut ws = Ws::connect(&srv, &[("X-Forwarded-For", "203.0.113.7")]).await;
    let (_, features) = ws.open().await;
    assert!(!features.contains("<mechanism>"), "{features}");
    assert!(!features.contains("starttls"), "{features}");
    let outcome = ws.auth("alice").await;
    assert!(outcome.contains("<encryption-required/>"), "{outcome}");

    // The same through the proxy's https: SASL, and the session counts as encrypted.
    let mut ws = Ws::connect(
        &srv,
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
        ],
    )
    .await;
    let (_, features) = ws.open().await;
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    assert!(ws.auth("alice").await.starts_with("<success"));
    ws.open().await;
    ws.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>p</resource></bind></iq>")
        .await;
    ws.recv_until("<jid>").await;
    let s = srv
        .server()
        .core
        .sessions
        .get(&jid("alice@localhost/p"))
        .unwrap();
    assert!(s.conn.secure);
    assert_eq!(s.conn.peer, "203.0.113.7:0");
}

#[tokio::test]
async fn a_stanza_over_the_limit_ends_the_stream_with_policy_violation() {
    let srv = TestServer::with_users(&["alice"], |c| c.c2s.max_stanza_size = 16 * 1024).await;
    let mut ws = Ws::login(&srv, "alice", "big").await;
    let body = "x".repeat(20 * 1024);
    ws.send(&format!(
        "<message xmlns='jabber:client' to='alice@localhost'><body>{body}</body></message>"
    ))
    .await;
    let err = ws.recv_until("stream:error").await;
    assert!(err.contains("policy-violation"), "{err}");
    ws.recv_until("<close").await;
}

#[tokio::test]
async fn a_lost_websocket_session_resumes_on_a_new_websocket() {
    let srv = TestServer::with_users(&["alice", "bob"], |_| {}).await;
    let mut a = Ws::login(&srv, "alice", "phone").await;
    a.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = a.recv_until("<enabled").await;
    let id = {
        let s = enabled.find("id=\"").unwrap() + 4;
        enabled[s..s + enabled[s..].find('"').unwrap()].to_string()
    };
    let mut bob = online(&srv, "bob", "desk").await;
    bob.send("<message to='alice@localhost/phone' type='chat'><body>before</body></message>")
        .await;
    a.recv_until("before").await;
    // The WebSocket dies without <close/>; alice never acked.
    drop(a);
    let alice = jid("alice@localhost/phone");
    let core = srv.server().core.clone();
    for _ in 0..500 {
        if core
            .sessions
            .get(&alice)
            .is_some_and(|s| s.is_hibernating())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        core.sessions
            .get(&alice)
            .is_some_and(|s| s.is_hibernating())
    );
    bob.send("<message to='alice@localhost/phone' type='chat'><body>during</body></message>")
        .await;
    let mut a = Ws::connect(&srv, &[]).await;
    let features = a.authenticate("alice").await;
    assert!(features.contains(SM), "{features}");
    a.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let resumed = a.recv_until("<resumed").await;
    assert!(resumed.contains(&id), "{resumed}");
    a.recv_until("before").await;
    a.recv_until("during").await;
    a.send("<iq xmlns='jabber:client' type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(a.recv_until("id=\"p\"").await.contains("result"));
}
