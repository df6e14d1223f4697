//! Logins and traffic with a real, independent XMPP client library (tokio-xmpp 6): its stream
//! handling, SASL (SCRAM-SHA-256 / SCRAM-SHA-1) and resource binding against our server, over
//! STARTTLS that verifies the server's certificate for `localhost`. See
//! `common/xmpp_client.rs` for how the client is assembled and why.

mod common;
#[path = "common/xmpp_client.rs"]
mod xmpp_client;

use common::{TestServer, client_tls};
use tokio_xmpp::Stanza;
use tokio_xmpp::error::AuthError;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::sasl::DefinedCondition;
use xmpp_client::{XmppClient, authenticate, connect_starttls};

/// Logs `jid` in with tokio-xmpp against `server`, limiting its SASL choice to `only` if given.
async fn login(
    server: &TestServer,
    jid: &str,
    password: &str,
    only: Option<&[&str]>,
) -> XmppClient {
    XmppClient::login(
        server.c2s(),
        client_tls(&server.cert_pem()),
        jid,
        password,
        only,
    )
    .await
    .unwrap_or_else(|e| panic!("tokio-xmpp login as {jid} failed: {e}"))
}

/// Sends an XEP-0199 ping to `localhost` and asserts the server answers with an empty result.
async fn ping_server(client: &mut XmppClient) {
    let host = Jid::new("localhost").expect("valid JID");
    let iq = Iq::from_get("ping-1", Ping).with_to(host.clone());
    match client.iq(iq).await {
        Iq::Result { from, payload, .. } => {
            assert_eq!(from, Some(host));
            assert!(payload.is_none(), "ping result has a payload: {payload:?}");
        }
        other => panic!("ping failed: {other:?}"),
    }
}

/// Waits for a chat message whose body is `body` and returns it.
async fn expect_message(client: &mut XmppClient, body: &str) -> Message {
    let stanza = client
        .next_stanza(|s| matches!(s, Stanza::Message(m) if m.bodies.values().any(|b| b == body)))
        .await;
    let Stanza::Message(m) = stanza else {
        unreachable!("filtered to messages")
    };
    m
}

/// A chat message to `to` with id `id` and a `body` without `xml:lang`.
fn chat(to: Jid, id: &str, body: &str) -> Message {
    let mut m = Message::chat(to).with_body(Lang::default(), body.to_owned());
    m.id = Some(tokio_xmpp::parsers::message::Id(id.to_owned()));
    m
}

#[tokio::test]
async fn tokio_xmpp_logs_in_with_scram_sha256_and_pings() {
    let server = TestServer::start().await;
    server.add_user("alice@localhost", "correct horse").await;

    let mut alice = login(&server, "alice@localhost", "correct horse", None).await;

    // tokio-xmpp tries SCRAM-SHA-256, then SCRAM-SHA-1, then PLAIN, taking the first offered:
    // with all three offered, the successful login was SCRAM-SHA-256.
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        assert!(
            alice.offered.contains(m),
            "{m} not offered: {:?}",
            alice.offered
        );
    }
    assert_eq!(
        alice.jid.to_bare(),
        BareJid::new("alice@localhost").unwrap()
    );
    assert!(!alice.jid.resource().as_str().is_empty());

    ping_server(&mut alice).await;
    alice.close().await;
}

#[tokio::test]
async fn tokio_xmpp_logs_in_with_forced_scram_sha256() {
    let server = TestServer::start().await;
    server.add_user("alice@localhost", "pw-256").await;

    // Restrict the client to SCRAM-SHA-256 so success proves that mechanism, not a fallback.
    let mut alice = login(
        &server,
        "alice@localhost",
        "pw-256",
        Some(&["SCRAM-SHA-256"]),
    )
    .await;
    ping_server(&mut alice).await;
    alice.close().await;
}

#[tokio::test]
async fn tokio_xmpp_logs_in_with_scram_sha1() {
    let server = TestServer::start_with(|cfg| {
        cfg.c2s.sasl_mechanisms = vec!["SCRAM-SHA-1".into()];
    })
    .await;
    server.add_user("carol@localhost", "sha1 pass").await;

    let mut carol = login(&server, "carol@localhost", "sha1 pass", None).await;
    let offered: Vec<&str> = carol.offered.iter().map(String::as_str).collect();
    assert_eq!(offered, ["SCRAM-SHA-1"]);
    assert_eq!(
        carol.jid.to_bare(),
        BareJid::new("carol@localhost").unwrap()
    );

    ping_server(&mut carol).await;
    carol.close().await;
}

#[tokio::test]
async fn tokio_xmpp_clients_exchange_messages() {
    let server = TestServer::start().await;
    server.add_user("alice@localhost", "alice pw").await;
    server.add_user("bob@localhost", "bob pw").await;

    let mut alice = login(&server, "alice@localhost", "alice pw", None).await;
    let mut bob = login(&server, "bob@localhost", "bob pw", None).await;
    alice.send(Presence::available()).await;
    bob.send(Presence::available()).await;
    // A round trip after the presence makes sure the server processed it before the message.
    ping_server(&mut alice).await;
    ping_server(&mut bob).await;

    let bob_bare = Jid::from(bob.jid.to_bare());
    alice.send(chat(bob_bare, "m1", "hello bob")).await;
    let got = expect_message(&mut bob, "hello bob").await;
    assert_eq!(got.from, Some(Jid::from(alice.jid.clone())));
    assert_eq!(got.type_, MessageType::Chat);

    bob.send(chat(Jid::from(alice.jid.clone()), "m2", "hi alice"))
        .await;
    let got = expect_message(&mut alice, "hi alice").await;
    assert_eq!(got.from, Some(Jid::from(bob.jid.clone())));
    assert_eq!(got.to, Some(Jid::from(alice.jid.clone())));

    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn tokio_xmpp_wrong_password_fails() {
    let server = TestServer::start().await;
    server.add_user("dave@localhost", "right").await;
    let tls = client_tls(&server.cert_pem());
    let jid = Jid::new("dave@localhost").unwrap();

    // tokio_xmpp::Client retries failed logins forever (6.0.0 never surfaces auth errors), so
    // the failure is observed on tokio-xmpp's SASL step itself, which Client uses unchanged.
    let wait = xmpp_client::WAIT;
    for only in [None, Some(&["SCRAM-SHA-1"][..]), Some(&["PLAIN"][..])] {
        let res = tokio::time::timeout(
            wait,
            authenticate(server.c2s(), tls.clone(), &jid, "wrong", only),
        )
        .await
        .expect("timed out waiting for the SASL failure");
        match res {
            Err(tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized))) => {}
            Err(e) => panic!("expected not-authorized with {only:?}, got error {e}"),
            Ok(_) => panic!("login with a wrong password succeeded with {only:?}"),
        }
    }

    // An unknown account fails the same way.
    let nobody = Jid::new("nobody@localhost").unwrap();
    let res = tokio::time::timeout(
        wait,
        authenticate(server.c2s(), tls.clone(), &nobody, "x", None),
    )
    .await
    .expect("timed out waiting for the SASL failure");
    assert!(
        matches!(
            res,
            Err(tokio_xmpp::Error::Auth(AuthError::Fail(
                DefinedCondition::NotAuthorized
            )))
        ),
        "unknown user: {:?}",
        res.err()
    );

    // The server keeps serving: the right password works afterwards.
    let mut dave = login(&server, "dave@localhost", "right", None).await;
    ping_server(&mut dave).await;
    dave.close().await;
}

#[tokio::test]
async fn tokio_xmpp_starttls_rejects_untrusted_certificate() {
    let server = TestServer::start().await;
    server.add_user("erin@localhost", "pw").await;

    // Control for the custom TLS setup: with no trusted roots the handshake must fail, so the
    // other tests really do verify the server's certificate.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let untrusting = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let res = tokio::time::timeout(
        xmpp_client::WAIT,
        connect_starttls(server.c2s(), "localhost", untrusting),
    )
    .await
    .expect("timed out waiting for the TLS failure");
    let err = match res {
        Err(tokio_xmpp::Error::Io(e)) => e,
        Err(e) => panic!("expected a TLS I/O error, got {e}"),
        Ok(_) => panic!("TLS succeeded without trusting the server's certificate"),
    };
    let tls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(tls_err, Some(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );

    let mut erin = login(&server, "erin@localhost", "pw", None).await;
    ping_server(&mut erin).await;
    erin.close().await;
}
