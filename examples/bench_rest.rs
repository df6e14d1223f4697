//! Load generator for the admin REST API (used by `scripts/bench-rest`): authenticated
//! `GET {base}/users/count` from many concurrent connections for a fixed time, then requests/s.
//!
//! ```text
//! cargo run --release --example bench_rest -- --url http://127.0.0.1:5280/admin_rest \
//!     --user admin@localhost --password PW [--token TOKEN] [--concurrency 32] [--seconds 10]
//! ```
//! It also times Argon2id verifications on one core, so the two figures can be compared: an
//! API bounded by Argon2 would top out near that rate times the number of cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

struct Args {
    url: String,
    user: String,
    password: String,
    token: Option<String>,
    concurrency: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: "http://127.0.0.1:5280/admin_rest".into(),
        user: "admin@localhost".into(),
        password: String::new(),
        token: None,
        concurrency: 32,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--user" => args.user = value()?,
            "--password" => args.password = value()?,
            "--token" => args.token = Some(value()?),
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// Runs the load with `auth` applied to every request; returns (ok, failed, elapsed).
async fn run(
    args: &Args,
    auth: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> Result<(u64, u64, Duration)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let url = format!("{}/users/count", args.url);
    // Warm up (and fill the credential cache) before measuring.
    let first = auth(client.get(&url)).send().await?;
    if !first.status().is_success() {
        bail!("warm-up request failed: {}", first.status());
    }
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let auth = Arc::new(auth);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, ok, failed, auth) = (
            client.clone(),
            url.clone(),
            ok.clone(),
            failed.clone(),
            auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match auth(client.get(&url)).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok((
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        start.elapsed(),
    ))
}

fn argon2_per_second() -> Result<f64> {
    let creds = oxpecker::auth::credentials::Credentials::new("bench-password", 4096)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = 10;
    let start = Instant::now();
    for _ in 0..n {
        if !creds.verify_argon2("bench-password") {
            bail!("argon2 verification failed");
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // reqwest is built without a default TLS provider (the project uses ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let argon2 = argon2_per_second()?;
    println!("argon2id verifications/s on one core: {argon2:.1}");

    let (user, password) = (args.user.clone(), args.password.clone());
    let (ok, failed, elapsed) = run(&args, move |r| r.basic_auth(&user, Some(&password))).await?;
    let basic = ok as f64 / elapsed.as_secs_f64();
    println!(
        "Basic auth:   GET /users/count {basic:.0} requests/s ({ok} ok, {failed} failed, {} connections, {:.1} s)",
        args.concurrency,
        elapsed.as_secs_f64()
    );
    let mut out = serde_json::json!({
        "argon2_verifications_per_s": argon2.round(),
        "basic_requests_per_s": basic.round(),
        "basic_failed": failed,
    });
    if let Some(token) = args.token.clone() {
        let (ok, failed, elapsed) = run(&args, move |r| r.bearer_auth(&token)).await?;
        let bearer = ok as f64 / elapsed.as_secs_f64();
        println!(
            "Bearer token: GET /users/count {bearer:.0} requests/s ({ok} ok, {failed} failed)"
        );
        out["bearer_requests_per_s"] = serde_json::json!(bearer.round());
        out["bearer_failed"] = serde_json::json!(failed);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let verdict = if basic > 2.0 * argon2 * cores {
        "not bounded by Argon2"
    } else {
        "NOT clearly above the Argon2 bound"
    };
    println!(
        "Basic-auth throughput is {:.0}x the Argon2 rate of one core ({cores} cores here): {verdict}.",
        basic / argon2
    );
    println!("{out}");
    Ok(())
}
