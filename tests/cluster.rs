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

// ---- Rooms in a cluster: each room hosted by the node holding its lease ----

const MUC: &str = "conference.localhost";

/// Who holds room `room`'s lease, as node `srv` sees it.
fn holder(srv: &TestServer, room: &str) -> oxpecker::core::cluster::RoomHolder {
    srv.server()
        .core
        .cluster()
        .unwrap()
        .room_holder(&jid(&format!("{room}@{MUC}")))
}

/// Waits until `srv` sees room `room` hosted by `want`.
async fn holder_is(srv: &TestServer, room: &str, want: oxpecker::core::cluster::RoomHolder) {
    for _ in 0..500 {
        if holder(srv, room) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{room}: holder {:?}, not {want:?}", holder(srv, room));
}

fn on_node(name: &str) -> oxpecker::core::cluster::RoomHolder {
    oxpecker::core::cluster::RoomHolder::Node(name.into())
}

/// Joins `room` as `nick` (a MUC client), reading up to the subject that ends the join.
async fn join_room(c: &mut RawClient, room: &str, nick: &str) -> String {
    c.send(&format!(
        "<presence to='{room}@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    read_join(c).await
}

/// Reads a join up to the subject message that ends it (`<subject/>` once it crossed nodes).
async fn read_join(c: &mut RawClient) -> String {
    let mut joined = c.read_until("<subject").await;
    joined.push_str(&c.read_until("</message>").await);
    joined
}

/// Creates `room` as an instant room from `c` and joins it as `nick`.
async fn create_instant_room(c: &mut RawClient, room: &str, nick: &str) -> String {
    let joined = join_room(c, room, nick).await;
    c.send(&format!(
        "<iq type='set' id='inst' to='{room}@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ))
    .await;
    let r = read_until_contains(c, "iq", "id=\"inst\"").await;
    assert!(r.contains("type=\"result\""), "{r}");
    joined
}

fn groupchat(room: &str, body: &str) -> String {
    format!("<message to='{room}@{MUC}' type='groupchat'><body>{body}</body></message>")
}

async fn rest_call(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}/admin_rest{path}", srv.http()))
        .basic_auth(ADMIN.0, Some(ADMIN.1));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_room_spans_two_nodes_with_one_copy_each() {
    use oxpecker::core::cluster::RoomHolder;
    let (_nats, n1, n2) = cluster(&["alice", "bob", "carol"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    let mut carol = online_seen(&n2, &n1, "carol", "c2").await;
    // alice makes the room live on node 1, which takes its lease; node 2 learns it by watch.
    create_instant_room(&mut alice, "lounge", "Al").await;
    assert_eq!(holder(&n1, "lounge"), RoomHolder::Here);
    holder_is(&n2, "lounge", on_node("n1")).await;
    // bob joins through node 2: his join is served by node 1.
    let joined = join_room(&mut bob, "lounge", "Bo").await;
    assert!(
        joined.contains("from=\"lounge@conference.localhost/Al\"")
            && joined.contains("code=\"110\""),
        "{joined}"
    );
    let p = read_until_contains(&mut alice, "presence", "lounge@conference.localhost/Bo").await;
    assert!(p.contains("jid=\"bob@localhost/b2\""), "{p}");
    // Groupchat both ways: each occupant gets exactly one copy, with the room's stanza id.
    alice.send(&groupchat("lounge", "g1 from n1")).await;
    alice.send(&groupchat("lounge", "g2 from n1")).await;
    let seen = bob.read_until("g2 from n1").await;
    assert_eq!(seen.matches("g1 from n1").count(), 1, "{seen}");
    assert!(
        seen.contains("by=\"lounge@conference.localhost\"")
            && seen.contains("from=\"lounge@conference.localhost/Al\""),
        "{seen}"
    );
    let echo = alice.read_until("g2 from n1").await;
    assert_eq!(echo.matches("g1 from n1").count(), 1, "{echo}");
    bob.send(&groupchat("lounge", "g3 from n2")).await;
    bob.send(&groupchat("lounge", "g4 from n2")).await;
    let seen = alice.read_until("g4 from n2").await;
    assert_eq!(seen.matches("g3 from n2").count(), 1, "{seen}");
    assert!(
        seen.contains("from=\"lounge@conference.localhost/Bo\""),
        "{seen}"
    );
    let echo = bob.read_until("g4 from n2").await;
    assert_eq!(echo.matches("g3 from n2").count(), 1, "{echo}");
    // Private messages between occupants on different nodes, both ways.
    bob.send(&format!(
        "<message to='lounge@{MUC}/Al' type='chat' id='pm1'><body>psst from n2</body></message>"
    ))
    .await;
    let pm = read_until_contains(&mut alice, "message", "psst from n2").await;
    assert!(
        pm.contains("from=\"lounge@conference.localhost/Bo\""),
        "{pm}"
    );
    alice
        .send(&format!(
            "<message to='lounge@{MUC}/Bo' type='chat' id='pm2'><body>psst from n1</body></message>"
        ))
        .await;
    let pm = read_until_contains(&mut bob, "message", "psst from n1").await;
    assert!(
        pm.contains("from=\"lounge@conference.localhost/Al\""),
        "{pm}"
    );
    // The subject reaches the other node.
    alice
        .send(&format!(
            "<message to='lounge@{MUC}' type='groupchat'><subject>Cluster talk</subject></message>"
        ))
        .await;
    read_until_contains(&mut bob, "message", "Cluster talk").await;
    // A late joiner on node 2 gets the history and the subject, once each.
    let late = join_room(&mut carol, "lounge", "Ca").await;
    for body in ["g1 from n1", "g2 from n1", "g3 from n2", "g4 from n2"] {
        assert_eq!(late.matches(body).count(), 1, "{body}: {late}");
    }
    assert!(
        late.contains("urn:xmpp:delay") && late.contains("Cluster talk"),
        "{late}"
    );
    read_until_contains(&mut bob, "presence", "lounge@conference.localhost/Ca").await;
    // Self-ping from node 2 is answered by the holder.
    carol
        .send(&format!(
            "<iq type='get' id='sp' to='lounge@{MUC}/Ca'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    let pong = read_until_contains(&mut carol, "iq", "id=\"sp\"").await;
    assert!(pong.contains("type=\"result\""), "{pong}");
    // REST on node 2 lists the room with the node hosting it.
    let (status, v) = rest_call(&n2, reqwest::Method::GET, "/muc", None).await;
    assert_eq!(status, 200, "{v}");
    let rooms = v["result"]["rooms"].as_array().cloned().unwrap_or_default();
    let lounge = rooms
        .iter()
        .find(|r| r["jid"] == "lounge@conference.localhost")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(lounge["node"], "n1", "{v}");
    // Only node 1 has the room in memory.
    let local = |srv: &TestServer| {
        oxpecker::modules::muc::service(&srv.server().core, MUC)
            .unwrap()
            .holder("lounge")
    };
    assert_eq!(local(&n1), RoomHolder::Here);
    assert_eq!(local(&n2), on_node("n1"));
    // bob leaves from node 2: alice sees him go.
    bob.send(&format!(
        "<presence to='lounge@{MUC}/Bo' type='unavailable'/>"
    ))
    .await;
    let gone = read_until_contains(&mut alice, "presence", "lounge@conference.localhost/Bo").await;
    assert!(gone.contains("type=\"unavailable\""), "{gone}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_stopped_holders_persistent_room_is_taken_over_from_storage() {
    use oxpecker::core::cluster::RoomHolder;
    let (_nats, n1, n2) = cluster(&["alice", "bob", "carol"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    // A persistent room made live on node 1 by REST, with an admin; and a temporary room.
    let (s, v) = rest_call(
        &n1,
        reqwest::Method::PUT,
        "/muc/keep",
        Some(r#"{"name":"Kept","owner":"alice@localhost","persistent":true}"#),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let (s, v) = rest_call(
        &n1,
        reqwest::Method::PUT,
        "/muc/keep/affiliation/carol@localhost",
        Some(r#"{"affiliation":"admin"}"#),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    assert_eq!(holder(&n1, "keep"), RoomHolder::Here);
    holder_is(&n2, "keep", on_node("n1")).await;
    join_room(&mut alice, "keep", "Al").await;
    create_instant_room(&mut alice, "temp", "Al").await;
    holder_is(&n2, "temp", on_node("n1")).await;
    join_room(&mut bob, "keep", "Bo").await;
    bob.send(&groupchat("keep", "said before")).await;
    read_until_contains(&mut alice, "message", "said before").await;
    // Node 1 stops: its leases go with it.
    drop(alice);
    let dir = n1.stop().await;
    drop(dir);
    sees_gone(&n2, "alice@localhost").await;
    // bob's self-ping now reaches a room that does not know him: not-acceptable, so he joins again.
    bob.send(&format!(
        "<iq type='get' id='sp' to='keep@{MUC}/Bo'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let ping = read_until_contains(&mut bob, "iq", "id=\"sp\"").await;
    assert!(
        ping.contains("type=\"error\"") && ping.contains("not-acceptable"),
        "{ping}"
    );
    assert_eq!(
        holder(&n2, "keep"),
        RoomHolder::Here,
        "node 2 took the room over"
    );
    let again = join_room(&mut bob, "keep", "Bo").await;
    assert!(
        again.contains("code=\"110\"") && again.contains("said before"),
        "{again}"
    );
    // Config and affiliations came from storage.
    let (s, room) = rest_call(&n2, reqwest::Method::GET, "/muc/keep", None).await;
    assert_eq!(s, 200, "{room}");
    let room = &room["result"];
    assert_eq!(room["config"]["persistent"], true, "{room}");
    assert_eq!(room["config"]["name"], "Kept", "{room}");
    assert_eq!(room["affiliations"]["alice@localhost"], "owner", "{room}");
    assert_eq!(room["affiliations"]["carol@localhost"], "admin", "{room}");
    // A message after the takeover is archived once.
    bob.send(&groupchat("keep", "said after")).await;
    read_until_contains(&mut bob, "message", "said after").await;
    let archive = n2
        .server()
        .core
        .store
        .archive(MUC, oxpecker::modules::muc::service::ARCHIVE_STORE);
    // (The archive's reads wait for its pending appends.)
    let page = archive
        .find("keep", &oxpecker::storage::ArchiveQuery::default())
        .await
        .unwrap();
    let after = page
        .items
        .iter()
        .filter(|i| i.value.to_string().contains("said after"))
        .count();
    assert_eq!(after, 1);
    // The temporary room of the stopped node is gone.
    let (_, v) = rest_call(&n2, reqwest::Method::GET, "/muc", None).await;
    let listed = v["result"]["rooms"].to_string();
    assert!(!listed.contains("temp@"), "{v}");
    assert!(listed.contains("\"node\":\"n2\""), "{v}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn two_nodes_racing_to_create_a_room_end_up_with_one() {
    use oxpecker::core::cluster::RoomHolder;
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    // Old-style joins (no MUC payload) make an instant, unlocked room at once.
    alice.send(&format!("<presence to='race@{MUC}/Al'/>")).await;
    bob.send(&format!("<presence to='race@{MUC}/Bo'/>")).await;
    let a = read_join(&mut alice).await;
    let b = read_join(&mut bob).await;
    assert!(
        a.contains("code=\"110\"") && b.contains("code=\"110\""),
        "{a}\n{b}"
    );
    let created = [&a, &b]
        .iter()
        .filter(|j| j.contains("code=\"201\""))
        .count();
    assert_eq!(created, 1, "{a}\n{b}");
    // One holder, which both nodes agree on, and both occupants in its room.
    let (winner, other, name) = if holder(&n1, "race") == RoomHolder::Here {
        (&n1, &n2, "n1")
    } else {
        (&n2, &n1, "n2")
    };
    assert_eq!(holder(winner, "race"), RoomHolder::Here);
    holder_is(other, "race", on_node(name)).await;
    let (s, room) = rest_call(winner, reqwest::Method::GET, "/muc/race", None).await;
    assert_eq!(s, 200, "{room}");
    assert_eq!(
        room["result"]["occupants"].as_array().map(Vec::len),
        Some(2),
        "{room}"
    );
    let (s, v) = rest_call(other, reqwest::Method::GET, "/muc/race", None).await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_room_leased_to_a_silent_node_is_taken_over_after_the_ttl() {
    use oxpecker::core::cluster::RoomHolder;
    let (nats, n1, n2) = cluster(&["alice"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    // A node killed with kill -9 while holding a room: it heartbeated, took a lease, fell silent.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let nodes = js.get_key_value("oxpecker_nodes").await.unwrap();
    nodes.put("ghost", "up".into()).await.unwrap();
    let rooms = loop {
        if let Ok(b) = js
            .get_key_value(oxpecker::cluster::rooms::ROOMS_BUCKET)
            .await
        {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let room = jid(&format!("haunted@{MUC}"));
    rooms
        .put(oxpecker::cluster::rooms::key(&room), "ghost".into())
        .await
        .unwrap();
    holder_is(&n1, "haunted", on_node("ghost")).await;
    // Within the TTL (2 s here) the lease counts as free; a join then takes the room.
    holder_is(&n1, "haunted", RoomHolder::Nobody).await;
    for _ in 0..500 {
        if nodes.get("ghost").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let joined = join_room(&mut alice, "haunted", "Al").await;
    assert!(joined.contains("code=\"201\""), "{joined}");
    assert_eq!(holder(&n1, "haunted"), RoomHolder::Here);
    holder_is(&n2, "haunted", on_node("n1")).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn occupants_on_other_nodes_join_at_once_and_leave_when_their_session_ends() {
    let (nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    create_instant_room(&mut alice, "quick", "Al").await;
    // A room stanza from node 2 names its sender's sessions there, which node 1 takes in at
    // once (its directory key travels another way and may come later).
    let frame = oxpecker::cluster::wire::Frame::Room(
        "n2".into(),
        vec![oxpecker::cluster::directory::Entry {
            resource: "early".into(),
            priority: 0,
            available: true,
            secure: true,
            carbons: false,
            roster: false,
        }],
        oxpecker::xmpp::parser::parse_element(&format!(
            "<iq xmlns='jabber:client' type='get' id='d' from='bob@localhost/early' to='quick@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .unwrap(),
    );
    let client = async_nats::connect(nats.url.as_str()).await.unwrap();
    client
        .publish("oxpecker.node.n1", frame.encode().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let early = jid("bob@localhost/early");
    let mut learnt = false;
    for _ in 0..300 {
        if n1
            .server()
            .core
            .remote_sessions(&early.bare())
            .iter()
            .any(|s| s.jid == early && &*s.node == "n2")
        {
            learnt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        learnt,
        "node 1 did not learn the sender's session from the frame"
    );
    holder_is(&n2, "quick", on_node("n1")).await;
    // bob joins right after binding on node 2, before node 1's directory may list him: the
    // room stanza itself tells node 1 where he is.
    let mut bob = common::login(&n2, "bob", "b2").await;
    let joined = join_room(&mut bob, "quick", "Bo").await;
    assert!(joined.contains("code=\"110\""), "{joined}");
    read_until_contains(&mut alice, "presence", "quick@conference.localhost/Bo").await;
    // His connection drops without unavailable presence: node 2 leaves the room for him.
    drop(bob);
    let gone = read_until_contains(&mut alice, "presence", "quick@conference.localhost/Bo").await;
    assert!(gone.contains("type=\"unavailable\""), "{gone}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn a_node_whose_room_moved_drops_its_copy_and_its_occupants_join_the_holder() {
    use oxpecker::core::cluster::RoomHolder;
    let (nats, n1, n2) = cluster(&["alice"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let (s, v) = rest_call(
        &n1,
        reqwest::Method::PUT,
        "/muc/moving",
        Some(r#"{"owner":"alice@localhost","persistent":true}"#),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    join_room(&mut alice, "moving", "Al").await;
    // While node 1 was cut off, a survivor removed its lease and node 2 took the room.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let rooms = js
        .get_key_value(oxpecker::cluster::rooms::ROOMS_BUCKET)
        .await
        .unwrap();
    let room = jid(&format!("moving@{MUC}"));
    rooms
        .delete(oxpecker::cluster::rooms::key(&room))
        .await
        .unwrap();
    holder_is(&n2, "moving", RoomHolder::Nobody).await;
    let taken = n2.server().core.cluster().unwrap().claim_room(&room).await;
    assert_eq!(taken, Some(RoomHolder::Here));
    holder_is(&n1, "moving", on_node("n2")).await;
    // alice's next stanza goes to node 2; node 1 forgets its copy and tells her she was removed.
    alice.send(&groupchat("moving", "anyone here?")).await;
    let removed = read_until_contains(&mut alice, "presence", "code=\"332\"").await;
    assert!(removed.contains("type=\"unavailable\""), "{removed}");
    let refused = read_until_contains(&mut alice, "message", "type=\"error\"").await;
    assert!(refused.contains("not-acceptable"), "{refused}");
    // She joins again, at node 2, which loaded the room from storage.
    let again = join_room(&mut alice, "moving", "Al").await;
    assert!(again.contains("affiliation=\"owner\""), "{again}");
    assert_eq!(holder(&n2, "moving"), RoomHolder::Here);
}

// ---- pushes: carbons, roster and blocking pushes, a dead node's presence, SM across nodes ----

/// A third node `name` joining `n1`'s cluster on the same store.
async fn third_node(nats: &Nats, n1: &TestServer, name: &str) -> TestServer {
    let store = n1.server().core.store.clone();
    node(nats, &store, name).await
}

/// Waits until `srv` sees `full` on another node with `flag` set (read from the directory).
async fn sees_flag(
    srv: &TestServer,
    full: &str,
    flag: impl Fn(&oxpecker::core::cluster::RemoteSession) -> bool,
) {
    let full = jid(full);
    for _ in 0..400 {
        let remote = srv.server().core.remote_sessions(&full.bare());
        if remote.iter().any(|r| r.jid == full && flag(r)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{full} never showed the flag in the directory");
}

/// Waits until `srv` no longer sees `full` on another node.
async fn sees_not(srv: &TestServer, full: &str) {
    let full = jid(full);
    for _ in 0..600 {
        let remote = srv.server().core.remote_sessions(&full.bare());
        if !remote.iter().any(|r| r.jid == full) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{full} still in the directory");
}

/// Sends an IQ and reads up to its answer, which must be a result.
async fn iq_ok(c: &mut RawClient, id: &str, iq: &str) {
    c.send(iq).await;
    let answer = read_until_contains(c, "iq", &format!("id=\"{id}\"")).await;
    assert!(answer.contains("type=\"result\""), "{answer}");
}

async fn enable_carbons(c: &mut RawClient) {
    iq_ok(
        c,
        "carbons",
        "<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    )
    .await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn carbons_reach_resources_on_the_other_node_both_ways() {
    let (_nats, n1, n2) = cluster(&["alice", "bob", "carol"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut carol = online_seen(&n2, &n1, "carol", "c2").await;
    let mut b1 = online_seen(&n1, &n2, "bob", "b1").await;
    let mut b2 = online_seen(&n2, &n1, "bob", "b2").await;
    enable_carbons(&mut b1).await;
    enable_carbons(&mut b2).await;
    sees_flag(&n1, "bob@localhost/b2", |r| r.carbons).await;
    sees_flag(&n2, "bob@localhost/b1", |r| r.carbons).await;
    // Received on node 1 for b1: b2 on node 2 gets the <received/> copy.
    alice
        .send(&chat("bob@localhost/b1", "r1", "to b1 from n1"))
        .await;
    read_until_contains(&mut b1, "message", "to b1 from n1").await;
    let copy = read_until_contains(&mut b2, "message", "to b1 from n1").await;
    assert!(
        copy.contains("<received xmlns=\"urn:xmpp:carbons:2\"")
            && copy.contains("from=\"bob@localhost\"")
            && copy.contains("to=\"bob@localhost/b2\""),
        "{copy}"
    );
    // And the other way: carol on node 2 writes to b2, b1 on node 1 gets the copy.
    carol
        .send(&chat("bob@localhost/b2", "r2", "to b2 from n2"))
        .await;
    read_until_contains(&mut b2, "message", "to b2 from n2").await;
    let copy = read_until_contains(&mut b1, "message", "to b2 from n2").await;
    assert!(
        copy.contains("<received xmlns=\"urn:xmpp:carbons:2\""),
        "{copy}"
    );
    // Sent by b1 on node 1: b2 on node 2 gets the <sent/> copy, and back.
    b1.send(&chat("alice@localhost", "s1", "sent by b1")).await;
    read_until_contains(&mut alice, "message", "sent by b1").await;
    let copy = read_until_contains(&mut b2, "message", "sent by b1").await;
    assert!(
        copy.contains("<sent xmlns=\"urn:xmpp:carbons:2\""),
        "{copy}"
    );
    b2.send(&chat("carol@localhost", "s2", "sent by b2")).await;
    read_until_contains(&mut carol, "message", "sent by b2").await;
    let copy = read_until_contains(&mut b1, "message", "sent by b2").await;
    assert!(
        copy.contains("<sent xmlns=\"urn:xmpp:carbons:2\""),
        "{copy}"
    );
    // Disabled on node 2: the next message to b1 gives b2 no copy.
    iq_ok(
        &mut b2,
        "off",
        "<iq type='set' id='off'><disable xmlns='urn:xmpp:carbons:2'/></iq>",
    )
    .await;
    sees_flag(&n1, "bob@localhost/b2", |r| !r.carbons).await;
    alice
        .send(&chat("bob@localhost/b1", "r3", "no copy now"))
        .await;
    read_until_contains(&mut b1, "message", "no copy now").await;
    common::nothing_pending(&mut b2).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn roster_and_blocking_pushes_reach_the_other_node() {
    let (_nats, n1, n2) = cluster(&["alice", "bob", "carol"]).await;
    let mut b1 = online_seen(&n1, &n2, "bob", "b1").await;
    let mut b2 = online_seen(&n2, &n1, "bob", "b2").await;
    for c in [&mut b1, &mut b2] {
        iq_ok(
            c,
            "roster",
            "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await;
    }
    sees_flag(&n2, "bob@localhost/b1", |r| r.roster).await;
    // A roster change by b2 on node 2 is pushed to b1 on node 1.
    b2.send(
        "<iq type='set' id='add'><query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='Carol'/></query></iq>",
    )
    .await;
    let push = read_until_contains(&mut b1, "iq", "carol@localhost").await;
    assert!(
        push.contains("type=\"set\"") && push.contains("name=\"Carol\""),
        "{push}"
    );
    assert!(
        push.contains("from=\"bob@localhost\"") || !push.contains("from="),
        "{push}"
    );
    // A change made by the server on node 2 (as REST makes it) reaches node 1 too.
    n2.server()
        .core
        .add_mutual(&jid("bob@localhost"), &jid("alice@localhost"))
        .await
        .unwrap();
    let push = read_until_contains(&mut b1, "iq", "alice@localhost").await;
    assert!(push.contains("subscription=\"both\""), "{push}");
    // A block by b2 on node 2 is pushed to b1 on node 1 (XEP-0191 §3.3).
    iq_ok(
        &mut b2,
        "blk",
        "<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='spam@localhost'/></block></iq>",
    )
    .await;
    let push = read_until_contains(&mut b1, "iq", "spam@localhost").await;
    assert!(
        push.contains("<block xmlns=\"urn:xmpp:blocking\"") && push.contains("type=\"set\""),
        "{push}"
    );
    // Blocking alice (on node 1) from node 2: she sees both of bob's resources go offline.
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    iq_ok(
        &mut b2,
        "blk2",
        "<iq type='set' id='blk2'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>",
    )
    .await;
    let mut gone = Vec::new();
    while gone.len() < 2 {
        let p = read_until_contains(&mut alice, "presence", "type=\"unavailable\"").await;
        for from in ["bob@localhost/b1", "bob@localhost/b2"] {
            if p.contains(&format!("from=\"{from}\"")) && !gone.contains(&from) {
                gone.push(from);
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn one_survivor_announces_a_dead_nodes_sessions_unavailable() {
    let (nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let n3 = third_node(&nats, &n1, "n3").await;
    n1.server()
        .core
        .add_mutual(&jid("alice@localhost"), &jid("bob@localhost"))
        .await
        .unwrap();
    // alice on node 3 (the announcement comes from node 1, the lowest survivor), and bob's
    // other resource on node 2.
    let mut alice = online(&n3, "alice", "a3").await;
    let mut b2 = online(&n2, "bob", "b2").await;
    for srv in [&n1, &n3] {
        sees(srv, "bob@localhost/b2", true).await;
    }
    // A node killed with kill -9 held an available session of bob.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let nodes = js.get_key_value("oxpecker_nodes").await.unwrap();
    let sessions = js.get_key_value("oxpecker_sessions").await.unwrap();
    let key = oxpecker::cluster::directory::key(&jid("bob@localhost"), "ghost");
    nodes.put("ghost", "up".into()).await.unwrap();
    sessions
        .put(&key, r#"[{"r":"g","p":0,"a":true,"s":true}]"#.into())
        .await
        .unwrap();
    for srv in [&n1, &n2, &n3] {
        sees(srv, "bob@localhost/g", true).await;
    }
    // Within the TTL: its contact and bob's other resource hear it go.
    let p = read_until_contains(&mut alice, "presence", "from=\"bob@localhost/g\"").await;
    assert!(p.contains("type=\"unavailable\""), "{p}");
    let p = read_until_contains(&mut b2, "presence", "from=\"bob@localhost/g\"").await;
    assert!(p.contains("type=\"unavailable\""), "{p}");
    for srv in [&n1, &n2, &n3] {
        sees_not(srv, "bob@localhost/g").await;
    }
    let mut removed = false;
    for _ in 0..300 {
        if sessions.get(&key).await.unwrap().is_none() {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(removed, "the gone node's key is still in the bucket");
    // Every survivor has swept a few times since: still nobody else announced it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in [&mut alice, &mut b2] {
        c.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        let rest = c.read_until("id=\"sync\"").await;
        assert!(!rest.contains("bob@localhost/g"), "announced twice: {rest}");
    }
    // The account's messages now go to its live resource only.
    alice
        .send(&chat("bob@localhost", "m1", "after the crash"))
        .await;
    read_until_contains(&mut b2, "message", "after the crash").await;
}

const SM: &str = "urn:xmpp:sm:3";

/// Logs in over STARTTLS + PLAIN on `srv` and opens the stream again, not bound yet.
async fn authenticated(srv: &TestServer, user: &str) -> RawClient {
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    assert!(c.auth_plain(user, PASSWORD).await.contains("<success"));
    let features = c.open().await;
    assert!(features.contains(SM), "{features}");
    c
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn resuming_on_another_node_fails_at_once_and_loses_nothing() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    // bob on node 2, resumable.
    let mut bob = authenticated(&n2, "bob").await;
    bob.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>")
        .await;
    bob.read_stanza("iq").await;
    bob.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = bob.read_stanza("enabled").await;
    let start = enabled.find("id=\"").unwrap() + 4;
    let id = enabled[start..start + enabled[start..].find('"').unwrap()].to_string();
    bob.send("<presence/>").await;
    read_until_contains(&mut bob, "presence", "bob@localhost/phone").await;
    sees(&n1, "bob@localhost/phone", true).await;
    // His connection dies; the session hibernates on node 2 and takes a message, unacked.
    drop(bob);
    let phone = jid("bob@localhost/phone");
    for _ in 0..400 {
        if n2
            .server()
            .core
            .sessions
            .get(&phone)
            .is_some_and(|s| s.is_hibernating())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        n2.server()
            .core
            .sessions
            .get(&phone)
            .is_some_and(|s| s.is_hibernating())
    );
    alice
        .send(&chat("bob@localhost", "m1", "while you were away"))
        .await;
    common::nothing_pending(&mut alice).await;
    // He reconnects to node 1 and asks to resume: refused at once, not a hang or stream error.
    let mut bob = authenticated(&n1, "bob").await;
    bob.send(&format!("<resume xmlns='{SM}' previd='{id}' h='1'/>"))
        .await;
    let failed = bob.read_stanza("failed").await;
    assert!(failed.contains("item-not-found"), "{failed}");
    // Node 2 ends the hibernating session; what it held is routed again.
    for _ in 0..400 {
        if n2.server().core.sessions.get(&phone).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        n2.server().core.sessions.get(&phone).is_none(),
        "still there"
    );
    // A fresh bind on node 1 gets the message sent meanwhile.
    bob.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>laptop</resource></bind></iq>")
        .await;
    assert!(bob.read_stanza("iq").await.contains("<jid>"));
    bob.send("<presence/>").await;
    read_until_contains(&mut bob, "message", "while you were away").await;
    // An id no node knows (its node died with it) fails the same way.
    let mut again = authenticated(&n1, "bob").await;
    again
        .send(&format!("<resume xmlns='{SM}' previd='{id}' h='1'/>"))
        .await;
    let failed = again.read_stanza("failed").await;
    assert!(failed.contains("item-not-found"), "{failed}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn subscriptions_are_delivered_to_the_other_node() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    // alice on node 1 asks; node 1 handles bob's side and hands the request to bob on node 2.
    alice
        .send("<presence type='subscribe' to='bob@localhost'/>")
        .await;
    let p = read_until_contains(&mut bob, "presence", "type=\"subscribe\"").await;
    assert!(p.contains("from=\"alice@localhost\""), "{p}");
    // bob approves on node 2: alice on node 1 gets the approval, then his presence.
    bob.send("<presence type='subscribed' to='alice@localhost'/>")
        .await;
    let p = read_until_contains(&mut alice, "presence", "type=\"subscribed\"").await;
    assert!(p.contains("from=\"bob@localhost\""), "{p}");
    read_until_contains(&mut alice, "presence", "from=\"bob@localhost/b2\"").await;
    // bob cancels: alice's session on node 1 sees him go unavailable.
    bob.send("<presence type='unsubscribed' to='alice@localhost'/>")
        .await;
    let p = read_until_contains(&mut alice, "presence", "type=\"unavailable\"").await;
    assert!(p.contains("from=\"bob@localhost/b2\""), "{p}");
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn deleting_an_account_closes_its_sessions_on_every_node() {
    let (_nats, n1, n2) = cluster(&["bob"]).await;
    let mut bob = online_seen(&n2, &n1, "bob", "b2").await;
    assert!(
        n1.server()
            .core
            .delete_account(&jid("bob@localhost"))
            .await
            .unwrap()
    );
    let end = bob.read_to_close().await;
    assert!(end.contains("the account was deleted"), "{end}");
    sees_gone(&n1, "bob@localhost").await;
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

// PEP across nodes: a contact's resource on another node gets the owner's notifications, its
// caps resolved with a disco#info query whose answer crosses back to the querying node.

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const GEOLOC: &str = "http://jabber.org/protocol/geoloc";
const PEP_CAPS_NODE: &str = "https://oxpecker.test/client";

/// The XEP-0115 §5 ver (SHA-1) of a client with identity client/pc/"Test" and `features`.
fn pep_caps_ver(features: &[&str]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut f: Vec<&str> = features.to_vec();
    f.sort();
    let mut s = String::from("client/pc//Test<");
    for x in f {
        s.push_str(x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The value of attribute `name` in the first tag of `xml` that has it.
fn attr_value(xml: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = xml.find(&key)? + key.len();
    let end = xml[start..].find('"')? + start;
    Some(xml[start..end].to_string())
}

/// Reads the next server disco#info query on `c`, answers it with `features`, returns its id.
async fn answer_caps_query(c: &mut RawClient, features: &[&str]) -> String {
    let q = read_until_contains(c, "iq", DISCO_INFO).await;
    assert!(q.contains("type=\"get\""), "{q}");
    let id = attr_value(&q, "id").unwrap();
    let node = attr_value(&q, "node").unwrap();
    let mut body = String::from("<identity category='client' type='pc' name='Test'/>");
    for f in features {
        body.push_str(&format!("<feature var='{f}'/>"));
    }
    c.send(&format!(
        "<iq type='result' id='{id}' to='localhost'><query xmlns='{DISCO_INFO}' node='{node}'>{body}</query></iq>"
    ))
    .await;
    id
}

fn geoloc_publish(id: &str, item: &str, locality: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{GEOLOC}'><item id='{item}'><geoloc xmlns='{GEOLOC}'><locality>{locality}</locality></geoloc></item></publish></pubsub></iq>"
    )
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/cluster-test"]
async fn pep_notifications_reach_a_contact_on_the_other_node() {
    let (_nats, n1, n2) = cluster(&["alice", "bob"]).await;
    n1.server()
        .core
        .add_mutual(&jid("alice@localhost"), &jid("bob@localhost"))
        .await
        .unwrap();
    let mut alice = online_seen(&n1, &n2, "alice", "a1").await;
    let features = [
        DISCO_INFO,
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/geoloc+notify",
    ];
    let mut bob = common::login(&n2, "bob", "b2").await;
    bob.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{PEP_CAPS_NODE}' ver='{}'/></presence>",
        pep_caps_ver(&features)
    ))
    .await;
    // Two caps queries: node 2's for its own session, and node 1's, which saw bob's presence
    // forwarded to alice; each id names its node, and node 1's answer goes back to node 1.
    let mut ids = vec![
        answer_caps_query(&mut bob, &features).await,
        answer_caps_query(&mut bob, &features).await,
    ];
    ids.sort();
    assert!(
        ids[0].starts_with("n1~") && ids[1].starts_with("n2~"),
        "{ids:?}"
    );
    sees(&n1, "bob@localhost/b2", true).await;
    alice.send(&geoloc_publish("p1", "g1", "Lisbon")).await;
    let r = read_until_contains(&mut alice, "iq", "id=\"p1\"").await;
    assert!(r.contains("type=\"result\""), "{r}");
    let m = read_until_contains(&mut bob, "message", "pubsub#event").await;
    assert!(
        m.contains("from=\"alice@localhost\"")
            && m.contains("to=\"bob@localhost/b2\"")
            && m.contains(&format!("<items node=\"{GEOLOC}\">"))
            && m.contains("<locality>Lisbon</locality>"),
        "{m}"
    );
    // Node 1 answered its caps query with the answer node 2 forwarded: nothing left waiting.
    assert_eq!(n1.server().core.iq.in_flight(), 0);
    // bob goes unavailable (his session stays bound, so the directory still lists it): node 1
    // forgets his presence, and the next publish sends him nothing.
    bob.send("<presence type='unavailable'/>").await;
    read_until_contains(&mut alice, "presence", "type=\"unavailable\"").await;
    alice.send(&geoloc_publish("p2", "g2", "Porto")).await;
    let r = read_until_contains(&mut alice, "iq", "id=\"p2\"").await;
    assert!(r.contains("type=\"result\""), "{r}");
    common::nothing_pending(&mut bob).await;
}
