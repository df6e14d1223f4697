//! Log output for `oxpecker serve`: text or JSON lines, to standard output or a rotated file,
//! with the `audit` target optionally in a file of its own (`log_*` and `audit_log_file` in the
//! configuration). Colour codes are written only when the output is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat, LogRotation};

/// The target of audit events (`tracing::warn!(target: "audit", …)`).
pub const AUDIT_TARGET: &str = "audit";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A log file could not be opened.
    #[error("cannot open log file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging already set up: {0}")]
    Installed(String),
}

/// Keeps the file writers' background threads alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _workers: Vec<WorkerGuard>,
}

/// The log filter: `RUST_LOG` when set, else `log_level`; without audit events when they have a
/// file of their own.
fn main_filter(cfg: &Config) -> EnvFilter {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    if cfg.audit_log_file.is_some() {
        match format!("{AUDIT_TARGET}=off").parse() {
            Ok(d) => filter.add_directive(d),
            Err(_) => filter,
        }
    } else {
        filter
    }
}

/// A formatting layer writing `format` to `writer`, colours only if `ansi`.
fn fmt_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => Box::new(layer.with_ansi(ansi)),
        LogFormat::Json => Box::new(
            layer
                .json()
                .with_ansi(false)
                .with_current_span(true)
                .with_span_list(false),
        ),
    }
}

/// A rolling file appender for `path`, its background writer and that writer's guard.
fn file_writer(
    path: &Path,
    rotation: LogRotation,
    keep: usize,
) -> Result<(tracing_appender::non_blocking::NonBlocking, WorkerGuard), LogError> {
    let err = |reason: String| LogError::File {
        path: path.display().to_string(),
        reason,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err("not a file name".into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = Builder::new()
        .rotation(match rotation {
            LogRotation::Hourly => Rotation::HOURLY,
            LogRotation::Daily => Rotation::DAILY,
            LogRotation::Never => Rotation::NEVER,
        })
        .filename_prefix(name);
    if keep > 0 {
        builder = builder.max_log_files(keep);
    }
    let appender = builder.build(dir).map_err(|e| err(e.to_string()))?;
    Ok(tracing_appender::non_blocking(appender))
}

/// Installs the process's log subscriber for `cfg`; keep the guard until exit.
pub fn init(cfg: &Config) -> Result<LogGuard, LogError> {
    let (subscriber, guard) = subscriber(cfg)?;
    subscriber
        .try_init()
        .map_err(|e| LogError::Installed(e.to_string()))?;
    Ok(guard)
}

/// The subscriber `cfg` describes, not yet installed, and the guard of its file writers.
pub fn subscriber(
    cfg: &Config,
) -> Result<(impl tracing::Subscriber + Send + Sync + 'static, LogGuard), LogError> {
    let mut workers = Vec::new();
    let main = match &cfg.log_file {
        Some(path) => {
            let (w, g) = file_writer(path, cfg.log_rotation, cfg.log_max_files)?;
            workers.push(g);
            fmt_layer(cfg.log_format, w, false)
        }
        None => fmt_layer(
            cfg.log_format,
            std::io::stdout,
            std::io::stdout().is_terminal(),
        ),
    }
    .with_filter(main_filter(cfg));
    let audit = match &cfg.audit_log_file {
        Some(path) => {
            let (w, g) = file_writer(path, cfg.log_rotation, cfg.log_max_files)?;
            workers.push(g);
            let only_audit = Targets::new().with_target(AUDIT_TARGET, LevelFilter::TRACE);
            Some(fmt_layer(cfg.log_format, w, false).with_filter(only_audit))
        }
        None => None,
    };
    let subscriber = tracing_subscriber::registry().with(main).with(audit);
    Ok((subscriber, LogGuard { _workers: workers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn json_lines_to_a_file_with_audit_in_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = "log_format = \"json\"\nlog_rotation = \"never\"\nlog_file = \"server.log\"\naudit_log_file = \"audit.log\"\n";
        let mut cfg = Config::parse(text).unwrap();
        cfg.log_file = Some(dir.path().join("server.log"));
        cfg.audit_log_file = Some(dir.path().join("audit.log"));
        let (subscriber, guard) = subscriber(&cfg).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(port = 5222, "listening");
            tracing::warn!(target: "audit", who = "admin@localhost", "user deleted");
        });
        drop(guard);
        let main = read(&dir.path().join("server.log"));
        let audit = read(&dir.path().join("audit.log"));
        let line: serde_json::Value = serde_json::from_str(main.trim()).unwrap();
        assert_eq!(line["fields"]["message"], "listening", "{main}");
        assert_eq!(line["fields"]["port"], 5222, "{main}");
        assert_eq!(line["level"], "INFO");
        assert!(!main.contains("user deleted"), "audit stays out: {main}");
        let line: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
        assert_eq!(line["target"], "audit");
        assert_eq!(line["fields"]["who"], "admin@localhost");
        assert!(!audit.contains("listening"), "{audit}");
    }

    #[test]
    fn text_to_a_file_has_no_colour_codes_and_keeps_audit_without_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::parse("log_rotation = \"never\"\n").unwrap();
        cfg.log_file = Some(dir.path().join("server.log"));
        let (subscriber, guard) = subscriber(&cfg).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(port = 5222, "listening");
            tracing::warn!(target: "audit", "user deleted");
        });
        drop(guard);
        let main = read(&dir.path().join("server.log"));
        assert!(main.contains("listening port=5222"), "{main}");
        assert!(main.contains("user deleted"), "{main}");
        assert!(!main.contains('\u{1b}'), "no ANSI codes: {main:?}");
    }

    #[test]
    fn an_unwritable_log_folder_is_one_error() {
        let cfg = Config {
            log_file: Some("/proc/oxpecker-no-such-dir/x.log".into()),
            ..Config::default()
        };
        let e = subscriber(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("cannot open log file /proc/"), "{e}");
    }
}
