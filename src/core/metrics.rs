//! Metrics: counter, gauge, histogram and summary families with labels, exposed in the
//! OpenMetrics text format at `GET /metrics`.
//!
//! Written here rather than with prometheus-client because modules need summaries and
//! re-registration across unload/reload (a family registered twice is reused), which that crate
//! does not offer. Counters and gauges are lock-free atomics; a series is resolved once and kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::sessions::Transport;
use crate::xmpp::stanza::Kind;

/// The kind of a metric family.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    /// A monotonically increasing total.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets (upper bounds).
    Histogram(Vec<f64>),
    /// Observations summarised as count and sum.
    Summary,
}

impl MetricKind {
    fn type_name(&self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram(_) => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

/// Default buckets for durations in seconds.
pub const TIME_BUCKETS: &[f64] = &[0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];
/// Default buckets for sizes in bytes.
pub const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// One labelled time series.
#[derive(Debug, Default)]
pub struct Series {
    value: AtomicU64,
    dist: Mutex<Dist>,
}

#[derive(Debug, Default)]
struct Dist {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Series {
    fn add(&self, v: f64) {
        let mut cur = self.value.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match self
                .value
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Adds one (counter or gauge).
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Adds `v` (counters ignore negative values).
    pub fn inc_by(&self, v: f64) {
        self.add(v);
    }

    /// Subtracts one (gauge).
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// Sets the value (gauge).
    pub fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The current value (counter or gauge).
    pub fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// Records an observation (histogram or summary).
    pub fn observe(&self, v: f64, bounds: &[f64]) {
        if let Ok(mut d) = self.dist.lock() {
            if d.buckets.len() != bounds.len() {
                d.buckets = vec![0; bounds.len()];
            }
            for (i, b) in bounds.iter().enumerate() {
                if v <= *b {
                    d.buckets[i] += 1;
                }
            }
            d.count += 1;
            d.sum += v;
        }
    }
}

/// A metric family: a name, a kind, label names and its series.
#[derive(Debug)]
pub struct Family {
    name: String,
    help: String,
    unit: Option<String>,
    kind: MetricKind,
    labels: Vec<String>,
    series: RwLock<HashMap<Vec<String>, Arc<Series>>>,
}

impl Family {
    /// The series for these label values (in label-name order), created on first use.
    pub fn with(&self, values: &[&str]) -> Arc<Series> {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        if let Ok(map) = self.series.read()
            && let Some(s) = map.get(&key)
        {
            return s.clone();
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }

    /// Records an observation on the series `values` (histogram or summary).
    pub fn observe(&self, values: &[&str], v: f64) {
        let bounds: &[f64] = match &self.kind {
            MetricKind::Histogram(b) => b,
            _ => &[],
        };
        self.with(values).observe(v, bounds);
    }

    /// Sets every series of this family to zero (gauges recounted from scratch).
    pub fn reset(&self) {
        if let Ok(map) = self.series.read() {
            for s in map.values() {
                s.set(0.0);
            }
        }
    }

    /// The family's kind.
    pub fn kind(&self) -> &MetricKind {
        &self.kind
    }
}

/// The registry of every metric family of a server.
#[derive(Debug, Default)]
pub struct Metrics {
    families: RwLock<BTreeMap<String, Arc<Family>>>,
}

/// Whether `name` is a valid metric or label name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or returns the existing) family `name`. A name registered again with a
    /// different kind or labels gets the existing family back unchanged.
    pub fn family(
        &self,
        name: &str,
        help: &str,
        unit: Option<&str>,
        kind: MetricKind,
        labels: &[&str],
    ) -> Arc<Family> {
        if let Ok(map) = self.families.read()
            && let Some(f) = map.get(name)
        {
            return f.clone();
        }
        let mut map = self.families.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    unit: unit.map(str::to_string),
                    kind,
                    labels: labels.iter().map(|s| s.to_string()).collect(),
                    series: RwLock::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// A counter family.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Arc<Family> {
        self.family(name, help, None, MetricKind::Counter, labels)
    }

    /// A gauge family.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Arc<Family> {
        self.family(name, help, None, MetricKind::Gauge, labels)
    }

    /// Renders every family in the OpenMetrics text format, ending with `# EOF`.
    pub fn render(&self) -> String {
        self.render_as(Format::OpenMetrics)
    }

    /// Renders every family in `format`.
    pub fn render_as(&self, format: Format) -> String {
        let open = format == Format::OpenMetrics;
        let mut out = String::new();
        let families: Vec<Arc<Family>> = self
            .families
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for f in families {
            // Prometheus text names a counter family after its `_total` sample.
            let head = if !open && f.kind == MetricKind::Counter {
                format!("{}_total", f.name)
            } else {
                f.name.clone()
            };
            let _ = writeln!(out, "# TYPE {} {}", head, f.kind.type_name());
            if let (Some(u), true) = (&f.unit, open) {
                let _ = writeln!(out, "# UNIT {} {}", f.name, u);
            }
            if !f.help.is_empty() {
                let _ = writeln!(out, "# HELP {} {}", head, escape_help(&f.help));
            }
            let mut series: Vec<(Vec<String>, Arc<Series>)> = f
                .series
                .read()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            series.sort_by(|a, b| a.0.cmp(&b.0));
            for (values, s) in series {
                let labels = render_labels(&f.labels, &values, None);
                match &f.kind {
                    MetricKind::Counter => {
                        let _ = writeln!(out, "{}_total{} {}", f.name, labels, num(s.get()));
                    }
                    MetricKind::Gauge => {
                        let _ = writeln!(out, "{}{} {}", f.name, labels, num(s.get()));
                    }
                    MetricKind::Histogram(bounds) => {
                        let d = s.dist.lock().map(|d| (d.buckets.clone(), d.count, d.sum));
                        let (buckets, count, sum) = d.unwrap_or_default();
                        for (i, b) in bounds.iter().enumerate() {
                            let le = render_labels(&f.labels, &values, Some(&num(*b)));
                            let c = buckets.get(i).copied().unwrap_or(0);
                            let _ = writeln!(out, "{}_bucket{} {}", f.name, le, c);
                        }
                        let inf = render_labels(&f.labels, &values, Some("+Inf"));
                        let _ = writeln!(out, "{}_bucket{} {}", f.name, inf, count);
                        let _ = writeln!(out, "{}_count{} {}", f.name, labels, count);
                        let _ = writeln!(out, "{}_sum{} {}", f.name, labels, num(sum));
                    }
                    MetricKind::Summary => {
                        let (count, sum) =
                            s.dist.lock().map(|d| (d.count, d.sum)).unwrap_or_default();
                        let _ = writeln!(out, "{}_count{} {}", f.name, labels, count);
                        let _ = writeln!(out, "{}_sum{} {}", f.name, labels, num(sum));
                    }
                }
            }
        }
        if open {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// Exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
    /// Prometheus text 0.0.4 (`text/plain; version=0.0.4`), for older scrapers and promtool.
    Prometheus,
}

fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(names: &[String], values: &[String], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// The server's own metrics (connections, stanzas, auth, HTTP, storage, process), resolved once.
#[derive(Debug)]
pub struct CoreMetrics {
    /// Open connections by type (c2s, c2s_direct_tls, c2s_websocket, c2s_bosh, http) and TLS state.
    pub connections: Arc<Family>,
    /// Client stanzas by host, kind and direction (in/out); counted through [`StanzaCounters`].
    pub stanzas: Arc<Family>,
    /// Authentication outcomes by mechanism and result.
    pub auth: Arc<Family>,
    /// HTTP requests by route and status.
    pub http_requests: Arc<Family>,
    /// HTTP request latency by route.
    pub http_latency: Arc<Family>,
    /// Storage write latency.
    pub storage_latency: Arc<Family>,
    /// Bound sessions.
    pub sessions: Arc<Family>,
    /// Bound sessions by host, transport and TLS state.
    pub sessions_by_transport: Arc<Family>,
    /// Stream errors the server sent, by listener (`c2s`, `s2s`) and condition.
    pub stream_errors: Arc<Family>,
    /// Sessions disconnected because their send queue was full.
    pub queue_drops: Arc<Family>,
    /// Registered accounts by host.
    pub accounts: Arc<Family>,
    /// Messages waiting in offline storage, by host.
    pub offline_messages: Arc<Family>,
    /// Messages in the users' archives (XEP-0313), by host.
    pub archive_messages: Arc<Family>,
    /// Group chat rooms by service host.
    pub rooms: Arc<Family>,
    /// Group chat occupants by service host.
    pub room_occupants: Arc<Family>,
    process: ProcessFamilies,
}

/// The standard `process_*` families of Prometheus client libraries.
#[derive(Debug)]
struct ProcessFamilies {
    cpu: Arc<Family>,
    resident: Arc<Family>,
    open_fds: Arc<Family>,
    max_fds: Arc<Family>,
    start_time: Arc<Family>,
}

/// Stanza kinds counted in `oxpecker_stanzas`, exported from the start with zeros.
pub const STANZA_KINDS: [&str; 3] = ["message", "presence", "iq"];

/// The listeners whose stream errors `oxpecker_stream_errors` counts.
pub const STREAM_LISTENERS: &[&str] = &["c2s", "s2s"];

/// Stream error conditions exported at zero from the start for every listener, so that rates
/// and alerts on them work before the first one happens (others appear when first sent).
pub const USUAL_STREAM_ERRORS: &[&str] = &[
    "bad-format",
    "connection-timeout",
    "conflict",
    "host-gone",
    "host-unknown",
    "invalid-from",
    "invalid-namespace",
    "not-authorized",
    "not-well-formed",
    "policy-violation",
    "reset",
    "resource-constraint",
    "system-shutdown",
    "undefined-condition",
];

/// One host's client stanza counters (`oxpecker_stanzas{host}`), resolved once per connection
/// so that counting a stanza is one atomic add, with no lookup by label.
#[derive(Debug)]
pub struct StanzaCounters {
    /// Indexed by [`kind_index`]: received from clients.
    inbound: [Arc<Series>; 3],
    /// Indexed by [`kind_index`]: written to clients.
    outbound: [Arc<Series>; 3],
    /// Elements received that are neither stanzas nor nonzas a module takes (`kind="other"`).
    other: Arc<Series>,
}

/// The position of a stanza kind in [`STANZA_KINDS`].
fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Message => 0,
        Kind::Presence => 1,
        Kind::Iq => 2,
    }
}

impl StanzaCounters {
    /// The counters of `host` in `family` (created at zero if new).
    pub fn new(family: &Family, host: &str) -> Self {
        let of = |direction: &str| STANZA_KINDS.map(|kind| family.with(&[host, kind, direction]));
        StanzaCounters {
            inbound: of("in"),
            outbound: of("out"),
            other: family.with(&[host, "other", "in"]),
        }
    }

    /// Counts a stanza of `kind` received from a client.
    pub fn received(&self, kind: Kind) {
        self.inbound[kind_index(kind)].inc();
    }

    /// Counts a first-level element from a client that no one takes (`unsupported-stanza-type`).
    pub fn received_other(&self) {
        self.other.inc();
    }

    /// Counts a stanza of `kind` written to a client.
    pub fn sent(&self, kind: Kind) {
        self.outbound[kind_index(kind)].inc();
    }
}

impl CoreMetrics {
    /// Registers the core families in `m`, with the series rates are taken over set to zero.
    pub fn new(m: &Metrics) -> Self {
        let gauge = |name: &str, help: &str, unit: Option<&str>, labels: &[&str]| {
            m.family(name, help, unit, MetricKind::Gauge, labels)
        };
        let metrics = CoreMetrics {
            connections: m.gauge(
                "oxpecker_connections",
                "Open connections by type and TLS state",
                &["type", "tls"],
            ),
            stanzas: m.counter(
                "oxpecker_stanzas",
                "Client stanzas by host, kind and direction",
                &["host", "kind", "direction"],
            ),
            auth: m.counter(
                "oxpecker_auth",
                "SASL authentication attempts by mechanism and result",
                &["mechanism", "result"],
            ),
            http_requests: m.counter(
                "oxpecker_http_requests",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            http_latency: m.family(
                "oxpecker_http_request_duration_seconds",
                "Time to answer HTTP requests, by route",
                Some("seconds"),
                MetricKind::Histogram(TIME_BUCKETS.to_vec()),
                &["route"],
            ),
            storage_latency: m.family(
                "oxpecker_storage_write_seconds",
                "Latency of durable storage writes",
                Some("seconds"),
                MetricKind::Histogram(TIME_BUCKETS.to_vec()),
                &[],
            ),
            sessions: m.gauge("oxpecker_sessions", "Bound client sessions", &["host"]),
            sessions_by_transport: m.gauge(
                "oxpecker_sessions_by_transport",
                "Bound client sessions by host, transport and TLS state",
                &["host", "transport", "tls"],
            ),
            stream_errors: m.counter(
                "oxpecker_stream_errors",
                "Stream errors sent, by listener (c2s, s2s) and condition",
                &["listener", "condition"],
            ),
            queue_drops: m.counter(
                "oxpecker_queue_drops",
                "Client sessions disconnected because their send queue was full",
                &[],
            ),
            accounts: m.gauge("oxpecker_accounts", "Registered accounts", &["host"]),
            offline_messages: m.gauge(
                "oxpecker_offline_messages",
                "Messages waiting in offline storage",
                &["host"],
            ),
            archive_messages: m.gauge(
                "oxpecker_archive_messages",
                "Messages in the users' archives (XEP-0313)",
                &["host"],
            ),
            rooms: m.gauge("oxpecker_muc_rooms", "Group chat rooms", &["host"]),
            room_occupants: m.gauge(
                "oxpecker_muc_occupants",
                "Occupants of group chat rooms",
                &["host"],
            ),
            process: ProcessFamilies {
                cpu: m.family(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    Some("seconds"),
                    MetricKind::Counter,
                    &[],
                ),
                resident: gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    Some("bytes"),
                    &[],
                ),
                open_fds: gauge(
                    "process_open_fds",
                    "Number of open file descriptors",
                    None,
                    &[],
                ),
                max_fds: gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    None,
                    &[],
                ),
                start_time: gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    Some("seconds"),
                    &[],
                ),
            },
        };
        m.gauge(
            "oxpecker_build_info",
            "The running build (always 1)",
            &["version"],
        )
        .with(&[env!("CARGO_PKG_VERSION")])
        .set(1.0);
        for listener in STREAM_LISTENERS {
            for condition in USUAL_STREAM_ERRORS {
                metrics.stream_errors.with(&[listener, condition]);
            }
        }
        metrics.queue_drops.with(&[]);
        metrics.storage_latency.with(&[]);
        metrics
    }

    /// Counts a stream error sent to a client.
    pub fn stream_error(&self, condition: &str) {
        self.stream_error_on("c2s", condition);
    }

    /// Counts a stream error sent on a stream of `listener` (`c2s` or `s2s`).
    pub fn stream_error_on(&self, listener: &str, condition: &str) {
        self.stream_errors.with(&[listener, condition]).inc();
    }

    /// The client stanza counters of `host` (created at zero on first use).
    pub fn stanzas_of(&self, host: &str) -> StanzaCounters {
        StanzaCounters::new(&self.stanzas, host)
    }

    /// Creates, at zero, the per-host series of user host `host` (its stanzas, sessions by
    /// transport and TLS state, the store-derived gauges), when the host starts being served.
    pub fn seed_host(&self, host: &str) {
        self.stanzas_of(host);
        self.sessions.with(&[host]);
        for transport in [Transport::Tcp, Transport::WebSocket, Transport::Bosh] {
            for tls in ["true", "false"] {
                self.sessions_by_transport
                    .with(&[host, transport.as_str(), tls]);
            }
        }
        for family in [
            &self.accounts,
            &self.offline_messages,
            &self.archive_messages,
        ] {
            family.with(&[host]);
        }
    }

    /// Sets the `process_*` families from procfs (left out where there is none).
    pub fn refresh_process(&self) {
        let s = super::process::ProcessStats::read();
        let p = &self.process;
        let pairs = [
            (&p.cpu, s.cpu_seconds),
            (&p.resident, s.resident_bytes.map(|v| v as f64)),
            (&p.open_fds, s.open_fds.map(|v| v as f64)),
            (&p.max_fds, s.max_fds.map(|v| v as f64)),
            (&p.start_time, s.start_time_seconds),
        ];
        for (family, value) in pairs {
            if let Some(v) = value {
                family.with(&[]).set(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_kind_in_openmetrics_text() {
        let m = Metrics::new();
        let c = m.counter("x_stanzas", "Stanzas \"seen\"", &["kind"]);
        c.with(&["message"]).inc();
        c.with(&["message"]).inc_by(2.0);
        let g = m.gauge("x_sessions", "Sessions", &[]);
        g.with(&[]).set(5.0);
        g.with(&[]).dec();
        let h = m.family(
            "x_time",
            "Time",
            Some("seconds"),
            MetricKind::Histogram(vec![0.1, 1.0]),
            &["host"],
        );
        h.observe(&["a\"b"], 0.5);
        let s = m.family("x_size", "Size", None, MetricKind::Summary, &[]);
        s.observe(&[], 10.0);
        s.observe(&[], 20.0);
        let out = m.render();
        assert!(out.contains("# TYPE x_stanzas counter\n"), "{out}");
        assert!(
            out.contains("x_stanzas_total{kind=\"message\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_sessions 4\n"), "{out}");
        assert!(out.contains("# UNIT x_time seconds\n"), "{out}");
        assert!(
            out.contains("x_time_bucket{host=\"a\\\"b\",le=\"0.1\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_time_bucket{host=\"a\\\"b\",le=\"1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_time_bucket{host=\"a\\\"b\",le=\"+Inf\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_size_count 2\nx_size_sum 30\n"), "{out}");
        assert!(out.ends_with("# EOF\n"));
        let prom = m.render_as(Format::Prometheus);
        assert!(
            prom.contains("# TYPE x_stanzas_total counter\n# HELP x_stanzas_total"),
            "{prom}"
        );
        assert!(
            !prom.contains("# EOF") && !prom.contains("# UNIT"),
            "{prom}"
        );
    }

    #[test]
    fn registering_twice_returns_the_same_family() {
        let m = Metrics::new();
        let a = m.counter("y", "", &[]);
        a.with(&[]).inc();
        let b = m.counter("y", "", &[]);
        assert_eq!(b.with(&[]).get(), 1.0);
        assert!(valid_name("oxpecker_x1") && !valid_name("1x") && !valid_name("a-b"));
    }
}
