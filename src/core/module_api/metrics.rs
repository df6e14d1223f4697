//! Metrics (Prosody's high-level `module:measure(name, type, conf)` and low-level
//! `module:metric`): names are prefixed `oxpecker_<module>_` and every series carries the
//! module's host as its first label.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ModuleHandle;
use crate::core::metrics::{Family, MetricKind, Metrics, SIZE_BUCKETS, Series, TIME_BUCKETS};

/// The high-level metric kinds of Prosody's `module:measure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// A current amount (gauge).
    Amount,
    /// A total that only goes up (counter).
    Counter,
    /// Occurrences whose total is not otherwise tracked (counter).
    Rate,
    /// Durations in seconds (histogram); [`Measurement::start`] times one.
    Times,
    /// Sizes in bytes (histogram).
    Sizes,
    /// Any distribution of values (summary), optionally labelled.
    Distribution,
}

/// The `conf` of `module:measure`; every field is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeasureConf {
    /// The unit (a name suffix, e.g. `"messages"`); forced to seconds for `Times` and bytes
    /// for `Sizes`.
    pub unit: Option<String>,
    /// Help text shown with the metric.
    pub description: Option<String>,
    /// Ascending bucket upper bounds for `Times` and `Sizes` (defaults: [`TIME_BUCKETS`],
    /// [`SIZE_BUCKETS`]); unsorted or empty buckets fall back to the default with a warning.
    pub buckets: Option<Vec<f64>>,
    /// Label names of a `Distribution` (values given to [`Measurement::record_with`]).
    pub labels: Vec<String>,
}

/// A metric made by [`ModuleHandle::measure`]: call the method that fits its kind.
#[derive(Clone)]
pub struct Measurement {
    metric: ModuleMetric,
    series: Arc<Series>,
    bounds: Arc<[f64]>,
}

impl Measurement {
    /// Sets the current amount (`Amount`).
    pub fn set(&self, v: f64) {
        self.series.set(v);
    }

    /// Adds one (`Counter`, `Rate`).
    pub fn inc(&self) {
        self.series.inc();
    }

    /// Adds `v` (`Counter`, `Rate`, or `Amount` up and down).
    pub fn add(&self, v: f64) {
        self.series.inc_by(v);
    }

    /// Records one value (`Sizes`, `Distribution`, or `Times` in seconds).
    pub fn record(&self, v: f64) {
        self.series.observe(v, &self.bounds);
    }

    /// Records one value of a labelled `Distribution` (values in the order of `conf.labels`).
    pub fn record_with(&self, labels: &[&str], v: f64) {
        self.metric.with(labels).observe(v, &self.bounds);
    }

    /// Starts timing (`Times`): the guard records the elapsed time when stopped or dropped.
    pub fn start(&self) -> TimingGuard {
        TimingGuard {
            series: Some(self.series.clone()),
            bounds: self.bounds.clone(),
            started: Instant::now(),
        }
    }
}

/// A running `Times` measurement; records once, on [`TimingGuard::stop`] or on drop.
pub struct TimingGuard {
    series: Option<Arc<Series>>,
    bounds: Arc<[f64]>,
    started: Instant,
}

impl TimingGuard {
    /// Stops timing, records and returns the elapsed time.
    pub fn stop(mut self) -> Duration {
        self.finish()
    }

    /// Stops timing without recording anything.
    pub fn cancel(mut self) {
        self.series = None;
    }

    fn finish(&mut self) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(series) = self.series.take() {
            series.observe(elapsed.as_secs_f64(), &self.bounds);
        }
        elapsed
    }
}

impl Drop for TimingGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A module's labelled metric family: every series carries the implicit `host` label first.
#[derive(Clone)]
pub struct ModuleMetric {
    family: Arc<Family>,
    host: String,
}

impl ModuleMetric {
    /// The series for these label values (after the implicit host).
    pub fn with(&self, values: &[&str]) -> Arc<Series> {
        let mut all = Vec::with_capacity(values.len() + 1);
        all.push(self.host.as_str());
        all.extend_from_slice(values);
        self.family.with(&all)
    }

    /// Records an observation (histogram or summary) on the series `values`.
    pub fn observe(&self, values: &[&str], v: f64) {
        let mut all = vec![self.host.as_str()];
        all.extend_from_slice(values);
        self.family.observe(&all, v);
    }
}

impl ModuleHandle {
    fn metric_name(&self, name: &str) -> String {
        format!("oxpecker_{}_{}", self.name, name)
    }

    /// A high-level metric for this host (Prosody's `measure(name, type, conf)`).
    pub fn measure(&self, name: &str, kind: Measure, conf: MeasureConf) -> Measurement {
        let buckets = |default: &[f64]| match conf.buckets.as_deref() {
            Some(b) if !b.is_empty() && b.windows(2).all(|w| w[0] < w[1]) => b.to_vec(),
            Some(_) => {
                self.log(
                    tracing::Level::WARN,
                    &format!("metric {name}: buckets must ascend; using the defaults"),
                );
                default.to_vec()
            }
            None => default.to_vec(),
        };
        let (mk, unit) = match kind {
            Measure::Amount => (MetricKind::Gauge, conf.unit.as_deref()),
            Measure::Counter | Measure::Rate => (MetricKind::Counter, conf.unit.as_deref()),
            Measure::Times => (
                MetricKind::Histogram(buckets(TIME_BUCKETS)),
                Some("seconds"),
            ),
            Measure::Sizes => (MetricKind::Histogram(buckets(SIZE_BUCKETS)), Some("bytes")),
            Measure::Distribution => (MetricKind::Summary, conf.unit.as_deref()),
        };
        let full = match unit {
            Some(u) if !name.ends_with(u) => format!("{}_{u}", self.metric_name(name)),
            _ => self.metric_name(name),
        };
        let bounds: Arc<[f64]> = match &mk {
            MetricKind::Histogram(b) => b.as_slice().into(),
            _ => Arc::new([]),
        };
        let labels: Vec<&str> = if kind == Measure::Distribution {
            conf.labels.iter().map(String::as_str).collect()
        } else {
            Vec::new()
        };
        let help = conf.description.as_deref().unwrap_or("");
        let metric = self.metric(mk, &full, unit, help, &labels);
        let series = metric.with(&vec![""; labels.len()]);
        Measurement {
            metric,
            series,
            bounds,
        }
    }

    /// A low-level metric family (Prosody's `metric`); names are prefixed with
    /// `oxpecker_<module>_` unless they already are, and series carry an implicit `host` label.
    pub fn metric(
        &self,
        kind: MetricKind,
        name: &str,
        unit: Option<&str>,
        help: &str,
        labels: &[&str],
    ) -> ModuleMetric {
        let full = if name.starts_with("oxpecker_") {
            name.to_string()
        } else {
            self.metric_name(name)
        };
        let mut all = vec!["host"];
        all.extend_from_slice(labels);
        let family = match self.core.upgrade() {
            Some(c) => c.metrics.family(&full, help, unit, kind, &all),
            None => Metrics::new().family(&full, help, unit, kind, &all),
        };
        ModuleMetric {
            family,
            host: self.host.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::module_api::probe::{core, load};

    #[tokio::test]
    async fn measures_take_their_conf_and_a_timer_records_on_drop() {
        let core = core();
        load(&core, |ctx| {
            ctx.measure("things", Measure::Counter, MeasureConf::default())
                .add(3.0);
            ctx.measure("queue", Measure::Amount, MeasureConf::default())
                .set(4.0);
            let lag = ctx.measure(
                "lag",
                Measure::Times,
                MeasureConf {
                    description: Some("How long it took".into()),
                    buckets: Some(vec![0.5, 1000.0]),
                    ..MeasureConf::default()
                },
            );
            drop(lag.start());
            let stopped = lag.start().stop();
            assert!(stopped < Duration::from_secs(1000));
            lag.start().cancel();
            let sizes = ctx.measure(
                "body",
                Measure::Sizes,
                MeasureConf {
                    buckets: Some(vec![10.0, 5.0]),
                    ..MeasureConf::default()
                },
            );
            sizes.record(100.0);
            let res = ctx.measure(
                "resources",
                Measure::Distribution,
                MeasureConf {
                    unit: Some("resources".into()),
                    labels: vec!["kind".into()],
                    ..MeasureConf::default()
                },
            );
            res.record_with(&["mobile"], 2.0);
            Ok(())
        })
        .unwrap();
        let out = core.metrics.render();
        for line in [
            "oxpecker_probe_things_total{host=\"localhost\"} 3",
            "oxpecker_probe_queue{host=\"localhost\"} 4",
            "# HELP oxpecker_probe_lag_seconds How long it took",
            "oxpecker_probe_lag_seconds_bucket{host=\"localhost\",le=\"1000\"} 2",
            "oxpecker_probe_lag_seconds_count{host=\"localhost\"} 2",
            "oxpecker_probe_body_bytes_bucket{host=\"localhost\",le=\"262144\"} 1",
            "oxpecker_probe_resources_count{host=\"localhost\",kind=\"mobile\"} 1",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }

    #[tokio::test]
    async fn low_level_metrics_are_prefixed_and_carry_the_host() {
        let core = core();
        load(&core, |ctx| {
            let fam = ctx.metric(MetricKind::Gauge, "queue", None, "Queue length", &["kind"]);
            fam.with(&["a"]).set(2.0);
            let h = ctx.metric(
                MetricKind::Histogram(vec![1.0]),
                "oxpecker_probe_h",
                None,
                "",
                &[],
            );
            h.observe(&[], 0.5);
            Ok(())
        })
        .unwrap();
        let out = core.metrics.render();
        assert!(
            out.contains("oxpecker_probe_queue{host=\"localhost\",kind=\"a\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("oxpecker_probe_h_bucket{host=\"localhost\",le=\"1\"} 1"),
            "{out}"
        );
    }
}
