//! The node scope of the admin operations a cluster applies on every node (module load and
//! unload, `/reload`, host activate and deactivate): by default this node runs the operation
//! and asks every other live node to run it too; `?node=NAME` runs it on that node alone
//! (this one or another). The body gains `nodes`, one outcome per other node asked
//! (`ok`, `error` or `unreachable`); on a single node nothing changes.

use std::future::Future;
use std::sync::Arc;

use axum::http::Uri;
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiError, json_response, percent_decode};
use crate::core::Core;
use crate::core::admin_ops::AdminOp;

/// The `node` query parameter, if any.
pub fn scope(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == "node" && !v.is_empty()).then(|| percent_decode(v))
    })
}

/// Answers an admin operation: `local` (this node's handler, giving the response body) unless
/// `?node=` names another node, then `op` on the other nodes the scope selects. A local
/// failure is the answer (the other nodes have still been asked).
pub async fn across(
    core: &Arc<Core>,
    uri: &Uri,
    op: AdminOp,
    local: impl Future<Output = Result<Value, ApiError>>,
) -> Result<Response, ApiError> {
    let node = scope(uri);
    let here = match core.runs_here(node.as_deref()) {
        true => Some(local.await),
        false => None,
    };
    let others = core.admin_op_elsewhere(&op, node.as_deref()).await;
    let mut body = match here {
        Some(Ok(body)) => body,
        Some(Err(e)) => return Err(e),
        None => json!({ "result": format!("Asked node {}", node.unwrap_or_default()) }),
    };
    if !others.is_empty()
        && let Some(map) = body.as_object_mut()
    {
        map.insert("nodes".into(), json!(others));
    }
    Ok(json_response(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_node_parameter_is_read_and_decoded() {
        let uri: Uri = "/admin_rest/module/ping?host=h&node=n%2D2".parse().unwrap();
        assert_eq!(scope(&uri).as_deref(), Some("n-2"));
        let uri: Uri = "/admin_rest/reload?node=".parse().unwrap();
        assert_eq!(scope(&uri), None);
        assert_eq!(scope(&"/admin_rest/reload".parse().unwrap()), None);
    }
}
