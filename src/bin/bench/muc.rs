//! The `muc` scenario of `oxpecker-bench`: one room on `conference.<domain>`, `N` occupants
//! joining one after another, then `M` senders sending groupchat messages in rounds.
//!
//! Reports the wall time of the last join (until the newcomer has its own presence, and until
//! every occupant has the newcomer's), the server CPU per join averaged over the last (up to)
//! 100 joins (each costs O(occupants) presence copies: the room's presences to the newcomer and
//! the newcomer's to everyone else; each join is waited for until all of them have arrived, so
//! the window holds exactly those joins' work), and the server CPU per delivered occupant copy
//! while every occupant receives each message.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::io::{AsyncWriteExt, WriteHalf};

use super::{ProcSample, Shared, Tls, proc_sample};

/// What the scenario measured.
pub struct MucFigures {
    /// Occupants that joined.
    pub occupants: usize,
    /// Wall time of the last join (presence sent → own presence back), ms.
    pub last_join_ms: f64,
    /// Wall time of the last join until every other occupant had the newcomer's presence, ms.
    pub last_join_everyone_ms: f64,
    /// Server CPU per join over the last joins, ms.
    pub server_ms_per_join: Option<f64>,
    /// Copies delivered in the message phase.
    pub copies: u64,
    /// Server CPU per delivered copy, µs.
    pub server_us_per_copy: Option<f64>,
    /// Copies per second in the message phase.
    pub copies_per_sec: f64,
    /// How the server's CPU and writes split, over the measured joins.
    pub join_cost: Option<Cost>,
    /// How the server's CPU and writes split, over the message phase.
    pub copy_cost: Option<Cost>,
}

/// The server's CPU (user and kernel) and `write` system calls between two samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    /// User CPU, seconds.
    pub user_secs: f64,
    /// Kernel CPU, seconds.
    pub sys_secs: f64,
    /// `write`/`writev` system calls (`syscw` of /proc/<pid>/io).
    pub writes: u64,
}

impl Cost {
    /// Samples the process now (utime, stime of /proc/<pid>/stat; syscw of /proc/<pid>/io).
    fn sample(pid: u32, tck: u64) -> Result<Cost> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> f64 {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0) as f64
                / tck.max(1) as f64
        };
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
        let writes = io
            .lines()
            .find_map(|l| l.strip_prefix("syscw:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Cost {
            user_secs: ticks(11),
            sys_secs: ticks(12),
            writes,
        })
    }

    /// What happened from `self` to `later`.
    fn until(self, later: Cost) -> Cost {
        Cost {
            user_secs: later.user_secs - self.user_secs,
            sys_secs: later.sys_secs - self.sys_secs,
            writes: later.writes.saturating_sub(self.writes),
        }
    }

    /// `per` operations: "K % kernel, W writes per op".
    pub fn describe(&self, per: u64, what: &str) -> String {
        let all = self.user_secs + self.sys_secs;
        let kernel = if all > 0.0 {
            100.0 * self.sys_secs / all
        } else {
            0.0
        };
        format!(
            "{kernel:.0} % of it in the kernel, {:.2} write calls per {what}",
            self.writes as f64 / per.max(1) as f64
        )
    }
}

async fn wait_until(
    counter: &std::sync::atomic::AtomicU64,
    at_least: u64,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::SeqCst) < at_least {
        if Instant::now() > deadline {
            bail!(
                "timed out waiting ({} of {at_least})",
                counter.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// How to run the scenario.
pub struct MucPlan<'a> {
    /// The accounts' domain (the room is on `conference.<domain>`).
    pub domain: &'a str,
    /// Occupants that send.
    pub senders: usize,
    /// Messages per sender.
    pub rounds: u64,
    /// The server's pid, to read its CPU time.
    pub pid: Option<u32>,
    /// Clock ticks per second of /proc times.
    pub tck: u64,
    /// How long any one wait may take.
    pub limit: Duration,
}

/// Runs the scenario over `writers` (their readers count into `shared`).
pub async fn run(
    writers: &mut [WriteHalf<Tls>],
    shared: &Arc<Shared>,
    plan: MucPlan<'_>,
) -> Result<MucFigures> {
    let MucPlan {
        domain,
        senders,
        rounds,
        pid,
        tck,
        limit,
    } = plan;
    let sample = |p: Option<u32>| -> Result<Option<ProcSample>> {
        p.map(|p| proc_sample(&p.to_string(), tck)).transpose()
    };
    let room = format!("bench@conference.{domain}");
    let n = writers.len();
    let base_joined = shared.joined.load(Ordering::SeqCst);
    let base_presences = shared.occupant_presences.load(Ordering::SeqCst);
    let measure_from = n.saturating_sub(100);
    let mut cpu_before = None;
    let mut cost_before = None;
    let mut last_join_ms = 0.0;
    let mut last_join_everyone_ms = 0.0;
    for (i, w) in writers.iter_mut().enumerate() {
        if i == measure_from {
            cpu_before = sample(pid)?;
            cost_before = pid.map(|p| Cost::sample(p, tck)).transpose()?;
        }
        // The first join creates an instant room (no MUC payload: nothing to configure).
        let join = if i == 0 {
            format!("<presence to='{room}/o{i}'/>")
        } else {
            format!(
                "<presence to='{room}/o{i}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
            )
        };
        let t0 = Instant::now();
        w.write_all(join.as_bytes()).await?;
        wait_until(&shared.joined, base_joined + i as u64 + 1, limit).await?;
        last_join_ms = t0.elapsed().as_secs_f64() * 1000.0;
        // Join k (from 0) sends k presences to the newcomer and one to each of the k others:
        // after join i, i(i+1) in all.
        let told = (i as u64).saturating_mul(i as u64 + 1);
        wait_until(&shared.occupant_presences, base_presences + told, limit).await?;
        last_join_everyone_ms = t0.elapsed().as_secs_f64() * 1000.0;
    }
    let cpu_after = sample(pid)?;
    let cost_after = pid.map(|p| Cost::sample(p, tck)).transpose()?;
    let join_cost = cost_before.zip(cost_after).map(|(a, b)| a.until(b));
    let joins_measured = n - measure_from;
    let server_ms_per_join = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if joins_measured > 0 => {
            Some(1000.0 * (b.cpu_secs - a.cpu_secs) / joins_measured as f64)
        }
        _ => None,
    };
    // Messages: each round, every sender sends one; wait until every occupant has them all.
    let senders = senders.clamp(1, n.max(1));
    let base = shared.received.load(Ordering::SeqCst);
    let before = sample(pid)?;
    let cost_before = pid.map(|p| Cost::sample(p, tck)).transpose()?;
    let started = Instant::now();
    for r in 0..rounds {
        for (s, w) in writers.iter_mut().take(senders).enumerate() {
            let msg = format!(
                "<message to='{room}' type='groupchat' id='g{r}-{s}'><body>muc bench {r} {s}</body></message>"
            );
            w.write_all(msg.as_bytes()).await?;
        }
        let want = base + (r + 1) * (senders * n) as u64;
        wait_until(&shared.received, want, limit).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = sample(pid)?;
    let cost_after = pid.map(|p| Cost::sample(p, tck)).transpose()?;
    let copy_cost = cost_before.zip(cost_after).map(|(a, b)| a.until(b));
    let copies = shared.received.load(Ordering::SeqCst) - base;
    let server_us_per_copy = match (before, after) {
        (Some(a), Some(b)) if copies > 0 => Some(1e6 * (b.cpu_secs - a.cpu_secs) / copies as f64),
        _ => None,
    };
    Ok(MucFigures {
        occupants: n,
        last_join_ms,
        last_join_everyone_ms,
        server_ms_per_join,
        copies,
        server_us_per_copy,
        copies_per_sec: copies as f64 / secs.max(1e-9),
        join_cost,
        copy_cost,
    })
}

/// Whether a presence is another occupant's MUC presence (muc#user, available, without the
/// self-presence's status 110).
pub fn is_occupant_presence(el: &oxpecker::xmpp::Element) -> bool {
    el.get_attr("type").is_none()
        && el
            .get_child("x", "http://jabber.org/protocol/muc#user")
            .is_some_and(|x| {
                !x.children()
                    .any(|s| s.name() == "status" && s.get_attr("code") == Some("110"))
            })
}
