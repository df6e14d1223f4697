//! The dashboard's static files at `/admin/`: embedded, served with a strict CSP to the admin
//! API's allowlist only, naming the API base the page talks to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;

async fn get(srv: &TestServer, path: &str) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    client
        .get(format!("http://{}{path}", srv.http()))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let srv = TestServer::start_with(|c| {
        c.options.insert(
            "admin_rest_base".into(),
            toml::Value::String("/api/admin".into()),
        );
    })
    .await;
    let r = get(&srv, "/admin").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/admin/");

    let r = get(&srv, "/admin/").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<meta name="oxpecker-api" content="/api/admin">"#),
        "{html}"
    );

    for (path, ctype, needle) in [
        ("/admin/app.js", "text/javascript", "localStorage"),
        ("/admin/app.css", "text/css", "#login"),
        (
            "/admin/vendor/uPlot.iife.min.js",
            "text/javascript",
            "uPlot",
        ),
        ("/admin/vendor/uPlot.min.css", "text/css", ".uplot"),
    ] {
        let r = get(&srv, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ctype),
            "{path}"
        );
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    assert_eq!(get(&srv, "/admin/nope.js").await.status(), 404);
    assert_eq!(get(&srv, "/admin/../Cargo.toml").await.status(), 404);
    assert_eq!(get(&srv, "/administrator").await.status(), 404);
}

#[tokio::test]
async fn addresses_off_the_admin_allowlist_get_nothing() {
    let srv = TestServer::start_with(|c| {
        c.options.insert(
            "admin_rest_whitelist".into(),
            toml::Value::Array(vec![toml::Value::String("192.0.2.0/24".into())]),
        );
    })
    .await;
    for path in ["/admin/", "/admin/app.js"] {
        let r = get(&srv, path).await;
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("allowlist"));
    }
}
