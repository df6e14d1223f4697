//! Storage faults at the request boundaries: a server on a real fjall store whose writes fail on
//! demand (as with a full disk) refuses the requests that needed a write with the protocol's
//! "try again later" — HTTP 503 with the JSON error body, stanza `<internal-server-error/>` of
//! type `wait` — keeps serving reads, shows nothing of the refused writes, and serves the same
//! requests again once writes succeed, with no restart.
//!
//! The fault comes from [`FaultyBackend`], a real [`Backend`] wrapping the fjall backend (the default engine); the
//! server runs on it through `Server::start_with_store`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use common::{PASSWORD, RawClient, TestServer, login, online, read_until_contains, test_config};
use oxpecker::Server;
use oxpecker::storage::{Backend, FjallBackend, FlushFuture, Result, StorageError, Store};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin@localhost", "admin-pw");

/// Writes go through.
const HEALTHY: u8 = 0;
/// Every write (apply, clear, flush) fails and changes nothing: the engine refuses the data.
const REFUSE_WRITES: u8 = 1;
/// Writes reach the engine but flushing them fails: the data cannot be made durable.
const REFUSE_FLUSHES: u8 = 2;

/// The error a full disk gives.
fn disk_full() -> StorageError {
    StorageError::Io("No space left on device (os error 28)".into())
}

/// A backend whose writes fail on demand; reads always go through to the fjall backend.
struct FaultyBackend {
    inner: FjallBackend,
    mode: AtomicU8,
    /// Flushes that succeeded.
    flushed: Arc<AtomicU64>,
}

impl FaultyBackend {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
    fn mode(&self) -> u8 {
        self.mode.load(Ordering::SeqCst)
    }
}

impl Backend for FaultyBackend {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(tree, key)
    }
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_prefix(tree, prefix)
    }
    fn scan_range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_range(tree, start, end, reverse, limit)
    }
    fn count_prefix(&self, tree: &str, prefix: &[u8]) -> Result<usize> {
        self.inner.count_prefix(tree, prefix)
    }
    fn apply(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        if self.mode() == REFUSE_WRITES {
            return Err(disk_full());
        }
        self.inner.apply(tree, ops)
    }
    fn clear(&self, tree: &str) -> Result<usize> {
        if self.mode() == REFUSE_WRITES {
            return Err(disk_full());
        }
        self.inner.clear(tree)
    }
    fn flush(&self) -> Result<()> {
        if self.mode() != HEALTHY {
            return Err(disk_full());
        }
        self.inner.flush()?;
        self.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn flush_async(&self) -> FlushFuture {
        if self.mode() != HEALTHY {
            return Box::pin(async { Err(disk_full()) });
        }
        let inner = self.inner.flush_async();
        let flushed = self.flushed.clone();
        Box::pin(async move {
            inner.await?;
            flushed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
    fn next_id(&self) -> Result<u64> {
        self.inner.next_id()
    }
    fn size_on_disk(&self) -> Option<u64> {
        Backend::size_on_disk(&self.inner)
    }
}

/// A test server on a [`FaultyBackend`] with an admin and `users` (password [`PASSWORD`]).
async fn faulty_server(users: &[&str]) -> (TestServer, Arc<FaultyBackend>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.admins = vec![ADMIN.0.into()];
    config.validate().unwrap();
    let engine = FjallBackend::open(&config.store_dir(), 8 * 1024 * 1024).unwrap();
    let backend = Arc::new(FaultyBackend {
        inner: engine,
        mode: AtomicU8::new(HEALTHY),
        flushed: Arc::default(),
    });
    let store = Store::new(backend.clone());
    let server = Server::start_with_store(config.clone(), store)
        .await
        .unwrap();
    let srv = TestServer {
        server: Some(server),
        dir,
        config,
    };
    srv.add_user(ADMIN.0, ADMIN.1).await;
    for u in users {
        srv.add_user(&format!("{u}@localhost"), PASSWORD).await;
    }
    (srv, backend)
}

/// An admin REST call: status, `Retry-After` and the JSON body.
async fn rest(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .request(method, format!("http://{}/admin_rest{path}", srv.http()))
        .basic_auth(ADMIN.0, Some(ADMIN.1));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, retry, json)
}

/// Sends an IQ and reads its answer (by id).
async fn iq(c: &mut RawClient, id: &str, xml: &str) -> String {
    c.send(xml).await;
    read_until_contains(c, "iq", &format!("id=\"{id}\"")).await
}

fn roster_set(id: &str, contact: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{contact}' name='Friend'/></query></iq>"
    )
}

fn assert_wait(stanza: &str) {
    assert!(stanza.contains("type=\"error\""), "{stanza}");
    assert!(stanza.contains("<error type=\"wait\""), "{stanza}");
    assert!(stanza.contains("<internal-server-error"), "{stanza}");
    assert!(stanza.contains("try again later"), "{stanza}");
}

#[tokio::test]
async fn rest_write_gets_503_while_writes_fail_then_201_after_recovery() {
    let (srv, backend) = faulty_server(&["alice"]).await;
    backend.set(REFUSE_WRITES);
    let (status, retry, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/user/bob",
        Some(json!({"password": "bob-pw"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    // Reads are served meanwhile, and the refused account is nowhere.
    let (status, _, body) = rest(&srv, reqwest::Method::GET, "/user/alice", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = rest(&srv, reqwest::Method::GET, "/user/bob", None).await;
    assert_eq!(status, 404);
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/roster/alice",
        Some(json!({"contact": "admin@localhost"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // Writes succeed again: the same requests go through, no restart.
    backend.set(HEALTHY);
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/user/bob",
        Some(json!({"password": "bob-pw"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/roster/alice",
        Some(json!({"contact": "admin@localhost"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The account created after recovery logs in.
    RawClient::login(&srv, "bob", "bob-pw", "r").await;
    srv.stop().await;
}

#[tokio::test]
async fn roster_set_gets_wait_while_writes_fail_then_succeeds() {
    let (srv, backend) = faulty_server(&["alice", "bob"]).await;
    let mut alice = login(&srv, "alice", "phone").await;
    backend.set(REFUSE_WRITES);
    let answer = iq(&mut alice, "s1", &roster_set("s1", "bob@localhost")).await;
    assert_wait(&answer);
    // The roster is still read, and holds nothing of the refused set.
    let roster = iq(
        &mut alice,
        "g1",
        "<iq type='get' id='g1'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    assert!(roster.contains("type=\"result\""), "{roster}");
    assert!(!roster.contains("bob@localhost"), "{roster}");
    backend.set(HEALTHY);
    let answer = iq(&mut alice, "s2", &roster_set("s2", "bob@localhost")).await;
    assert!(answer.contains("type=\"result\""), "{answer}");
    let roster = iq(
        &mut alice,
        "g2",
        "<iq type='get' id='g2'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    assert!(roster.contains("bob@localhost"), "{roster}");
    srv.stop().await;
}

#[tokio::test]
async fn a_message_that_could_only_go_offline_bounces_with_wait() {
    let (srv, backend) = faulty_server(&["alice", "bob"]).await;
    let mut alice = online(&srv, "alice", "phone").await;
    backend.set(REFUSE_WRITES);
    alice
        .send("<message to='bob@localhost' id='m1' type='chat'><body>lost?</body></message>")
        .await;
    let bounce = read_until_contains(&mut alice, "message", "id=\"m1\"").await;
    assert_wait(&bounce);
    backend.set(HEALTHY);
    alice
        .send("<message to='bob@localhost' id='m2' type='chat'><body>kept</body></message>")
        .await;
    // The second message is stored (no bounce), and bob gets it at login, and only it.
    common::nothing_pending(&mut alice).await;
    let mut bob = online(&srv, "bob", "r").await;
    let got = read_until_contains(&mut bob, "message", "kept").await;
    assert!(got.contains("id=\"m2\""), "{got}");
    common::nothing_pending(&mut bob).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_write_that_could_not_be_flushed_is_flushed_once_the_disk_recovers() {
    let (srv, backend) = faulty_server(&[]).await;
    backend.set(REFUSE_FLUSHES);
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/user/carol",
        Some(json!({"password": "carol-pw"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let before = backend.flushed.load(Ordering::SeqCst);
    backend.set(HEALTHY);
    // No request asks for it: the flush thread retries what it could not flush.
    let mut retried = false;
    for _ in 0..100 {
        if backend.flushed.load(Ordering::SeqCst) > before {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(retried, "the flush thread never retried the failed flush");
    // The client was told 503; its retry is answered as for an existing account.
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/user/carol",
        Some(json!({"password": "carol-pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn rest_message_for_an_offline_user_gets_503_while_the_offline_store_cannot_write() {
    let (srv, backend) = faulty_server(&["bob", "carol"]).await;
    backend.set(REFUSE_WRITES);
    let (status, retry, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/message/bob",
        Some(json!({"message": "lost?"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    // A multicast whose every message was refused is refused the same way, not "0/0" or 404.
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/message",
        Some(
            json!([{"to": "bob", "message": "lost too?"}, {"to": "carol", "message": "lost too?"}]),
        ),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    // Writes succeed again: the same call is stored (202), and bob gets that message only.
    backend.set(HEALTHY);
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/message/bob",
        Some(json!({"message": "kept"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = rest(
        &srv,
        reqwest::Method::POST,
        "/message",
        Some(json!([{"to": "carol", "message": "kept too"}])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"], "Message multicasted to users: 0/1",
        "{body}"
    );
    let mut bob = online(&srv, "bob", "r").await;
    // The first message bob gets is the kept one: nothing of the refused calls was stored.
    let got = bob.read_stanza("message").await;
    assert!(got.contains("<body>kept</body>"), "{got}");
    common::nothing_pending(&mut bob).await;
    srv.stop().await;
}
