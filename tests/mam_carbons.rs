//! XEP-0313 message archive (with XEP-0359 stanza ids and XEP-0059 paging) and XEP-0280 message
//! carbons over real sockets: paging through 1,000 archived messages, filters, preferences,
//! retention, received/sent carbons with private/no-copy and disable, and module unloading.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{RawClient, TestServer, login, online};
use oxpecker::xmpp::Element;
use oxpecker::xmpp::parser::parse_element;
use serde_json::json;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const SID: &str = "urn:xmpp:sid:0";
const FORWARD: &str = "urn:xmpp:forward:0";
const CARBONS: &str = "urn:xmpp:carbons:2";
const CLIENT: &str = "jabber:client";

async fn server_with(users: &[&str], f: impl FnOnce(&mut oxpecker::config::Config)) -> TestServer {
    let srv = TestServer::start_with(|c| {
        for m in ["mam", "carbons"] {
            if !c.modules_enabled.iter().any(|x| x == m) {
                c.modules_enabled.push(m.into());
            }
        }
        f(c)
    })
    .await;
    for u in users {
        srv.add_user(&format!("{u}@localhost"), "pw").await;
    }
    srv
}

/// Reads the next complete `<message/>` (which may nest forwarded messages), skipping anything before it.
async fn read_message(c: &mut RawClient) -> String {
    let mut acc = c.read_until("</message>").await;
    let start = acc.find("<message").expect("a message");
    acc.drain(..start);
    while parse_element(&acc).is_err() {
        acc.push_str(&c.read_until("</message>").await);
    }
    acc
}

/// Reads stanzas until one contains `needle`.
async fn read_until_contains(c: &mut RawClient, name: &str, needle: &str) -> String {
    for _ in 0..50 {
        let s = if name == "message" {
            read_message(c).await
        } else {
            c.read_stanza(name).await
        };
        if s.contains(needle) {
            return s;
        }
    }
    panic!("no <{name}> containing {needle:?}");
}

/// Proves nothing is queued for `c`: everything before a ping's reply holds no `<message`.
async fn nothing_pending(c: &mut RawClient) {
    c.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = c.read_until("id=\"sync\"").await;
    assert!(!next.contains("<message"), "unexpected: {next}");
    c.read_until("/>").await;
}

/// Parses a run of top-level stanzas.
fn parse_all(text: &str) -> Vec<Element> {
    let wrap = parse_element(&format!("<wrap>{text}</wrap>")).unwrap();
    wrap.children().cloned().collect()
}

/// Sends an IQ and reads everything up to its answer (message stanzas before it included).
async fn iq(c: &mut RawClient, id: &str, xml: &str) -> Vec<Element> {
    c.send(xml).await;
    let mut text = c.read_until(&format!("id=\"{id}\"")).await;
    let rest = c.read_until(">").await;
    text.push_str(&rest);
    if !rest.ends_with("/>") {
        text.push_str(&c.read_until("</iq>").await);
    }
    // Drop anything before the first stanza start (e.g. the tail of an earlier read).
    let start = text.find('<').unwrap();
    parse_all(&text[start..])
}

/// One MAM page: the results (archive id, body) and the `<fin/>`.
struct Page {
    items: Vec<(String, String, Element)>,
    fin: Element,
}

impl Page {
    fn rsm(&self, name: &str) -> Option<String> {
        self.fin
            .get_child("set", RSM)
            .and_then(|s| s.get_child(name, RSM))
            .map(|e| e.text_content())
    }
    fn complete(&self) -> bool {
        self.fin.get_attr("complete") == Some("true")
    }
    fn bodies(&self) -> Vec<String> {
        self.items.iter().map(|(_, b, _)| b.clone()).collect()
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs a MAM query with `form` fields and `rsm` children; panics on an error answer.
async fn mam(c: &mut RawClient, form: &str, rsm: &str) -> Page {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (id, qid) = (format!("iq{n}"), format!("q{n}"));
    let x = if form.is_empty() {
        String::new()
    } else {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{form}</x>"
        )
    };
    let set = if rsm.is_empty() {
        String::new()
    } else {
        format!("<set xmlns='{RSM}'>{rsm}</set>")
    };
    let stanzas = iq(
        c,
        &id,
        &format!(
            "<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='{qid}'>{x}{set}</query></iq>"
        ),
    )
    .await;
    let mut items = Vec::new();
    let mut fin = None;
    for s in stanzas {
        if s.name() == "message" {
            let r = s.get_child("result", MAM).expect("result");
            assert_eq!(r.get_attr("queryid"), Some(qid.as_str()));
            let fwd = r.get_child("forwarded", FORWARD).unwrap();
            assert!(fwd.get_child("delay", "urn:xmpp:delay").is_some());
            let m = fwd.get_child("message", CLIENT).unwrap().clone();
            let body = m
                .get_child("body", CLIENT)
                .map(|b| b.text_content())
                .unwrap_or_default();
            items.push((r.get_attr("id").unwrap().to_string(), body, m));
        } else if s.name() == "iq" && s.get_attr("id") == Some(id.as_str()) {
            assert_eq!(s.get_attr("type"), Some("result"), "{s:?}");
            fin = s.get_child("fin", MAM).cloned();
        }
    }
    Page {
        items,
        fin: fin.expect("fin"),
    }
}

/// Sends an IQ expected to fail and returns the error answer's text.
async fn iq_error(c: &mut RawClient, id: &str, xml: &str) -> String {
    c.send(xml).await;
    let s = read_until_contains(c, "iq", &format!("id=\"{id}\"")).await;
    assert!(s.contains("type=\"error\""), "{s}");
    s
}

async fn archive_count(srv: &TestServer, user: &str) -> usize {
    srv.server()
        .core
        .store
        .archive("localhost", "archive")
        .count(user)
        .await
        .unwrap()
}

async fn wait_archive(srv: &TestServer, user: &str, n: usize) {
    for _ in 0..600 {
        if archive_count(srv, user).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{user}'s archive has {} items, want {n}",
        archive_count(srv, user).await
    );
}

fn stanza_id(m: &str) -> Option<String> {
    let el = parse_element(m).unwrap();
    el.children()
        .find(|c| c.is("stanza-id", SID) && c.get_attr("by") == Some("alice@localhost"))
        .and_then(|c| c.get_attr("id").map(str::to_string))
}

#[tokio::test]
async fn mam_pages_through_1000_messages_in_order() {
    let srv = server_with(&["alice", "bob"], |c| {
        c.options
            .insert("offline_max_messages".into(), toml::Value::Integer(5000));
    })
    .await;
    let mut b = login(&srv, "bob", "b").await;
    let mut burst = String::new();
    for i in 0..1000 {
        burst.push_str(&format!(
            "<message to='alice@localhost' type='chat' id='m{i}'><body>m{i:04}</body></message>"
        ));
    }
    let started = std::time::Instant::now();
    b.send(&burst).await;
    wait_archive(&srv, "alice", 1000).await;
    wait_archive(&srv, "bob", 1000).await;
    println!(
        "archived 1000 messages (both copies) in {:?}",
        started.elapsed()
    );

    // A session without presence: offline messages stay stored, only query results arrive.
    let mut a = login(&srv, "alice", "q").await;
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i:04}")).collect();
    let mut bodies = Vec::new();
    let mut ids = HashSet::new();
    let mut after = None::<String>;
    let mut pages = 0;
    let started = std::time::Instant::now();
    loop {
        let rsm = match &after {
            Some(a) => format!("<max>100</max><after>{a}</after>"),
            None => "<max>100</max>".into(),
        };
        let p = mam(&mut a, "", &rsm).await;
        pages += 1;
        assert_eq!(p.items.len(), 100, "page {pages}");
        assert_eq!(p.rsm("count").as_deref(), Some("1000"));
        assert_eq!(p.rsm("first").as_ref(), Some(&p.items[0].0));
        assert_eq!(p.rsm("last").as_ref(), Some(&p.items[99].0));
        for (id, _, m) in &p.items {
            assert!(ids.insert(id.clone()), "duplicate id {id}");
            assert_eq!(m.get_attr("from"), Some("bob@localhost/b"));
        }
        bodies.extend(p.bodies());
        after = p.rsm("last");
        if p.complete() {
            break;
        }
        assert!(pages < 10, "page 10 must be complete");
    }
    println!(
        "paged 1000 messages in {pages} pages in {:?}",
        started.elapsed()
    );
    assert_eq!(pages, 10);
    assert_eq!(bodies, expected, "every message once, in order");

    // The last page (empty <before/>), in chronological order, not complete (more before it).
    let p = mam(&mut a, "", "<max>10</max><before/>").await;
    assert_eq!(p.bodies(), expected[990..].to_vec());
    assert!(!p.complete());
    // Paging backwards from there.
    let first = p.rsm("first").unwrap();
    let p = mam(
        &mut a,
        "",
        &format!("<max>10</max><before>{first}</before>"),
    )
    .await;
    assert_eq!(p.bodies(), expected[980..990].to_vec());
    // A larger max is capped at mam_max_page (100); max 0 only counts.
    let p = mam(&mut a, "", "<max>5000</max>").await;
    assert_eq!(p.items.len(), 100);
    assert!(!p.complete());
    let p = mam(&mut a, "", "<max>0</max>").await;
    assert!(p.items.is_empty());
    assert_eq!(p.rsm("count").as_deref(), Some("1000"));
    // after-id (extended) combined with RSM.
    let pivot = p_id(&mut a, 499).await;
    let p = mam(
        &mut a,
        &format!("<field var='after-id'><value>{pivot}</value></field>"),
        "<max>3</max>",
    )
    .await;
    assert_eq!(p.bodies(), expected[500..503].to_vec());
    // The sender's archive holds its copies.
    let mut b2 = login(&srv, "bob", "q").await;
    let p = mam(&mut b2, "", "<max>2</max>").await;
    assert_eq!(p.bodies(), expected[..2].to_vec());
    assert_eq!(p.rsm("count").as_deref(), Some("1000"));
    assert_eq!(p.items[0].2.get_attr("to"), Some("alice@localhost"));
    // Unknown ids are item-not-found; an RSM index is not implemented.
    let e = iq_error(
        &mut a,
        "bad1",
        &format!("<iq type='set' id='bad1'><query xmlns='{MAM}'><set xmlns='{RSM}'><after>nope</after></set></query></iq>"),
    )
    .await;
    assert!(e.contains("<item-not-found "), "{e}");
    drop(b);
}

/// The archive id of the `n`-th message (0-based) of the user's archive.
async fn p_id(c: &mut RawClient, n: usize) -> String {
    let mut after = None::<String>;
    let mut seen = 0;
    loop {
        let rsm = match &after {
            Some(a) => format!("<max>100</max><after>{a}</after>"),
            None => "<max>100</max>".into(),
        };
        let p = mam(c, "", &rsm).await;
        if seen + p.items.len() > n {
            return p.items[n - seen].0.clone();
        }
        seen += p.items.len();
        after = p.rsm("last");
    }
}

#[tokio::test]
async fn queries_filter_by_with_start_end_and_before() {
    let srv = server_with(&["alice", "bob", "carol"], |_| {}).await;
    // An old item, archived directly with a 2020 timestamp.
    let old = srv
        .server()
        .core
        .store
        .archive("localhost", "archive")
        .append(
            "alice",
            None,
            1_577_836_800,
            "carol@localhost",
            json!({ "xml": "<message from='carol@localhost/x' to='alice@localhost' type='chat'><body>old</body></message>" }),
        )
        .await
        .unwrap();
    let mut b = login(&srv, "bob", "b").await;
    let mut c = login(&srv, "carol", "c").await;
    for i in 0..3 {
        b.send(&format!(
            "<message to='alice@localhost' type='chat'><body>bob{i}</body></message>"
        ))
        .await;
    }
    wait_archive(&srv, "alice", 4).await;
    c.send("<message to='alice@localhost' type='chat'><body>carol0</body></message>")
        .await;
    // Not archived: headline, bodiless chat state, no-store hint, error.
    b.send("<message to='alice@localhost' type='headline'><body>news</body></message>")
        .await;
    b.send("<message to='alice@localhost' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    b.send("<message to='alice@localhost' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>").await;
    wait_archive(&srv, "alice", 5).await;
    nothing_pending(&mut b).await;
    nothing_pending(&mut c).await;

    let mut a = login(&srv, "alice", "q").await;
    let all = mam(&mut a, "", "").await;
    assert_eq!(all.bodies(), ["old", "bob0", "bob1", "bob2", "carol0"]);
    assert!(all.complete());
    assert_eq!(all.items[0].0, old);

    let with = |j: &str| format!("<field var='with'><value>{j}</value></field>");
    let p = mam(&mut a, &with("bob@localhost"), "").await;
    assert_eq!(p.bodies(), ["bob0", "bob1", "bob2"]);
    assert_eq!(p.rsm("count").as_deref(), Some("3"));
    let p = mam(&mut a, &with("carol@localhost"), "").await;
    assert_eq!(p.bodies(), ["old", "carol0"]);
    let p = mam(&mut a, &with("nobody@localhost"), "").await;
    assert!(p.items.is_empty() && p.complete());
    assert_eq!(p.rsm("count").as_deref(), Some("0"));

    let start = |t: &str| format!("<field var='start'><value>{t}</value></field>");
    let end = |t: &str| format!("<field var='end'><value>{t}</value></field>");
    let p = mam(&mut a, &end("2020-06-01T00:00:00Z"), "").await;
    assert_eq!(p.bodies(), ["old"]);
    let p = mam(&mut a, &start("2021-01-01T00:00:00Z"), "").await;
    assert_eq!(p.bodies(), ["bob0", "bob1", "bob2", "carol0"]);
    let p = mam(
        &mut a,
        &format!(
            "{}{}",
            start("2019-12-31T00:00:00Z"),
            end("2020-01-01T00:00:00Z")
        ),
        "",
    )
    .await;
    assert_eq!(p.bodies(), ["old"]);
    let p = mam(
        &mut a,
        &format!(
            "{}{}",
            with("carol@localhost"),
            start("2021-01-01T00:00:00Z")
        ),
        "",
    )
    .await;
    assert_eq!(p.bodies(), ["carol0"]);

    // Before an id: RSM <before> (the page just before it) and the before-id form field.
    let bob2 = all.items[3].0.clone();
    let p = mam(&mut a, "", &format!("<max>2</max><before>{bob2}</before>")).await;
    assert_eq!(p.bodies(), ["bob0", "bob1"]);
    assert!(!p.complete());
    let p = mam(
        &mut a,
        &format!("<field var='before-id'><value>{bob2}</value></field>"),
        "",
    )
    .await;
    assert_eq!(p.bodies(), ["old", "bob0", "bob1"]);
    // ids (extended).
    let p = mam(
        &mut a,
        &format!(
            "<field var='ids'><value>{}</value><value>{}</value></field>",
            all.items[4].0, all.items[1].0
        ),
        "",
    )
    .await;
    assert_eq!(p.bodies(), ["bob0", "carol0"]);
    // flip-page reverses the page.
    a.send(&format!(
        "<iq type='set' id='flip'><query xmlns='{MAM}'><flip-page/><set xmlns='{RSM}'><max>2</max></set></query></iq>"
    ))
    .await;
    let got = parse_all(&a.read_until("</fin></iq>").await);
    let flipped: Vec<String> = got
        .iter()
        .filter(|m| m.name() == "message")
        .map(|m| {
            let f = m
                .get_child("result", MAM)
                .unwrap()
                .get_child("forwarded", FORWARD)
                .unwrap();
            f.get_child("message", CLIENT)
                .unwrap()
                .get_child("body", CLIENT)
                .unwrap()
                .text_content()
        })
        .collect();
    assert_eq!(flipped, ["bob0", "old"]);

    // Form discovery and metadata.
    let r = iq(
        &mut a,
        "form",
        &format!("<iq type='get' id='form'><query xmlns='{MAM}'/></iq>"),
    )
    .await;
    let x = r[0]
        .get_child("query", MAM)
        .unwrap()
        .get_child("x", "jabber:x:data")
        .unwrap();
    let vars: Vec<_> = x.children().filter_map(|f| f.get_attr("var")).collect();
    for v in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
    ] {
        assert!(vars.contains(&v), "{vars:?}");
    }
    let r = iq(
        &mut a,
        "meta",
        &format!("<iq type='get' id='meta'><metadata xmlns='{MAM}'/></iq>"),
    )
    .await;
    let meta = r[0].get_child("metadata", MAM).unwrap();
    assert_eq!(
        meta.get_child("start", MAM).unwrap().get_attr("id"),
        Some(old.as_str())
    );
    assert_eq!(
        meta.get_child("end", MAM).unwrap().get_attr("id"),
        Some(all.items[4].0.as_str())
    );

    // Bad forms and other people's archives are refused.
    let e = iq_error(
        &mut a,
        "bf",
        &format!("<iq type='set' id='bf'><query xmlns='{MAM}'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>yesterday</value></field></x></query></iq>"),
    )
    .await;
    assert!(e.contains("<bad-request "), "{e}");
    // A year far beyond XEP-0082's four digits is a bad request too (it used to overflow).
    let e = iq_error(
        &mut a,
        "by",
        &format!("<iq type='set' id='by'><query xmlns='{MAM}'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>999999999999-01-01T00:00:00Z</value></field></x></query></iq>"),
    )
    .await;
    assert!(e.contains("<bad-request "), "{e}");
    let e = iq_error(
        &mut b,
        "other",
        &format!("<iq type='set' id='other' to='alice@localhost'><query xmlns='{MAM}'/></iq>"),
    )
    .await;
    assert!(e.contains("<forbidden "), "{e}");
}

#[tokio::test]
async fn stanza_id_matches_archive_and_prefs_control_archiving() {
    let srv = server_with(&["alice", "bob", "carol"], |_| {}).await;
    let mut a = online(&srv, "alice", "a").await;
    let mut b = online(&srv, "bob", "b").await;
    // A forged stanza-id by alice is stripped; ours carries the archive id.
    b.send("<message to='alice@localhost' type='chat' id='s1'><body>hello</body><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged'/></message>").await;
    let m = read_until_contains(&mut a, "message", "hello").await;
    assert!(!m.contains("forged"), "{m}");
    let sid = stanza_id(&m).expect("stanza-id");
    let p = mam(&mut a, "", "").await;
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].0, sid, "stanza-id equals the archive id");

    // Prefs: default never stops archiving (and no stanza-id is added).
    let r = iq(
        &mut a,
        "pg",
        &format!("<iq type='get' id='pg'><prefs xmlns='{MAM}'/></iq>"),
    )
    .await;
    assert_eq!(
        r[0].get_child("prefs", MAM).unwrap().get_attr("default"),
        Some("always")
    );
    let r = iq(
        &mut a,
        "ps",
        &format!("<iq type='set' id='ps'><prefs xmlns='{MAM}' default='never'><always><jid>carol@localhost</jid></always><never/></prefs></iq>"),
    )
    .await;
    assert_eq!(r[0].get_attr("type"), Some("result"));
    b.send("<message to='alice@localhost' type='chat'><body>unarchived</body></message>")
        .await;
    let m = read_until_contains(&mut a, "message", "unarchived").await;
    assert!(stanza_id(&m).is_none(), "{m}");
    // Alice's own outgoing message to bob is not archived either; to carol (always) it is.
    a.send("<message to='bob@localhost' type='chat'><body>out-bob</body></message>")
        .await;
    read_until_contains(&mut b, "message", "out-bob").await;
    let mut c = login(&srv, "carol", "c").await;
    c.send("<message to='alice@localhost' type='chat'><body>from-carol</body></message>")
        .await;
    let m = read_until_contains(&mut a, "message", "from-carol").await;
    assert!(stanza_id(&m).is_some(), "{m}");
    let p = mam(&mut a, "", "").await;
    assert_eq!(p.bodies(), ["hello", "from-carol"]);
    // The stored prefs come back.
    let r = iq(
        &mut a,
        "pg2",
        &format!("<iq type='get' id='pg2'><prefs xmlns='{MAM}'/></iq>"),
    )
    .await;
    let prefs = r[0].get_child("prefs", MAM).unwrap();
    assert_eq!(prefs.get_attr("default"), Some("never"));
    assert_eq!(
        prefs
            .get_child("always", MAM)
            .unwrap()
            .get_child("jid", MAM)
            .unwrap()
            .text_content(),
        "carol@localhost"
    );

    // default='roster': bob becomes archived once he is on alice's roster, carol is not.
    iq(
        &mut a,
        "ps2",
        &format!("<iq type='set' id='ps2'><prefs xmlns='{MAM}' default='roster'/></iq>"),
    )
    .await;
    c.send("<message to='alice@localhost' type='chat'><body>carol-roster</body></message>")
        .await;
    read_until_contains(&mut a, "message", "carol-roster").await;
    iq(
        &mut a,
        "rs",
        "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>",
    )
    .await;
    b.send("<message to='alice@localhost' type='chat'><body>bob-roster</body></message>")
        .await;
    read_until_contains(&mut a, "message", "bob-roster").await;
    let p = mam(&mut a, "", "").await;
    assert_eq!(p.bodies(), ["hello", "from-carol", "bob-roster"]);
    // Bad prefs are refused.
    let e = iq_error(
        &mut a,
        "ps3",
        &format!("<iq type='set' id='ps3'><prefs xmlns='{MAM}' default='sometimes'/></iq>"),
    )
    .await;
    assert!(e.contains("<bad-request "), "{e}");
}

#[tokio::test]
async fn retention_deletes_old_items() {
    let srv = server_with(&["alice", "bob"], |c| {
        c.options.insert(
            "mam_archive_expires_after".into(),
            toml::Value::String("1d".into()),
        );
        c.options
            .insert("mam_expiry_interval".into(), toml::Value::Integer(1));
    })
    .await;
    let archive = srv.server().core.store.archive("localhost", "archive");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for days in [10, 2] {
        archive
            .append(
                "alice",
                None,
                now - days * 86_400,
                "bob@localhost",
                json!({ "xml": format!("<message type='chat'><body>{days} days old</body></message>") }),
            )
            .await
            .unwrap();
    }
    let mut b = login(&srv, "bob", "b").await;
    b.send("<message to='alice@localhost' type='chat'><body>fresh</body></message>")
        .await;
    // The periodic task removes the two old items and keeps the fresh one.
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = archive_count(&srv, "alice").await;
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 1);
    let mut a = login(&srv, "alice", "q").await;
    assert_eq!(mam(&mut a, "", "").await.bodies(), ["fresh"]);
    // The expiry function itself.
    archive
        .append(
            "bob",
            None,
            now - 100,
            "alice@localhost",
            json!({ "xml": "<message/>" }),
        )
        .await
        .unwrap();
    let n = oxpecker::modules::mam::expire(&srv.server().core, "localhost", 50)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn carbons_copy_received_and_sent_messages() {
    let srv = server_with(&["alice", "bob"], |_| {}).await;
    let mut a1 = online(&srv, "alice", "A").await;
    let mut a2 = online(&srv, "alice", "B").await;
    let mut a3 = online(&srv, "alice", "C").await; // never enables carbons
    let mut b = online(&srv, "bob", "b").await;
    for c in [&mut a1, &mut a2] {
        let r = iq(
            c,
            "en",
            &format!("<iq type='set' id='en'><enable xmlns='{CARBONS}'/></iq>"),
        )
        .await;
        assert_eq!(r.last().unwrap().get_attr("type"), Some("result"));
    }

    // Received: to alice/A, a copy for B (with the stanza id), none for C.
    b.send("<message to='alice@localhost/A' type='chat' id='r1'><body>to-A</body></message>")
        .await;
    let orig = read_until_contains(&mut a1, "message", "to-A").await;
    assert!(!orig.contains("<received"), "{orig}");
    let copy = read_until_contains(&mut a2, "message", "to-A").await;
    let el = parse_element(&copy).unwrap();
    assert_eq!(el.get_attr("from"), Some("alice@localhost"));
    assert_eq!(el.get_attr("to"), Some("alice@localhost/B"));
    let inner = el
        .get_child("received", CARBONS)
        .and_then(|r| r.get_child("forwarded", FORWARD))
        .and_then(|f| f.get_child("message", CLIENT))
        .expect("received carbon");
    assert_eq!(inner.get_attr("from"), Some("bob@localhost/b"));
    assert_eq!(inner.get_attr("to"), Some("alice@localhost/A"));
    assert_eq!(
        inner
            .get_child("stanza-id", SID)
            .and_then(|s| s.get_attr("id")),
        stanza_id(&orig).as_deref()
    );
    nothing_pending(&mut a3).await;

    // To the bare JID every resource gets the original, so no copies.
    b.send("<message to='alice@localhost' type='chat'><body>to-bare</body></message>")
        .await;
    for c in [&mut a1, &mut a2, &mut a3] {
        let m = read_until_contains(c, "message", "to-bare").await;
        assert!(!m.contains("<received"), "{m}");
        nothing_pending(c).await;
    }

    // Sent: alice/A writes to bob, B gets a <sent/> copy, A and C nothing.
    a1.send("<message to='bob@localhost' type='chat' id='s1'><body>from-A</body></message>")
        .await;
    read_until_contains(&mut b, "message", "from-A").await;
    let copy = read_until_contains(&mut a2, "message", "from-A").await;
    let el = parse_element(&copy).unwrap();
    let inner = el
        .get_child("sent", CARBONS)
        .and_then(|r| r.get_child("forwarded", FORWARD))
        .and_then(|f| f.get_child("message", CLIENT))
        .expect("sent carbon");
    assert_eq!(inner.get_attr("from"), Some("alice@localhost/A"));
    assert_eq!(inner.get_attr("to"), Some("bob@localhost"));
    nothing_pending(&mut a1).await;
    nothing_pending(&mut a3).await;

    // Private and no-copy are not copied, either way.
    b.send("<message to='alice@localhost/A' type='chat'><body>priv-in</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>").await;
    read_until_contains(&mut a1, "message", "priv-in").await;
    a1.send("<message to='bob@localhost' type='chat'><body>priv-out</body><private xmlns='urn:xmpp:carbons:2'/></message>").await;
    read_until_contains(&mut b, "message", "priv-out").await;
    b.send("<message to='alice@localhost/A' type='chat'><body>nocopy-in</body><no-copy xmlns='urn:xmpp:hints'/></message>").await;
    read_until_contains(&mut a1, "message", "nocopy-in").await;
    // Not eligible: a headline.
    b.send("<message to='alice@localhost/A' type='headline'><body>head</body></message>")
        .await;
    read_until_contains(&mut a1, "message", "head").await;
    nothing_pending(&mut a2).await;

    // Disable: B gets no more copies.
    let r = iq(
        &mut a2,
        "dis",
        &format!("<iq type='set' id='dis'><disable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    assert_eq!(r.last().unwrap().get_attr("type"), Some("result"));
    b.send("<message to='alice@localhost/A' type='chat'><body>after-disable</body></message>")
        .await;
    read_until_contains(&mut a1, "message", "after-disable").await;
    a1.send("<message to='bob@localhost' type='chat'><body>sent-after-disable</body></message>")
        .await;
    read_until_contains(&mut b, "message", "sent-after-disable").await;
    nothing_pending(&mut a2).await;
    // A (still enabled) gets B's sent messages.
    a2.send("<message to='bob@localhost' type='chat'><body>from-B</body></message>")
        .await;
    let copy = read_until_contains(&mut a1, "message", "from-B").await;
    assert!(
        copy.contains("<sent xmlns=\"urn:xmpp:carbons:2\""),
        "{copy}"
    );
}

#[tokio::test]
async fn highest_delivery_leaves_lower_resources_a_carbon_copy() {
    let srv = server_with(&["alice", "bob"], |c| {
        c.bare_message_delivery = oxpecker::config::BareMessageDelivery::Highest;
    })
    .await;
    let mut top = login(&srv, "alice", "top").await;
    let mut low = login(&srv, "alice", "low").await;
    let mut plain = login(&srv, "alice", "plain").await; // low priority, no carbons
    let mut b = online(&srv, "bob", "b").await;
    for (c, p) in [(&mut top, 5), (&mut low, 1), (&mut plain, 1)] {
        c.send(&format!("<presence><priority>{p}</priority></presence>"))
            .await;
        nothing_pending(c).await;
    }
    let r = iq(
        &mut low,
        "en",
        &format!("<iq type='set' id='en'><enable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    assert_eq!(r.last().unwrap().get_attr("type"), Some("result"));

    b.send("<message to='alice@localhost' type='chat'><body>hi-bare</body></message>")
        .await;
    let orig = read_until_contains(&mut top, "message", "hi-bare").await;
    assert!(!orig.contains("<received"), "{orig}");
    let copy = read_until_contains(&mut low, "message", "hi-bare").await;
    let el = parse_element(&copy).unwrap();
    assert_eq!(el.get_attr("to"), Some("alice@localhost/low"));
    let inner = el
        .get_child("received", CARBONS)
        .and_then(|r| r.get_child("forwarded", FORWARD))
        .and_then(|f| f.get_child("message", CLIENT))
        .expect("received carbon for the resource \"highest\" left out");
    assert_eq!(inner.get_attr("to"), Some("alice@localhost"));
    nothing_pending(&mut low).await;
    nothing_pending(&mut plain).await;
    nothing_pending(&mut top).await;
}

#[tokio::test]
async fn unloading_removes_iqs_features_and_stanza_ids() {
    let srv = server_with(&["alice", "bob"], |_| {}).await;
    let mut a = online(&srv, "alice", "a").await;
    let mut b = login(&srv, "bob", "b").await;
    let disco = "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    let acct = "<iq type='get' id='ad'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    let r = iq(&mut a, "d", disco).await;
    let host = format!("{:?}", r.last().unwrap());
    for f in [
        MAM,
        "urn:xmpp:mam:2#extended",
        SID,
        CARBONS,
        "urn:xmpp:carbons:rules:0",
    ] {
        assert!(host.contains(&format!("\"{f}\"")), "{f} in {host}");
    }
    let r = iq(&mut a, "ad", acct).await;
    let q = r
        .last()
        .unwrap()
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let id = q
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (id.get_attr("category"), id.get_attr("type")),
        (Some("account"), Some("registered"))
    );
    let feats: Vec<_> = q.children().filter_map(|f| f.get_attr("var")).collect();
    for f in [MAM, "urn:xmpp:mam:2#extended", SID] {
        assert!(feats.contains(&f), "{f} in {feats:?}");
    }
    // A stranger does not learn the account's features.
    let e = iq_error(
        &mut b,
        "ad2",
        "<iq type='get' id='ad2' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert!(e.contains("<service-unavailable "), "{e}");

    let core = &srv.server().core;
    core.unload_module("localhost", "mam").unwrap();
    core.unload_module("localhost", "carbons").unwrap();
    let e = iq_error(
        &mut a,
        "q",
        &format!("<iq type='set' id='q'><query xmlns='{MAM}'/></iq>"),
    )
    .await;
    assert!(e.contains("<service-unavailable "), "{e}");
    let e = iq_error(
        &mut a,
        "p",
        &format!("<iq type='get' id='p'><prefs xmlns='{MAM}'/></iq>"),
    )
    .await;
    assert!(e.contains("<service-unavailable "), "{e}");
    let e = iq_error(
        &mut a,
        "en",
        &format!("<iq type='set' id='en'><enable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    assert!(e.contains("<service-unavailable "), "{e}");
    let r = iq(&mut a, "d", disco).await;
    let host = format!("{:?}", r.last().unwrap());
    for f in [MAM, SID, CARBONS] {
        assert!(!host.contains(&format!("\"{f}\"")), "{f} still in {host}");
    }
    let r = iq(&mut a, "ad", acct).await;
    let acct_feats = format!("{:?}", r.last().unwrap());
    assert!(!acct_feats.contains(MAM), "{acct_feats}");
    let before = archive_count(&srv, "alice").await;
    b.send("<message to='alice@localhost' type='chat'><body>plain</body></message>")
        .await;
    let m = read_until_contains(&mut a, "message", "plain").await;
    assert!(stanza_id(&m).is_none(), "{m}");
    assert_eq!(archive_count(&srv, "alice").await, before);

    // Loading again brings them back.
    core.load_module("localhost", "mam").unwrap();
    b.send("<message to='alice@localhost' type='chat'><body>again</body></message>")
        .await;
    let m = read_until_contains(&mut a, "message", "again").await;
    assert!(stanza_id(&m).is_some(), "{m}");
}
