//! Lifecycle events on a real server: a module loaded at run time sees authentication, binding
//! and unbinding of a client over real sockets, registration and password change, CSI through
//! its tag hooks, and shutdown on the global bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RawClient, TestServer};
use oxpecker::core::lifecycle as ev;
use oxpecker::core::modules::{LoadError, Module, ModuleContext};
use serde_json::Value;

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Records `events` on its host's bus and the `*` bus with their data.
struct Recorder(Seen);

const HOST_EVENTS: &[&str] = &[
    ev::AUTHENTICATION_SUCCESS,
    ev::AUTHENTICATION_FAILURE,
    ev::PRE_RESOURCE_BIND,
    ev::RESOURCE_BIND,
    ev::RESOURCE_UNBIND,
    ev::USER_REGISTERED,
    ev::USER_PASSWORD_CHANGED,
];
const GLOBAL_EVENTS: &[&str] = &[ev::SERVER_STOPPING, ev::HOST_DEACTIVATED];

impl Module for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        for (events, global) in [(HOST_EVENTS, false), (GLOBAL_EVENTS, true)] {
            for event in events {
                let seen = self.0.clone();
                let name = event.to_string();
                let f = Arc::new(move |d: &mut Value| {
                    seen.lock().unwrap().push((name.clone(), d.clone()));
                    None
                });
                if global {
                    ctx.hook_global_event(event, 0, f);
                } else {
                    ctx.hook_event(event, 0, f);
                }
            }
        }
        Ok(())
    }
}

async fn recording() -> (TestServer, Seen) {
    let srv = TestServer::start().await;
    let seen = Seen::default();
    let core = &srv.server().core;
    let host = core.host("localhost").cloned().unwrap();
    host.load(Arc::downgrade(core), &Recorder(seen.clone()))
        .unwrap();
    (srv, seen)
}

/// Waits until `event` was recorded, then returns its data.
async fn wait_for(seen: &Seen, event: &str) -> Value {
    for _ in 0..500 {
        if let Some((_, d)) = seen.lock().unwrap().iter().find(|(e, _)| e == event) {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{event} was not fired; saw {:?}", seen.lock().unwrap());
}

fn names(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(e, _)| e.clone())
        .collect()
}

#[tokio::test]
async fn a_client_session_is_announced_from_login_to_disconnect() {
    let (srv, seen) = recording().await;
    srv.add_user("alice@localhost", "pw").await;
    assert_eq!(names(&seen), vec![ev::USER_REGISTERED]);

    let mut bad = RawClient::connect(srv.c2s()).await;
    bad.starttls(&srv.cert_pem()).await;
    assert!(bad.auth_plain("alice", "nope").await.contains("<failure"));
    let failure = wait_for(&seen, ev::AUTHENTICATION_FAILURE).await;
    assert_eq!(failure["condition"], "not-authorized");
    assert_eq!(failure["secure"], true);

    let mut c = RawClient::login(&srv, "alice", "pw", "laptop").await;
    let success = wait_for(&seen, ev::AUTHENTICATION_SUCCESS).await;
    assert_eq!(success["username"], "alice");
    assert_eq!(success["mechanism"], "PLAIN");
    let bind = wait_for(&seen, ev::RESOURCE_BIND).await;
    assert_eq!(bind["jid"], "alice@localhost/laptop");
    assert_eq!(
        wait_for(&seen, ev::PRE_RESOURCE_BIND).await["resource"],
        "laptop"
    );

    // CSI through its tag hooks: the session is marked inactive, then active again.
    let core = srv.server().core.clone();
    let jid = oxpecker::xmpp::Jid::parse("alice@localhost/laptop").unwrap();
    let session = core.sessions.get(&jid).unwrap();
    c.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    c.read_stanza("iq").await;
    assert!(session.is_inactive());
    c.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    c.send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    c.read_stanza("iq").await;
    assert!(!session.is_inactive());

    c.send("</stream:stream>").await;
    c.read_to_close().await;
    let unbind = wait_for(&seen, ev::RESOURCE_UNBIND).await;
    assert_eq!(unbind["jid"], "alice@localhost/laptop");
    assert_eq!(unbind["error"], Value::Null);
    assert_eq!(unbind["session"], bind["session"]);

    let alice = core.accounts.account_jid("alice@localhost").unwrap();
    core.accounts.set_password(&alice, "pw2").await.unwrap();
    let changed = wait_for(&seen, ev::USER_PASSWORD_CHANGED).await;
    assert_eq!(changed["username"], "alice");
    assert_eq!(changed["host"], "localhost");
}

#[tokio::test]
async fn shutdown_is_announced_on_the_global_bus() {
    let (srv, seen) = recording().await;
    srv.stop().await;
    assert_eq!(
        names(&seen),
        vec![ev::SERVER_STOPPING, ev::HOST_DEACTIVATED],
        "server-stopping first, then each host"
    );
}
