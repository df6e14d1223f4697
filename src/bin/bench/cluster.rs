//! The `cluster` scenario of `oxpecker-bench`: the nodes of one cluster (`--cluster-addrs`,
//! serving the same `--domain` from one store, trusting the same `--cert`). Run instead of the
//! other phases.
//!
//! `--clients` sessions are split evenly over the N nodes: node `k` gets the accounts
//! `PREFIX{k·per}..`, logged in with `--concurrency` logins in flight, one node after the other,
//! which gives logins/s (and, with `--cpu`, server CPU per login) per node. The first half of
//! each node's sessions send, the second half receive. After `--settle-ms` (so that every node's
//! copy of the session directory has every session) and a warm-up of one message per sender
//! across nodes, two rounds of `--messages` each, with `--window` messages per sender in flight,
//! measure the same senders:
//! - **same-node**: each node's senders to receivers on their own node;
//! - **cross-node**: each node's senders to the receivers on the next node (k → k+1 mod N),
//!   so every message is forwarded once over NATS.
//!
//! Every message carries its send time (latency p50/p99); with `--cpu` and `--cluster-pids`, the
//! utime+stime of every node per delivered message, and their sum, is reported for each round
//! (and, with `--nats-pid`, the NATS server's beside it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use super::s2s::{Receiver, Round, Tally, measure, start_readers};
use super::{Args, Session, client_tls, clock_ticks, login, proc_sample, round};

/// The nodes of the `cluster` scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Run the `cluster` scenario against these nodes' c2s (STARTTLS) addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub cluster_addrs: Vec<String>,
    /// The nodes' process ids, comma-separated in the order of `--cluster-addrs` (for --cpu).
    #[arg(long, value_delimiter = ',')]
    pub cluster_pids: Vec<u32>,
    /// The NATS server's process id: its CPU per message is reported beside the nodes' (--cpu).
    #[arg(long)]
    pub nats_pid: Option<u32>,
}

/// One node's login phase.
struct Logins {
    /// Logins per second.
    rate: f64,
    /// Server CPU per login on this node (ms), with --cpu.
    cpu_ms: Option<f64>,
}

/// Runs the scenario.
pub async fn run(args: Arc<Args>) -> Result<()> {
    let addrs = &args.cluster.cluster_addrs;
    let nodes = addrs.len();
    let per = args.clients / nodes.max(1);
    if nodes < 2 || per < 2 {
        bail!("the cluster scenario needs at least 2 nodes and 2 clients per node");
    }
    let pids: Vec<Option<u32>> = (0..nodes)
        .map(|k| args.cluster.cluster_pids.get(k).copied())
        .map(|p| p.filter(|_| args.cpu))
        .collect();
    if args.cpu && pids.iter().any(Option::is_none) {
        bail!("--cpu needs one --cluster-pids entry per node");
    }
    // The nodes first, then NATS (not part of the nodes' sum).
    let mut measured = pids.clone();
    measured.push(args.cluster.nats_pid.filter(|_| args.cpu));
    let cert = args.cert.clone().context("--cert is required")?;
    let tls = TlsConnector::from(client_tls(&cert)?);
    let senders = per / 2;
    println!(
        "oxpecker-bench cluster: {nodes} nodes ({}), {per} sessions per node ({senders} send), \
         {} messages per round, window {}, concurrency {}",
        addrs.join(", "),
        args.messages,
        args.window,
        args.concurrency
    );

    let mut logins = Vec::with_capacity(nodes);
    let mut sessions = Vec::with_capacity(nodes);
    for (k, addr) in addrs.iter().enumerate() {
        let mut on_node = (*args).clone();
        on_node.addr = addr.clone();
        let first = k * per;
        let (s, l) = login_node(Arc::new(on_node), &tls, first..first + per, pids[k]).await?;
        let cpu = l
            .cpu_ms
            .map_or(String::new(), |v| format!(", server CPU {v:.2} ms/login"));
        println!(
            "logins:  node {} ({addr}): {per} in {:.1}/s{cpu}",
            k + 1,
            l.rate
        );
        logins.push(l);
        sessions.push(s);
    }

    let epoch = Instant::now();
    let tally = Arc::new(Tally::default());
    let mut writers = Vec::with_capacity(senders * nodes);
    let mut receivers: Vec<Vec<Receiver>> = Vec::with_capacity(nodes);
    for mut s in sessions {
        let rx = s.split_off(senders);
        writers.extend(start_readers(s, &tally, epoch).0);
        receivers.push(start_readers(rx, &tally, epoch).1);
    }
    let same: Vec<Receiver> = receivers.iter().flatten().cloned().collect();
    let next: Vec<Receiver> = (0..nodes)
        .flat_map(|k| receivers[(k + 1) % nodes].iter().cloned())
        .collect();
    // Every node's directory must list every session before messages cross.
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let warm = writers.len() as u64;
    measure(&args, &tally, &mut writers, &next, warm, &measured, epoch).await?;
    let mut same_node = measure(
        &args,
        &tally,
        &mut writers,
        &same,
        args.messages,
        &measured,
        epoch,
    )
    .await?;
    let mut cross_node = measure(
        &args,
        &tally,
        &mut writers,
        &next,
        args.messages,
        &measured,
        epoch,
    )
    .await?;
    let nats_same = same_node.cpu_us.pop().flatten();
    let nats_cross = cross_node.cpu_us.pop().flatten();

    let errors = tally.errors.load(std::sync::atomic::Ordering::SeqCst);
    let mut json = serde_json::Map::new();
    for (name, r, nats) in [
        ("same_node", &same_node, nats_same),
        ("cross_node", &cross_node, nats_cross),
    ] {
        let rate = r.received as f64 / r.secs;
        let total = total_cpu(r);
        let per_node: Vec<String> = r
            .cpu_us
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| format!("n{} {v:.1}", k + 1)))
            .collect();
        let cpu = total.map_or("n/a".to_string(), |t| {
            format!("{t:.1} µs ({})", per_node.join(", "))
        });
        let nats_cpu = nats.map_or(String::new(), |v| format!("; nats-server {v:.1} µs"));
        println!(
            "{name}: {} messages in {:.2} s -> {rate:.0} msgs/s, latency p50 {:.2} ms, p99 {:.2} ms; \
             server CPU per message, all nodes: {cpu}{nats_cpu}",
            r.received, r.secs, r.p50_ms, r.p99_ms,
        );
        json.insert(
            name.to_string(),
            serde_json::json!({
                "messages": r.received,
                "secs": round(r.secs, 3),
                "msgs_per_sec": round(rate, 0),
                "p50_ms": round(r.p50_ms, 2),
                "p99_ms": round(r.p99_ms, 2),
                "server_us_per_msg": total.map(|v| round(v, 1)),
                "node_us_per_msg": r.cpu_us.iter().map(|v| v.map(|v| round(v, 1))).collect::<Vec<_>>(),
                "nats_us_per_msg": nats.map(|v| round(v, 1)),
            }),
        );
    }
    if let (Some(same), Some(cross)) = (total_cpu(&same_node), total_cpu(&cross_node))
        && same > 0.0
    {
        println!(
            "ratio:   cross-node / same-node server CPU per message = {:.2}",
            cross / same
        );
        json.insert("cpu_ratio".into(), round(cross / same, 2).into());
    }
    if errors > 0 {
        println!("         {errors} error stanzas received");
    }
    json.insert("scenario".into(), "cluster".into());
    json.insert("nodes".into(), nodes.into());
    json.insert("sessions_per_node".into(), per.into());
    json.insert("window".into(), args.window.into());
    json.insert("errors".into(), errors.into());
    json.insert(
        "logins_per_sec".into(),
        logins
            .iter()
            .map(|l| round(l.rate, 1))
            .collect::<Vec<_>>()
            .into(),
    );
    json.insert(
        "server_ms_per_login".into(),
        logins
            .iter()
            .map(|l| l.cpu_ms.map(|v| round(v, 2)))
            .collect::<Vec<_>>()
            .into(),
    );
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}

/// The CPU per message summed over every node, when every node was measured.
fn total_cpu(r: &Round) -> Option<f64> {
    r.cpu_us.iter().copied().sum()
}

/// Logs accounts `range` into one node (`args.addr`), `--concurrency` at a time; every login
/// must succeed. Returns the sessions in account order and the phase's figures.
async fn login_node(
    args: Arc<Args>,
    tls: &TlsConnector,
    range: std::ops::Range<usize>,
    pid: Option<u32>,
) -> Result<(Vec<Session>, Logins)> {
    let tck = clock_ticks();
    let cpu = || pid.map(|p| proc_sample(&p.to_string(), tck)).transpose();
    let before = cpu()?;
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in range.clone() {
        let permit = sem.clone().acquire_owned().await?;
        let (args, tls) = (args.clone(), tls.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let r = tokio::time::timeout(Duration::from_secs(60), login(&args, &tls, i)).await;
            (
                i,
                r.unwrap_or_else(|_| Err(anyhow!("login timed out after 60 s"))),
            )
        });
    }
    let mut sessions: Vec<Option<Session>> = range.clone().map(|_| None).collect();
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            let (i, s) = r?;
            let s = s.with_context(|| format!("login {}{i} on {}", args.user_prefix, args.addr))?;
            if let Some(slot) = sessions.get_mut(i - range.start) {
                *slot = Some(s);
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(args.phase_timeout), collect)
        .await
        .map_err(|_| anyhow!("logins on {} exceeded {} s", args.addr, args.phase_timeout))??;
    let secs = started.elapsed().as_secs_f64();
    let after = cpu()?;
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    let n = sessions.len() as f64;
    let cpu_ms = match (before, after) {
        (Some(a), Some(b)) if n > 0.0 => Some(1000.0 * (b.cpu_secs - a.cpu_secs) / n),
        _ => None,
    };
    Ok((
        sessions,
        Logins {
            rate: n / secs,
            cpu_ms,
        },
    ))
}
