//! `oxpecker-bench`: a load generator measuring an Oxpecker server from the outside.
//!
//! Phases, each timed separately:
//! 1. **logins**: `--clients` connections (at most `--concurrency` negotiating at once) each do
//!    STARTTLS (trusting `--cert`), SASL SCRAM-SHA-256, resource binding and initial presence.
//!    The client side of SCRAM costs one PBKDF2 over the account's iteration count per login,
//!    exactly as for a real client; the server side only computes HMACs over stored keys.
//! 2. **idle memory**: the server's VmRSS (`/proc/PID/status`, `--server-pid`) before the first
//!    connection and after all sessions are bound and idle for `--settle-ms` → KiB per session.
//! 3. **routing**: clients `2i` and `2i+1` are partners; every client sends its share of
//!    `--messages` (a total) to its partner's full JID, with at most `--window` messages sent but
//!    not yet received by the partner. Messages per second count deliveries seen by receivers;
//!    each message's id carries its send time, so receivers measure its latency (p50/p99).
//!    With `--cpu`, the server's utime+stime (`/proc/PID/stat`) gives CPU time per message/login.
//!
//! 4. **muc** (with `--muc-occupants N`): N of the sessions join one room in turn, then
//!    `--muc-senders` of them send `--muc-rounds` groupchat messages each (see [`muc`]).
//! 5. **mam** (with `--mam-items N`, the same number given to `--bulk-create`): a second
//!    session of `PREFIX0` pages through its archive of N messages (see [`mam`]).
//! 6. **fast** (with `--fast-logins N`): N accounts log in over SASL2 with SCRAM-SHA-256 and
//!    get FAST tokens, then log in again with the tokens; logins/s and server CPU per login for
//!    each (see [`fast`]).
//!
//! Prints a human-readable report and one JSON line (starting with `{`) with the figures.
//! `--bulk-create CONFIG` instead creates the accounts `PREFIX0..PREFIX{N-1}` offline in the
//! store of that server configuration (the server must be stopped) and exits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use oxpecker::auth::scram::{ScramClient, ScramHash};
use oxpecker::config::Config;
use oxpecker::core::accounts::{AccountError, Accounts};
use oxpecker::storage::Store;
use oxpecker::xmpp::element::escape;
use oxpecker::xmpp::parser::{Limits, StreamEvent, StreamParser};
use oxpecker::xmpp::{Element, ns};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[path = "bench/cluster.rs"]
mod cluster;
#[path = "bench/fast.rs"]
mod fast;
#[path = "bench/mam.rs"]
mod mam;
#[path = "bench/muc.rs"]
mod muc;
#[path = "bench/s2s.rs"]
mod s2s;
#[path = "bench/store.rs"]
mod store;

/// Command-line arguments.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "oxpecker-bench",
    about = "Load generator for Oxpecker: logins/s, idle memory per session, routed messages/s"
)]
struct Args {
    /// Server c2s (STARTTLS) address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: String,
    /// XMPP domain of the accounts (also the TLS server name).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// PEM file with the certificate(s) to trust (e.g. the server's DATA_DIR/tls/cert.pem).
    #[arg(long, required_unless_present_any = ["bulk_create", "store_bench"])]
    cert: Option<PathBuf>,
    /// Number of client sessions (accounts PREFIX0..PREFIX{N-1}).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Total messages to route, split evenly over the clients (each sends to its partner).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Logins in flight at once (and accounts created in parallel in --bulk-create, capped by cores).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Messages a client may have sent that its partner has not yet received.
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// The server's process id, to read its memory (VmRSS) and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also report server CPU time per login and per message (needs --server-pid).
    #[arg(long)]
    cpu: bool,
    /// Account names are this prefix followed by 0..N-1.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// Password of every bench account.
    #[arg(
        long,
        default_value = "bench-password",
        env = "OXPECKER_BENCH_PASSWORD"
    )]
    password: String,
    /// Milliseconds to hold the sessions idle before reading the server's memory.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Seconds each phase may take before the bench gives up.
    #[arg(long, default_value_t = 60)]
    phase_timeout: u64,
    /// Occupants of the `muc` scenario (0 = skip it): that many sessions join one room.
    #[arg(long, default_value_t = 0)]
    muc_occupants: usize,
    /// Occupants that send groupchat messages in the `muc` scenario.
    #[arg(long, default_value_t = 10)]
    muc_senders: usize,
    /// Messages each `muc` sender sends (one per round; every occupant receives each). Above
    /// the server's `muc_rate_burst` (default 10) raise that limit, or senders are refused.
    #[arg(long, default_value_t = 10)]
    muc_rounds: u64,
    /// Append `--messages` archive items over `--clients` users on sled, then on fjall, in
    /// fresh directories under DIR, in-process (no server), and print appends/s and CPU per append.
    #[arg(long, value_name = "DIR")]
    store_bench: Option<PathBuf>,
    /// Create the accounts offline in the store of this server config, then exit (server stopped).
    #[arg(long, value_name = "CONFIG")]
    bulk_create: Option<PathBuf>,
    /// Messages in the MAM archive of `PREFIX0` (0 = skip the `mam` scenario); `--bulk-create`
    /// writes them, a run pages through them.
    #[arg(long, default_value_t = 0)]
    mam_items: u64,
    /// Items per MAM page (RSM `<max/>`) in the `mam` scenario.
    #[arg(long, default_value_t = 100)]
    mam_page: usize,
    /// The `fast` scenario: SASL2 logins with SCRAM, then with FAST tokens (see [`fast`]).
    #[command(flatten)]
    fast: fast::FastArgs,
    /// The `s2s` scenario (with `--s2s-addr`, run instead of the phases above; see [`s2s`]).
    #[command(flatten)]
    s2s: s2s::S2sArgs,
    /// The `cluster` scenario (with `--cluster-addrs`, run instead of the phases above; see [`cluster`]).
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

/// The TLS stream of one client.
type Tls = TlsStream<TcpStream>;
/// The parser over the read half of a client's TLS stream.
type TlsParser = StreamParser<BufReader<ReadHalf<Tls>>>;

/// A logged-in, bound client session.
struct Session {
    /// The full JID the server bound.
    jid: String,
    /// Parser positioned after the bind result.
    parser: TlsParser,
    /// The write half of the TLS stream.
    writer: WriteHalf<Tls>,
}

/// Counters shared between the reader tasks and the main task.
#[derive(Default)]
struct Shared {
    /// Chat messages received by all clients.
    received: AtomicU64,
    /// Error stanzas received by all clients.
    errors: AtomicU64,
    /// Own MUC presences (status 110) received by all clients.
    joined: AtomicU64,
    /// Other occupants' MUC presences received by all clients (the `muc` scenario's joins).
    occupant_presences: AtomicU64,
    /// Streams that ended (closed, failed) while the bench still used them.
    dropped: AtomicU64,
    /// Target for `received`; `done` is notified when it is reached.
    target: AtomicU64,
    /// Notified when `received` reaches `target`.
    done: Notify,
    /// When the bench started: routed messages carry their send time relative to it.
    epoch: Epoch,
    /// Send-to-receive latency of every routed message, in microseconds.
    latencies_us: std::sync::Mutex<Vec<u64>>,
}

/// The instant routed messages' send times are measured from.
struct Epoch(Instant);

impl Default for Epoch {
    fn default() -> Self {
        Epoch(Instant::now())
    }
}

/// The id of routed message `n`, carrying its send time (µs since `epoch`).
fn routed_id(n: u64, epoch: &Epoch) -> String {
    format!("m{n}-{}", epoch.0.elapsed().as_micros())
}

/// The send time (µs since the epoch) a routed message's id carries, if it is one.
fn routed_sent_us(id: &str) -> Option<u64> {
    let (n, t) = id.strip_prefix('m')?.split_once('-')?;
    n.parse::<u64>().ok()?;
    t.parse().ok()
}

/// A snapshot of a process's resource usage from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    /// Resident set size in KiB.
    rss_kib: u64,
    /// User plus system CPU time in seconds.
    cpu_secs: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(cfg) = &args.bulk_create {
        return bulk_create(&args, cfg).await;
    }
    if let Some(dir) = &args.store_bench {
        let appends = usize::try_from(args.messages).unwrap_or(usize::MAX);
        return store::run_all(dir, appends, args.clients).await;
    }
    if args.s2s.s2s_addr.is_some() {
        return s2s::run(Arc::new(args)).await;
    }
    if !args.cluster.cluster_addrs.is_empty() {
        return cluster::run(Arc::new(args)).await;
    }
    run(args).await
}

/// Creates the bench accounts offline through the account manager, in parallel.
async fn bulk_create(args: &Args, config: &Path) -> Result<()> {
    let cfg = Config::load(config).map_err(|e| anyhow!("{e}"))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = Store::open_configured(&cfg.store_dir(), &cfg.storage)
        .context("opening the store (is the server stopped?)")?;
    let hosts = cfg.hosts.iter().map(|h| h.name.clone()).collect();
    let accounts = Arc::new(Accounts::new(
        store.clone(),
        hosts,
        cfg.auth.scram_iterations,
    ));
    // Each creation is CPU-bound (Argon2id with ~19 MiB + 2 × PBKDF2) plus a durable write:
    // a couple per core keeps the cores busy while writes sync.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallel = args.concurrency.clamp(1, cores * 2);
    let sem = Arc::new(Semaphore::new(parallel));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let (mut created, mut existing) = (0usize, 0usize);
    let mut tally = |fresh: bool| {
        if fresh {
            created += 1;
        } else {
            existing += 1;
        }
    };
    for i in 0..args.clients {
        let permit = sem.clone().acquire_owned().await?;
        let accounts = accounts.clone();
        let jid = format!("{}{i}@{}", args.user_prefix, args.domain);
        let password = args.password.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let jid = accounts.account_jid(&jid)?;
            match accounts.create(&jid, &password).await {
                Ok(()) => Ok(true),
                Err(AccountError::Exists(_)) => Ok(false),
                Err(e) => Err(anyhow::Error::from(e).context(format!("creating {jid}"))),
            }
        });
        // Reap finished tasks as we go so errors surface early.
        while let Some(r) = tasks.try_join_next() {
            tally(r??);
        }
    }
    // A stuck store (no progress for a minute) would otherwise hang the caller forever.
    loop {
        match tokio::time::timeout(Duration::from_secs(60), tasks.join_next()).await {
            Ok(Some(r)) => tally(r??),
            Ok(None) => break,
            Err(_) => {
                eprintln!("bulk-create: no account created for 60 s; the store is stuck");
                std::process::exit(2);
            }
        }
    }
    store.flush().await?;
    if args.mam_items > 0 {
        mam::preload(&store, &args.domain, &args.user_prefix, args.mam_items).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bulk-create: {created} created, {existing} already existed, in {secs:.1} s \
         ({parallel} in parallel, scram_iterations {})",
        cfg.auth.scram_iterations
    );
    Ok(())
}

/// Runs the three measured phases against a running server.
async fn run(args: Args) -> Result<()> {
    let cert = args.cert.clone().context("--cert is required")?;
    let tls = TlsConnector::from(client_tls(&cert)?);
    let args = Arc::new(args);
    if args.cpu && args.server_pid.is_none() {
        bail!("--cpu needs --server-pid");
    }
    let tck = clock_ticks();
    let sample = |pid: Option<u32>| -> Result<Option<ProcSample>> {
        pid.map(|p| proc_sample(&p.to_string(), tck)).transpose()
    };
    println!(
        "oxpecker-bench: {} clients -> {} (domain {}), concurrency {}, {} messages, window {}",
        args.clients, args.addr, args.domain, args.concurrency, args.messages, args.window
    );

    // Phase 1: logins.
    let before_login = sample(args.server_pid)?;
    let self_before = proc_sample("self", tck)?;
    let shared = Arc::new(Shared::default());
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.clients {
        let permit = sem.clone().acquire_owned().await?;
        let (args, tls) = (args.clone(), tls.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(60), login(&args, &tls, i)).await;
            let r = match r {
                Ok(r) => r,
                Err(_) => Err(anyhow!("login timed out after 60 s")),
            };
            (i, t0.elapsed(), r)
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..args.clients).map(|_| None).collect();
    let mut latencies = Vec::with_capacity(args.clients);
    let mut login_errors = 0usize;
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            let (i, took, r) = r?;
            match r {
                Ok(s) => {
                    latencies.push(took);
                    sessions[i] = Some(s);
                }
                Err(e) => {
                    if login_errors == 0 {
                        eprintln!("first login failure ({}{i}): {e:#}", args.user_prefix);
                    }
                    login_errors += 1;
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(args.phase_timeout), collect)
        .await
        .map_err(|_| anyhow!("login phase exceeded {} s", args.phase_timeout))??;
    let login_secs = started.elapsed().as_secs_f64();
    let after_login = sample(args.server_pid)?;
    let self_after = proc_sample("self", tck)?;
    let logged_in = latencies.len();
    latencies.sort();
    let logins_per_sec = logged_in as f64 / login_secs;
    println!(
        "logins:  {logged_in} ok, {login_errors} failed in {login_secs:.2} s -> {logins_per_sec:.1} logins/s \
         (latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let server_ms_per_login = match (before_login, after_login) {
        (Some(a), Some(b)) if args.cpu && logged_in > 0 => {
            Some(1000.0 * (b.cpu_secs - a.cpu_secs) / logged_in as f64)
        }
        _ => None,
    };
    let bench_ms_per_login = if logged_in > 0 {
        1000.0 * (self_after.cpu_secs - self_before.cpu_secs) / logged_in as f64
    } else {
        0.0
    };
    if let Some(v) = server_ms_per_login {
        println!(
            "         CPU per login: server {v:.2} ms, bench client {bench_ms_per_login:.2} ms \
             (the client side of SCRAM runs PBKDF2)"
        );
    }

    // Phase 2: idle sessions, memory.
    let mut writers: Vec<Option<WriteHalf<Tls>>> = Vec::with_capacity(args.clients);
    let mut jids: Vec<Option<String>> = Vec::with_capacity(args.clients);
    let mut counts: Vec<Option<watch::Receiver<u64>>> = Vec::with_capacity(args.clients);
    let mut readers = JoinSet::new();
    for s in sessions {
        match s {
            Some(s) => {
                let (tx, rx) = watch::channel(0u64);
                readers.spawn(reader(s.parser, tx, shared.clone()));
                writers.push(Some(s.writer));
                jids.push(Some(s.jid));
                counts.push(Some(rx));
            }
            None => {
                writers.push(None);
                jids.push(None);
                counts.push(None);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let idle = sample(args.server_pid)?;
    let kib_per_session = match (before_login, idle) {
        (Some(a), Some(b)) if logged_in > 0 => {
            let per = (b.rss_kib as f64 - a.rss_kib as f64) / logged_in as f64;
            println!(
                "memory:  server VmRSS {:.1} MiB before, {:.1} MiB with {logged_in} idle sessions \
                 -> {per:.1} KiB/session",
                a.rss_kib as f64 / 1024.0,
                b.rss_kib as f64 / 1024.0
            );
            Some(per)
        }
        _ => {
            println!("memory:  not measured (no --server-pid)");
            None
        }
    };

    // Phase 3: routing between partners.
    let mut pairs = Vec::new();
    for i in (0..args.clients.saturating_sub(1)).step_by(2) {
        if jids[i].is_some() && jids[i + 1].is_some() {
            pairs.push((i, i + 1));
        }
    }
    let senders = pairs.len() as u64 * 2;
    let per_client = args.messages.checked_div(senders).unwrap_or(0);
    let total = per_client * senders;
    shared.target.store(total, Ordering::SeqCst);
    let before_route = sample(args.server_pid)?;
    let started = Instant::now();
    let mut send_tasks = JoinSet::new();
    for &(a, b) in &pairs {
        for (from, to) in [(a, b), (b, a)] {
            let writer = writers[from].take().context("writer already taken")?;
            let to_jid = jids[to].clone().context("partner has no JID")?;
            let acked = counts[to].clone().context("partner has no counter")?;
            send_tasks.spawn(sender(
                writer,
                to_jid,
                acked,
                per_client,
                args.window,
                shared.clone(),
            ));
        }
    }
    let wait_all = async {
        if total > 0 && shared.received.load(Ordering::SeqCst) < total {
            shared.done.notified().await;
        }
    };
    let delivered_in_time = tokio::time::timeout(Duration::from_secs(args.phase_timeout), wait_all)
        .await
        .is_ok();
    let route_secs = started.elapsed().as_secs_f64();
    let after_route = sample(args.server_pid)?;
    let received = shared.received.load(Ordering::SeqCst);
    let msgs_per_sec = received as f64 / route_secs;
    println!(
        "routing: {received}/{total} messages delivered in {route_secs:.2} s -> {msgs_per_sec:.0} msgs/s \
         ({} pairs, {per_client} per client, window {}){}",
        pairs.len(),
        args.window,
        if delivered_in_time {
            ""
        } else {
            " [TIMED OUT]"
        }
    );
    let mut route_lat: Vec<u64> = std::mem::take(
        &mut *shared
            .latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    route_lat.sort_unstable();
    let lat_ms = |q: f64| -> f64 {
        let i = ((route_lat.len() as f64 - 1.0) * q).round() as usize;
        route_lat.get(i).map_or(0.0, |&us| us as f64 / 1000.0)
    };
    let (route_p50_ms, route_p99_ms) = (lat_ms(0.50), lat_ms(0.99));
    let route_max_ms = route_lat.last().map_or(0.0, |&us| us as f64 / 1000.0);
    println!(
        "         latency send->receive p50 {route_p50_ms:.2} ms, p99 {route_p99_ms:.2} ms, max {route_max_ms:.1} ms"
    );
    let server_us_per_msg = match (before_route, after_route) {
        (Some(a), Some(b)) if args.cpu && received > 0 => {
            let v = 1e6 * (b.cpu_secs - a.cpu_secs) / received as f64;
            println!("         server CPU {v:.1} µs/message (utime+stime, {tck} ticks/s)");
            Some(v)
        }
        _ => None,
    };
    let errors = shared.errors.load(Ordering::SeqCst);
    let dropped = shared.dropped.load(Ordering::SeqCst);
    if errors > 0 || dropped > 0 {
        println!(
            "         {errors} error stanzas received, {dropped} streams dropped by the server"
        );
    }
    if !delivered_in_time {
        // Senders may wait forever for receipts that will not come.
        send_tasks.abort_all();
    }
    let mut writers_back = Vec::new();
    while let Some(r) = send_tasks.join_next().await {
        match r {
            Ok(Ok(w)) => writers_back.push(w),
            Ok(Err(e)) => eprintln!("sender failed: {e:#}"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
    }
    writers_back.extend(writers.into_iter().flatten());

    // Phase 4: one room, N occupants, M senders.
    let mut muc_json = serde_json::Value::Null;
    if args.muc_occupants > 0 {
        let k = args.muc_occupants.min(writers_back.len());
        let plan = muc::MucPlan {
            domain: &args.domain,
            senders: args.muc_senders,
            rounds: args.muc_rounds,
            pid: args.server_pid.filter(|_| args.cpu),
            tck,
            limit: Duration::from_secs(args.phase_timeout),
        };
        let f = muc::run(&mut writers_back[..k], &shared, plan).await?;
        println!(
            "muc:     {} occupants joined one room; the last join took {:.1} ms (everyone told after {:.1} ms){}",
            f.occupants,
            f.last_join_ms,
            f.last_join_everyone_ms,
            f.server_ms_per_join
                .map(|v| format!(", server CPU {v:.2} ms/join over the last joins"))
                .unwrap_or_default()
        );
        println!(
            "         {} occupant copies delivered ({:.0}/s){}",
            f.copies,
            f.copies_per_sec,
            f.server_us_per_copy
                .map(|v| format!(", server CPU {v:.2} µs/copy"))
                .unwrap_or_default()
        );
        if let (Some(j), Some(c)) = (f.join_cost, f.copy_cost) {
            let joins = f.occupants.min(100) as u64;
            println!("         joins: {}", j.describe(joins, "join"));
            println!("         copies: {}", c.describe(f.copies, "copy"));
        }
        muc_json = serde_json::json!({
            "occupants": f.occupants,
            "last_join_ms": round(f.last_join_ms, 2),
            "last_join_everyone_ms": round(f.last_join_everyone_ms, 2),
            "server_cpu_ms_per_join": f.server_ms_per_join.map(|v| round(v, 3)),
            "copies": f.copies,
            "copies_per_sec": round(f.copies_per_sec, 0),
            "server_cpu_us_per_copy": f.server_us_per_copy.map(|v| round(v, 3)),
            "writes_per_join": f.join_cost.map(|c| round(c.writes as f64 / f.occupants.clamp(1, 100) as f64, 2)),
            "writes_per_copy": f.copy_cost.map(|c| round(c.writes as f64 / f.copies.max(1) as f64, 3)),
        });
    }

    // Phase 5: paging through one archive.
    let mut mam_json = serde_json::Value::Null;
    if args.mam_items > 0 {
        let mut s = login(&args, &tls, 0).await.context("MAM session login")?;
        let partner = mam::partners(&args.user_prefix, &args.domain)[0].clone();
        let pid = args.server_pid.filter(|_| args.cpu);
        let figures = mam::run(&mut s, &partner, args.mam_page, pid, tck).await?;
        let mut modes = serde_json::Map::new();
        for f in &figures {
            println!(
                "mam:     {:<6} {} pages of {}: {} messages (count {}), first 10 pages {:.2} ms, \
                 last 10 {:.2} ms per page{}",
                f.mode,
                f.pages,
                args.mam_page,
                f.items,
                f.count.map_or("-".to_string(), |c| c.to_string()),
                f.first_ms,
                f.last_ms,
                f.server_us_per_page
                    .map(|v| format!(", server CPU {v:.0} µs/page"))
                    .unwrap_or_default()
            );
            modes.insert(
                f.mode.to_string(),
                serde_json::json!({
                    "pages": f.pages,
                    "items": f.items,
                    "count": f.count,
                    "first_pages_ms": round(f.first_ms, 3),
                    "last_pages_ms": round(f.last_ms, 3),
                    "server_cpu_us_per_page": f.server_us_per_page.map(|v| round(v, 1)),
                }),
            );
        }
        mam_json =
            serde_json::json!({ "items": args.mam_items, "page": args.mam_page, "modes": modes });
        writers_back.push(s.writer);
    }

    // Phase 6: SCRAM logins that get FAST tokens, then token logins.
    let fast_json = fast::scenario(&args, &tls, tck).await?;

    let json = serde_json::json!({
        "clients": args.clients,
        "logged_in": logged_in,
        "login_errors": login_errors,
        "concurrency": args.concurrency,
        "login_secs": round(login_secs, 3),
        "logins_per_sec": round(logins_per_sec, 1),
        "login_p50_ms": round(ms(percentile(&latencies, 0.50)), 1),
        "login_p99_ms": round(ms(percentile(&latencies, 0.99)), 1),
        "server_cpu_ms_per_login": server_ms_per_login.map(|v| round(v, 3)),
        "bench_cpu_ms_per_login": round(bench_ms_per_login, 3),
        "rss_before_kib": before_login.map(|s| s.rss_kib),
        "rss_idle_kib": idle.map(|s| s.rss_kib),
        "kib_per_session": kib_per_session.map(|v| round(v, 1)),
        "messages": total,
        "delivered": received,
        "window": args.window,
        "route_secs": round(route_secs, 3),
        "msgs_per_sec": round(msgs_per_sec, 0),
        "server_cpu_us_per_msg": server_us_per_msg.map(|v| round(v, 2)),
        "msg_p50_ms": round(route_p50_ms, 2),
        "msg_p99_ms": round(route_p99_ms, 2),
        "msg_max_ms": round(route_max_ms, 1),
        "error_stanzas": errors,
        "dropped_streams": dropped,
        "muc": muc_json,
        "mam": mam_json,
        "fast": fast_json,
    });
    println!("{json}");

    // Close every stream politely; the server ends the readers.
    let mut closing = JoinSet::new();
    for mut w in writers_back {
        closing.spawn(async move {
            w.write_all(b"</stream:stream>").await?;
            w.shutdown().await?;
            // Keep the write half (and so the connection) until the server answers.
            tokio::time::sleep(Duration::from_secs(6)).await;
            std::io::Result::Ok(())
        });
    }
    let open = readers.len();
    let mut closed = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while readers.join_next().await.is_some() {
            closed += 1;
        }
    })
    .await;
    println!("teardown: the server closed {closed}/{open} streams within 5 s of </stream:stream>");
    closing.abort_all();
    if !delivered_in_time || login_errors > 0 {
        bail!(
            "incomplete run: {login_errors} login failures, {received}/{total} messages delivered"
        );
    }
    Ok(())
}

/// Sends `count` chat messages to `to`, keeping at most `window` not yet received by the partner.
async fn sender(
    mut writer: WriteHalf<Tls>,
    to: String,
    mut acked: watch::Receiver<u64>,
    count: u64,
    window: u64,
    shared: Arc<Shared>,
) -> Result<WriteHalf<Tls>> {
    let to = escape(&to, true);
    let window = window.max(1);
    for n in 0..count {
        while n.saturating_sub(*acked.borrow_and_update()) >= window {
            acked
                .changed()
                .await
                .map_err(|_| anyhow!("partner's reader ended"))?;
        }
        let id = routed_id(n, &shared.epoch);
        let msg = format!(
            "<message to=\"{to}\" type=\"chat\" id=\"{id}\"><body>bench message {n}</body></message>"
        );
        writer.write_all(msg.as_bytes()).await?;
    }
    Ok(writer)
}

/// Reads a bound session's stream, counting chat messages received.
async fn reader(mut parser: TlsParser, count: watch::Sender<u64>, shared: Arc<Shared>) {
    loop {
        match parser.next().await {
            Ok(StreamEvent::Stanza(el)) => {
                if el.get_attr("type") == Some("error") {
                    shared.errors.fetch_add(1, Ordering::SeqCst);
                } else if el.name() == "presence" && is_own_muc_presence(&el) {
                    shared.joined.fetch_add(1, Ordering::SeqCst);
                } else if el.name() == "presence" && muc::is_occupant_presence(&el) {
                    shared.occupant_presences.fetch_add(1, Ordering::SeqCst);
                } else if el.name() == "message" && el.get_child("body", ns::CLIENT).is_some() {
                    if let Some(sent) = el.get_attr("id").and_then(routed_sent_us) {
                        let now =
                            u64::try_from(shared.epoch.0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let mut l = shared
                            .latencies_us
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        l.push(now.saturating_sub(sent));
                    }
                    count.send_modify(|n| *n += 1);
                    let now = shared.received.fetch_add(1, Ordering::SeqCst) + 1;
                    if now == shared.target.load(Ordering::SeqCst) {
                        shared.done.notify_one();
                    }
                }
            }
            Ok(StreamEvent::Header(_)) => {}
            Ok(StreamEvent::Close) | Err(_) => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Whether a presence is the room's answer to our own join (muc#user status 110).
fn is_own_muc_presence(el: &Element) -> bool {
    el.get_attr("type").is_none()
        && el
            .get_child("x", "http://jabber.org/protocol/muc#user")
            .is_some_and(|x| {
                x.children()
                    .any(|s| s.name() == "status" && s.get_attr("code") == Some("110"))
            })
}

/// Connects client `i`, negotiates STARTTLS, SCRAM-SHA-256 and a resource, sends presence.
async fn login(args: &Args, tls: &TlsConnector, i: usize) -> Result<Session> {
    let username = format!("{}{i}", args.user_prefix);
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to=\"{}\" version='1.0'>",
        escape(&args.domain, true)
    );

    // Plaintext stream up to <proceed/>.
    let tcp = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    tcp.set_nodelay(true)?;
    let mut p = StreamParser::new(BufReader::new(tcp), Limits::default());
    p.get_mut().get_mut().write_all(header.as_bytes()).await?;
    expect_header(&mut p).await?;
    let features = next_stanza(&mut p).await?;
    if features.get_child("starttls", ns::TLS).is_none() {
        bail!("server offers no STARTTLS");
    }
    let starttls = format!("<starttls xmlns='{}'/>", ns::TLS);
    p.get_mut().get_mut().write_all(starttls.as_bytes()).await?;
    let proceed = next_stanza(&mut p).await?;
    if !proceed.is("proceed", ns::TLS) {
        bail!("expected <proceed/>, got <{}>", proceed.name());
    }
    let buffered = p.get_ref().buffer().len();
    if buffered > 0 {
        bail!("{buffered} bytes after <proceed/>");
    }
    let tcp = p.into_inner().into_inner();
    let name = rustls_pki_types::ServerName::try_from(args.domain.clone())?;
    let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let (rd, mut w) = tokio::io::split(stream);

    // Encrypted stream: SASL SCRAM-SHA-256.
    w.write_all(header.as_bytes()).await?;
    let mut p = StreamParser::new(BufReader::new(rd), Limits::default());
    expect_header(&mut p).await?;
    let features = next_stanza(&mut p).await?;
    let offered = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| m.children().any(|c| c.text_content() == "SCRAM-SHA-256"))
        .unwrap_or(false);
    if !offered {
        bail!("SCRAM-SHA-256 not offered");
    }
    let mut scram = ScramClient::new(ScramHash::Sha256, &username, &args.password);
    let first = STANDARD.encode(scram.client_first());
    send(
        &mut w,
        &format!(
            "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{first}</auth>",
            ns::SASL
        ),
    )
    .await?;
    let challenge = sasl_step(&mut p, "challenge").await?;
    // PBKDF2 over the account's iterations: keep it off the async workers.
    let (scram, reply) = tokio::task::spawn_blocking(move || {
        let r = scram.client_final(&challenge);
        (scram, r)
    })
    .await?;
    let reply = reply.map_err(|e| anyhow!("SCRAM: {e:?}"))?;
    send(
        &mut w,
        &format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL,
            STANDARD.encode(reply)
        ),
    )
    .await?;
    let el = next_stanza(&mut p).await?;
    let server_final = sasl_data(&el)?;
    if el.is("challenge", ns::SASL) {
        // Server-final sent as a challenge (RFC 6120 §6.4.4 allows either form).
        send(&mut w, &format!("<response xmlns='{}'/>", ns::SASL)).await?;
        let ok = next_stanza(&mut p).await?;
        if !ok.is("success", ns::SASL) {
            bail!("SASL: expected <success/>, got {}", ok.to_xml(ns::CLIENT));
        }
    } else if !el.is("success", ns::SASL) {
        bail!("SASL failed: {}", el.to_xml(ns::CLIENT));
    }
    scram
        .verify_server_final(&server_final)
        .map_err(|e| anyhow!("server signature: {e:?}"))?;

    // Restarted stream: bind, presence.
    w.write_all(header.as_bytes()).await?;
    let mut p = StreamParser::new(p.into_inner(), Limits::default());
    expect_header(&mut p).await?;
    let features = next_stanza(&mut p).await?;
    if features.get_child("bind", ns::BIND).is_none() {
        bail!("server offers no resource binding");
    }
    send(
        &mut w,
        &format!(
            "<iq type='set' id='bind1'><bind xmlns='{}'/></iq>",
            ns::BIND
        ),
    )
    .await?;
    let res = next_stanza(&mut p).await?;
    let jid = res
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(|j| j.text_content())
        .filter(|_| res.get_attr("type") == Some("result"))
        .ok_or_else(|| anyhow!("bind failed: {}", res.to_xml(ns::CLIENT)))?;
    send(&mut w, "<presence/>").await?;
    Ok(Session {
        jid,
        parser: p,
        writer: w,
    })
}

/// Writes one piece of XML.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, xml: &str) -> Result<()> {
    w.write_all(xml.as_bytes()).await?;
    Ok(())
}

/// Reads the server's stream header.
async fn expect_header<R: tokio::io::AsyncBufRead + Unpin>(p: &mut StreamParser<R>) -> Result<()> {
    match p.next().await? {
        StreamEvent::Header(_) => Ok(()),
        StreamEvent::Stanza(el) => bail!("expected a stream header, got <{}>", el.name()),
        StreamEvent::Close => bail!("stream closed"),
    }
}

/// Reads the next stanza; a stream error or close is an error.
async fn next_stanza<R: tokio::io::AsyncBufRead + Unpin>(
    p: &mut StreamParser<R>,
) -> Result<Element> {
    match p.next().await? {
        StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
            bail!("stream error: {}", el.to_xml(ns::CLIENT))
        }
        StreamEvent::Stanza(el) => Ok(el),
        StreamEvent::Header(_) => bail!("unexpected stream header"),
        StreamEvent::Close => bail!("stream closed"),
    }
}

/// Reads a SASL element named `name` and returns its decoded payload.
async fn sasl_step<R: tokio::io::AsyncBufRead + Unpin>(
    p: &mut StreamParser<R>,
    name: &str,
) -> Result<Vec<u8>> {
    let el = next_stanza(p).await?;
    if !el.is(name, ns::SASL) {
        bail!("SASL: expected <{name}/>, got {}", el.to_xml(ns::CLIENT));
    }
    sasl_data(&el)
}

/// Decodes the base64 payload of a SASL element (`=` or empty means no data).
fn sasl_data(el: &Element) -> Result<Vec<u8>> {
    let text = el.text_content();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    Ok(STANDARD.decode(text)?)
}

/// A rustls client configuration trusting exactly the certificates in `pem`.
fn client_tls(pem: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(pem).with_context(|| format!("reading {}", pem.display()))?
    {
        roots.add(c.with_context(|| format!("parsing {}", pem.display()))?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", pem.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Reads VmRSS and utime+stime of `/proc/<pid>` (`pid` may be `self`).
fn proc_sample(pid: &str, ticks_per_sec: u64) -> Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(ProcSample {
        rss_kib,
        cpu_secs: ticks as f64 / ticks_per_sec as f64,
    })
}

/// Clock ticks per second for /proc CPU times (`getconf CLK_TCK`, else the usual 100).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The `q` quantile of sorted durations (zero when empty).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rounds to `digits` decimals (for the JSON line).
fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
