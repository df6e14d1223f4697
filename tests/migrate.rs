//! Moving in and out: XEP-0227 export → import gives the same store; a Prosody data directory
//! (tests/fixtures/prosody, Prosody's real on-disk format) imports and its users log in with
//! their old passwords over real sockets; an ejabberd-style PIEFXIS file with clear passwords
//! imports, checks dry, and reports bad accounts by position.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{RawClient, TestServer, jid, read_until_contains};
use oxpecker::migrate::{self, Options};
use oxpecker::storage::Store;

fn dump(store: &Store) -> String {
    let mut buf = Vec::new();
    oxpecker::storage::export(store, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

/// The store of data dir `dir` on the default engine, as a server would open it.
fn open(dir: &Path) -> Store {
    let storage = oxpecker::config::StorageConfig {
        cache_capacity_mb: 8,
        ..Default::default()
    };
    Store::open_configured(&dir.join("store"), &storage).unwrap()
}

fn opts(hosts: &[&str], check: bool) -> Options {
    Options {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        iterations: 4096,
        check,
    }
}

async fn import_file(store: &Store, o: Options, path: &Path) -> migrate::Report {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    migrate::import_xep0227(store, o, f, path.parent().map(Path::to_path_buf))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xep0227_export_then_import_gives_the_same_store() {
    let srv = TestServer::with_users(&["alice", "bob"], |_| {}).await;
    let core = srv.server().core.clone();
    let (alice, bob) = (jid("alice@localhost"), jid("bob@localhost"));
    // A roster with groups and pending states, a vCard, private XML, a block: through the managers.
    let mut item = oxpecker::core::roster::RosterItem::new(&bob);
    item.subscription = oxpecker::core::roster::Subscription::To;
    item.ask = true;
    item.name = Some("Bob <the builder>".into());
    item.groups = vec!["Friends".into(), "Work & play".into()];
    core.roster.put(&alice, &bob, Some(&item)).await.unwrap();
    let vcard = oxpecker::xmpp::parser::parse_element(
        "<vCard xmlns='vcard-temp'><FN>Alice &amp; co</FN><NICKNAME>al</NICKNAME></vCard>",
    )
    .unwrap();
    oxpecker::modules::vcard::set_vcard(&core, &alice, Some(vcard))
        .await
        .unwrap();
    core.store
        .map("localhost", "blocklist")
        .set("alice", "spam@evil.example", Some(serde_json::json!(true)))
        .await
        .unwrap();
    // A message to bob while he is offline, and a chat both archive: over a real socket.
    let mut a = common::online(&srv, "alice", "pc").await;
    a.send("<message to='bob@localhost' type='chat' id='m1'><body>while you were away</body></message>")
        .await;
    // Bookmarks as a XEP-0048 client keeps them: private XML, mirrored to XEP-0402 PEP.
    a.send("<iq type='set' id='bm1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='r@c' autojoin='true'/></storage></query></iq>")
        .await;
    let set = read_until_contains(&mut a, "iq", "bm1").await;
    assert!(set.contains("type=\"result\""), "{set}");
    a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    read_until_contains(&mut a, "iq", "p1").await;
    drop(a);
    drop(core);
    let dir = srv.stop().await;

    let before = open(dir.path());
    let original = dump(&before);
    assert!(original.contains("\"store\":\"offline\""), "{original}");
    assert!(
        original.contains("\"key\":\"n:urn:xmpp:bookmarks:1\""),
        "{original}"
    );
    let file = dir.path().join("export.xml");
    let n = migrate::export_xep0227(
        &before,
        std::io::BufWriter::new(std::fs::File::create(&file).unwrap()),
    )
    .unwrap();
    assert_eq!(n, 2);
    drop(before);
    let xml = std::fs::read_to_string(&file).unwrap();
    for standard in [
        "<server-data xmlns=\"urn:xmpp:pie:0\">",
        "<scram-credentials xmlns=\"urn:xmpp:pie:0#scram\" mechanism=\"SCRAM-SHA-256\">",
        "<group>Work &amp; play</group>",
        "<vCard xmlns=\"vcard-temp\"><FN>Alice &amp; co</FN>",
        "<offline-messages><message xmlns=\"jabber:client\"",
        "<blocklist xmlns=\"urn:xmpp:blocking\"><item jid=\"spam@evil.example\"/>",
        "<query xmlns=\"jabber:iq:private\"><storage xmlns=\"storage:bookmarks\">",
    ] {
        assert!(xml.contains(standard), "missing {standard} in {xml}");
    }

    // Into a fresh data dir: the same JSON-lines dump, and again (idempotent).
    let fresh = tempfile::tempdir().unwrap();
    let after = open(fresh.path());
    let dry = import_file(&after, opts(&["localhost"], true), &file).await;
    assert_eq!((dry.accounts, dry.errors.len()), (2, 0), "{dry}");
    assert_eq!(dump(&after), "", "a dry run writes nothing");
    let report = import_file(&after, opts(&["localhost"], false), &file).await;
    assert_eq!((report.accounts, report.existing), (2, 0), "{report}");
    assert!(report.errors.is_empty(), "{report}");
    assert_eq!(dump(&after), original);
    let again = import_file(&after, opts(&["localhost"], false), &file).await;
    assert_eq!(again.existing, 2, "{again}");
    assert_eq!(dump(&after), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_data_dir_imports_and_old_passwords_log_in() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prosody");
    let srv = TestServer::start().await;
    let dir = srv.stop().await;
    {
        let store = open(dir.path());
        let dry = migrate::import_prosody(&store, opts(&["localhost"], true), &fixture)
            .await
            .unwrap();
        assert_eq!(dry.accounts, 2, "{dry}");
        assert_eq!(dump(&store), "");
        let report = migrate::import_prosody(&store, opts(&["localhost"], false), &fixture)
            .await
            .unwrap();
        assert!(report.errors.is_empty(), "{report}");
        assert_eq!(report.records["roster"], 2, "{report}");
        assert_eq!(report.records["roster_pending"], 1, "{report}");
        assert_eq!(report.records["offline"], 2, "{report}");
        assert_eq!(report.records["archive"], 2, "{report}");
        // The nick node (node, item, index) and the bookmarks made from private XML (node, item).
        assert_eq!(report.records["pep"], 5, "{report}");
        assert_eq!(report.records["muc_rooms"], 1, "{report}");
        let first = dump(&store);
        migrate::import_prosody(&store, opts(&["localhost"], false), &fixture)
            .await
            .unwrap();
        assert_eq!(dump(&store), first, "a repeated import changes nothing");
        store.flush().await.unwrap();
    }
    let mut config = common::test_config(dir.path());
    config.admins = vec!["bob@localhost".into()];
    let srv = TestServer {
        server: Some(oxpecker::Server::start(config.clone()).await.unwrap()),
        dir,
        config,
    };

    // REST Basic auth for an account without an Argon2 hash verifies against its SCRAM keys.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/admin_rest/users/count", srv.http());
    for (password, status) in [("bobpw", 200), ("wrong", 401)] {
        let resp = http
            .get(&url)
            .basic_auth("bob@localhost", Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{password}");
    }

    // bob has SCRAM-SHA-1 keys only (Prosody's internal_hashed): SCRAM-SHA-1 works as it did.
    let mut b = RawClient::connect(srv.c2s()).await;
    b.starttls(&srv.cert_pem()).await;
    let outcome = scram_login(&mut b, oxpecker::auth::ScramHash::Sha1, "bob", "bobpw").await;
    assert!(outcome.contains("<success"), "{outcome}");
    let mut b = RawClient::connect(srv.c2s()).await;
    b.starttls(&srv.cert_pem()).await;
    let outcome = scram_login(&mut b, oxpecker::auth::ScramHash::Sha1, "bob", "wrong").await;
    assert!(outcome.contains("not-authorized"), "{outcome}");

    // alice logs in with PLAIN and her old password, sees her roster, vCard and offline messages.
    let mut a = RawClient::connect(srv.c2s()).await;
    a.starttls(&srv.cert_pem()).await;
    assert!(
        a.auth_plain("alice", "wrong")
            .await
            .contains("not-authorized")
    );
    let mut a = RawClient::login(&srv, "alice", "old-pa$$ \"w", "pc").await;
    a.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = read_until_contains(&mut a, "iq", "r1").await;
    assert!(roster.contains("jid=\"bob@localhost\""), "{roster}");
    assert!(roster.contains("name=\"Bobby\""), "{roster}");
    assert!(roster.contains("<group>Friends</group>"), "{roster}");
    assert!(roster.contains("ask=\"subscribe\""), "{roster}");
    a.send("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let vcard = read_until_contains(&mut a, "iq", "v1").await;
    assert!(vcard.contains("<FN>Alice Liddell</FN>"), "{vcard}");
    a.send("<presence/>").await;
    let first = read_until_contains(&mut a, "message", "Are you there? &lt;3 &amp; more").await;
    assert!(first.contains("stamp=\"2023-11-14T22:15:00Z\""), "{first}");
    read_until_contains(&mut a, "message", "second").await;
    a.send("<iq type='get' id='pv1'><query xmlns='jabber:iq:private'><roster xmlns='roster:delimiter'/></query></iq>")
        .await;
    let private = read_until_contains(&mut a, "iq", "pv1").await;
    assert!(
        private.contains("<roster xmlns=\"roster:delimiter\">::</roster>"),
        "{private}"
    );
    // Her PEP nick (Prosody's pep and pep_<node> stores) is served from our PEP store.
    a.send("<iq type='get' id='n1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='http://jabber.org/protocol/nick'/></pubsub></iq>")
        .await;
    let nick = read_until_contains(&mut a, "iq", "n1").await;
    assert!(
        nick.contains(
            "<item id=\"current\"><nick xmlns=\"http://jabber.org/protocol/nick\">Ally</nick>"
        ),
        "{nick}"
    );
    // Her XEP-0048 bookmark in private XML became a XEP-0402 item, and legacy clients still see it.
    a.send("<iq type='get' id='b1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>")
        .await;
    let bm = read_until_contains(&mut a, "iq", "b1").await;
    assert!(
        bm.contains(
            "<item id=\"lounge@conference.localhost\"><conference xmlns=\"urn:xmpp:bookmarks:1\""
        ) && bm.contains("autojoin=\"true\"")
            && bm.contains("<nick>Ally</nick>"),
        "{bm}"
    );
    a.send("<iq type='get' id='b2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    let legacy = read_until_contains(&mut a, "iq", "b2").await;
    assert!(
        legacy.contains("jid=\"lounge@conference.localhost\""),
        "{legacy}"
    );
    // Her persistent room on Prosody's MUC component exists, she is its owner and bob a member.
    a.send("<presence to='lounge@conference.localhost/Ally'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        .await;
    let joined = read_until_contains(&mut a, "presence", "status code=\"110\"").await;
    assert!(joined.contains("affiliation=\"owner\""), "{joined}");
    a.send("<iq type='get' id='m1' to='lounge@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>")
        .await;
    let members = read_until_contains(&mut a, "iq", "m1").await;
    assert!(members.contains("jid=\"bob@localhost\""), "{members}");
    a.send("<iq type='get' id='d1' to='lounge@conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = read_until_contains(&mut a, "iq", "d1").await;
    assert!(
        info.contains("name=\"The Lounge\"") && info.contains("muc_persistent"),
        "{info}"
    );
    // The PLAIN login stored the hashes the account lacked (Argon2, SCRAM-SHA-256).
    let rec = srv
        .server()
        .core
        .accounts
        .get(&jid("alice@localhost"))
        .await
        .unwrap()
        .unwrap();
    assert!(rec.credentials.is_complete());
    let archived = srv
        .server()
        .core
        .store
        .archive("localhost", "archive")
        .count("alice")
        .await
        .unwrap();
    assert_eq!(archived, 2);
}

/// Runs SCRAM over a raw stream; returns the final server element.
async fn scram_login(
    c: &mut RawClient,
    hash: oxpecker::auth::ScramHash,
    user: &str,
    password: &str,
) -> String {
    use oxpecker::auth::{ScramClient, decode_b64, encode_b64};
    let mut client = ScramClient::new(hash, user, password);
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
        hash.mechanism_name(),
        encode_b64(&client.client_first())
    ))
    .await;
    let ch = c.read_stanza("challenge").await;
    let b64 = &ch[ch.find('>').unwrap() + 1..ch.find("</challenge>").unwrap()];
    let server_first = decode_b64(b64).unwrap();
    let Ok(fin) = client.client_final(&server_first) else {
        return "client refused".into();
    };
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        encode_b64(&fin)
    ))
    .await;
    c.read_sasl_outcome().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piefxis_with_clear_passwords_checks_imports_and_names_bad_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ejabberd.xml");
    std::fs::write(
        &file,
        r#"<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0'>
  <host jid='localhost'>
    <user name='eve' password='s3cret'>
      <query xmlns='jabber:iq:roster'>
        <item jid='frank@localhost' name='Frank' subscription='both'><group>Pals</group></item>
      </query>
      <vCard xmlns='vcard-temp'><FN>Eve</FN></vCard>
      <offline-messages>
        <message xmlns='jabber:client' from='frank@localhost/x' to='eve@localhost' type='chat'><body>hi eve</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='2024-01-02T03:04:05Z'/></message>
      </offline-messages>
    </user>
    <user name='no password'/>
    <user name='grace' password='pw'><query xmlns='jabber:iq:roster'><item jid='x@localhost' subscription='sideways'/></query></user>
  </host>
  <host jid='elsewhere.example'><user name='henry' password='pw'/></host>
</server-data>
"#,
    )
    .unwrap();
    let srv = TestServer::start().await;
    let data = srv.stop().await;
    {
        let store = open(data.path());
        let dry = import_file(&store, opts(&["localhost"], true), &file).await;
        assert_eq!(dry.accounts, 1, "{dry}");
        assert_eq!(dry.errors.len(), 3, "{dry}");
        assert!(
            dry.errors[0].starts_with("byte ") && dry.errors[0].contains("no password"),
            "{dry}"
        );
        assert!(
            dry.errors[1].contains("grace@localhost") && dry.errors[1].contains("sideways"),
            "{dry}"
        );
        assert!(
            dry.errors[2].contains("henry@elsewhere.example: host elsewhere.example is not served"),
            "{dry}"
        );
        assert_eq!(dump(&store), "");
        let report = import_file(&store, opts(&["localhost"], false), &file).await;
        assert_eq!(report.accounts, 1, "{report}");
        let first = dump(&store);
        import_file(&store, opts(&["localhost"], false), &file).await;
        assert_eq!(dump(&store), first, "the same password keeps its hashes");
        store.flush().await.unwrap();
        // Not XML at all: the error names the byte.
        std::fs::write(
            dir.path().join("bad.xml"),
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='a'></host>",
        )
        .unwrap();
        let f = std::io::BufReader::new(std::fs::File::open(dir.path().join("bad.xml")).unwrap());
        let err = migrate::import_xep0227(&store, opts(&["localhost"], false), f, None)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("byte "), "{err}");
    }
    let config = common::test_config(data.path());
    let srv = TestServer {
        server: Some(oxpecker::Server::start(config.clone()).await.unwrap()),
        dir: data,
        config,
    };
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    let outcome = scram_login(&mut c, oxpecker::auth::ScramHash::Sha256, "eve", "s3cret").await;
    assert!(outcome.contains("<success"), "{outcome}");
    let mut e = RawClient::login(&srv, "eve", "s3cret", "r").await;
    e.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = read_until_contains(&mut e, "iq", "r1").await;
    assert!(roster.contains("<group>Pals</group>"), "{roster}");
    e.send("<presence/>").await;
    read_until_contains(&mut e, "message", "hi eve").await;
}

/// A clear password stored decomposed (ejabberd keeps what the client sent) is SASLprepped
/// before hashing: a client typing the composed form logs in with SCRAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_passwords_are_saslprepped_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.xml");
    std::fs::write(
        &file,
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='ivan' password='pa\u{308}ssword'/><user name='judy' password='bad\u{200e}\u{5d0}'/></host></server-data>",
    )
    .unwrap();
    let srv = TestServer::start().await;
    let data = srv.stop().await;
    {
        let store = open(data.path());
        let dry = import_file(&store, opts(&["localhost"], true), &file).await;
        assert_eq!((dry.accounts, dry.errors.len()), (1, 1), "{dry}");
        assert!(
            dry.errors[0].contains("judy@localhost") && dry.errors[0].contains("SASLprep"),
            "{dry}"
        );
        let report = import_file(&store, opts(&["localhost"], false), &file).await;
        assert_eq!((report.accounts, report.errors.len()), (1, 1), "{report}");
        store.flush().await.unwrap();
    }
    let config = common::test_config(data.path());
    let srv = TestServer {
        server: Some(oxpecker::Server::start(config.clone()).await.unwrap()),
        dir: data,
        config,
    };
    for (password, ok) in [("p\u{e4}ssword", true), ("pa\u{308}ssword", false)] {
        let mut c = RawClient::connect(srv.c2s()).await;
        c.starttls(&srv.cert_pem()).await;
        let outcome =
            scram_login(&mut c, oxpecker::auth::ScramHash::Sha256, "ivan", password).await;
        assert_eq!(outcome.contains("<success"), ok, "{password:?}: {outcome}");
    }
}

/// Not a timing assertion: prints how many accounts per second a 10,000-account XEP-0227 file
/// (SCRAM keys, a roster item and a vCard each) imports at, in this build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_rate_of_ten_thousand_accounts() {
    const N: usize = 10_000;
    let keys = oxpecker::auth::ScramKeys::derive(
        oxpecker::auth::ScramHash::Sha1,
        b"pw",
        b"bench-salt",
        4096,
    );
    let b64 = oxpecker::auth::encode_b64;
    let mut xml = String::from("<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>\n");
    for i in 0..N {
        xml.push_str(&format!(
            "<user name='user{i}'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>{}</salt><server-key>{}</server-key><stored-key>{}</stored-key></scram-credentials><query xmlns='jabber:iq:roster'><item jid='user{}@localhost' subscription='both'><group>G</group></item></query><vCard xmlns='vcard-temp'><FN>User {i}</FN></vCard></user>\n",
            b64(&keys.salt),
            b64(&keys.server_key),
            b64(&keys.stored_key),
            (i + 1) % N
        ));
    }
    xml.push_str("</host></server-data>\n");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let started = std::time::Instant::now();
    let report = migrate::import_xep0227(
        &store,
        opts(&["localhost"], false),
        std::io::Cursor::new(xml.into_bytes()),
        None,
    )
    .await
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.accounts, N as u64, "{report}");
    assert!(report.errors.is_empty());
    println!(
        "imported {N} accounts (SCRAM keys, roster item, vCard) in {secs:.2} s: {:.0} accounts/s",
        N as f64 / secs
    );
}

/// A real `ejabberdctl export_piefxis` of ejabberd 23.01 (Debian 12): the host in an
/// XInclude'd file, SCRAM-SHA-1 keys written as base64 of base64. Made with `register carol
/// localhost carol-pw`, `add_rosteritem`, `set_vcard` and `send_message` (see scripts/migrate-test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_export_with_includes_imports_and_logs_in() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ejabberd/export.xml");
    let srv = TestServer::start().await;
    let data = srv.stop().await;
    {
        let store = open(data.path());
        let report = import_file(&store, opts(&["localhost"], false), &fixture).await;
        assert_eq!((report.accounts, report.errors.len()), (2, 0), "{report}");
        assert_eq!(report.records["offline"], 1, "{report}");
        store.flush().await.unwrap();
        // Without the folder to read includes from, the include is refused by name.
        let f = std::io::BufReader::new(std::fs::File::open(&fixture).unwrap());
        let err = migrate::import_xep0227(&store, opts(&["localhost"], true), f, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("xi:include"), "{err}");
    }
    let config = common::test_config(data.path());
    let srv = TestServer {
        server: Some(oxpecker::Server::start(config.clone()).await.unwrap()),
        dir: data,
        config,
    };
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    let outcome = scram_login(&mut c, oxpecker::auth::ScramHash::Sha1, "carol", "carol-pw").await;
    assert!(outcome.contains("<success"), "{outcome}");
    let mut c = RawClient::login(&srv, "carol", "carol-pw", "r").await;
    c.send("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let vcard = read_until_contains(&mut c, "iq", "v1").await;
    assert!(vcard.contains("<FN>Carol Ejabberd</FN>"), "{vcard}");
    c.send("<presence/>").await;
    read_until_contains(&mut c, "message", "hello from dave").await;
}

/// A real Prosody 0.12 `sql` storage (SQLite, `prosody.sqlite`) seeded by prosodyctl and
/// scripts/migrate_clients.py: accounts, rosters, vCards and offline messages come along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_sqlite_imports_and_logs_in() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prosody-sql");
    let srv = TestServer::start().await;
    let data = srv.stop().await;
    {
        let store = open(data.path());
        let report = migrate::import_prosody(&store, opts(&["localhost"], false), &fixture)
            .await
            .unwrap();
        assert_eq!((report.accounts, report.errors.len()), (2, 0), "{report}");
        assert_eq!(report.records["roster"], 2, "{report}");
        assert_eq!(report.records["vcard"], 2, "{report}");
        assert_eq!(report.records["offline"], 2, "{report}");
        store.flush().await.unwrap();
    }
    let config = common::test_config(data.path());
    let srv = TestServer {
        server: Some(oxpecker::Server::start(config.clone()).await.unwrap()),
        dir: data,
        config,
    };
    let mut a = RawClient::login(&srv, "alice", "alicepw", "r").await;
    a.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = read_until_contains(&mut a, "iq", "r1").await;
    assert!(
        roster.contains("jid=\"bob@localhost\"") && roster.contains("<group>Friends</group>"),
        "{roster}"
    );
    a.send("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let vcard = read_until_contains(&mut a, "iq", "v1").await;
    assert!(vcard.contains("<FN>Alice SQL</FN>"), "{vcard}");
    a.send("<presence/>").await;
    read_until_contains(&mut a, "message", "for alice, sql").await;
}
