//! The `--store-bench DIR` scenario: archive appends on each embedded engine, in-process, on
//! the MAM module's path (`append_lazy` with generated ids, one writer thread batching), then
//! one flush; prints appends/s and this process's CPU per append, then the time of the
//! newest page of one user. `--messages` appends over `--clients` users, in `DIR/sled` and
//! `DIR/fjall` (which must not exist yet).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use oxpecker::storage::Store;
use serde_json::json;

/// User plus system CPU seconds of this process (`/proc/self/stat`).
fn cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0.0) };
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

async fn run(name: &str, store: Store, appends: usize, users: usize) -> Result<()> {
    let archive = store.archive("localhost", "archive");
    let body = "x".repeat(120);
    let (cpu0, t0) = (cpu_secs()?, Instant::now());
    for n in 0..appends {
        let user = format!("user{}", n % users);
        let with = format!("user{}@localhost", (n + 1) % users);
        let value =
            json!({"stanza": format!("<message to='{with}'><body>{body}</body></message>")});
        archive
            .append_lazy(&user, None, 1_700_000_000, &with, value)
            .await?;
    }
    store.flush().await?;
    let (cpu, wall) = (cpu_secs()? - cpu0, t0.elapsed().as_secs_f64());
    let n = appends as f64;
    println!(
        "{name:>6}: {appends} appends in {wall:.2} s = {:.0}/s, {:.2} µs CPU per append",
        n / wall,
        cpu * 1e6 / n
    );
    let q = oxpecker::storage::ArchiveQuery {
        limit: Some(50),
        reverse: true,
        total: true,
        ..Default::default()
    };
    let t = Instant::now();
    let page = archive.find("user0", &q).await?;
    println!(
        "{name:>6}: newest page of user0 ({} items, total {:?}) in {:.2} ms",
        page.items.len(),
        page.total,
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Runs the scenario for sled, then fjall, in fresh directories under `dir`.
pub async fn run_all(dir: &Path, appends: usize, users: usize) -> Result<()> {
    let users = users.max(1);
    for engine in ["sled", "fjall"] {
        let path = dir.join(engine);
        if path.exists() {
            bail!("{} exists; give a fresh directory", path.display());
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let store = match engine {
            "sled" => Store::open_sled(&path, 64 << 20)?,
            _ => Store::open_fjall(&path, 64 << 20)?,
        };
        run(engine, store, appends, users).await?;
    }
    Ok(())
}
