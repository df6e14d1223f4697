//! XEP-0363 HTTP File Upload over real sockets: the default `upload.localhost` component in
//! disco, slot requests over XMPP, then PUT, GET, Range and HEAD over HTTP; the limits (too
//! large, quota, rate, content types), expired and forged slots, a slot used twice, CORS,
//! expiry by the module timer and the files going with their uploader's account.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer, login, read_until_contains};
use reqwest::{Method, StatusCode};

const UPLOAD: &str = "upload.localhost";

async fn iq(c: &mut RawClient, id: &str, body: &str) -> String {
    c.send(body).await;
    read_until_contains(c, "iq", &format!("id=\"{id}\"")).await
}

/// Asks for a slot; the raw reply.
async fn request(c: &mut RawClient, id: &str, name: &str, size: usize, ctype: &str) -> String {
    iq(
        c,
        id,
        &format!(
            "<iq type='get' id='{id}' to='{UPLOAD}'><request xmlns='urn:xmpp:http:upload:0' filename='{name}' size='{size}' content-type='{ctype}'/></iq>"
        ),
    )
    .await
}

fn attr(xml: &str, el: &str, name: &str) -> String {
    let start = xml
        .find(&format!("<{el} "))
        .unwrap_or_else(|| panic!("no <{el}> in {xml}"));
    let rest = &xml[start..];
    let at = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let v = &rest[at..];
    v[..v.find('"').unwrap()].replace("&amp;", "&")
}

/// A slot's (PUT, GET) URLs.
async fn slot(
    c: &mut RawClient,
    id: &str,
    name: &str,
    size: usize,
    ctype: &str,
) -> (String, String) {
    let r = request(c, id, name, size, ctype).await;
    assert!(
        r.contains("type=\"result\"") && r.contains("urn:xmpp:http:upload:0"),
        "{r}"
    );
    (attr(&r, "put", "url"), attr(&r, "get", "url"))
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn put(url: &str, body: &[u8], ctype: &str) -> StatusCode {
    http()
        .put(url)
        .header("content-type", ctype)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

async fn server(f: impl FnOnce(&mut oxpecker::config::Config)) -> TestServer {
    TestServer::with_users(&["alice", "bob", "admin"], |c| {
        c.admins = vec!["admin@localhost".into()];
        f(c)
    })
    .await
}

#[tokio::test]
async fn the_component_is_discovered_with_its_limit() {
    let srv = server(|c| {
        c.options.insert(
            "http_upload_max_file_size".into(),
            toml::Value::Integer(1234),
        );
    })
    .await;
    let mut a = login(&srv, "alice", "r").await;
    let items = iq(
        &mut a,
        "it",
        "<iq type='get' id='it' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert!(items.contains("jid=\"upload.localhost\""), "{items}");
    let info = iq(
        &mut a,
        "in",
        "<iq type='get' id='in' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    for want in [
        "category=\"store\"",
        "type=\"file\"",
        "var=\"urn:xmpp:http:upload:0\"",
        "<value>urn:xmpp:http:upload:0</value>",
        "var=\"max-file-size\"",
        "<value>1234</value>",
    ] {
        assert!(info.contains(want), "{want} in {info}");
    }
    assert!(!info.contains("category=\"server\""), "{info}");
}

#[tokio::test]
async fn a_file_goes_up_once_and_comes_down_whole_in_ranges_and_as_head() {
    let srv = server(|c| c.http.cors_origins = vec!["https://chat.example".into()]).await;
    let mut a = login(&srv, "alice", "r").await;
    let body = b"hello, upload world";
    let (put_url, get_url) = slot(&mut a, "s1", "h\u{e9}llo w.txt", body.len(), "text/plain").await;
    assert!(
        put_url.starts_with(&get_url) && put_url.contains("token="),
        "{put_url}"
    );
    assert!(
        get_url.starts_with(&format!("http://{}/upload/", srv.http())),
        "{get_url}"
    );
    // Nothing is served before the upload.
    let early = http().get(&get_url).send().await.unwrap();
    assert_eq!(early.status(), StatusCode::NOT_FOUND);
    assert_eq!(put(&put_url, body, "text/plain").await, StatusCode::CREATED);
    assert_eq!(
        put(&put_url, b"other bytes here!!!", "text/plain").await,
        StatusCode::CONFLICT,
        "a slot is single-use"
    );
    let got = http()
        .get(&get_url)
        .header("origin", "https://chat.example")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let h = got.headers().clone();
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["access-control-allow-origin"], "https://chat.example");
    let disposition = h["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"h_llo_w.txt\"")
            && disposition.contains("filename*=UTF-8''h%C3%A9llo%20w.txt"),
        "{disposition}"
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), body);
    let part = http()
        .get(&get_url)
        .header("range", "bytes=7-12")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 7-12/19");
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"upload");
    let tail = http()
        .get(&get_url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap().as_ref(), b"world");
    let beyond = http()
        .get(&get_url)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()["content-range"], "bytes */19");
    let head = http().head(&get_url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "19");
    assert!(head.bytes().await.unwrap().is_empty());
    // Another origin gets no CORS grant; the preflight names the methods.
    let other = http()
        .get(&get_url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let pre = http()
        .request(Method::OPTIONS, &put_url)
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    assert!(
        pre.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    // The wrong file name under a real slot is not found.
    let wrong = get_url.rsplit_once('/').unwrap().0.to_string() + "/other.txt";
    assert_eq!(
        http().get(&wrong).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // The file survives a restart (records in the store, bytes on disk).
    let srv = srv.restart().await;
    let get_url = get_url.replace(
        &get_url[7..get_url.find("/upload/").unwrap()],
        &srv.http().to_string(),
    );
    let again = http().get(&get_url).send().await.unwrap();
    assert_eq!(again.bytes().await.unwrap().as_ref(), body);
}

#[tokio::test]
async fn bodies_that_break_the_slot_are_refused_and_leave_nothing() {
    let srv = server(|_| {}).await;
    let mut a = login(&srv, "alice", "r").await;
    let (put_url, get_url) = slot(&mut a, "s1", "a.bin", 10, "application/octet-stream").await;
    assert_eq!(
        put(&put_url, &[0u8; 11], "application/octet-stream").await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        put(&put_url, &[0u8; 10], "image/png").await,
        StatusCode::BAD_REQUEST,
        "the type the slot was asked for"
    );
    // A forged signature, and a token for another slot.
    let (base, token) = put_url.split_once("?token=").unwrap();
    let (claims, sig) = token.split_once('.').unwrap();
    let mut flipped = sig.to_string();
    let first = if flipped.starts_with('A') { "B" } else { "A" };
    flipped.replace_range(..1, first);
    let forged = format!("{base}?token={claims}.{flipped}");
    assert_eq!(
        put(&forged, &[0u8; 10], "application/octet-stream").await,
        StatusCode::FORBIDDEN
    );
    let (other_put, _) = slot(&mut a, "s2", "a.bin", 10, "application/octet-stream").await;
    let other_token = other_put.split_once("?token=").unwrap().1;
    assert_eq!(
        put(
            &format!("{base}?token={other_token}"),
            &[0u8; 10],
            "application/octet-stream"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(base, &[0u8; 10], "application/octet-stream").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        http().get(&get_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let dir = srv.dir.path().join("http_upload").join(UPLOAD);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no file or part file left: {left:?}");
    // The slot still works with the right body.
    assert_eq!(
        put(&put_url, &[7u8; 10], "application/octet-stream").await,
        StatusCode::CREATED
    );
    assert_eq!(
        http()
            .get(&get_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        &[7u8; 10]
    );
}

#[tokio::test]
async fn an_expired_slot_is_refused() {
    let srv = server(|c| {
        c.options
            .insert("http_upload_slot_ttl".into(), toml::Value::Integer(0));
    })
    .await;
    let mut a = login(&srv, "alice", "r").await;
    let (put_url, _) = slot(&mut a, "s1", "late.txt", 4, "text/plain").await;
    // A slot valid for 0 seconds is past its expiry once the clock moves on a second.
    let now = std::time::SystemTime::now();
    while now.elapsed().unwrap() < std::time::Duration::from_millis(1100) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let resp = http()
        .put(&put_url)
        .header("content-type", "text/plain")
        .body("late")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn limits_give_the_xep_errors() {
    let srv = server(|c| {
        for (k, v) in [
            ("http_upload_max_file_size", 100),
            ("http_upload_quota", 150),
            ("http_upload_rate_per_minute", 5),
        ] {
            c.options.insert(k.into(), toml::Value::Integer(v));
        }
        c.options.insert(
            "http_upload_allowed_types".into(),
            toml::Value::Array(vec!["image/*".into(), "text/plain".into()]),
        );
    })
    .await;
    let mut a = login(&srv, "alice", "r").await;
    let big = request(&mut a, "big", "big.png", 101, "image/png").await;
    assert!(
        big.contains("type=\"error\"")
            && big.contains("<not-acceptable")
            && big.contains("<file-too-large xmlns=\"urn:xmpp:http:upload:0\"><max-file-size>100</max-file-size></file-too-large>"),
        "{big}"
    );
    let exe = request(&mut a, "exe", "x.exe", 10, "application/x-msdownload").await;
    assert!(exe.contains("<not-acceptable"), "{exe}");
    let bad = request(&mut a, "bad", "../x", 10, "text/plain").await;
    assert!(bad.contains("<bad-request"), "{bad}");
    // Quota: 100 bytes stored, then 60 more would pass 150.
    let (put_url, _) = slot(&mut a, "q1", "a.png", 100, "image/png").await;
    assert_eq!(
        put(&put_url, &[1u8; 100], "image/png").await,
        StatusCode::CREATED
    );
    let over = request(&mut a, "q2", "b.png", 60, "image/png").await;
    assert!(
        over.contains("type=\"wait\"")
            && over.contains("<resource-constraint")
            && over.contains("quota"),
        "{over}"
    );
    // Bob has his own quota.
    let mut b = login(&srv, "bob", "r").await;
    slot(&mut b, "b1", "b.png", 60, "image/png").await;
    // Rate: five slot requests a minute (alice made five above, counting refused ones after the rate check).
    let (_, _) = slot(&mut a, "q3", "c.png", 10, "image/png").await;
    let mut limited = String::new();
    for i in 0..6 {
        let r = request(&mut a, &format!("r{i}"), "d.png", 1, "image/png").await;
        if r.contains("type=\"error\"") {
            limited = r;
            break;
        }
    }
    assert!(
        limited.contains("<resource-constraint") && limited.contains("minute"),
        "{limited}"
    );
}

#[tokio::test]
async fn files_go_with_the_account_of_their_uploader() {
    let srv = server(|_| {}).await;
    let mut a = login(&srv, "alice", "r").await;
    let (put_a, get_a) = slot(&mut a, "s1", "a.txt", 3, "text/plain").await;
    assert_eq!(put(&put_a, b"abc", "text/plain").await, StatusCode::CREATED);
    let mut b = login(&srv, "bob", "r").await;
    let (put_b, get_b) = slot(&mut b, "s2", "b.txt", 3, "text/plain").await;
    assert_eq!(put(&put_b, b"xyz", "text/plain").await, StatusCode::CREATED);
    let resp = http()
        .delete(format!("http://{}/admin_rest/user/alice", srv.http()))
        .basic_auth("admin@localhost", Some(common::PASSWORD))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        http().get(&get_a).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let slot_a = get_a.split('/').rev().nth(1).unwrap().to_string();
    let slot_b = get_b.split('/').rev().nth(1).unwrap().to_string();
    let dir = srv.dir.path().join("http_upload").join(UPLOAD);
    assert!(!dir.join(&slot_a).exists(), "alice's bytes are gone");
    assert!(dir.join(&slot_b).exists(), "bob's are kept");
    let got = http().get(&get_b).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"xyz");
}

#[tokio::test]
async fn the_module_timer_removes_expired_files() {
    let srv = server(|c| {
        c.options
            .insert("http_upload_expire_after".into(), toml::Value::Integer(2));
    })
    .await;
    let mut a = login(&srv, "alice", "r").await;
    let (put_a, get_a) = slot(&mut a, "s1", "a.txt", 3, "text/plain").await;
    assert_eq!(put(&put_a, b"abc", "text/plain").await, StatusCode::CREATED);
    // Kept 2 s, checked every second: wait (boundedly) for the timer to remove it.
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = http().get(&get_a).send().await.unwrap().status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::NOT_FOUND, "expired");
    let dir = srv.dir.path().join("http_upload").join(UPLOAD);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no bytes left");
}

#[tokio::test]
async fn an_upload_under_way_holds_its_slot_and_is_not_served_until_complete() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = server(|_| {}).await;
    let mut a = login(&srv, "alice", "r").await;
    let (put_url, get_url) = slot(&mut a, "s1", "slow.bin", 8, "application/octet-stream").await;
    let target = &put_url[put_url.find("/upload/").unwrap()..];
    // The first half of the body, over a raw connection that then waits.
    let mut slow = tokio::net::TcpStream::connect(srv.http()).await.unwrap();
    slow.write_all(
        format!(
            "PUT {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 8\r\n\r\nabcd",
            srv.http()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The part file appears once the server reads the body; until then and after, nothing is served.
    let dir = srv.dir.path().join("http_upload").join(UPLOAD);
    let part = dir.join(format!("{}.part", get_url.split('/').rev().nth(1).unwrap()));
    for _ in 0..100 {
        if part.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        part.exists(),
        "the upload is written under a temporary name"
    );
    assert_eq!(
        http().get(&get_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(&put_url, b"12345678", "application/octet-stream").await,
        StatusCode::CONFLICT,
        "a second upload to a slot in use"
    );
    slow.write_all(b"efgh").await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = slow.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(!part.exists());
    let got = http().get(&get_url).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"abcdefgh");
}
