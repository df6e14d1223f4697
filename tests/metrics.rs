//! `GET /metrics` of a live server after real traffic: stream errors by condition, sessions by
//! transport and TLS state, accounts, and HTTP latency by route.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer, login};

async fn scrape(srv: &TestServer) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .get(format!("http://{}/metrics", srv.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn live_traffic_shows_in_the_per_host_families() {
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.hosts.push(oxpecker::config::HostConfig {
            name: "example.org".into(),
            ..Default::default()
        });
    })
    .await;
    let mut stray = RawClient::connect(srv.c2s()).await;
    stray
        .send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='nowhere.example' version='1.0'>")
        .await;
    assert!(stray.read_to_close().await.contains("host-unknown"));
    // A server-to-server stream to a domain not served here: the s2s listener's host-unknown.
    let mut remote = RawClient::connect(srv.server().s2s_addrs[0]).await;
    remote
        .send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='remote.example' to='nowhere.example' version='1.0'>")
        .await;
    assert!(remote.read_to_close().await.contains("host-unknown"));
    let mut alice = login(&srv, "alice", "desk").await;
    for id in ["p1", "p2"] {
        alice
            .send(&format!(
                "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
            ))
            .await;
        alice.read_until(&format!("id=\"{id}\"")).await;
    }

    let first = scrape(&srv).await;
    let out = scrape(&srv).await;
    for line in [
        "oxpecker_stream_errors_total{listener=\"c2s\",condition=\"host-unknown\"} 1\n",
        "oxpecker_stream_errors_total{listener=\"s2s\",condition=\"host-unknown\"} 1\n",
        "oxpecker_stream_errors_total{listener=\"s2s\",condition=\"bad-format\"} 0\n",
        "oxpecker_stanzas_total{host=\"localhost\",kind=\"iq\",direction=\"in\"} 2\n",
        "oxpecker_stanzas_total{host=\"localhost\",kind=\"iq\",direction=\"out\"} 2\n",
        "oxpecker_stanzas_total{host=\"localhost\",kind=\"message\",direction=\"in\"} 0\n",
        "oxpecker_stanzas_total{host=\"example.org\",kind=\"iq\",direction=\"in\"} 0\n",
        "oxpecker_stanzas_total{host=\"example.org\",kind=\"presence\",direction=\"out\"} 0\n",
        "oxpecker_sessions_by_transport{host=\"localhost\",transport=\"tcp\",tls=\"true\"} 1\n",
        "oxpecker_sessions_by_transport{host=\"localhost\",transport=\"tcp\",tls=\"false\"} 0\n",
        "oxpecker_accounts{host=\"localhost\"} 2\n",
        "oxpecker_http_request_duration_seconds_count{route=\"/metrics\"} 1\n",
        "oxpecker_http_requests_total{route=\"/metrics\",status=\"200\"} 1\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(
        !first.contains("route=\"/metrics\""),
        "counted after answering"
    );
}
