//! XEP-0215 external services over real sockets: the configured STUN and TURN servers are
//! listed for the host's users, and the TURN credentials check out when the HMAC is
//! recomputed here the way coturn does (`use-auth-secret`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::{RawClient, TestServer, login, read_until_contains};
use hmac::{Hmac, KeyInit, Mac};

async fn iq(c: &mut RawClient, id: &str, body: &str) -> String {
    c.send(body).await;
    read_until_contains(c, "iq", &format!("id=\"{id}\"")).await
}

fn attr(xml: &str, name: &str) -> String {
    let at = xml
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + name.len()
        + 3;
    let v = &xml[at..];
    v[..v.find('"').unwrap()].to_string()
}

const SECRET: &str = "north-wind";

async fn server() -> TestServer {
    TestServer::with_users(&["alice"], |c| {
        c.modules_enabled.push("external_services".into());
        let services: toml::Value = toml::from_str::<toml::Table>(
            r#"services = [
                { type = "stun", host = "stun.example.org", port = 3478, transport = "udp" },
                { type = "turn", host = "turn.example.org", port = 3478, transport = "udp", name = "Relay" },
            ]"#,
        )
        .unwrap()
        .remove("services")
        .unwrap();
        c.options.insert("external_services".into(), services);
        c.options.insert("turn_secret".into(), SECRET.into());
        c.options.insert("turn_ttl".into(), toml::Value::Integer(3600));
    })
    .await
}

#[tokio::test]
async fn turn_credentials_are_the_shared_secret_hmac() {
    let srv = server().await;
    let mut a = login(&srv, "alice", "r").await;
    let info = iq(
        &mut a,
        "i",
        "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert!(info.contains("var=\"urn:xmpp:extdisco:2\""), "{info}");
    let all = iq(
        &mut a,
        "s",
        "<iq type='get' id='s' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>",
    )
    .await;
    let stun_at = all.find("stun.example.org").unwrap();
    let turn_at = all.find("turn.example.org").unwrap();
    let stun = &all[all[..stun_at].rfind("<service").unwrap()..];
    let stun = &stun[..stun.find("/>").unwrap()];
    assert!(
        !stun.contains("password") && stun.contains("port=\"3478\""),
        "{stun}"
    );
    let turn = &all[all[..turn_at].rfind("<service").unwrap()..];
    let turn = &turn[..turn.find("/>").unwrap()];
    assert_eq!(attr(turn, "restricted"), "1");
    assert_eq!(attr(turn, "name"), "Relay");
    let username = attr(turn, "username");
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice@localhost");
    let expiry: i64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now && expiry <= now + 3600, "{expiry} vs {now}");
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(attr(turn, "password"), want);
    assert!(attr(turn, "expires").ends_with('Z'));
    // Filtered by type; credentials asked for one service.
    let stuns = iq(
        &mut a,
        "t",
        "<iq type='get' id='t' to='localhost'><services xmlns='urn:xmpp:extdisco:2' type='stun'/></iq>",
    )
    .await;
    assert!(
        stuns.contains("stun.example.org") && !stuns.contains("turn.example.org"),
        "{stuns}"
    );
    let creds = iq(
        &mut a,
        "c",
        "<iq type='get' id='c' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.example.org' type='turn'/></credentials></iq>",
    )
    .await;
    assert!(
        creds.contains("<credentials") && creds.contains("password=\""),
        "{creds}"
    );
    let none = iq(
        &mut a,
        "n",
        "<iq type='get' id='n' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'><service host='nowhere.example' type='turn'/></credentials></iq>",
    )
    .await;
    assert!(none.contains("<item-not-found"), "{none}");
}
