//! The admin REST API over real HTTP: every endpoint and status code, the security layers
//! (allowlist, proxies, Basic and Bearer auth, throttling, HTTPS), and delivery to real XMPP
//! clients where it matters (messages, multicast, broadcast, rosters, groups, vCards).
//!
//! `every_route_answers_by_the_reference_tables` walks the whole route table (and the unknown
//! paths and methods the reference names) with every kind of credentials; the other tests are
//! the behaviours behind the answers, with alike calls as [`Case`] tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RawClient, TestServer, online, read_until_contains, wait_offline};
use oxpecker::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin@localhost", "admin-pw");

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Credentials for a request.
#[derive(Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
    Raw(String),
}

fn admin() -> Auth {
    Auth::Basic(ADMIN.0.into(), ADMIN.1.into())
}

/// What came back.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.text))
    }
    fn result(&self) -> Value {
        self.json()["result"].clone()
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// One admin call in a table: method, path, body, expected status, expected `result`
/// (`Value::Null`: not checked) and expected `error` code (`""`: none).
type Case<'a> = (Method, &'a str, Option<Value>, u16, Value, &'a str);

/// An HTTP client for one server.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(srv: &TestServer) -> Self {
        Self::at(format!("http://{}/admin_rest", srv.http()))
    }

    fn at(base: String) -> Self {
        install_crypto();
        Api {
            base,
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        req = match auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Raw(h) => req.header("authorization", h),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_with(method, path, &admin(), body, &[]).await
    }

    /// Makes each admin call of `cases` in order and checks its answer.
    async fn run(&self, cases: Vec<Case<'_>>) {
        for (method, path, body, status, result, error) in cases {
            let r = self.call(method.clone(), path, body).await;
            assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.text);
            if !result.is_null() {
                assert_eq!(r.result(), result, "{method} {path}");
            }
            assert_eq!(r.error(), error, "{method} {path}");
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: &str,
        content_type: Option<&str>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }
}

/// A server with `admin@localhost` (listed in `admins`) and the given extra users (password "pw").
async fn server_with(users: &[&str], f: impl FnOnce(&mut Config)) -> TestServer {
    let srv = TestServer::with_users(users, |c| {
        c.admins = vec![ADMIN.0.into()];
        f(c)
    })
    .await;
    srv.add_user(ADMIN.0, ADMIN.1).await;
    srv
}

async fn server(users: &[&str]) -> TestServer {
    server_with(users, |_| {}).await
}

fn set_option(c: &mut Config, key: &str, value: toml::Value) {
    c.options.insert(key.into(), value);
}

fn strings(v: &[&str]) -> toml::Value {
    toml::Value::Array(
        v.iter()
            .map(|s| toml::Value::String(s.to_string()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Security: allowlist, credentials, roles, tokens, throttling, HTTPS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn base_path_trailing_slashes_and_bare_usernames() {
    let srv = server(&["bob"]).await;
    let api = Api::new(&srv);

    // Each kind of bad credentials, on every route: `every_route_answers_by_the_reference_tables`.
    // The admin, with a full JID or a bare username on the request's host.
    assert_eq!(api.get("/users/count").await.status, StatusCode::OK);
    let bare = Auth::Basic("admin".into(), ADMIN.1.into());
    let r = api
        .call_with(Method::GET, "/users/count", &bare, None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Base without slash redirects; trailing slashes are ignored.
    let r = Api::at(format!("http://{}", srv.http()))
        .get("/admin_rest")
        .await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), "/admin_rest/");
    assert_eq!(api.get("/users/count/").await.status, StatusCode::OK);
    // Outside the base: not the API.
    let r = Api::at(format!("http://{}", srv.http()))
        .get("/elsewhere")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Health stays where it was.
    let r = Api::at(format!("http://{}", srv.http()))
        .get("/health")
        .await;
    assert_eq!(r.json()["status"], "ok");
}

// ---------------------------------------------------------------------------------------------
// The route table, walked: every (method, path) pair, known and unknown, with every kind of
// credentials (the reference: mod_admin_rest-observed.md §1.8, §2, §3 and "Our policy")
// ---------------------------------------------------------------------------------------------

/// A request body in a table row.
#[derive(Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    Text(&'static str),
}

/// One row: method, path, body, expected status, and a check of the reply's JSON (`None` for
/// `HEAD`, which has no body).
type Row = (
    &'static str,
    &'static str,
    Body,
    u16,
    Option<fn(&Value) -> bool>,
);

/// `result` is exactly this string.
macro_rules! says {
    ($s:literal) => {
        Some(|v: &Value| v["result"] == $s)
    };
}

/// `result` is exactly this JSON.
macro_rules! result {
    ($($j:tt)+) => {
        Some(|v: &Value| v["result"] == json!($($j)+))
    };
}

/// Every route with admin credentials, in an order whose side effects the later rows expect.
/// Users: admin, alice, bob (non-admin); carol is created and deleted here.
#[rustfmt::skip]
const KNOWN: &[Row] = &[
    ("GET", "/ping", Body::None, 200, says!("PONG")),
    ("GET", "/openapi.json", Body::None, 200, Some(|v: &Value| v["openapi"] == "3.1.0")),
    ("GET", "/user/alice", Body::None, 200,
        result!({"user": {"connected": false, "sessions": [], "roster": []}})),
    ("POST", "/user/carol", Body::Json(r#"{"password":"pw"}"#), 201,
        says!("User registered: carol@localhost")),
    ("PATCH", "/user/carol/password", Body::Json(r#"{"password":"pw2"}"#), 200,
        says!("User modified: carol@localhost")),
    ("PATCH", "/user/carol/role", Body::Json(r#"{"role":"prosody:member"}"#), 200,
        says!("User modified: carol@localhost")),
    ("GET", "/user/alice/connected", Body::None, 404, result!({"connected": false})),
    ("GET", "/user/alice/clients", Body::None, 200, result!({"count": 0, "clients": []})),
    ("DELETE", "/user/alice/clients/staff", Body::None, 404, says!("No such client: client/staff")),
    ("GET", "/user_connected/nobody", Body::None, 404, result!({"connected": false})),
    ("GET", "/users", Body::None, 200, result!({"users": [], "count": 0})),
    ("GET", "/users/count", Body::None, 200, result!({"count": 0})),
    ("GET", "/all-users", Body::None, 200, Some(|v: &Value| {
        v["result"]["count"] == 4
            && v["result"]["users"].as_array().is_some_and(|u| {
                u.contains(&json!({
                    "jid": "carol@localhost",
                    "role": {"name": "prosody:member", "priority": 35, "oxpecker": "member"},
                    "secondary_roles": [],
                }))
            })
    })),
    ("GET", "/roster/alice", Body::None, 200, result!({"roster": [], "count": 0})),
    ("POST", "/roster/alice", Body::Json(r#"{"contact":"bob"}"#), 200,
        says!("Roster registered: alice@localhost and bob@localhost")),
    ("DELETE", "/roster/alice", Body::Json(r#"{"contact":"bob"}"#), 200,
        says!("Roster deleted: alice@localhost and bob@localhost")),
    ("POST", "/message/alice", Body::Json(r#"{"message":"hi"}"#), 202,
        says!("Message sent to offline queue: alice@localhost")),
    ("POST", "/message", Body::Json(r#"[{"to":"alice","message":"hi"}]"#), 200,
        says!("Message multicasted to users: 0/1")),
    ("POST", "/broadcast", Body::Json(r#"{"message":"hi"}"#), 200, result!({"count": 0})),
    ("GET", "/modules", Body::None, 200, Some(|v: &Value| {
        let r = &v["result"];
        r["modules"].as_array().is_some_and(|m| {
            json!(m.len()) == r["count"] && m.contains(&json!("ping"))
        })
    })),
    ("GET", "/modules/count", Body::None, 200, Some(|v: &Value| v["result"]["count"].as_u64() > Some(0))),
    ("GET", "/module/ping", Body::None, 200,
        Some(|v: &Value| v["result"]["module"] == "ping" && v["result"]["loaded"] == true)),
    ("PUT", "/module/ping", Body::None, 200, says!("Module loaded: ping")),
    ("DELETE", "/module/ping", Body::None, 200, says!("Module unloaded: ping")),
    ("GET", "/whitelist", Body::None, 200,
        Some(|v: &Value| v["result"]["whitelist"].as_array().is_some_and(|w| w.contains(&json!("127.0.0.0/8"))))),
    ("PUT", "/whitelist", Body::None, 400, says!("Missing IP address in path")),
    ("DELETE", "/whitelist", Body::None, 400, says!("Missing IP address in path")),
    ("PUT", "/whitelist/192.0.2.9", Body::None, 200, says!("IP added to whitelist: 192.0.2.9")),
    ("DELETE", "/whitelist/192.0.2.9", Body::None, 200,
        says!("IP removed from whtielist: 192.0.2.9")),
    ("PUT", "/reload", Body::None, 200,
        says!("Config file reloaded. Modules were loaded, unloaded or reloaded to match it.")),
    ("PUT", "/groups", Body::Json(r#"{"name":"Staff","group_id":"staff"}"#), 200,
        result!({"group_id": "staff"})),
    ("PUT", "/groups/team", Body::Json(r#"{"name":"Team"}"#), 200, result!({"group_id": "team"})),
    ("PUT", "/groups/staff/members/alice", Body::None, 200,
        says!("Member 'alice' successfully added to group 'staff'.")),
    ("GET", "/groups", Body::None, 200, result!({"count": 2, "groups": [
        {"id": "staff", "name": "Staff", "members": ["alice"]},
        {"id": "team", "name": "Team", "members": []}]})),
    ("POST", "/groups/staff/sync", Body::None, 200,
        says!("Successfully did group subscriptions for group 'staff'.")),
    ("DELETE", "/groups/staff/members/alice", Body::None, 200,
        says!("Member 'alice' successfully removed from group 'staff'.")),
    ("DELETE", "/groups/team", Body::None, 200, says!("Group 'team' deleted successfully.")),
    ("GET", "/vcards/alice", Body::None, 404,
        says!("The user <alice@localhost> has no vCard configured.")),
    ("PUT", "/vcards/alice", Body::Text("BEGIN:VCARD\r\nFN:Alice\r\nEND:VCARD\r\n"), 200,
        says!("vCard stored for <alice@localhost>")),
    ("DELETE", "/vcards/alice", Body::None, 200, says!("vCard deleted for <alice@localhost>")),
    ("PUT", "/muc/lounge", Body::Json(r#"{"name":"Lounge","persistent":true}"#), 201,
        says!("Room created: lounge@conference.localhost")),
    ("GET", "/muc", Body::None, 200, Some(|v: &Value| v["result"]["count"] == 1)),
    ("GET", "/muc/lounge", Body::None, 200,
        Some(|v: &Value| v["result"]["config"]["name"] == "Lounge")),
    ("PUT", "/muc/lounge/affiliation/bob@localhost", Body::Json(r#"{"affiliation":"member"}"#), 200,
        says!("Affiliation of bob@localhost set to member")),
    ("GET", "/muc/lounge/affiliation/bob@localhost", Body::None, 200,
        result!({"affiliation": "member"})),
    ("GET", "/muc/lounge/role/Bo", Body::None, 200, result!({"role": "none"})),
    ("DELETE", "/muc/lounge", Body::None, 200,
        says!("Room destroyed: lounge@conference.localhost")),
    ("DELETE", "/data", Body::None, 403,
        says!("Destructive operations are disabled (admin_rest_allow_destructive = false)")),
    ("DELETE", "/certs", Body::None, 403,
        says!("Destructive operations are disabled (admin_rest_allow_destructive = false)")),
    ("GET", "/sessions", Body::None, 200, result!({"count": 0, "sessions": []})),
    ("DELETE", "/sessions/alice@localhost", Body::None, 404,
        says!("no session of alice@localhost")),
    ("GET", "/hosts", Body::None, 200, Some(|v: &Value| v["result"]["hosts"][0]["active"] == true)),
    ("PUT", "/hosts/localhost", Body::None, 409, says!("host localhost is already active")),
    ("DELETE", "/hosts/nowhere.example", Body::None, 404,
        says!("Host does not exist or is malformed")),
    ("GET", "/server", Body::None, 200, Some(|v: &Value| v["result"]["name"] == "oxpecker")),
    ("POST", "/server/shutdown", Body::Json(r#"{"reason":"x"}"#), 403,
        says!("Shutting down over the API is disabled (admin_rest_allow_shutdown = false)")),
    ("GET", "/s2s", Body::None, 200, result!({"count": 0, "s2s": []})),
    ("DELETE", "/s2s/localhost/b.example", Body::None, 404,
        says!("No s2s stream between localhost and b.example")),
    ("DELETE", "/user/carol", Body::None, 200, says!("User deleted: carol@localhost")),
];

/// Paths and methods the reference tables name as failures.
#[rustfmt::skip]
const UNKNOWN: &[Row] = &[
    ("GET", "/", Body::None, 404, says!("Invalid request path")),
    ("GET", "/nope", Body::None, 404, says!("Invalid request path")),
    ("GET", "/alice/connected", Body::None, 404, says!("Invalid request path")),
    ("GET", "/user", Body::None, 404, says!("Invalid request path")),
    ("GET", "/user/", Body::None, 404, says!("Invalid request path")),
    ("GET", "/module", Body::None, 404, says!("Invalid request path")),
    ("PATCH", "/user/alice", Body::Json(r#"{"password":"x"}"#), 404, says!("Invalid request path")),
    ("PATCH", "/user/alice/email", Body::Json(r#"{"email":"x"}"#), 404, says!("Invalid request path")),
    ("PATCH", "/groups", Body::None, 405, says!("Invalid request method")),
    ("POST", "/groups", Body::Json(r#"{"name":"x"}"#), 404, says!("Invalid request path")),
    ("POST", "/groups/staff", Body::None, 404, says!("Invalid request path")),
    ("DELETE", "/groups", Body::None, 404, says!("Invalid request path")),
    ("PUT", "/groups/staff/x", Body::None, 404, says!("Invalid request path")),
    ("POST", "/message/", Body::Json(r#"{"message":"x"}"#), 404, says!("Invalid request path")),
    ("PATCH", "/users", Body::None, 405, says!("Invalid request method")),
    ("DELETE", "/ping", Body::None, 405, says!("Invalid request method")),
    ("OPTIONS", "/users", Body::None, 405, says!("Invalid request method")),
    ("HEAD", "/ping", Body::None, 405, None),
    ("HEAD", "/users", Body::None, 405, None),
    ("HEAD", "/nope", Body::None, 404, None),
];

/// The methods that reach the module (§1.8), and `HEAD`.
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

/// The concrete path of a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{name}", "alice")
        .replace("{attribute}", "password")
        .replace("{id}", "staff")
        .replace("{member}", "alice")
        .replace("{ip}", "192.0.2.9")
        .replace("{room}", "lounge")
        .replace("{jid}", "bob@localhost")
        .replace("{nick}", "Bo")
}

fn family(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

/// Every method a route path does not serve: 405 where its family lacks the method, else 404.
fn unserved() -> Vec<(String, String, u16)> {
    let routes = oxpecker::http::admin_rest::ROUTES;
    let mut out = Vec::new();
    let mut paths: Vec<&str> = routes.iter().map(|(_, p)| *p).collect();
    paths.dedup();
    for path in paths {
        for m in METHODS {
            if routes.iter().any(|(rm, rp)| rm == m && *rp == path) {
                continue;
            }
            let in_family = routes
                .iter()
                .any(|(rm, rp)| rm == m && family(rp) == family(path));
            out.push((
                m.to_string(),
                concrete(path),
                if in_family { 404 } else { 405 },
            ));
        }
    }
    out
}

impl Api {
    async fn row(&self, method: &str, path: &str, auth: &Auth, body: Body) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        req = match auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Raw(h) => req.header("authorization", h),
        };
        req = match body {
            Body::None => req,
            Body::Json(j) => req.header("content-type", "application/json").body(j),
            Body::Text(t) => req.header("content-type", "text/vcard").body(t),
        };
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }
}

/// The status and machine-readable code that go with a refusal's `result` message (§2, fixed
/// to follow HTTP: 401 with the challenge, 403 for a non-admin).
fn refusal(message: &str) -> (u16, &'static str) {
    match message {
        "Missing authorization header" => (401, "missing_credentials"),
        "Invalid authentication details" => (401, "invalid_credentials"),
        "Authentication failure" => (401, "authentication_failed"),
        "User must be an administrator" => (403, "not_admin"),
        other => panic!("no refusal says {other:?}"),
    }
}

#[tokio::test]
async fn every_route_answers_by_the_reference_tables() {
    let srv = server_with(&["alice", "bob"], |c| {
        // Hundreds of failures from loopback here: throttling is tested on its own.
        set_option(
            c,
            "admin_rest_auth_max_failures",
            toml::Value::Integer(1_000_000),
        );
    })
    .await;
    let api = Api::new(&srv);

    // Every route of the table has a known row, so a new route must say what it answers.
    for (m, template) in oxpecker::http::admin_rest::ROUTES {
        let segs: Vec<&str> = template.split('/').collect();
        let covered = KNOWN.iter().any(|(rm, rp, ..)| {
            let got: Vec<&str> = rp.split('/').collect();
            rm == m
                && got.len() == segs.len()
                && segs
                    .iter()
                    .zip(&got)
                    .all(|(s, g)| s.starts_with('{') || s == g)
        });
        assert!(covered, "no row for {m} {template}");
    }

    // Every pair, with credentials that are missing, malformed, wrong or not an admin's: the
    // answer never depends on the route, and no route skips the check.
    let cheap: Vec<(Auth, &str)> = vec![
        (Auth::None, "Missing authorization header"),
        (Auth::Raw("Bearer".into()), "Invalid authentication details"),
        (
            Auth::Raw("Digest abc".into()),
            "Invalid authentication details",
        ),
        (
            Auth::Raw("Basic !!!!".into()),
            "Invalid authentication details",
        ),
        // base64("admin@localhost"): no colon.
        (
            Auth::Raw("Basic YWRtaW5AbG9jYWxob3N0".into()),
            "Invalid authentication details",
        ),
        (
            Auth::Basic("admin@elsewhere".into(), ADMIN.1.into()),
            "Authentication failure",
        ),
        (
            Auth::Bearer("oxp_notatoken".into()),
            "Authentication failure",
        ),
        (
            Auth::Basic("bob@localhost".into(), "pw".into()),
            "User must be an administrator",
        ),
    ];
    // These run Argon2 (about half a second unoptimised): one per route family, in turn.
    let costly: Vec<(Auth, &str)> = vec![
        (
            Auth::Basic(ADMIN.0.into(), "wrong".into()),
            "Authentication failure",
        ),
        (
            Auth::Basic("nobody@localhost".into(), "x".into()),
            "Authentication failure",
        ),
        (
            Auth::Basic("nobody".into(), "x".into()),
            "Authentication failure",
        ),
    ];
    let mut pairs: Vec<(String, String, Body)> = Vec::new();
    for (m, p, b, ..) in KNOWN.iter().chain(UNKNOWN) {
        pairs.push((m.to_string(), p.to_string(), *b));
    }
    for (m, p, _) in unserved() {
        pairs.push((m, p, Body::None));
    }
    let mut families_done: Vec<String> = Vec::new();
    for (m, p, b) in &pairs {
        let mut cases: Vec<&(Auth, &str)> = cheap.iter().collect();
        if !families_done.iter().any(|f| f == family(p)) {
            cases.push(&costly[families_done.len() % costly.len()]);
            families_done.push(family(p).to_string());
        }
        for (auth, msg) in cases {
            let (status, code) = refusal(msg);
            let r = api.row(m, p, auth, *b).await;
            assert_eq!(r.status.as_u16(), status, "{m} {p}: {}", r.text);
            if status == 401 {
                assert_eq!(
                    r.header("www-authenticate"),
                    "Basic realm=\"oxpecker\"",
                    "{m} {p}"
                );
            }
            if m != "HEAD" {
                assert_eq!(r.result(), *msg, "{m} {p}");
                assert_eq!(r.error(), code, "{m} {p}");
                assert_eq!(r.header("content-type"), "application/json", "{m} {p}");
            }
        }
    }

    // With an admin's credentials: the reference answers, in order.
    for (m, p, b, status, check) in KNOWN.iter().chain(UNKNOWN) {
        let r = api.row(m, p, &admin(), *b).await;
        assert_eq!(r.status.as_u16(), *status, "{m} {p}: {}", r.text);
        match check {
            Some(check) => assert!(check(&r.json()), "{m} {p}: {}", r.text),
            None => assert!(r.text.is_empty(), "{m} {p}: a HEAD answer has no body"),
        }
    }
    // And every method a route path does not serve.
    for (m, p, status) in unserved() {
        let r = api.row(&m, &p, &admin(), Body::None).await;
        assert_eq!(r.status.as_u16(), status, "{m} {p}: {}", r.text);
        if m != "HEAD" {
            let want = if status == 405 {
                "Invalid request method"
            } else {
                "Invalid request path"
            };
            assert_eq!(r.result(), want, "{m} {p}");
        }
    }
}

#[tokio::test]
async fn allowlist_is_checked_before_credentials_and_honours_trusted_proxies_only() {
    // Loopback is not on this allowlist: even the admin gets 403.
    let srv = server_with(&[], |c| {
        set_option(c, "admin_rest_whitelist", strings(&["192.0.2.0/24"]));
    })
    .await;
    let api = Api::new(&srv);
    let r = api.get("/users/count").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error(), "ip_not_allowed");
    assert!(r.result().as_str().unwrap().contains("127.0.0.1"));
    // Unauthenticated and public routes too, and a forged X-Forwarded-For changes nothing.
    let r = api
        .call_with(
            Method::GET,
            "/ping",
            &Auth::None,
            None,
            &[("x-forwarded-for", "192.0.2.7")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    srv.stop().await;

    // Behind a trusted proxy (loopback), the forwarded client address is the one checked.
    let srv = server_with(&[], |c| {
        set_option(c, "admin_rest_whitelist", strings(&["192.0.2.0/24"]));
        set_option(c, "admin_rest_trusted_proxies", strings(&["127.0.0.1"]));
    })
    .await;
    let api = Api::new(&srv);
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let r = api
        .call_with(
            Method::GET,
            "/users/count",
            &admin(),
            None,
            &xff("192.0.2.7"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call_with(
            Method::GET,
            "/users/count",
            &admin(),
            None,
            &xff("198.51.100.1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A client cannot smuggle an allowed address to the left of its real one.
    let r = api
        .call_with(
            Method::GET,
            "/users/count",
            &admin(),
            None,
            &xff("192.0.2.7, 198.51.100.1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // No header: the proxy itself is the client, and it is not allowed.
    let r = api.get("/users/count").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn failures_are_throttled_per_address() {
    let srv = server_with(&[], |c| {
        set_option(c, "admin_rest_auth_max_failures", toml::Value::Integer(3));
        set_option(c, "admin_rest_auth_lockout_secs", toml::Value::Integer(600));
    })
    .await;
    let api = Api::new(&srv);
    let wrong = Auth::Basic(ADMIN.0.into(), "wrong".into());
    for _ in 0..3 {
        let r = api
            .call_with(Method::GET, "/users/count", &wrong, None, &[])
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Locked: even the right password waits.
    let r = api.get("/users/count").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error(), "too_many_failures");
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((500..=600).contains(&retry), "{retry}");
    // (The window's expiry and per-address keying are unit tests in http::admin_rest::auth.)
}

#[tokio::test]
async fn roles_passwords_and_deletion_take_effect_on_the_next_request() {
    let srv = server(&["bob"]).await;
    let api = Api::new(&srv);
    let bob = Auth::Basic("bob@localhost".into(), "pw".into());
    let count = |a: Auth| {
        let api = &api;
        async move {
            api.call_with(Method::GET, "/users/count", &a, None, &[])
                .await
                .status
        }
    };
    assert_eq!(count(bob.clone()).await, StatusCode::FORBIDDEN);

    // Prosody's role name is accepted; bob becomes an admin at once.
    let r = api
        .call(
            Method::PATCH,
            "/user/bob/role",
            Some(json!({"role": "prosody:admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.result(), "User modified: bob@localhost");
    assert_eq!(count(bob.clone()).await, StatusCode::OK);
    assert_eq!(count(bob.clone()).await, StatusCode::OK, "cached");
    let users = api.get("/all-users").await.result();
    assert!(
        users["users"].as_array().unwrap().contains(&json!({
            "jid": "bob@localhost",
            "role": {"name": "prosody:admin", "priority": 50, "oxpecker": "admin"},
            "secondary_roles": [],
        })),
        "{users}"
    );

    // Demoted: 403 on the very next request, despite the credential cache.
    let r = api
        .call(
            Method::PATCH,
            "/user/bob/role",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(count(bob.clone()).await, StatusCode::FORBIDDEN);
    api.call(
        Method::PATCH,
        "/user/bob/role",
        Some(json!({"role": "operator"})),
    )
    .await;
    assert_eq!(count(bob.clone()).await, StatusCode::OK);

    // Unknown role: 400, role unchanged.
    let r = api
        .call(
            Method::PATCH,
            "/user/bob/role",
            Some(json!({"role": "prosody:overlord"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "unknown_role");
    assert_eq!(count(bob.clone()).await, StatusCode::OK);

    // New password: the old one fails on the next request, the new one works.
    let r = api
        .call(
            Method::PATCH,
            "/user/bob/password",
            Some(json!({"password": "new"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(count(bob.clone()).await, StatusCode::UNAUTHORIZED);
    let bob2 = Auth::Basic("bob@localhost".into(), "new".into());
    assert_eq!(count(bob2.clone()).await, StatusCode::OK);

    // Deleted (and re-created with the same password): the old grant does not come back.
    api.call(Method::DELETE, "/user/bob", None).await;
    assert_eq!(count(bob2.clone()).await, StatusCode::UNAUTHORIZED);
    api.call(Method::POST, "/user/bob", Some(json!({"password": "new"})))
        .await;
    assert_eq!(
        count(bob2).await,
        StatusCode::FORBIDDEN,
        "role reset with the account"
    );
}

#[tokio::test]
async fn bearer_tokens_from_the_cli_are_admin_scoped_and_revocable() {
    let srv = server(&["bob"]).await;
    let api = Api::new(&srv);
    let core = &srv.server().core;
    // Through the control socket, as `oxpecker token create` does against a running server.
    let data_dir = srv.config.data_dir.clone();
    let call = |req: oxpecker::control::Request| {
        let dir = data_dir.clone();
        async move { oxpecker::control::call(&dir, &req).await.unwrap().unwrap() }
    };
    let created = call(oxpecker::control::Request::TokenCreate {
        jid: ADMIN.0.into(),
        label: Some("ci".into()),
    })
    .await;
    assert!(created.ok, "{created:?}");
    let token = created.result.as_ref().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let id = created.result.as_ref().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("oxp_"));

    let r = api
        .call_with(
            Method::GET,
            "/users/count",
            &Auth::Bearer(token.clone()),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A state-changing call with the token.
    let r = api
        .call_with(
            Method::POST,
            "/user/carol",
            &Auth::Bearer(token.clone()),
            Some(json!({"password": "c"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // Listed (without the secret).
    let list = call(oxpecker::control::Request::TokenList {
        host: "localhost".into(),
    })
    .await;
    let listed = list.result.unwrap();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["label"], "ci");
    assert!(!listed.to_string().contains(&token));

    // A non-admin's token is refused with 403.
    let bob = core.accounts.account_jid("bob@localhost").unwrap();
    let bob_token = core.accounts.create_token(&bob, None).await.unwrap().token;
    let r = api
        .call_with(
            Method::GET,
            "/users/count",
            &Auth::Bearer(bob_token),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Revoked: 401 from then on.
    let revoked = call(oxpecker::control::Request::TokenRevoke { id: id.clone() }).await;
    assert!(revoked.ok);
    let r = api
        .call_with(Method::GET, "/users/count", &Auth::Bearer(token), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let again = call(oxpecker::control::Request::TokenRevoke { id }).await;
    assert!(!again.ok);
}

#[tokio::test]
async fn secure_mode_refuses_plain_http_and_https_serves_the_api() {
    let srv = server_with(&[], |c| {
        c.http.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        set_option(c, "admin_rest_secure", toml::Value::Boolean(true));
    })
    .await;
    let r = Api::new(&srv).get("/users/count").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error(), "https_required");

    install_crypto();
    let tls = (*common::client_tls(&srv.cert_pem())).clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let port = srv.server().https_addrs[0].port();
    let resp = client
        .get(format!("https://localhost:{port}/admin_rest/users/count"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"result": {"count": 0}}));
}

// ---------------------------------------------------------------------------------------------
// Users and sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_lifecycle() {
    let srv = server(&[]).await;
    let api = Api::new(&srv);
    let pw = |p: &str| Some(json!({ "password": p }));

    // (method, path, body, status, `result` (null: not checked), `error` ("": none)), in order.
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::POST, "/user/alice", Some(json!({"password": "a1", "regip": "192.0.2.1"})),
            201, json!("User registered: alice@localhost"), ""),
        (Method::POST, "/user/alice", pw("a2"),
            200, json!("User <alice@localhost> already existed, password updated"), ""),
        // Full JIDs in the path (URL-encoded), hosts not served, malformed JIDs.
        (Method::GET, "/user/alice%40localhost", None, 200, Value::Null, ""),
        (Method::POST, "/user/x%40elsewhere.example", pw("p"),
            404, json!("Host does not exist or is malformed"), "unknown_host"),
        (Method::GET, "/user/%40%40", None, 404, json!("User does not exist or is malformed"), "invalid_user"),
        // Offline is still 200, with empty lists (arrays, not {}).
        (Method::GET, "/user/alice", None,
            200, json!({"user": {"connected": false, "sessions": [], "roster": []}}), ""),
        (Method::GET, "/user/nobody", None,
            404, json!("User does not exist: nobody@localhost"), "user_not_found"),
        // PATCH: unknown attribute 404, unknown user 404, missing field 400.
        (Method::PATCH, "/user/alice/email", Some(json!({"email": "x"})),
            404, json!("Invalid request path"), "invalid_path"),
        (Method::PATCH, "/user/nobody/password", pw("x"),
            404, json!("User does not exist: nobody@localhost"), "user_not_found"),
        (Method::PATCH, "/user/alice/password", Some(json!({"pass": "x"})),
            400, json!("Body does not exist or is malformed"), "invalid_body"),
        (Method::PATCH, "/user/alice/password", pw("a3"), 200, json!("User modified: alice@localhost"), ""),
        (Method::POST, "/user/zed", pw("z"), 201, json!("User registered: zed@localhost"), ""),
    ];
    api.run(cases).await;
    // The last password is the one that logs in over XMPP.
    let mut c = RawClient::connect(srv.c2s()).await;
    c.starttls(&srv.cert_pem()).await;
    assert!(c.auth_plain("alice", "a3").await.contains("<success"));

    // Bad bodies: 400, never 500, and nothing written.
    for (body, ct) in [
        ("", Some("application/json")),
        ("{not json", Some("application/json")),
        ("null", Some("application/json")),
        ("\"str\"", Some("application/json")),
        ("password=x", None),
        ("{\"password\": 5}", None),
        ("{\"password\": \"\"}", Some("application/json")),
        ("{}", Some("application/json")),
    ] {
        let r = api.raw(Method::POST, "/user/yan", body, ct).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.result(), "Body does not exist or is malformed");
        assert_eq!(r.error(), "invalid_body");
    }
    // JSON without a content type is accepted.
    let r = api
        .raw(Method::POST, "/user/yan", "{\"password\":\"y\"}", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // all-users: `users` and `count` inside `result`, each role an object with Prosody's name.
    let r = api.get("/all-users").await;
    assert_eq!(r.status, StatusCode::OK);
    let all = r.result();
    assert_eq!(all["count"], 4, "{all}");
    let users = all["users"].as_array().unwrap();
    assert_eq!(users.len(), 4);
    assert!(users.contains(&json!({
        "jid": "admin@localhost",
        "role": {"name": "prosody:operator", "priority": 75, "oxpecker": "operator"},
        "secondary_roles": [],
    })));
    assert!(users.contains(&json!({
        "jid": "alice@localhost",
        "role": {"name": "prosody:registered", "priority": 25, "oxpecker": "registered"},
        "secondary_roles": [],
    })));

    // DELETE is idempotent.
    for result in [
        "User deleted: zed@localhost",
        "User does not exist: zed@localhost",
    ] {
        let r = api.call(Method::DELETE, "/user/zed", None).await;
        assert_eq!((r.status, r.result()), (StatusCode::OK, json!(result)));
    }

    // A body over the limit is refused.
    let big = format!("{{\"password\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = api
        .raw(Method::POST, "/user/big", &big, Some("application/json"))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error(), "body_too_large");
}

#[tokio::test]
async fn connected_users_sessions_and_deletion_closes_sessions() {
    let srv = server(&["alice", "bob"]).await;
    let api = Api::new(&srv);
    let _a1 = online(&srv, "alice", "desk").await;
    let _a2 = online(&srv, "alice", "phone").await;
    let mut b = RawClient::login(&srv, "bob", "pw", "laptop").await;

    let r = api.get("/users/count").await;
    assert_eq!(r.result(), json!({"count": 2}), "two resources count once");
    let r = api.get("/users").await;
    assert_eq!(
        r.result(),
        json!({"count": 3, "users": [
            {"username": "alice", "resource": "desk"},
            {"username": "alice", "resource": "phone"},
            {"username": "bob", "resource": "laptop"},
        ]})
    );
    let r = api.get("/user/alice/connected").await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!({"connected": true}))
    );
    let r = api.get("/user_connected/bob").await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!({"connected": true}))
    );
    let r = api.get("/user/admin/connected").await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::NOT_FOUND, json!({"connected": false}))
    );
    let r = api.get("/user/nobody/connected").await;
    assert_eq!(r.result(), "User does not exist: nobody@localhost");
    let r = api.get("/user_connected/nobody").await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::NOT_FOUND, json!({"connected": false}))
    );

    let r = api.get("/user/alice").await;
    let user = &r.result()["user"];
    assert_eq!(user["connected"], true);
    let sessions = user["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["resource"], "desk");
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
    assert_eq!(sessions[0]["secure"], true);
    assert!(sessions[0]["port"].as_u64().unwrap() > 0);
    assert!(sessions[0]["id"].is_string());

    // Deleting bob ends his session with a stream error.
    let r = api.call(Method::DELETE, "/user/bob", None).await;
    assert_eq!(r.result(), "User deleted: bob@localhost");
    let rest = b.read_to_close().await;
    assert!(rest.contains("not-authorized"), "{rest}");
    wait_offline(&srv, "bob@localhost").await;
    assert_eq!(api.get("/users/count").await.result(), json!({"count": 1}));
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn message_online_offline_and_dropped() {
    let srv = server_with(&["alice", "bob"], |c| {
        set_option(
            c,
            "admin_rest_message_prefix",
            toml::Value::String("[admin] ".into()),
        );
    })
    .await;
    let api = Api::new(&srv);
    let mut a = online(&srv, "alice", "desk").await;

    let r = api
        .call(
            Method::POST,
            "/message/alice",
            Some(json!({"message": "hello <world> & co"})),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::OK,
            json!("Message sent to user: alice@localhost")
        )
    );
    let m = a.read_stanza("message").await;
    assert!(
        m.contains("from=\"localhost\"") && m.contains("to=\"alice@localhost\""),
        "{m}"
    );
    assert!(
        m.contains("<body>[admin] hello &lt;world&gt; &amp; co</body>"),
        "{m}"
    );

    // bob is offline: stored (offline module is loaded by default), delivered at login with a delay.
    let r = api
        .call(
            Method::POST,
            "/message/bob",
            Some(json!({"message": "while you were out"})),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::ACCEPTED,
            json!("Message sent to offline queue: bob@localhost")
        )
    );
    let mut b = RawClient::login(&srv, "bob", "pw", "r").await;
    b.send("<presence/>").await;
    let m = read_until_contains(&mut b, "message", "while you were out").await;
    assert!(m.contains("[admin] while you were out"), "{m}");
    assert!(m.contains("urn:xmpp:delay"), "{m}");

    // Unknown user, bad bodies.
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::POST, "/message/nobody", Some(json!({"message": "x"})),
            404, json!("User does not exist or is malformed"), "invalid_user"),
        (Method::POST, "/message/alice", None, 400, json!("Body does not exist or is malformed"), "invalid_body"),
        (Method::POST, "/message/alice", Some(json!({"msg": "x"})),
            400, json!("Body does not exist or is malformed"), "invalid_body"),
    ];
    api.run(cases).await;

    // Without offline storage, a message to an offline user is dropped: 501.
    drop(b);
    wait_offline(&srv, "bob@localhost").await;
    let r = api.call(Method::DELETE, "/module/offline", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .call(
            Method::POST,
            "/message/bob",
            Some(json!({"message": "lost"})),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::NOT_IMPLEMENTED,
            json!("Message dropped per configuration")
        )
    );
    assert_eq!(r.error(), "message_dropped");
}

#[tokio::test]
async fn multicast_and_broadcast() {
    let srv = server_with(&["alice", "bob", "carol"], |c| {
        set_option(
            c,
            "admin_rest_multicast_prefix",
            toml::Value::String("[m] ".into()),
        );
        set_option(
            c,
            "admin_rest_broadcast_prefix",
            toml::Value::String("[b] ".into()),
        );
    })
    .await;
    let api = Api::new(&srv);
    let mut a = online(&srv, "alice", "one").await;
    let mut a2 = online(&srv, "alice", "two").await;
    let mut b = online(&srv, "bob", "x").await;

    // The README's bare array.
    let r = api
        .call(
            Method::POST,
            "/message",
            Some(json!([
                {"to": "alice", "message": "hi alice"},
                {"to": "carol@localhost", "message": "hi carol"},
                {"to": "nobody", "message": "skipped"},
                {"to": "bob"},
            ])),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!("Message multicasted to users: 1/1"))
    );
    assert!(
        read_until_contains(&mut a, "message", "[m] hi alice")
            .await
            .contains("from=\"localhost\"")
    );
    // The module's {"recipients": [...]} form.
    let r = api
        .call(
            Method::POST,
            "/message",
            Some(json!({"recipients": [{"to": "bob", "message": "hi bob"}]})),
        )
        .await;
    assert_eq!(r.result(), "Message multicasted to users: 1/0");
    read_until_contains(&mut b, "message", "[m] hi bob").await;
    // Nobody reachable: 404; malformed: 400.
    let r = api
        .call(
            Method::POST,
            "/message",
            Some(json!([{"to": "nobody", "message": "x"}])),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::NOT_FOUND, json!("No multicast recipients"))
    );
    let r = api
        .call(Method::POST, "/message", Some(json!({"to": "bob"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Broadcast: every available session of every online user; the count is of users.
    let r = api
        .call(
            Method::POST,
            "/broadcast",
            Some(json!({"message": "maintenance"})),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!({"count": 2}))
    );
    for c in [&mut a, &mut a2, &mut b] {
        let m = read_until_contains(c, "message", "[b] maintenance").await;
        assert!(m.contains("from=\"localhost\""), "{m}");
    }
    let r = api.raw(Method::POST, "/broadcast", "{}", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// Modules, allowlist, reload, destructive calls, base path, OpenAPI
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn modules_act_on_the_real_registry() {
    let srv = server(&[]).await;
    let api = Api::new(&srv);
    let host = srv.server().core.host("localhost").unwrap().clone();

    let r = api.get("/modules").await;
    let modules = r.result()["modules"].as_array().unwrap().clone();
    assert_eq!(r.result()["count"], modules.len());
    assert!(modules.contains(&json!("ping")) && modules.contains(&json!("admin_rest")));
    assert_eq!(
        api.get("/modules/count").await.result(),
        json!({"count": modules.len()})
    );

    let r = api.get("/module/ping").await;
    let result = r.result();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (&result["module"], &result["loaded"]),
        (&json!("ping"), &json!(true))
    );
    assert_eq!(
        result["status"]["type"],
        json!("info"),
        "module status is visible: {result}"
    );
    // A status set by the module shows up at once.
    host.module("ping").unwrap().set_status(
        oxpecker::core::modules::StatusType::Warn,
        "slow pings",
        false,
    );
    let result = api.get("/module/ping").await.result();
    assert_eq!(
        (&result["status"]["type"], &result["status"]["message"]),
        (&json!("warn"), &json!("slow pings"))
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::DELETE, "/module/ping", None, 200, json!("Module unloaded: ping"), ""),
        (Method::GET, "/module/ping", None,
            404, json!({"module": "ping", "loaded": false, "status": null}), "module_not_loaded"),
        (Method::DELETE, "/module/ping", None, 404, json!("Module is not loaded:ping"), "module_not_loaded"),
        (Method::PUT, "/module/ping", None, 200, json!("Module loaded: ping"), ""),
        // Loaded again = reload.
        (Method::PUT, "/module/ping", None, 200, json!("Module loaded: ping"), ""),
        (Method::PUT, "/module/no_such_module", None,
            404, json!("Module does not exist: no_such_module"), "unknown_module"),
    ];
    api.run(cases).await;
    assert!(host.is_loaded("ping"));

    // Unloading admin_rest turns the API off for the host.
    let r = api.call(Method::DELETE, "/module/admin_rest", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.get("/users/count").await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "module_not_loaded".to_string())
    );
}

#[tokio::test]
async fn whitelist_edits_persist_across_restart() {
    let srv = server(&[]).await;
    let api = Api::new(&srv);
    let r = api.get("/whitelist").await;
    assert_eq!(
        r.result(),
        json!({"count": 2, "whitelist": ["127.0.0.0/8", "::1"]})
    );

    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::PUT, "/whitelist/192.0.2.10", None, 200, json!("IP added to whitelist: 192.0.2.10"), ""),
        (Method::PUT, "/whitelist/198.51.100.0%2F24", None,
            200, json!("IP added to whitelist: 198.51.100.0/24"), ""),
        (Method::DELETE, "/whitelist/::1", None, 200, json!("IP removed from whtielist: ::1"), ""),
        (Method::DELETE, "/whitelist/203.0.113.1", None,
            404, json!("IP is not whitelisted: 203.0.113.1"), "not_whitelisted"),
        (Method::PUT, "/whitelist/not-an-ip", None,
            400, json!("Not an IP address or CIDR range: not-an-ip"), "invalid_ip"),
        (Method::PUT, "/whitelist", None, 400, json!("Missing IP address in path"), "missing_ip"),
    ];
    api.run(cases).await;

    let expected =
        json!({"count": 3, "whitelist": ["127.0.0.0/8", "192.0.2.10", "198.51.100.0/24"]});
    assert_eq!(api.get("/whitelist").await.result(), expected);
    let srv = srv.restart().await;
    let api = Api::new(&srv);
    assert_eq!(api.get("/whitelist").await.result(), expected);

    // Removing loopback locks loopback out, at once.
    let r = api
        .call(Method::DELETE, "/whitelist/127.0.0.0%2F8", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(api.get("/whitelist").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn reload_rereads_the_config_file() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oxpecker.toml");
    let write = |modules: &str, extra: &str| {
        std::fs::write(
            &path,
            format!(
                "admins = [\"admin@localhost\"]\nmodules_enabled = [{modules}]\n{extra}\ndata_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = [\"127.0.0.1:0\"]\n[auth]\nscram_iterations = 4096\n"
            ),
        )
        .unwrap();
    };
    write("\"ping\", \"disco\", \"admin_rest\"", "");
    let cfg = Config::load(&path).unwrap();
    let server = oxpecker::Server::start(cfg).await.unwrap();
    let core = server.core.clone();
    let j = core.accounts.account_jid(ADMIN.0).unwrap();
    core.accounts.create(&j, ADMIN.1).await.unwrap();
    let api = Api::at(format!("http://{}/admin_rest", server.http_addrs[0]));

    write(
        "\"ping\", \"admin_rest\", \"version\"",
        "admin_rest_message_prefix = \"[r] \"",
    );
    let r = api.call(Method::PUT, "/reload", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let report = &r.json()["report"];
    assert_eq!(report["loaded"], json!(["localhost/version"]));
    assert_eq!(report["unloaded"], json!(["localhost/disco"]));
    assert_eq!(report["reloaded"], json!(["localhost/admin_rest"]));
    let host = core.host("localhost").unwrap();
    assert!(host.is_loaded("version") && !host.is_loaded("disco"));

    // A broken file is refused and the running configuration stays.
    std::fs::write(&path, "modules_enabled = [\"nope\"]\n").unwrap();
    let r = api.call(Method::PUT, "/reload", None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "invalid_config".to_string())
    );
    assert!(host.is_loaded("version"));
    server.shutdown().await;
}

#[tokio::test]
async fn destructive_calls_are_off_unless_enabled() {
    let srv = server(&["alice"]).await;
    let api = Api::new(&srv);
    for path in ["/data", "/certs"] {
        let r = api.call(Method::DELETE, path, None).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::FORBIDDEN, "destructive_disabled".to_string())
        );
    }
    assert!(srv.server().cert.certificate.exists());
    srv.stop().await;

    let srv = server_with(&["alice"], |c| {
        set_option(
            c,
            "admin_rest_allow_destructive",
            toml::Value::Boolean(true),
        );
    })
    .await;
    let api = Api::new(&srv);
    let r = api.call(Method::DELETE, "/certs", None).await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!("Certificates deleted successfully."))
    );
    assert!(!srv.server().cert.certificate.exists());
    let r = api.call(Method::DELETE, "/data", None).await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!("Server data deleted successfully."))
    );
    let alice = srv
        .server()
        .core
        .accounts
        .account_jid("alice@localhost")
        .unwrap();
    assert!(!srv.server().core.accounts.exists(&alice).await.unwrap());
    // The admin account is gone too.
    assert_eq!(
        api.get("/users/count").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn base_path_host_selection_and_openapi() {
    let srv = server_with(&[], |c| {
        c.hosts.push(oxpecker::config::HostConfig {
            name: "second.example".into(),
            ..Default::default()
        });
        set_option(
            c,
            "admin_rest_base",
            toml::Value::String("/api/admin".into()),
        );
    })
    .await;
    srv.add_user("carol@second.example", "pw").await;
    let root = Api::at(format!("http://{}", srv.http()));
    assert_eq!(
        root.get("/admin_rest/users/count").await.status,
        StatusCode::NOT_FOUND
    );
    let api = Api::at(format!("http://{}/api/admin", srv.http()));
    assert_eq!(api.get("/users/count").await.status, StatusCode::OK);

    // The host: ?host=, else a Host header naming a served host, else the first host.
    let r = api.get("/user/carol").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get("/user/carol?host=second.example").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call_with(
            Method::GET,
            "/user/carol",
            &admin(),
            None,
            &[("host", "second.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.get("/user/carol%40second.example").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.get("/users/count?host=unknown.example").await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::NOT_FOUND,
            json!("Host does not exist or is malformed")
        )
    );

    // OpenAPI and ping need credentials like every route; the spec names this server's base.
    for path in ["/ping", "/openapi.json"] {
        let r = api
            .call_with(Method::GET, path, &Auth::None, None, &[])
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = api.get("/ping").await;
    assert_eq!((r.status, r.result()), (StatusCode::OK, json!("PONG")));
    let r = api.get("/openapi.json").await;
    let spec = r.json();
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["servers"][0]["url"], "/api/admin");
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
        {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = oxpecker::http::admin_rest::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served, "spec and routes differ");
}

// ---------------------------------------------------------------------------------------------
// Roster, groups, vCards (the managers the XMPP side uses)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn roster_add_pushes_to_online_clients_and_remove() {
    let srv = server(&["alice", "bob"]).await;
    let api = Api::new(&srv);
    let mut a = online(&srv, "alice", "desk").await;
    a.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    read_until_contains(&mut a, "iq", "id=\"rg\"").await;

    let r = api.get("/roster/alice").await;
    assert_eq!(r.result(), json!({"count": 0, "roster": []}));

    let r = api
        .call(
            Method::POST,
            "/roster/alice",
            Some(json!({"contact": "bob@localhost"})),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::OK,
            json!("Roster registered: alice@localhost and bob@localhost")
        )
    );
    let push = read_until_contains(&mut a, "iq", "jabber:iq:roster").await;
    assert!(
        push.contains("type=\"set\"")
            && push.contains("jid=\"bob@localhost\"")
            && push.contains("subscription=\"both\""),
        "{push}"
    );

    let r = api.get("/roster/alice").await;
    assert_eq!(
        r.result(),
        json!({"count": 1, "roster": [["item", {"jid": "bob@localhost", "subscription": "both", "group": []}]]})
    );
    let r = api.get("/roster/bob").await;
    assert_eq!(r.result()["roster"][0][1]["jid"], "alice@localhost");
    assert_eq!(r.result()["roster"][0][1]["subscription"], "both");
    // GET /user carries the real roster.
    let r = api.get("/user/alice").await;
    assert_eq!(r.result()["user"]["roster"][0][1]["jid"], "bob@localhost");

    // Errors: missing contact 404, unknown local contact 404, unknown user 404 (a remote contact
    // is sent a subscription request: tests/s2s.rs).
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::POST, "/roster/alice", Some(json!({})),
            404, json!("Contact does not exist or is malformed"), "invalid_contact"),
        (Method::POST, "/roster/alice", Some(json!({"contact": "ghost@localhost"})),
            404, json!("Contact does not exist or is malformed"), "invalid_contact"),
        (Method::POST, "/roster/nobody", Some(json!({"contact": "bob"})),
            404, json!("User does not exist: nobody@localhost"), "user_not_found"),
    ];
    api.run(cases).await;
    let r = api
        .raw(
            Method::POST,
            "/roster/alice",
            "{bad",
            Some("application/json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/roster/alice").await.result()["count"], 1);

    let r = api
        .call(
            Method::DELETE,
            "/roster/alice",
            Some(json!({"contact": "bob@localhost"})),
        )
        .await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::OK,
            json!("Roster deleted: alice@localhost and bob@localhost")
        )
    );
    let push = read_until_contains(&mut a, "iq", "subscription=\"remove\"").await;
    assert!(push.contains("jid=\"bob@localhost\""), "{push}");
    assert_eq!(api.get("/roster/alice").await.result()["count"], 0);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::DELETE, "/roster/nobody", Some(json!({"contact": "bob"})),
            404, json!("User does not exist: nobody@localhost"), "user_not_found"),
        (Method::DELETE, "/roster/alice", Some(json!({})),
            404, json!("Contact does not exist or is malformed"), "invalid_contact"),
    ];
    api.run(cases).await;
}

#[tokio::test]
async fn groups_members_see_each_other() {
    let srv = server(&["alice", "bob", "carol"]).await;
    let api = Api::new(&srv);
    let mut a = online(&srv, "alice", "desk").await;
    a.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    read_until_contains(&mut a, "iq", "id=\"rg\"").await;

    let r = api
        .call(Method::PUT, "/groups", Some(json!({"name": "Team"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let generated = r.result()["group_id"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 12);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::PUT, "/groups/staff", Some(json!({"name": "Staff", "group_id": "ignored"})),
            200, json!({"group_id": "staff"}), ""),
        (Method::PUT, "/groups", Some(json!({"name": "Again", "group_id": "staff"})),
            409, json!("conflict"), "conflict"),
        (Method::PUT, "/groups", Some(json!({"create_default_muc": false})),
            400, json!("Body must contain a `name` key"), "invalid_body"),
        (Method::PUT, "/groups/staff/members/alice", None,
            200, json!("Member 'alice' successfully added to group 'staff'."), ""),
        (Method::PUT, "/groups/staff/members/bob", Some(json!([{"delay_update": false}])),
            200, json!("Member 'bob' successfully added to group 'staff'."), ""),
    ];
    api.run(cases).await;
    // alice (online, roster fetched) sees bob appear, in the group.
    let push = read_until_contains(&mut a, "iq", "bob@localhost").await;
    assert!(
        push.contains("subscription=\"both\"") && push.contains("<group>Staff</group>"),
        "{push}"
    );
    let r = api.get("/roster/bob").await;
    assert_eq!(
        r.result(),
        json!({"count": 1, "roster": [["item", {"jid": "alice@localhost", "subscription": "both", "group": ["Staff"]}]]})
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::PUT, "/groups/nope/members/carol", None, 404, json!("group-not-found"), "group_not_found"),
        (Method::PUT, "/groups/staff/members/ghost", None,
            404, json!("User does not exist: ghost@localhost"), "user_not_found"),
        (Method::POST, "/groups/staff/sync", None,
            200, json!("Successfully did group subscriptions for group 'staff'."), ""),
        (Method::POST, "/groups/nope/sync", None, 404, json!("group-not-found"), "group_not_found"),
        (Method::DELETE, "/groups/staff/members/bob", None,
            200, json!("Member 'bob' successfully removed from group 'staff'."), ""),
    ];
    api.run(cases).await;
    read_until_contains(&mut a, "iq", "subscription=\"remove\"").await;
    assert_eq!(api.get("/roster/bob").await.result()["count"], 0);
    // Removing from an unknown group is 404; deleting a group is idempotent.
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::DELETE, "/groups/nope/members/bob", None, 404, json!("group-not-found"), "group_not_found"),
        (Method::DELETE, "/groups/staff", None, 200, json!("Group 'staff' deleted successfully."), ""),
        (Method::DELETE, "/groups/staff", None, 200, json!("Group 'staff' deleted successfully."), ""),
    ];
    api.run(cases).await;
    assert_eq!(api.get("/roster/alice").await.result()["count"], 0);
}

#[tokio::test]
async fn vcards_are_the_ones_xmpp_clients_see() {
    let srv = server(&["alice", "bob"]).await;
    let api = Api::new(&srv);
    let r = api.get("/vcards/alice").await;
    assert_eq!(
        (r.status, r.result()),
        (
            StatusCode::NOT_FOUND,
            json!("The user <alice@localhost> has no vCard configured.")
        )
    );

    let card = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice Liddell\r\nN:Liddell;Alice;;;\r\nEMAIL;TYPE=work:alice@example.com\r\nTEL;TYPE=cell:+1-555-0100\r\nNOTE:curious\\, very\r\nEND:VCARD\r\n";
    let r = api
        .raw(Method::PUT, "/vcards/alice", card, Some("text/vcard"))
        .await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!("vCard stored for <alice@localhost>"))
    );

    // bob asks over XMPP (XEP-0054) and gets the same data.
    let mut b = RawClient::login(&srv, "bob", "pw", "r").await;
    b.send("<iq type='get' id='v1' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let iq = read_until_contains(&mut b, "iq", "id=\"v1\"").await;
    assert!(iq.contains("<FN>Alice Liddell</FN>"), "{iq}");
    assert!(iq.contains("<USERID>alice@example.com</USERID>"), "{iq}");
    assert!(iq.contains("<DESC>curious, very</DESC>"), "{iq}");

    // And the REST side reads what an XMPP client set.
    let mut a = RawClient::login(&srv, "alice", "pw", "r").await;
    a.send("<iq type='set' id='v2'><vCard xmlns='vcard-temp'><FN>Alice L.</FN><NICKNAME>al</NICKNAME></vCard></iq>").await;
    let iq = read_until_contains(&mut a, "iq", "id=\"v2\"").await;
    assert!(iq.contains("type=\"result\""), "{iq}");
    let r = api.get("/vcards/alice").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/vcard"));
    assert!(
        r.text
            .starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice L.\r\n"),
        "{}",
        r.text
    );
    assert!(r.text.contains("NICKNAME:al\r\n"), "{}", r.text);

    let r = api
        .raw(
            Method::PUT,
            "/vcards/alice",
            "not a vcard",
            Some("text/vcard"),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_vcard".to_string())
    );
    let r = api
        .raw(Method::PUT, "/vcards/nobody", card, Some("text/vcard"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.call(Method::DELETE, "/vcards/alice", None).await;
    assert_eq!(
        (r.status, r.result()),
        (StatusCode::OK, json!("vCard deleted for <alice@localhost>"))
    );
    assert_eq!(api.get("/vcards/alice").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn token_cli_offline() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oxpecker.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\n[auth]\nscram_iterations = 4096\n",
    )
    .unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxpecker"))
            .arg("--config")
            .arg(&config)
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
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&["token", "create", "admin@localhost"], "");
    assert!(!ok && err.contains("does not exist"), "{err}");
    assert!(run(&["user", "add", "admin@localhost"], "pw\n").0);
    let (ok, token, err) = run(&["token", "create", "admin@localhost", "--label", "ci"], "");
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(
        token.starts_with("oxp_") && err.contains("shown once"),
        "{token} {err}"
    );
    let (ok, list, _) = run(&["token", "list"], "");
    assert!(ok);
    let id = list.split('\t').next().unwrap().to_string();
    assert!(
        list.contains("admin@localhost") && list.contains("\tci"),
        "{list}"
    );
    assert!(!list.contains(&token));
    let (ok, out, _) = run(&["token", "revoke", &id], "");
    assert!(ok && out.contains(&id), "{out}");
    let (ok, list, _) = run(&["token", "list"], "");
    assert!(ok && list.trim().is_empty(), "{list}");
    let (ok, _, err) = run(&["token", "revoke", &id], "");
    assert!(!ok, "{err}");
}
