//! The storage engine switch: a data directory written by a server on sled (accounts, a roster,
//! archived messages) is converted when a server on fjall (the default) starts on it. Every
//! account still logs in, the roster and the archive are all there, the sled files are kept in
//! `sled-backup/`, and a server on sled then refuses the converted directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, login, online, read_until_contains};
use oxpecker::config::StorageBackend;
use oxpecker::storage::SLED_BACKUP_DIR;

#[tokio::test(flavor = "multi_thread")]
async fn a_sled_data_dir_moves_to_fjall_with_everything_in_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestServer::with_users(&["alice", "bob"], |c| {
        c.storage.backend = StorageBackend::Sled;
    })
    .await;
    {
        let mut alice = online(&srv, "alice", "desk").await;
        let mut bob = online(&srv, "bob", "phone").await;
        alice
            .send(
                "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>\
                 <item jid='bob@localhost' name='Bob'/></query></iq>",
            )
            .await;
        read_until_contains(&mut alice, "iq", "r1").await;
        for n in 0..3 {
            alice
                .send(&format!(
                    "<message to='bob@localhost/phone' type='chat' id='m{n}'>\
                     <body>written on sled {n}</body></message>"
                ))
                .await;
            read_until_contains(&mut bob, "message", &format!("written on sled {n}")).await;
        }
    }
    assert!(srv.dir.path().join("store").join("conf").is_file());

    let mut srv = srv;
    srv.config.storage.backend = StorageBackend::Fjall;
    let srv = srv.restart().await;
    assert!(srv.dir.path().join(SLED_BACKUP_DIR).join("db").is_file());
    assert!(!srv.dir.path().join("store").join("conf").exists());

    let mut alice = login(&srv, "alice", "desk").await;
    alice
        .send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = read_until_contains(&mut alice, "iq", "rg").await;
    assert!(
        roster.contains("bob@localhost") && roster.contains("Bob"),
        "{roster}"
    );
    alice
        .send("<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f'/></iq>")
        .await;
    for n in 0..3 {
        read_until_contains(&mut alice, "message", &format!("written on sled {n}")).await;
    }
    let fin = read_until_contains(&mut alice, "iq", "q1").await;
    assert!(fin.contains("<fin") && fin.contains("complete"), "{fin}");
    // The converted store takes new writes, and bob's account logs in too.
    let mut bob = online(&srv, "bob", "phone").await;
    alice
        .send(
            "<message to='bob@localhost/phone' type='chat' id='m9'>\
             <body>written on fjall</body></message>",
        )
        .await;
    read_until_contains(&mut bob, "message", "written on fjall").await;
    drop((alice, bob));

    // A server on sled does not start on the converted directory (it would start empty).
    let dir = srv.stop().await;
    let mut config = common::test_config(dir.path());
    config.storage.backend = StorageBackend::Sled;
    let err = oxpecker::Server::start(config).await.err().unwrap();
    assert!(err.to_string().contains("oxpecker store export"), "{err}");
}
