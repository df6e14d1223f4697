//! `oxpecker shell` against a running server: the binary talks to the control socket of an
//! in-process server with real sessions. One-shot and piped forms, both spellings, exit
//! status on failure, `c2s:close` on bare and full JIDs, hosts switched off and on,
//! `server:shutdown` with its reason, `>` internals, `--json`, users and roles, `muc:*` on a
//! live room with an occupant, `s2s:show` / `s2s:close` between two servers; and an
//! interactive session through a pseudo-terminal (completion, history, help, bye).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{RawClient, TestServer, login, read_until_contains, wait_offline};
use oxpecker::config::HostConfig;

const BIN: &str = env!("CARGO_BIN_EXE_oxpecker");

/// A config file naming the test server's data directory (all the shell needs).
fn config_for(srv: &TestServer) -> PathBuf {
    let path = srv.dir.path().join("shell.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n",
            srv.config.data_dir.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// Runs `oxpecker shell ARGS` with `stdin` piped in.
fn shell(cfg: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("shell")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the shell off the async test thread (the server keeps serving meanwhile).
async fn shell_async(cfg: &Path, args: &[&str], stdin: &str) -> Output {
    let cfg = cfg.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        shell(&cfg, &a, &stdin)
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn two_hosts() -> TestServer {
    TestServer::with_users(&["alice", "bob"], |c| {
        c.hosts.push(HostConfig {
            name: "example.org".into(),
            ..Default::default()
        });
    })
    .await
}

#[tokio::test]
async fn c2s_show_and_close_bare_and_full_jids() {
    let srv = two_hosts().await;
    let cfg = config_for(&srv);
    let mut a1 = login(&srv, "alice", "one").await;
    let mut a2 = login(&srv, "alice", "two").await;
    let mut b = login(&srv, "bob", "phone").await;

    let o = shell_async(&cfg, &["c2s", "show", "localhost"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    let table = out(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("JID "), "{table}");
    assert!(lines[1].starts_with("alice@localhost/one "), "{table}");
    assert!(lines[3].starts_with("bob@localhost/phone "), "{table}");
    for column in [
        "TRANSPORT",
        "SECURITY",
        "MECHANISM",
        "CLIENT",
        "CONNECTED",
        "IDLE",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].contains(" tcp ") && lines[1].contains(" TLSv1") && lines[1].contains(" PLAIN "),
        "{table}"
    );
    // Columns are aligned: IP starts at the same offset on every line.
    let col = lines[0].find("IP").unwrap();
    assert!(
        lines[1..4]
            .iter()
            .all(|l| l[col..].starts_with("127.0.0.1")),
        "{table}"
    );
    assert!(table.contains("3 items"), "{table}");

    // Prosody's spelling, one session (here with <reset/>: the client may reconnect).
    let o = shell_async(
        &cfg,
        &["c2s:close(\"alice@localhost/one\", \"reconnect\", \"reset\")"],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let end = a1.read_to_close().await;
    assert!(end.contains("<reset") && end.contains("reconnect"), "{end}");
    a2.send("<iq type='get' id='s1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a2.read_until("id=\"s1\"").await;

    // Piped, word spelling: the bare JID closes the rest of alice and not bob.
    let o = shell_async(
        &cfg,
        &[],
        "c2s close alice@localhost 'go away'\nc2s:count()\n",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let end = a2.read_to_close().await;
    assert!(end.contains("go away"), "{end}");
    wait_offline(&srv, "alice@localhost").await;
    assert!(out(&o).contains("1 client sessions"), "{}", out(&o));
    b.send("<iq type='get' id='s2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    b.read_until("id=\"s2\"").await;

    // Failure: one-shot and piped exit non-zero.
    let o = shell_async(&cfg, &["c2s", "close", "nobody@localhost"], "").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("no session"), "{}", err(&o));
    let o = shell_async(&cfg, &[], "server:version()\nnope:thing()\n").await;
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(out(&o).contains(env!("CARGO_PKG_VERSION")));
    assert!(
        err(&o).contains("unknown command group nope"),
        "{}",
        err(&o)
    );
    let o = shell_async(&cfg, &[], "c2s:show(\"x\"\n").await;
    assert!(!o.status.success(), "a syntax error fails too");
}

#[tokio::test]
async fn hosts_switch_off_and_on_from_the_shell() {
    let srv = two_hosts().await;
    let cfg = config_for(&srv);
    let mut a = login(&srv, "alice", "one").await;
    let o = shell_async(&cfg, &["host:deactivate(\"localhost\")"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(a.read_to_close().await.contains("<host-gone"));
    let o = shell_async(&cfg, &["host", "list"], "").await;
    let t = out(&o);
    assert!(
        t.lines()
            .any(|l| l.starts_with("localhost ") && l.contains("inactive")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("example.org ") && l.contains(" active")),
        "{t}"
    );
    // Another host still serves streams meanwhile.
    let mut c = RawClient::connect(srv.c2s()).await;
    c.send(&common::HEADER.replace("to='localhost'", "to='example.org'"))
        .await;
    assert!(
        c.read_until("</stream:features>")
            .await
            .contains("starttls")
    );
    let o = shell_async(&cfg, &["host", "activate", "localhost"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    let mut a = login(&srv, "alice", "back").await;
    a.send("<iq type='get' id='h'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.read_until("id=\"h\"").await;
    let o = shell_async(&cfg, &["host", "activate", "localhost"], "").await;
    assert!(!o.status.success(), "already active");
}

#[tokio::test]
async fn modules_config_users_internals_and_json() {
    let srv = two_hosts().await;
    let cfg = config_for(&srv);
    let _a = login(&srv, "alice", "one").await;

    let o = shell_async(&cfg, &["module:unload(\"ping\")"], "").await;
    assert!(
        out(&o).contains("localhost, example.org"),
        "every host: {}",
        out(&o)
    );
    assert!(
        !srv.server()
            .core
            .host("example.org")
            .unwrap()
            .is_loaded("ping")
    );
    let o = shell_async(&cfg, &["module", "load", "ping", "localhost"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        srv.server()
            .core
            .host("localhost")
            .unwrap()
            .is_loaded("ping")
    );
    assert!(
        !srv.server()
            .core
            .host("example.org")
            .unwrap()
            .is_loaded("ping")
    );
    let o = shell_async(&cfg, &["module", "loaded", "ping", "example.org"], "").await;
    assert_eq!(out(&o).trim(), "false");

    let o = shell_async(&cfg, &["config:get(\"localhost\", \"c2s.send_queue\")"], "").await;
    assert_eq!(out(&o).trim(), "1024", "{}", err(&o));
    let o = shell_async(&cfg, &["config", "get", "nope"], "").await;
    assert!(!o.status.success());

    let lines = "user:create(\"carol@localhost\", \"pw\", \"admin\")\n\
                 user:roles(\"carol@localhost\")\n\
                 user set_role carol@localhost member\n\
                 user roles carol@localhost\n\
                 user:list(\"localhost\", \"?o*\")\n";
    let o = shell_async(&cfg, &[], lines).await;
    assert!(o.status.success(), "{}", err(&o));
    let t = out(&o);
    assert!(t.contains("created carol@localhost"), "{t}");
    let roles: Vec<&str> = t
        .lines()
        .filter(|l| *l == "admin" || *l == "member")
        .collect();
    assert_eq!(roles, ["admin", "member"], "{t}");
    assert!(
        t.contains("bob@localhost") && !t.contains("alice@localhost\n"),
        "{t}"
    );

    let o = shell_async(&cfg, &["--json", "c2s", "show"], "").await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["jid"], "alice@localhost/one");
    let o = shell_async(&cfg, &[], "> sessions alice@localhost\n> hosts\n").await;
    assert!(
        out(&o).contains("\"jid\": \"alice@localhost/one\""),
        "{}",
        out(&o)
    );
    let o = shell_async(&cfg, &[], "> nothing\n").await;
    assert!(!o.status.success());

    let o = shell_async(&cfg, &["help", "c2s"], "").await;
    assert!(
        out(&o).contains("c2s:close(jid, text?, condition?)"),
        "{}",
        out(&o)
    );
}

#[tokio::test]
async fn server_shutdown_from_the_shell_delivers_the_reason() {
    let mut srv = two_hosts().await;
    let cfg = config_for(&srv);
    let mut a = login(&srv, "alice", "one").await;
    let o = shell_async(&cfg, &["server:shutdown(\"bye\")"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    // main waits for this request, then drains: the same steps here.
    srv.server().core.stop.requested().await;
    srv.server.take().unwrap().shutdown().await;
    let end = a.read_to_close().await;
    assert!(end.contains("<system-shutdown"), "{end}");
    assert!(end.contains(">bye</text>"), "{end}");
}

#[tokio::test]
async fn interactive_completion_history_help_and_bye() {
    let srv = two_hosts().await;
    let cfg = config_for(&srv);
    let _a = login(&srv, "alice", "one").await;
    let history = srv.dir.path().join("history");
    let run = |history: PathBuf, cfg: PathBuf| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(BIN);
            cmd.arg("--config").arg(&cfg).arg("shell");
            cmd.env("OXPECKER_SHELL_HISTORY", &history);
            cmd.env("TERM", "xterm");
            rexpect::session::spawn_command(cmd, Some(20_000)).unwrap()
        })
    };
    let mut p = run(history.clone(), cfg.clone()).await.unwrap();
    let p = tokio::task::spawn_blocking(move || {
        p.exp_string("oxpecker> ").unwrap();
        p.send_line("help").unwrap();
        p.exp_string("bye, quit").unwrap();
        // Type only at a prompt: the line editor drops what arrives before it is ready.
        p.exp_string("oxpecker> ").unwrap();
        // Tab completes the group, then the command.
        p.send("c2").unwrap();
        p.send("\t").unwrap();
        p.send(" cou\t").unwrap();
        p.send_line("").unwrap();
        p.exp_string("1 client sessions").unwrap();
        p.exp_string("oxpecker> ").unwrap();
        // Completion of an online JID inside a call.
        // `send` is buffered; `flush` hands the keys to the terminal.
        p.send("c2s:close(\"ali\t").unwrap();
        p.flush().unwrap();
        p.exp_string("alice@localhost").unwrap();
        p.send_control('c').unwrap();
        p.flush().unwrap();
        p.exp_string("oxpecker> ").unwrap();
        p.send_line("bye").unwrap();
        p.exp_string("See you!").unwrap();
        p.exp_eof().unwrap();
    });
    p.await.unwrap();
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("c2s count"), "{saved}");

    // History across runs: the previous session's lines come back with the up arrow.
    let mut p = run(history.clone(), cfg.clone()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        p.exp_string("oxpecker> ").unwrap();
        p.send("\x1b[A").unwrap(); // up: "bye"
        p.send("\x1b[A").unwrap(); // up: "c2s count"
        p.flush().unwrap();
        p.send_line("").unwrap();
        p.exp_string("1 client sessions").unwrap();
        p.exp_string("oxpecker> ").unwrap();
        p.send_line("quit").unwrap();
        p.exp_eof().unwrap();
    })
    .await
    .unwrap();
}

const MUC: &str = "conference.localhost";

/// Joins `room` on [`MUC`] as `nick`, reading up to the subject (the end of a join).
async fn join(c: &mut RawClient, room: &str, nick: &str) -> String {
    c.send(&format!(
        "<presence to='{room}@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    c.read_until("</subject></message>").await
}

#[tokio::test]
async fn muc_commands_on_a_live_room_in_both_spellings() {
    let srv = TestServer::with_users(&["alice", "bob"], |_| {}).await;
    let cfg = config_for(&srv);

    let o = shell_async(
        &cfg,
        &["muc:create(\"lounge@conference.localhost\", '{\"persistent\":true}', name=Lounge)"],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("created lounge@conference.localhost"),
        "{}",
        out(&o)
    );
    // A second create of the same room fails with a non-zero exit.
    let o = shell_async(&cfg, &["muc", "create", "lounge@conference.localhost"], "").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("already exists"), "{}", err(&o));

    let mut a = login(&srv, "alice", "one").await;
    let joined = join(&mut a, "lounge", "Al").await;
    assert!(joined.contains("role=\"participant\""), "{joined}");

    let o = shell_async(&cfg, &["muc:list(\"conference.localhost\")"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    let line = out(&o)
        .lines()
        .find(|l| l.contains("lounge@conference.localhost"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("Lounge") && line.contains(" 1 "),
        "{}",
        out(&o)
    );
    let o = shell_async(&cfg, &["--json", "muc", "list"], "").await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["jid"], "lounge@conference.localhost");
    assert_eq!(v[0]["occupants"], 1);
    assert_eq!(v[0]["persistent"], true);
    let o = shell_async(&cfg, &["muc", "list", "localhost"], "").await;
    assert!(!o.status.success());

    let o = shell_async(
        &cfg,
        &[
            "muc",
            "room",
            "lounge@conference.localhost",
            "get_role",
            "Al",
        ],
        "",
    )
    .await;
    assert_eq!(out(&o).trim(), "participant", "{}", err(&o));
    let o = shell_async(
        &cfg,
        &["muc:room(\"lounge@conference.localhost\"):get_affiliation(\"alice@localhost/one\")"],
        "",
    )
    .await;
    assert_eq!(out(&o).trim(), "none", "{}", err(&o));

    // Making alice owner reaches her as presence, and both reads follow.
    let o = shell_async(
        &cfg,
        &["muc:room(\"lounge@conference.localhost\"):set_affiliation(true, \"alice@localhost\", \"owner\")"],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let p = read_until_contains(&mut a, "presence", "affiliation=\"owner\"").await;
    assert!(p.contains("role=\"moderator\""), "{p}");
    let o = shell_async(
        &cfg,
        &[
            "--json",
            "muc",
            "room",
            "lounge@conference.localhost",
            "get_affiliation",
            "alice@localhost",
        ],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["affiliation"], "owner");
    let o = shell_async(
        &cfg,
        &["muc:room('lounge@conference.localhost'):get_role('Al')"],
        "",
    )
    .await;
    assert_eq!(out(&o).trim(), "moderator");
    let o = shell_async(&cfg, &["muc:room('lounge@conference.localhost')"], "").await;
    assert!(
        out(&o)
            .lines()
            .any(|l| l.contains("Al") && l.contains("moderator") && l.contains("owner")),
        "{}",
        out(&o)
    );

    // Bad input fails without a change.
    for line in [
        "muc:room('lounge@conference.localhost'):set_affiliation(true, 'bob@localhost', 'king')",
        "muc:room('lounge@conference.localhost'):set_affiliation('bob@localhost', 'bob@localhost', 'owner')",
        "muc:room('nothere@conference.localhost'):get_role('Al')",
        "muc:room('lounge@elsewhere.localhost'):get_role('Al')",
        "muc:room('lounge@conference.localhost'):fly()",
    ] {
        let o = shell_async(&cfg, &[line], "").await;
        assert!(!o.status.success(), "{line}: {}", out(&o));
    }
    let o = shell_async(
        &cfg,
        &["muc:room('lounge@conference.localhost'):get_affiliation('bob@localhost')"],
        "",
    )
    .await;
    assert_eq!(out(&o).trim(), "none");

    // A user as the actor acts under the room's rules: the owner alice may make bob a member.
    let o = shell_async(
        &cfg,
        &["muc:room('lounge@conference.localhost'):set_affiliation('alice@localhost', 'bob@localhost', 'member')"],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = shell_async(
        &cfg,
        &["muc:room('lounge@conference.localhost'):get_affiliation('bob@localhost')"],
        "",
    )
    .await;
    assert_eq!(out(&o).trim(), "member");

    let o = shell_async(
        &cfg,
        &["muc:room('lounge@conference.localhost'):save(true)"],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = shell_async(
        &cfg,
        &["muc:room('nothere@conference.localhost'):save(true)"],
        "",
    )
    .await;
    assert!(!o.status.success());

    // Destroy tells the occupant, leaves a tombstone; a second destroy removes it.
    let o = shell_async(
        &cfg,
        &[
            "muc",
            "room",
            "lounge@conference.localhost",
            "destroy",
            "closing time",
        ],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let p = read_until_contains(&mut a, "presence", "<destroy").await;
    assert!(p.contains("closing time"), "{p}");
    let o = shell_async(&cfg, &["--json", "muc:list()"], "").await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let o = shell_async(&cfg, &["muc:create('lounge@conference.localhost')"], "").await;
    assert!(!o.status.success());
    let o = shell_async(
        &cfg,
        &["muc:room('lounge@conference.localhost'):destroy()"],
        "",
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = shell_async(&cfg, &["muc:create('lounge@conference.localhost')"], "").await;
    assert!(o.status.success(), "{}", err(&o));
}

/// Points `srv`'s `[s2s.hosts]` entry for `domain` at `addr` (a live config swap).
fn point(srv: &TestServer, domain: &str, addr: std::net::SocketAddr) {
    let core = &srv.server().core;
    let mut c = (**core.config.load()).clone();
    c.s2s.hosts.insert(domain.into(), addr);
    core.config.store(std::sync::Arc::new(c));
}

async fn one_host(name: &str) -> TestServer {
    TestServer::start_with(|c| {
        c.hosts = vec![HostConfig {
            name: name.into(),
            ..Default::default()
        }];
    })
    .await
}

#[tokio::test]
async fn s2s_show_and_close_between_two_servers() {
    let a = one_host("a.example").await;
    let b = one_host("b.example").await;
    point(&a, "b.example", b.server().s2s_addrs[0]);
    point(&b, "a.example", a.server().s2s_addrs[0]);
    let cfg = config_for(&a);

    // No stream yet: an empty list, and closing any pair fails.
    let o = shell_async(&cfg, &["--json", "s2s:show()"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let o = shell_async(&cfg, &["s2s:close('a.example', 'b.example')"], "").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("no s2s stream"), "{}", err(&o));

    // A stanza from a.example to b.example opens the outgoing stream.
    let fed = a.server().core.federation.get().unwrap().clone();
    let to = oxpecker::xmpp::Jid::parse("bob@b.example").unwrap();
    let from = oxpecker::xmpp::Jid::parse("alice@a.example").unwrap();
    let msg = oxpecker::xmpp::Element::new("message", "jabber:client")
        .attr("from", from.to_string())
        .attr("to", to.to_string())
        .attr("type", "chat");
    fed.send(from, to, msg);
    let mut streams = Vec::new();
    for _ in 0..500 {
        streams = fed.streams();
        if streams
            .iter()
            .any(|s| s.direction == "outgoing" && s.auth != "none")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let s = streams
        .iter()
        .find(|s| s.direction == "outgoing")
        .unwrap_or_else(|| panic!("no outgoing stream: {streams:?}"));

    let o = shell_async(&cfg, &["s2s", "show"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    let row = out(&o)
        .lines()
        .find(|l| l.starts_with("outgoing"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        row.contains("a.example") && row.contains("b.example") && row.contains(s.auth),
        "{}",
        out(&o)
    );
    let o = shell_async(&cfg, &["--json", "s2s", "show", "b.example"], "").await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|s| s["direction"] == "outgoing"
                && s["local"] == "a.example"
                && s["remote"] == "b.example"
                && s["tls"].is_boolean()
                && s["idle_secs"].is_u64()
                && s["queued"].is_u64()),
        "{v}"
    );
    let o = shell_async(&cfg, &["--json", "s2s:show('nowhere.example')"], "").await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));

    let o = shell_async(&cfg, &["s2s:close(\"a.example\", \"b.example\")"], "").await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("closed"), "{}", out(&o));
    // The closed stream leaves the list once its task has ended.
    let gone = |f: &std::sync::Arc<dyn oxpecker::core::remote::Federation>| {
        f.streams().iter().all(|s| {
            !(s.direction == "outgoing" && s.local == "a.example" && s.remote == "b.example")
        })
    };
    for _ in 0..500 {
        if gone(&fed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone(&fed), "{:?}", fed.streams());
    let o = shell_async(&cfg, &["s2s", "close", "a.example", "nowhere.example"], "").await;
    assert!(!o.status.success());
}
