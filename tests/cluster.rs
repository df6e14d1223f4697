//! Clustering over NATS: a real `nats-server -js` on a loopback port in a temporary directory,
//! and two in-process nodes sharing one store (`Server::start_with_store`), with clients on
//! different nodes over real sockets: messages to full and bare JIDs, presence between contacts,
//! a resource conflict, REST on one node listing sessions of the other, a node stopped.
//!
//! They need the `nats-server` binary, so they are ignored by default; `scripts/cluster-test`
//! installs it and runs them with `--ignored` (`NATS_SERVER` names another binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{PASSWORD, RawClient, TestServer, jid, online, read_until_contains, test_config};
use oxpecker::Server;
use oxpecker::storage::Store;
use serde_json::Value;

const ADMIN: (&str, &str) = ("admin@localhost", "admin-pw");

/// A NATS server with JetStream for one test, killed when dropped.
struct Nats {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    async fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = tokio::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server (apt-get install nats-server, or set NATS_SERVER)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Nats {
                    child,
                    url: format!("nats://{addr}"),
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not listen on {addr}");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts node `name` of the cluster at `nats` on the shared `store`.
async fn node(nats: &Nats, store: &Store, name: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.admins = vec![ADMIN.0.into()];
    config.cluster.nats_url = Some(nats.url.clone());
    config.cluster.node_name = Some(name.into());
    config.cluster.node_ttl_secs = 2;
    config.validate().unwrap();
    let server = Server::start_with_store(config.clone(), store.clone())
        .await
        .unwrap();
    TestServer {
        server: Some(server),
        dir,
        config,
    }
}

/// Two nodes and the accounts `users` (plus the admin), created once in the shared store.
async fn cluster(users: &[&str]) -> (Nats, TestServer, TestServer) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "oxpecker=warn".into()))
        .with_test_writer()
        .try_init();
    let nats = Nats::start().await;
    let store = Store::memory();
    let n1 = node(&nats, &store, "n1").await;
    let n2 = node(&nats, &store, "n2").await;
    n1.add_user(ADMIN.0, ADMIN.1).await;
    for u in users {
        n1.add_user(&format!("{u}@localhost"), PASSWORD).await;
    }
    (nats, n1, n2)
}

/// Waits until `srv` sees `full` bound on another node (as available when `available`).
async fn sees(srv: &TestServer, full: &str, available: bool) {
    let full = jid(full);
    for _ in 0..400 {
        let remote = srv.server().core.remote_sessions(&full.bare());
        if remote
            .iter()
            .any(|r| r.jid == full && (r.available || !available))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{full} never appeared in the directory");
}

/// Waits until `srv` sees no session of `bare` on another node.
async fn sees_gone(srv: &TestServer, bare: &str) {
    let bare = jid(bare);
    for _ in 0..600 {
        if srv.server().core.remote_sessions(&bare).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{bare} still in the directory");
}

/// Logs in on `srv`, sends initial presence and waits until `other` sees it in the directory.
async fn online_seen(srv: &TestServer, other: &TestServer, user: &str, res: &str) -> RawClient {
    let c = online(srv, user, res).await;
    sees(other, &format!("{user}@localhost/{res}"), true).await;
    c
}

async fn rest(srv: &TestServer, path: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/admin_rest{path}", srv.http()))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json::<Value>().await.unwrap()["result"].clone()
}

fn chat(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}' id='{id}' type='chat'><body>{body}</body></message>")
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn messages_cross_nodes_to_full_and_bare_jids() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    alice
        .send(&chat("bob@localhost/b2", "m1", "to the full JID"))
        .await;
    let got = read_until_contains(&mut bob, "message", "to the full JID").await;
    assert!(got.contains("from=\"alice@localhost/a1\""), "{got}");
    alice
        .send(&chat("bob@localhost", "m2", "to the bare JID"))
        .await;
    read_until_contains(&mut bob, "message", "to the bare JID").await;
    bob.send(&chat("alice@localhost", "m3", "and back")).await;
    let got = read_until_contains(&mut alice, "message", "and back").await;
    assert!(got.contains("from=\"bob@localhost/b2\""), "{got}");
    // A full JID bound nowhere is treated as the bare JID: bob on the other node gets it.
    alice
        .send(&chat("bob@localhost/gone", "m4", "to a stale resource"))
        .await;
    read_until_contains(&mut bob, "message", "to a stale resource").await;
    // An IQ to a session on the other node is answered from there.
    alice
        .send(
            "<iq type='get' id='v1' to='bob@localhost/b2'><query xmlns='jabber:iq:version'/></iq>",
        )
        .await;
    let iq = read_until_contains(&mut bob, "iq", "id=\"v1\"").await;
    assert!(iq.contains("from=\"alice@localhost/a1\""), "{iq}");
    bob.send("<iq type='result' id='v1' to='alice@localhost/a1'/>")
        .await;
    let answer = read_until_contains(&mut alice, "iq", "id=\"v1\"").await;
    assert!(answer.contains("type=\"result\""), "{answer}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn presence_reaches_contacts_on_the_other_node() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let core = &n1.server().core;
    core.add_mutual(&jid("alice@localhost"), &jid("bob@localhost"))
        .await
        .unwrap();
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    // alice comes online on node 1: bob (node 2) gets her presence, her probe gets bob's.
    let mut alice = RawClient::login(&n1, "alice", PASSWORD, "a1").await;
    alice
        .send("<presence><show>away</show><status>on n1</status></presence>")
        .await;
    let p = read_until_contains(&mut bob, "presence", "alice@localhost/a1").await;
    assert!(p.contains("on n1"), "{p}");
    let p = read_until_contains(&mut alice, "presence", "from=\"bob@localhost/b2\"").await;
    assert!(!p.contains("type="), "available: {p}");
    // bob leaves: alice sees him go.
    bob.send("<presence type='unavailable'/>").await;
    read_until_contains(&mut alice, "presence", "type=\"unavailable\"").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_bind_on_one_node_kicks_the_same_resource_on_the_other() {
    let (_nats, n1, n2) = cluster(&["bob"]).await;
    let mut old = online_seen(&n1, &n2, "bob", "phone").await;
    let mut new = online(&n2, "bob", "phone").await;
    let end = old.read_to_close().await;
    assert!(end.contains("<conflict"), "{end}");
    sees(&n1, "bob@localhost/phone", true).await;
    assert!(
        n1.server()
            .core
            .sessions
            .resources(&jid("bob@localhost"))
            .is_empty()
    );
    new.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    read_until_contains(&mut new, "iq", "id=\"p\"").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn rest_and_admin_operations_see_every_node() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let _alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    let users = rest(&n1, "/users").await;
    assert_eq!(users["count"], 2, "{users}");
    assert!(users["users"].to_string().contains("\"b2\""), "{users}");
    assert_eq!(rest(&n1, "/users/count").await["count"], 2);
    let user = rest(&n1, "/user/bob").await;
    assert_eq!(user["user"]["connected"], true, "{user}");
    assert_eq!(user["user"]["sessions"][0]["node"], "n2", "{user}");
    let listed = n1.server().core.session_list(Some("localhost"), None);
    let nodes: Vec<_> = listed
        .iter()
        .map(|s| (s.jid.as_str(), s.node.as_deref()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("alice@localhost/a1", Some("n1")),
            ("bob@localhost/b2", Some("n2"))
        ]
    );
    // c2s:close on node 1 closes bob's session on node 2 (asked and answered over NATS).
    let closed = n1
        .server()
        .core
        .close_sessions_everywhere(
            "bob@localhost",
            oxpecker::xmpp::StreamErrorCondition::PolicyViolation,
            "closed from n1",
        )
        .await
        .unwrap();
    assert_eq!(closed, ["bob@localhost/b2"]);
    let end = bob.read_to_close().await;
    assert!(end.contains("closed from n1"), "{end}");
    sees_gone(&n1, "bob@localhost").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_stopped_node_leaves_and_its_users_messages_go_offline() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let _bob = online_seen(&n2, &n1, "bob", "b2").await;
    let dir = n2.stop().await;
    drop(dir);
    sees_gone(&n1, "bob@localhost").await;
    assert_eq!(rest(&n1, "/users/count").await["count"], 1);
    alice
        .send(&chat("bob@localhost", "m1", "kept for later"))
        .await;
    // Stored offline (the shared store): bob gets it when he logs in on node 1.
    common::nothing_pending(&mut alice).await;
    let mut bob = online(&n1, "bob", "b1").await;
    read_until_contains(&mut bob, "message", "kept for later").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn without_nats_each_node_serves_its_own_and_bounces_the_rest() {
    let (mut nats, n1, n2) = cluster(&["alice", "bob", "carol"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let _bob = online_seen(&n2, &n1, "bob", "b2").await;
    let mut carol = online(&n1, "carol", "c1").await;
    nats.child.kill().await.unwrap();
    // Wait until node 1 noticed; its last view of the cluster stands.
    for _ in 0..500 {
        if !n1.server().core.cluster().unwrap().is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!n1.server().core.cluster().unwrap().is_connected());
    sees(&n1, "bob@localhost/b2", true).await;
    alice.send(&chat("bob@localhost", "m1", "across")).await;
    let bounce = read_until_contains(&mut alice, "message", "id=\"m1\"").await;
    assert!(
        bounce.contains("type=\"error\"") && bounce.contains("remote-server-timeout"),
        "{bounce}"
    );
    alice
        .send(&chat("carol@localhost", "m2", "same node"))
        .await;
    read_until_contains(&mut carol, "message", "same node").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_node_that_stops_heartbeating_is_gone_within_the_ttl() {
    let (nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    // A node killed with kill -9: it said hello, published a session, then fell silent.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let nodes = js.get_key_value("oxpecker_nodes").await.unwrap();
    let sessions = js.get_key_value("oxpecker_sessions").await.unwrap();
    let key = oxpecker::cluster::directory::key(&jid("bob@localhost"), "ghost");
    nodes.put("ghost", "up".into()).await.unwrap();
    sessions
        .put(&key, r#"[{"r":"g","p":0,"a":true,"s":true}]"#.into())
        .await
        .unwrap();
    sees(&n1, "bob@localhost/g", true).await;
    // Within the TTL (2 s here) its session leaves every view and a survivor removes its key.
    sees_gone(&n1, "bob@localhost").await;
    sees_gone(&n2, "bob@localhost").await;
    let mut removed = false;
    for _ in 0..300 {
        if sessions.get(&key).await.unwrap().is_none() {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(removed, "the gone node's key is still in the bucket");
    // Messages to the account now wait offline.
    alice
        .send(&chat("bob@localhost", "m1", "after the crash"))
        .await;
    common::nothing_pending(&mut alice).await;
    let mut bob = online(&n2, "bob", "b2").await;
    read_until_contains(&mut bob, "message", "after the crash").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_subscription_request_and_its_answer_reach_the_other_node_at_once() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    // alice (node 1) asks bob (node 2): his available resource gets the request now, not at
    // his next login (RFC 6121 §3.1.3).
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let req = read_until_contains(&mut bob, "presence", "type=\"subscribe\"").await;
    assert!(req.contains("from=\"alice@localhost\""), "{req}");
    // bob's answer reaches alice on node 1, then his presence does.
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let ok = read_until_contains(&mut alice, "presence", "type=\"subscribed\"").await;
    assert!(ok.contains("from=\"bob@localhost\""), "{ok}");
    read_until_contains(&mut alice, "presence", "from=\"bob@localhost/b2\"").await;
}
