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

// s2s and admin operations in a cluster: two nodes for `a.example` and a separate server for
// `b.example`, federating over loopback with dialback; and admin operations applied on every
// node (or the one named).

const A_DOMAIN: &str = "a.example";
const B_DOMAIN: &str = "b.example";
const A_ADMIN: (&str, &str) = ("admin@a.example", "admin-pw");

/// Node `name` of the cluster at `nats` on the shared `store`, serving `hosts`.
async fn node_serving(nats: &Nats, store: &Store, name: &str, hosts: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.hosts = hosts
        .iter()
        .map(|h| oxpecker::config::HostConfig {
            name: h.to_string(),
            ..Default::default()
        })
        .collect();
    config.admins = vec![ADMIN.0.into(), A_ADMIN.0.into()];
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

/// Points `srv`'s `[s2s.hosts]` entry for `domain` at `to`'s s2s listener (a live swap).
fn point_s2s(srv: &TestServer, domain: &str, to: &TestServer) {
    let core = &srv.server().core;
    let mut cfg = (**core.config.load()).clone();
    cfg.s2s
        .hosts
        .insert(domain.into(), to.server().s2s_addrs[0]);
    core.config.store(std::sync::Arc::new(cfg));
}

/// Nodes n1 and n2 for `a.example` (alice, carol and the admin), and `b.example` (bob) on its
/// own. Both nodes find b.example at its listener; b.example finds a.example at node 2 only,
/// so it verifies node 1's dialback keys with node 2.
async fn federated_cluster() -> (Nats, TestServer, TestServer, TestServer) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "oxpecker=warn".into()))
        .with_test_writer()
        .try_init();
    let nats = Nats::start().await;
    let store = Store::memory();
    let n1 = node_serving(&nats, &store, "n1", &[A_DOMAIN]).await;
    let n2 = node_serving(&nats, &store, "n2", &[A_DOMAIN]).await;
    let b = TestServer::start_with(|c| {
        c.hosts = vec![oxpecker::config::HostConfig {
            name: B_DOMAIN.into(),
            ..Default::default()
        }];
    })
    .await;
    point_s2s(&n1, B_DOMAIN, &b);
    point_s2s(&n2, B_DOMAIN, &b);
    point_s2s(&b, A_DOMAIN, &n2);
    n1.add_user(A_ADMIN.0, A_ADMIN.1).await;
    for u in ["alice", "carol"] {
        n1.add_user(&format!("{u}@{A_DOMAIN}"), PASSWORD).await;
    }
    b.add_user(&format!("bob@{B_DOMAIN}"), PASSWORD).await;
    (nats, n1, n2, b)
}

/// `user@domain/resource` logged in on `srv` (STARTTLS, PLAIN, bind) and available.
async fn online_at(srv: &TestServer, domain: &str, user: &str, resource: &str) -> RawClient {
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    );
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(&header).await;
    c.read_until("</stream:features>").await;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    c.read_until("<proceed").await;
    c.read_until("/>").await;
    let io = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
    let name = rustls_pki_types::ServerName::try_from(domain.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(common::client_tls(&srv.cert_pem()))
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
    c.read_until("</iq>").await;
    c.jid = format!("{user}@{domain}/{resource}");
    c.send("<presence/>").await;
    let me = c.jid.clone();
    read_until_contains(&mut c, "presence", &me).await;
    c
}

/// An admin REST call on `srv` as `admin`: the status and the JSON body.
async fn rest_as(
    srv: &TestServer,
    admin: (&str, &str),
    method: reqwest::Method,
    path: &str,
) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method, format!("http://{}/admin_rest{path}", srv.http()))
        .basic_auth(admin.0, Some(admin.1))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// The remote domains of `srv`'s outgoing s2s streams from `GET /s2s`.
async fn outgoing_streams(srv: &TestServer) -> Vec<String> {
    let (status, body) = rest_as(srv, A_ADMIN, reqwest::Method::GET, "/s2s").await;
    assert_eq!(status, 200, "{body}");
    body["result"]["s2s"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["direction"] == "outgoing")
        .map(|s| {
            format!(
                "{}>{}",
                s["local"].as_str().unwrap(),
                s["remote"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn the_cluster_sends_to_a_remote_domain_on_one_stream_and_takes_it_over() {
    let (_nats, n1, n2, b) = federated_cluster().await;
    let mut alice = online_at(&n1, A_DOMAIN, "alice", "pc").await;
    let mut carol = online_at(&n2, A_DOMAIN, "carol", "phone").await;
    let mut bob = online_at(&b, B_DOMAIN, "bob", "desk").await;
    sees(&n1, "carol@a.example/phone", true).await;
    sees(&n2, "alice@a.example/pc", true).await;
    // Node 1 needs the stream first and takes the lease; node 2 forwards to it.
    alice.send(&chat("bob@b.example", "m1", "from alice")).await;
    let got = read_until_contains(&mut bob, "message", "from alice").await;
    assert!(got.contains("from=\"alice@a.example/pc\""), "{got}");
    carol.send(&chat("bob@b.example", "m2", "from carol")).await;
    let got = read_until_contains(&mut bob, "message", "from carol").await;
    assert!(got.contains("from=\"carol@a.example/phone\""), "{got}");
    assert_eq!(outgoing_streams(&n1).await, ["a.example>b.example"]);
    assert!(outgoing_streams(&n2).await.is_empty());
    let incoming = b.server().core.federation.get().unwrap().streams();
    let from_a: Vec<_> = incoming
        .iter()
        .filter(|s| s.direction == "incoming" && s.remote == A_DOMAIN)
        .collect();
    assert_eq!(from_a.len(), 1, "{incoming:?}");
    // Node 1's dialback key was verified by node 2 (where b.example finds a.example).
    assert_eq!(from_a[0].auth, "dialback", "{incoming:?}");
    // b.example answers over its own stream, which lands on node 2: each reply reaches its
    // user on their own node.
    bob.send(&chat("alice@a.example/pc", "r1", "to alice"))
        .await;
    bob.send(&chat("carol@a.example/phone", "r2", "to carol"))
        .await;
    let got = read_until_contains(&mut alice, "message", "to alice").await;
    assert!(got.contains("from=\"bob@b.example/desk\""), "{got}");
    read_until_contains(&mut carol, "message", "to carol").await;
    // The holder stops: node 2 takes the pair over on the next stanza and opens its own stream.
    drop(alice);
    let dir = n1.stop().await;
    drop(dir);
    sees_gone(&n2, "alice@a.example").await;
    carol.send(&chat("bob@b.example", "m3", "still here")).await;
    read_until_contains(&mut bob, "message", "still here").await;
    assert_eq!(outgoing_streams(&n2).await, ["a.example>b.example"]);
    bob.send(&chat("carol@a.example/phone", "r3", "welcome back"))
        .await;
    read_until_contains(&mut carol, "message", "welcome back").await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn admin_operations_apply_on_every_node_unless_one_is_named() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats = Nats::start().await;
    let store = Store::memory();
    let hosts = ["localhost", "extra.example"];
    let n1 = node_serving(&nats, &store, "n1", &hosts).await;
    let n2 = node_serving(&nats, &store, "n2", &hosts).await;
    n1.add_user(ADMIN.0, ADMIN.1).await;
    // Both nodes know each other (a session seen across is proof of a live directory).
    let _alice = {
        n1.add_user("alice@localhost", PASSWORD).await;
        online_seen(&n1, &n2, "alice", "a1").await
    };
    for _ in 0..400 {
        if n1.server().core.cluster().unwrap().peers() == ["n2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loaded = |srv: &TestServer| {
        srv.server()
            .core
            .host("localhost")
            .unwrap()
            .is_loaded("ping")
    };
    assert!(loaded(&n1) && loaded(&n2));
    // REST, cluster-wide by default: unloaded on both nodes, node 2's outcome in `nodes`.
    let (status, body) = rest_as(&n1, ADMIN, reqwest::Method::DELETE, "/module/ping").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"][0]["node"], "n2", "{body}");
    assert_eq!(body["nodes"][0]["status"], "ok", "{body}");
    assert!(!loaded(&n1) && !loaded(&n2));
    let (_, modules) = rest_as(&n2, ADMIN, reqwest::Method::GET, "/modules").await;
    assert!(!modules.to_string().contains("\"ping\""), "{modules}");
    // Scoped to node 1: node 2 is not asked.
    let (status, body) = rest_as(&n1, ADMIN, reqwest::Method::PUT, "/module/ping?node=n1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("nodes").is_none(), "{body}");
    assert!(loaded(&n1) && !loaded(&n2));
    // Scoped to node 2 from node 1: only node 2 runs it.
    let (status, body) = rest_as(&n1, ADMIN, reqwest::Method::PUT, "/module/ping?node=n2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"][0]["status"], "ok", "{body}");
    assert!(loaded(&n2));
    // The shell, cluster-wide: one line per node.
    let core1 = n1.server().core.clone();
    let run = |group: &'static str, cmd: &'static str, args: &[&str]| {
        let core = core1.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move { oxpecker::control::console::run(&core, group, cmd, args).await }
    };
    let out = run("module", "unload", &["ping"]).await.unwrap();
    let text = out.text.unwrap_or_default();
    assert!(text.contains("n1: unloaded ping on"), "{text}");
    assert!(text.contains("n2: unloaded ping on"), "{text}");
    assert!(!loaded(&n1) && !loaded(&n2));
    // An error on another node is reported as such (an error: no node succeeded).
    let err = run("module", "unload", &["ping", "localhost", "n2"])
        .await
        .unwrap_err();
    assert!(err.contains("n2: error:"), "{err}");
    // Hosts: deactivated on every node.
    let active = |srv: &TestServer| srv.server().core.host("extra.example").is_some();
    assert!(active(&n1) && active(&n2));
    let (status, body) = rest_as(&n1, ADMIN, reqwest::Method::DELETE, "/hosts/extra.example").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"][0]["status"], "ok", "{body}");
    assert!(!active(&n1) && !active(&n2));
    let out = run("host", "activate", &["extra.example"]).await.unwrap();
    assert!(
        out.text
            .unwrap_or_default()
            .contains("n2: extra.example activated")
    );
    assert!(active(&n1) && active(&n2));
    // Config reload: every node re-reads its configuration (here its unchanged built-in one).
    let (status, body) = rest_as(&n1, ADMIN, reqwest::Method::PUT, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["report"]["warnings"].is_array(), "{body}");
    assert_eq!(body["nodes"][0]["node"], "n2", "{body}");
    assert_eq!(body["nodes"][0]["status"], "ok", "{body}");
    assert!(body["nodes"][0]["result"]["warnings"].is_array(), "{body}");
    let out = run("config", "reload", &["n2"]).await.unwrap();
    assert!(
        out.text
            .unwrap_or_default()
            .contains("n2: configuration reloaded"),
        "scoped to node 2 from node 1"
    );
    // A node that is gone is reported unreachable within the bounded wait.
    let dir = n2.stop().await;
    drop(dir);
    let err = run("host", "deactivate", &["extra.example", "n2"])
        .await
        .unwrap_err();
    assert!(err.contains("n2: unreachable"), "{err}");
    assert!(active(&n1));
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_lease_held_by_a_node_that_fell_silent_is_taken_over() {
    let (nats, n1, _n2, b) = federated_cluster().await;
    let mut alice = online_at(&n1, A_DOMAIN, "alice", "pc").await;
    let mut bob = online_at(&b, B_DOMAIN, "bob", "desk").await;
    // A node killed with kill -9 while holding the pair's lease: it heartbeated once, then
    // fell silent.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let nodes = js.get_key_value("oxpecker_nodes").await.unwrap();
    let leases = js.get_key_value("oxpecker_s2s").await.unwrap();
    let key = oxpecker::cluster::s2s::key(&(A_DOMAIN.into(), B_DOMAIN.into()));
    nodes.put("ghost", "up".into()).await.unwrap();
    leases.put(&key, "ghost".into()).await.unwrap();
    let peers = |srv: &TestServer| srv.server().core.cluster().unwrap().peers();
    let mut heard = false;
    for _ in 0..400 {
        heard |= peers(&n1).contains(&"ghost".to_string());
        if heard && !peers(&n1).contains(&"ghost".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(heard, "node 1 never heard the ghost");
    assert!(
        !peers(&n1).contains(&"ghost".to_string()),
        "the ghost never fell silent"
    );
    // The survivors drop the gone node's lease (or the next stanza replaces it), and node 1
    // opens a stream of its own.
    alice
        .send(&chat("bob@b.example", "m1", "after the crash"))
        .await;
    read_until_contains(&mut bob, "message", "after the crash").await;
    assert_eq!(outgoing_streams(&n1).await, ["a.example>b.example"]);
    let holder = leases.get(&key).await.unwrap().unwrap();
    assert_eq!(&holder[..], b"n1");
}
