//! The server process's own resource use, read from Linux procfs (`/proc/self/*`): CPU time,
//! resident memory, open and allowed file descriptors, start time. Elsewhere every value is
//! `None`. The heap in use comes from the allocator ([`heap_bytes`]).

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on every Linux ABI we run on).
const TICKS_PER_SEC: f64 = 100.0;
/// The page size `/proc/self/statm` counts in (4 KiB on the platforms we run on).
const PAGE_SIZE: u64 = 4096;

/// A snapshot of the process's resource use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// File descriptors open now.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current values from procfs.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        ProcessStats {
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / TICKS_PER_SEC),
            resident_bytes: resident_bytes(),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| parse_max_fds(&s)),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / TICKS_PER_SEC),
        }
    }
}

/// Bytes the program has allocated and not freed, as jemalloc (the global allocator, see
/// `ALLOCATOR` in lib.rs) counts them in its `stats.allocated`, read through a safe call after
/// refreshing its statistics; `None` when it cannot tell (and in fuzz builds, which run on the
/// system allocator). RSS ([`resident_bytes`]) is what the process costs the machine.
pub fn heap_bytes() -> Option<u64> {
    #[cfg(not(fuzzing))]
    {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        let bytes = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
        u64::try_from(bytes).ok()
    }
    #[cfg(fuzzing)]
    None
}

/// Resident set size from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(PAGE_SIZE)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    cpu_ticks: u64,
    start_ticks: u64,
}

/// utime + stime (fields 14 and 15) and starttime (field 22) of `/proc/self/stat`; the command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
    })
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of the `Max open files` line of `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_procfs_texts() {
        let stat = "4242 (oxp (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 98765 1000000 2000";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764670000\nprocesses 5\n"),
            Some(1_764_670_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds("Max open files unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn heap_bytes_counts_what_is_allocated() {
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let during = heap_bytes().expect("jemalloc reports its allocations");
        assert!(during >= 64 << 20, "{during} bytes with 64 MiB held");
        drop(big);
    }

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = ProcessStats::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0));
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.max_fds.is_some_and(|n| n >= s.open_fds.unwrap_or(0)));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = s.start_time_seconds.unwrap_or_default();
        assert!(start > 1.0e9 && start <= now + 1.0, "{start} vs {now}");
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0));
    }
}
