//! Admin operations across the cluster: a node asks another to run an
//! [`AdminOp`] ([`Frame::Admin`], a NATS request) and waits a bounded time for the answer,
//! `{"Ok": result}` or `{"Err": text}`; the asked node runs it with
//! [`crate::core::Core::admin_op_here`], exactly as its own shell would.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Node;
use super::wire::Frame;
use crate::core::Core;
use crate::core::admin_ops::AdminOp;
use crate::core::cluster::Pending;

/// How long a node waits for another's answer to an admin operation.
const ADMIN_PATIENCE: Duration = Duration::from_secs(5);

impl Node {
    /// [`crate::core::cluster::Cluster::admin`]: asks `node` to run `op`.
    pub(super) fn ask_admin(
        &self,
        node: &str,
        op: &AdminOp,
    ) -> Pending<Option<Result<Value, String>>> {
        let client = self.client.clone();
        let subject = Self::subject(node);
        let payload = Frame::Admin(op.clone()).encode();
        Box::pin(async move {
            let answer =
                tokio::time::timeout(ADMIN_PATIENCE, client.request(subject, payload.into()))
                    .await
                    .ok()?
                    .ok()?;
            serde_json::from_slice(&answer.payload).ok()
        })
    }

    /// Runs `op`, asked by another node, and answers on `reply` (in a task: a config reload
    /// reads files).
    pub(super) fn answer_admin(
        &self,
        core: Arc<Core>,
        op: AdminOp,
        reply: Option<async_nats::Subject>,
    ) {
        let client = self.client.clone();
        let tasks = core.tasks.clone();
        tasks.spawn(async move {
            tracing::info!(?op, "cluster: admin operation asked by another node");
            let result = core.admin_op_here(&op).await;
            if let Some(reply) = reply {
                let body = serde_json::to_vec(&result).unwrap_or_default();
                if let Err(e) = client.publish(reply, body.into()).await {
                    tracing::warn!(error = %e, "cluster: could not answer an admin operation");
                }
            }
        });
    }
}
