//! The admin operations a cluster applies on every node (module load/unload/reload, config
//! reload, host activate/deactivate): [`AdminOp`] names one, [`Core::admin_op_here`] runs it on
//! this node exactly as the shell does, and [`Core::admin_op_elsewhere`] asks the other nodes
//! (all live ones, or the one named) to run it, each answering within a bounded wait.
//!
//! The faces (shell, REST) run the operation here unless another node is named, then ask the
//! others, and show one [`NodeOutcome`] per node; on a single node nothing changes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Core;

/// An admin operation that applies on every node of a cluster unless one node is named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminOp {
    /// Load `module` on `host` (none: every host).
    ModuleLoad {
        /// The module.
        module: String,
        /// The host, or every host.
        host: Option<String>,
    },
    /// Unload `module` from `host` (none: every host).
    ModuleUnload {
        /// The module.
        module: String,
        /// The host, or every host.
        host: Option<String>,
    },
    /// Reload (or load) `module` on `host` (none: every host), keeping its data.
    ModuleReload {
        /// The module.
        module: String,
        /// The host, or every host.
        host: Option<String>,
    },
    /// Re-read the configuration file and apply it.
    ConfigReload,
    /// Start serving a configured host.
    HostActivate {
        /// The host.
        host: String,
    },
    /// Stop serving a host (its data stays).
    HostDeactivate {
        /// The host.
        host: String,
    },
}

/// What one node made of an admin operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeOutcome {
    /// The node's name.
    pub node: String,
    /// `ok`, `error`, or `unreachable` (no answer within the wait).
    pub status: &'static str,
    /// The operation's result on that node, or the error's text.
    pub result: Value,
}

impl NodeOutcome {
    /// The outcome of `node` from its answer (`None`: it did not answer).
    pub fn of(node: &str, answer: Option<Result<Value, String>>) -> NodeOutcome {
        let (status, result) = match answer {
            Some(Ok(v)) => ("ok", v),
            Some(Err(e)) => ("error", Value::String(e)),
            None => ("unreachable", Value::Null),
        };
        NodeOutcome {
            node: node.to_string(),
            status,
            result,
        }
    }
}

impl Core {
    /// This node's name in a cluster (none on a single node).
    pub fn node_name(&self) -> Option<&str> {
        self.cluster().map(|c| c.node())
    }

    /// Whether an operation scoped to `node` (none: every node) runs on this node.
    pub fn runs_here(&self, node: Option<&str>) -> bool {
        match (node, self.node_name()) {
            (Some(n), Some(me)) => n == me,
            _ => true,
        }
    }

    /// The hosts a module operation acts on: the one named, or every active host.
    pub fn target_hosts(&self, host: Option<String>) -> Vec<String> {
        match host {
            Some(h) => vec![h],
            None => self.hosts().iter().map(|h| h.name.clone()).collect(),
        }
    }

    /// Runs `op` on this node, as the shell's command does; its result as data.
    pub async fn admin_op_here(self: &Arc<Self>, op: &AdminOp) -> Result<Value, String> {
        match op {
            AdminOp::ModuleLoad { module, host }
            | AdminOp::ModuleUnload { module, host }
            | AdminOp::ModuleReload { module, host } => {
                let (mut done, mut failed) = (Vec::new(), Vec::new());
                for h in self.target_hosts(host.clone()) {
                    let r = match op {
                        AdminOp::ModuleLoad { .. } => self.load_module(&h, module),
                        AdminOp::ModuleUnload { .. } => self.unload_module(&h, module),
                        _ => self.reload_module(&h, module),
                    };
                    match r {
                        Ok(()) => done.push(h),
                        Err(e) => failed.push(format!("{h}: {e}")),
                    }
                }
                if done.is_empty() {
                    return Err(failed.join("; "));
                }
                Ok(json!({ "module": module, "done": done, "failed": failed }))
            }
            AdminOp::ConfigReload => {
                let c = self.clone();
                let report = tokio::task::spawn_blocking(move || c.reload_config())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(serde_json::to_value(&report).unwrap_or(Value::Null))
            }
            AdminOp::HostActivate { host } => {
                let loaded = self.activate_host(host).map_err(|e| e.to_string())?;
                Ok(json!({ "host": host, "loaded": loaded }))
            }
            AdminOp::HostDeactivate { host } => {
                let closed = self.deactivate_host(host).map_err(|e| e.to_string())?;
                Ok(json!({ "host": host, "closed": closed }))
            }
        }
    }

    /// Asks the other nodes `node` selects (none: every live node but this one; this node's
    /// name: none) to run `op`, all at once, each within the cluster's bounded wait.
    pub async fn admin_op_elsewhere(&self, op: &AdminOp, node: Option<&str>) -> Vec<NodeOutcome> {
        let Some(cluster) = self.cluster() else {
            return Vec::new();
        };
        let nodes = match node {
            Some(n) if n == cluster.node() => Vec::new(),
            Some(n) => vec![n.to_string()],
            None => cluster.peers(),
        };
        let asks = nodes.iter().map(|n| cluster.admin(n, op));
        let answers = futures_util::future::join_all(asks).await;
        nodes
            .iter()
            .zip(answers)
            .map(|(n, a)| NodeOutcome::of(n, a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn operations_read_back_from_their_json() {
        for op in [
            AdminOp::ModuleUnload {
                module: "ping".into(),
                host: None,
            },
            AdminOp::ModuleReload {
                module: "ping".into(),
                host: Some("a.example".into()),
            },
            AdminOp::ConfigReload,
            AdminOp::HostDeactivate {
                host: "a.example".into(),
            },
        ] {
            let text = serde_json::to_string(&op).unwrap();
            assert_eq!(
                serde_json::from_str::<AdminOp>(&text).unwrap(),
                op,
                "{text}"
            );
        }
        assert!(serde_json::from_str::<AdminOp>(r#"{"op":"shutdown"}"#).is_err());
    }

    #[test]
    fn outcomes_say_ok_error_or_unreachable() {
        assert_eq!(NodeOutcome::of("n2", Some(Ok(json!(1)))).status, "ok");
        let e = NodeOutcome::of("n2", Some(Err("no".into())));
        assert_eq!((e.status, e.result), ("error", json!("no")));
        assert_eq!(NodeOutcome::of("n3", None).status, "unreachable");
    }
}
