//! Module status (Prosody's `module:set_status`, `log_status`, `get_status`).

use serde_json::json;

use super::ModuleHandle;

/// Severity of a module status, ordered info < warn < error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusType {
    /// Healthy, with information.
    Info,
    /// Working, with a problem worth attention.
    Warn,
    /// Not working.
    Error,
}

/// A module's current status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModuleStatus {
    /// Severity.
    #[serde(rename = "type")]
    pub kind: StatusType,
    /// Human-readable message.
    pub message: String,
    /// When it was set (unix seconds).
    pub time: i64,
}

impl ModuleStatus {
    /// A status of `kind` with `message`, set now.
    pub fn new(kind: StatusType, message: &str) -> Self {
        ModuleStatus {
            kind,
            message: message.to_string(),
            time: crate::core::accounts::now(),
        }
    }

    /// The status of a module that just loaded.
    pub(super) fn loaded() -> Self {
        Self::new(StatusType::Info, "loaded")
    }
}

impl ModuleHandle {
    /// Sets the status; a less severe status than the current one is ignored unless `override_`.
    /// Fires `module-status/updated` with `{"name": module}` when it changes.
    pub fn set_status(&self, kind: StatusType, message: &str, override_: bool) -> bool {
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if kind < st.kind && !override_ {
                return false;
            }
            *st = ModuleStatus::new(kind, message);
        }
        let mut data = json!({ "name": self.name });
        self.host
            .data_events
            .fire("module-status/updated", &mut data);
        true
    }

    /// Logs at the matching level and records the message as the status.
    pub fn log_status(&self, kind: StatusType, message: &str) {
        let level = match kind {
            StatusType::Info => tracing::Level::INFO,
            StatusType::Warn => tracing::Level::WARN,
            StatusType::Error => tracing::Level::ERROR,
        };
        self.log(level, message);
        self.set_status(kind, message, false);
    }

    /// The current status.
    pub fn get_status(&self) -> ModuleStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::Value;

    use super::*;
    use crate::core::module_api::probe::{core, load};
    use crate::core::modules::LoadError;

    #[tokio::test]
    async fn status_orders_severity_and_fires_an_event() {
        let core = core();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        load(&core, move |ctx| {
            let s = s.clone();
            ctx.hook_event(
                "module-status/updated",
                0,
                Arc::new(move |d: &mut Value| {
                    assert_eq!(d["name"], "probe");
                    s.fetch_add(1, Ordering::SeqCst);
                    None
                }),
            );
            Ok(())
        })
        .unwrap();
        let h = core.host("localhost").unwrap().module("probe").unwrap();
        assert!(h.set_status(StatusType::Warn, "disk slow", false));
        assert!(
            !h.set_status(StatusType::Info, "fine", false),
            "lower severity ignored"
        );
        assert_eq!(h.get_status().message, "disk slow");
        assert!(h.set_status(StatusType::Info, "fine", true), "override");
        h.log_status(StatusType::Error, "broken");
        let st = core
            .host("localhost")
            .unwrap()
            .module_status("probe")
            .unwrap();
        assert_eq!(
            (st.kind, st.message.as_str()),
            (StatusType::Error, "broken")
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn failed_load_leaves_the_host_as_it_was_with_an_error_status() {
        let core = core();
        let host = core.host("localhost").cloned().unwrap();
        let before = (host.events.hook_count(), host.features());
        let r = load(&core, |ctx| {
            ctx.hook(
                "message/bare",
                0,
                crate::core::events::handler(|ev| async move {
                    crate::core::events::Flow::Continue(ev)
                }),
            );
            ctx.add_feature("urn:example:x");
            Err(LoadError::Unavailable("cannot start".into()))
        });
        assert!(matches!(
            r,
            Err(crate::core::modules::ModuleError::LoadFailed {
                reason: LoadError::Unavailable(_),
                ..
            })
        ));
        assert_eq!((host.events.hook_count(), host.features()), before);
        assert!(!host.is_loaded("probe"));
        let st = host.module_status("probe").unwrap();
        assert_eq!(
            (st.kind, st.message.as_str()),
            (StatusType::Error, "cannot start")
        );
    }
}
