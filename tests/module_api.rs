//! The module API over a real server: a global module's hooks, timers and HTTP routes load and
//! unload cleanly, the built-in global `metrics` module serves `/metrics`, and shutdown waits
//! for every task the server started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RawClient, TestServer, read_until_contains};
use oxpecker::core::events::{Flow, handler};
use oxpecker::core::module_api::http::{HttpResponse, http_handler};
use oxpecker::core::modules::{LoadError, Module, ModuleContext};

/// A global module counting every host's bare messages, ticking a timer, serving `/watcher`.
struct Watcher {
    messages: Arc<AtomicUsize>,
    ticks: Arc<AtomicUsize>,
}

impl Module for Watcher {
    fn name(&self) -> &'static str {
        "watcher"
    }

    fn global(&self) -> bool {
        true
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let m = self.messages.clone();
        ctx.hook_global(
            "message/bare",
            100,
            handler(move |ev| {
                m.fetch_add(1, Ordering::SeqCst);
                async move { Flow::Continue(ev) }
            }),
        );
        let t = self.ticks.clone();
        ctx.add_timer(Duration::from_millis(5), move || {
            t.fetch_add(1, Ordering::SeqCst);
            async { Some(Duration::from_millis(5)) }
        });
        let m = self.messages.clone();
        ctx.add_http_route(
            "GET",
            "/watcher",
            http_handler(move |_| {
                let n = m.load(Ordering::SeqCst);
                async move { HttpResponse::new(200, "text/plain", n.to_string()) }
            }),
        )
        .map_err(|e| LoadError::Unavailable(e.to_string()))
    }
}

async fn get(srv: &TestServer, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!("http://{}{path}", srv.http()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_global_module_hooks_timers_and_http_routes_load_and_unload_cleanly() {
    let srv = TestServer::start().await;
    srv.add_user("alice@localhost", "pw").await;
    srv.add_user("bob@localhost", "pw").await;
    let core = srv.server().core.clone();
    let mut alice = RawClient::login(&srv, "alice", "pw", "a").await;
    let mut bob = RawClient::login(&srv, "bob", "pw", "b").await;
    bob.send("<presence/>").await;
    let tasks_before = core.tasks.len();
    let watcher = Watcher {
        messages: Arc::new(AtomicUsize::new(0)),
        ticks: Arc::new(AtomicUsize::new(0)),
    };
    let (messages, ticks) = (watcher.messages.clone(), watcher.ticks.clone());
    core.global_host()
        .load(Arc::downgrade(&core), &watcher)
        .unwrap();

    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>one</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "one").await;
    assert_eq!(messages.load(Ordering::SeqCst), 1, "the global hook saw it");
    assert_eq!(get(&srv, "/watcher").await, (200, "1".to_string()));
    until("the timer ticks", || ticks.load(Ordering::SeqCst) >= 2).await;

    core.unload_module("*", "watcher").unwrap();
    assert_eq!(get(&srv, "/watcher").await.0, 404, "route removed");
    alice
        .send("<message to='bob@localhost' type='chat' id='m2'><body>two</body></message>")
        .await;
    read_until_contains(&mut bob, "message", "two").await;
    assert_eq!(messages.load(Ordering::SeqCst), 1, "hook removed");
    until("the timer task ends", || core.tasks.len() == tasks_before).await;

    // The built-in global module: /metrics comes and goes with it.
    assert!(core.global_host().is_loaded("metrics"));
    let (status, body) = get(&srv, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("oxpecker_stanzas"), "{body}");
    core.unload_module("*", "metrics").unwrap();
    assert_eq!(get(&srv, "/metrics").await.0, 404);
    core.load_module("localhost", "metrics").unwrap();
    assert_eq!(get(&srv, "/metrics").await.0, 200);
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_control_connections_and_every_tracked_task() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mut srv = TestServer::start().await;
    let core = srv.server().core.clone();
    let before = core.tasks.len();
    let stream =
        tokio::net::UnixStream::connect(oxpecker::control::socket_path(&srv.config.data_dir))
            .await
            .unwrap();
    let (r, mut w) = stream.into_split();
    w.write_all(b"{\"op\":\"module_list\",\"host\":\"localhost\"}\n")
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await.unwrap();
    assert!(line.contains("ping"), "{line}");
    assert_eq!(
        core.tasks.len(),
        before + 1,
        "the open control connection is tracked"
    );
    srv.server.take().unwrap().shutdown().await;
    assert!(core.tasks.is_closed() && core.tasks.is_empty());
    drop(w);
}
