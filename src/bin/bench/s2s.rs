//! The `s2s` scenario of `oxpecker-bench`: two servers joined by federation (`--addr`/`--domain`
//! the first, `--s2s-addr`/`--s2s-domain` the second). Run instead of the other phases.
//!
//! `--clients` sessions log into the first server and `--clients / 2` into the second. Half of
//! the first server's sessions send; two rounds of `--messages` each, with `--window` messages
//! per sender in flight, measure the same senders:
//! - **c2s**: to the other half of the first server's sessions (routed locally);
//! - **s2s**: to the second server's sessions, over the servers' one s2s stream.
//!
//! Every message carries its send time, so receivers give latency percentiles; with `--cpu`
//! the servers' utime+stime per delivered message is reported for each server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use oxpecker::xmpp::element::escape;
use oxpecker::xmpp::ns;
use oxpecker::xmpp::parser::StreamEvent;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use super::{Args, Session, Tls, TlsParser, client_tls, login, ms, percentile, proc_sample};

/// The second server of the `s2s` scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct S2sArgs {
    /// Run the `s2s` scenario against this second server's c2s (STARTTLS) address.
    #[arg(long)]
    pub s2s_addr: Option<String>,
    /// Domain of the second server's accounts (also its TLS server name).
    #[arg(long, default_value = "b.example")]
    pub s2s_domain: String,
    /// PEM file with the certificate(s) to trust for the second server.
    #[arg(long)]
    pub s2s_cert: Option<PathBuf>,
    /// The second server's process id, for its CPU time (with --cpu).
    #[arg(long)]
    pub s2s_pid: Option<u32>,
}

/// What the readers share with the rounds.
#[derive(Default)]
pub(super) struct Tally {
    /// Bench messages received in this round.
    received: AtomicU64,
    /// Messages to receive in this round.
    target: AtomicU64,
    /// Error stanzas received.
    pub(super) errors: AtomicU64,
    /// Notified when `received` reaches `target`.
    done: Notify,
    /// Send-to-receive latencies of this round.
    latencies: Mutex<Vec<Duration>>,
}

/// A receiving session: its JID and the count of bench messages it received.
pub(super) type Receiver = (String, watch::Receiver<u64>);

/// One round's figures.
pub(super) struct Round {
    /// Messages delivered.
    pub(super) received: u64,
    /// Wall time of the round.
    pub(super) secs: f64,
    /// Send-to-receive latency, median.
    pub(super) p50_ms: f64,
    /// Send-to-receive latency, 99th percentile.
    pub(super) p99_ms: f64,
    /// Server CPU per message (µs), per server in the order of the pids given to [`measure`].
    pub(super) cpu_us: Vec<Option<f64>>,
}

/// Runs the scenario.
pub async fn run(args: Arc<Args>) -> Result<()> {
    let addr_b = args
        .s2s
        .s2s_addr
        .clone()
        .context("--s2s-addr is required")?;
    let cert_a = args.cert.clone().context("--cert is required")?;
    let cert_b = args
        .s2s
        .s2s_cert
        .clone()
        .context("--s2s-cert is required")?;
    let senders = args.clients / 2;
    if senders == 0 {
        bail!("--clients must be at least 2");
    }
    let mut args_b = (*args).clone();
    args_b.addr = addr_b;
    args_b.domain = args.s2s.s2s_domain.clone();
    let (tls_a, tls_b) = (
        TlsConnector::from(client_tls(&cert_a)?),
        TlsConnector::from(client_tls(&cert_b)?),
    );
    println!(
        "oxpecker-bench s2s: {senders} senders on {} ({}), receivers on it and on {} ({}), {} messages per round, window {}",
        args.addr, args.domain, args_b.addr, args_b.domain, args.messages, args.window
    );
    let mut a = Vec::with_capacity(senders * 2);
    for i in 0..senders * 2 {
        a.push(
            login(&args, &tls_a, i)
                .await
                .with_context(|| format!("login {i} on A"))?,
        );
    }
    let mut b = Vec::with_capacity(senders);
    for i in 0..senders {
        b.push(
            login(&args_b, &tls_b, i)
                .await
                .with_context(|| format!("login {i} on B"))?,
        );
    }
    println!("logins:  {} on A, {} on B", a.len(), b.len());

    let epoch = Instant::now();
    let tally = Arc::new(Tally::default());
    let receivers_a = a.split_off(senders);
    let (mut writers, _) = start_readers(a, &tally, epoch);
    let c2s_to = start_readers(receivers_a, &tally, epoch);
    let s2s_to = start_readers(b, &tally, epoch);
    let pids = [args.server_pid, args.s2s.s2s_pid].map(|p| p.filter(|_| args.cpu));
    let pids = &pids[..];

    // A few messages over s2s first, so that the s2s stream is established before measuring.
    measure(
        &args,
        &tally,
        &mut writers,
        &s2s_to.1,
        senders as u64,
        pids,
        epoch,
    )
    .await?;
    let c2s = measure(
        &args,
        &tally,
        &mut writers,
        &c2s_to.1,
        args.messages,
        pids,
        epoch,
    )
    .await?;
    let s2s = measure(
        &args,
        &tally,
        &mut writers,
        &s2s_to.1,
        args.messages,
        pids,
        epoch,
    )
    .await?;
    let errors = tally.errors.load(Ordering::SeqCst);
    let mut json = serde_json::Map::new();
    for (name, r) in [("c2s", &c2s), ("s2s", &s2s)] {
        let on = |i: usize| r.cpu_us.get(i).copied().flatten();
        let rate = r.received as f64 / r.secs;
        let cpu = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} µs"));
        println!(
            "{name}:     {} messages in {:.2} s -> {rate:.0} msgs/s, latency p50 {:.2} ms, p99 {:.2} ms; \
             server CPU per message: A {}, B {}",
            r.received,
            r.secs,
            r.p50_ms,
            r.p99_ms,
            cpu(on(0)),
            cpu(on(1)),
        );
        json.insert(
            name.to_string(),
            serde_json::json!({
                "messages": r.received,
                "secs": super::round(r.secs, 3),
                "msgs_per_sec": super::round(rate, 0),
                "p50_ms": super::round(r.p50_ms, 2),
                "p99_ms": super::round(r.p99_ms, 2),
                "server_a_us_per_msg": on(0).map(|v| super::round(v, 1)),
                "server_b_us_per_msg": on(1).map(|v| super::round(v, 1)),
            }),
        );
    }
    if errors > 0 {
        println!("         {errors} error stanzas received");
    }
    json.insert("scenario".into(), "s2s".into());
    json.insert("senders".into(), senders.into());
    json.insert("window".into(), args.window.into());
    json.insert("errors".into(), errors.into());
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}

/// Spawns a reader per session; returns the write halves and, per session, its JID and the
/// watch of messages it received.
pub(super) fn start_readers(
    sessions: Vec<Session>,
    tally: &Arc<Tally>,
    epoch: Instant,
) -> (Vec<WriteHalf<Tls>>, Vec<Receiver>) {
    let mut writers = Vec::with_capacity(sessions.len());
    let mut targets = Vec::with_capacity(sessions.len());
    for s in sessions {
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(reader(s.parser, tx, tally.clone(), epoch));
        writers.push(s.writer);
        targets.push((s.jid, rx));
    }
    (writers, targets)
}

/// Sender `i` sends `total / senders` messages to `to[i]`; waits until all arrived. With
/// `pids`, each server's CPU time per delivered message is measured.
pub(super) async fn measure(
    args: &Args,
    tally: &Arc<Tally>,
    writers: &mut Vec<WriteHalf<Tls>>,
    to: &[Receiver],
    total: u64,
    pids: &[Option<u32>],
    epoch: Instant,
) -> Result<Round> {
    let tck = super::clock_ticks();
    let per = total / writers.len() as u64;
    let total = per * writers.len() as u64;
    tally.received.store(0, Ordering::SeqCst);
    tally.target.store(total, Ordering::SeqCst);
    if let Ok(mut l) = tally.latencies.lock() {
        l.clear();
    }
    let cpu = |p: Option<u32>| p.and_then(|p| proc_sample(&p.to_string(), tck).ok());
    let before: Vec<_> = pids.iter().map(|&p| cpu(p)).collect();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (w, (jid, acked)) in writers.drain(..).zip(to) {
        tasks.spawn(sender(
            w,
            jid.clone(),
            acked.clone(),
            per,
            args.window,
            epoch,
        ));
    }
    // A permit left from an earlier round only makes the loop look again.
    let wait = async {
        while tally.received.load(Ordering::SeqCst) < total {
            tally.done.notified().await;
        }
    };
    let in_time = tokio::time::timeout(Duration::from_secs(args.phase_timeout), wait)
        .await
        .is_ok();
    let secs = started.elapsed().as_secs_f64();
    let after: Vec<_> = pids.iter().map(|&p| cpu(p)).collect();
    if !in_time {
        tasks.abort_all();
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(w)) => writers.push(w),
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !in_time {
        bail!(
            "round timed out: {} of {total} delivered",
            tally.received.load(Ordering::SeqCst)
        );
    }
    let received = tally.received.load(Ordering::SeqCst);
    let mut lat = tally
        .latencies
        .lock()
        .map_err(|_| anyhow!("latencies poisoned"))?
        .clone();
    lat.sort();
    let per_msg = |(a, b): (&Option<super::ProcSample>, &Option<super::ProcSample>)| match (a, b) {
        (Some(a), Some(b)) if received > 0 => {
            Some(1e6 * (b.cpu_secs - a.cpu_secs) / received as f64)
        }
        _ => None,
    };
    Ok(Round {
        received,
        secs,
        p50_ms: ms(percentile(&lat, 0.50)),
        p99_ms: ms(percentile(&lat, 0.99)),
        cpu_us: before.iter().zip(&after).map(per_msg).collect(),
    })
}

/// Sends `count` chat messages stamped with their send time to `to`, keeping at most `window`
/// not yet received.
async fn sender(
    mut writer: WriteHalf<Tls>,
    to: String,
    mut acked: watch::Receiver<u64>,
    count: u64,
    window: u64,
    epoch: Instant,
) -> Result<WriteHalf<Tls>> {
    let to = escape(&to, true);
    let window = window.max(1);
    let base = *acked.borrow();
    for n in 0..count {
        while n.saturating_sub(acked.borrow_and_update().saturating_sub(base)) >= window {
            acked
                .changed()
                .await
                .map_err(|_| anyhow!("receiver's reader ended"))?;
        }
        let t = epoch.elapsed().as_nanos();
        let msg =
            format!("<message to=\"{to}\" type=\"chat\" id=\"s{n}\"><body>t{t}</body></message>");
        writer.write_all(msg.as_bytes()).await?;
    }
    Ok(writer)
}

/// Reads a session's stream: bench messages are counted and their latency kept.
async fn reader(
    mut parser: TlsParser,
    count: watch::Sender<u64>,
    tally: Arc<Tally>,
    epoch: Instant,
) {
    while let Ok(ev) = parser.next().await {
        let el = match ev {
            StreamEvent::Stanza(el) => el,
            StreamEvent::Header(_) => continue,
            StreamEvent::Close => return,
        };
        if el.get_attr("type") == Some("error") {
            tally.errors.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let sent = el
            .get_child("body", ns::CLIENT)
            .and_then(|b| b.text_content().strip_prefix('t')?.parse::<u128>().ok());
        let Some(sent) = sent.filter(|_| el.name() == "message") else {
            continue;
        };
        let now = epoch.elapsed().as_nanos();
        let latency =
            Duration::from_nanos(u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX));
        if let Ok(mut l) = tally.latencies.lock() {
            l.push(latency);
        }
        count.send_modify(|n| *n += 1);
        let got = tally.received.fetch_add(1, Ordering::SeqCst) + 1;
        if got == tally.target.load(Ordering::SeqCst) {
            tally.done.notify_one();
        }
    }
}
