//! Tracking of IQs the server sends (Prosody's `module:send_iq`): each resolves with the
//! response, an error reply, a timeout, or eviction when more than 256 are in flight.
//!
//! In a cluster the answer may reach another node (the recipient's session lives there): ids
//! then carry the sending node's name ([`cluster_id`]), and a node that gets an answer it does
//! not track, addressed to a server-owned JID, hands it to the node its id names
//! ([`Core::forward_iq_answer`]), where it resolves the waiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Core;
use super::events::Origin;
use crate::xmpp::{Element, Jid, stanza};

/// Most IQs in flight; beyond it the oldest is rejected.
pub const MAX_IN_FLIGHT: usize = 256;
/// Default time to wait for a response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a tracked IQ did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IqError {
    /// The stanza is not an IQ get/set with `id`, `from` and `to`.
    #[error("not a trackable iq (needs type get/set, id, from and to)")]
    Invalid,
    /// The same id is already in flight.
    #[error("an iq with this id is already in flight")]
    DuplicateId,
    /// No response in time.
    #[error("timed out")]
    Timeout,
    /// Evicted because too many IQs were in flight.
    #[error("too many iqs in flight")]
    Overflow,
    /// The peer answered with an error (the error stanza).
    #[error("error response")]
    ErrorResponse(Box<Element>),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
}

/// Separates the node's name from the caller's id; node names never contain it.
const NODE_SEPARATOR: char = '~';

/// The id `id` carries on the wire when node `node` of a cluster sends it.
pub fn cluster_id(node: &str, id: &str) -> String {
    format!("{node}{NODE_SEPARATOR}{id}")
}

/// The node named by an id built by [`cluster_id`], if it is one.
pub fn node_of(id: &str) -> Option<&str> {
    id.split_once(NODE_SEPARATOR)
        .map(|(node, _)| node)
        .filter(|node| !node.is_empty())
}

struct Pending {
    to: Jid,
    tx: oneshot::Sender<Result<Element, IqError>>,
}

/// The in-flight IQ table.
#[derive(Default)]
pub struct IqTracker {
    inner: Mutex<(HashMap<String, Pending>, VecDeque<String>)>,
}

impl IqTracker {
    /// Resolves a pending IQ with this response; returns false if it matches none.
    pub fn resolve(&self, response: &Element) -> bool {
        let Some(id) = response.get_attr("id") else {
            return false;
        };
        let from = response.get_attr("from").and_then(|f| Jid::parse(f).ok());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let matches = inner.0.get(id).is_some_and(|p| {
            from.as_ref()
                .is_some_and(|f| *f == p.to || (p.to.is_bare() && f.bare() == p.to))
        });
        if !matches {
            return false;
        }
        let Some(p) = inner.0.remove(id) else {
            return false;
        };
        inner.1.retain(|i| i != id);
        drop(inner);
        let result = if stanza::stanza_type(response, "") == "error" {
            Err(IqError::ErrorResponse(Box::new(response.clone())))
        } else {
            Ok(response.clone())
        };
        let _ = p.tx.send(result);
        true
    }

    fn register(
        &self,
        id: &str,
        to: Jid,
    ) -> Result<oneshot::Receiver<Result<Element, IqError>>, IqError> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0.contains_key(id) {
            return Err(IqError::DuplicateId);
        }
        while inner.1.len() >= MAX_IN_FLIGHT {
            if let Some(old) = inner.1.pop_front()
                && let Some(p) = inner.0.remove(&old)
            {
                let _ = p.tx.send(Err(IqError::Overflow));
            }
        }
        inner.0.insert(id.to_string(), Pending { to, tx });
        inner.1.push_back(id.to_string());
        Ok(rx)
    }

    fn forget(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.remove(id);
        inner.1.retain(|i| i != id);
    }

    /// Number of IQs in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().map(|i| i.0.len()).unwrap_or(0)
    }
}

impl Core {
    /// Sends an IQ get/set from the server and waits for the matching response. In a cluster
    /// the id sent (and the response's) is [`cluster_id`] of this node's name and the given id.
    pub async fn send_iq(
        self: &Arc<Self>,
        iq: Element,
        timeout: Option<Duration>,
    ) -> Result<Element, IqError> {
        let ty = stanza::stanza_type(&iq, "");
        let (Some(id), Some(to)) = (
            iq.get_attr("id"),
            iq.get_attr("to").and_then(|t| Jid::parse(t).ok()),
        ) else {
            return Err(IqError::Invalid);
        };
        if !(ty == "get" || ty == "set") || iq.get_attr("from").is_none() {
            return Err(IqError::Invalid);
        }
        let id = match self.cluster() {
            Some(c) => cluster_id(c.node(), id),
            None => id.to_string(),
        };
        let mut iq = iq;
        if self.cluster().is_some() {
            // The answer may reach another node, which finds this one by the id.
            iq.set_attr("id", Some(id.clone()));
        }
        let rx = self.iq.register(&id, to)?;
        self.route(Origin::Server, iq).await;
        match tokio::time::timeout(timeout.unwrap_or(DEFAULT_TIMEOUT), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(IqError::Shutdown),
            Err(_) => {
                self.iq.forget(&id);
                Err(IqError::Timeout)
            }
        }
    }

    /// Hands `answer` (an IQ result or error to `to`, a domain or bare JID, that no waiter
    /// here tracks) to the live node its id names, where [`Core::send_iq`] waits for it; false
    /// without a cluster, when `to` is not served here, or when the id names this node, no
    /// live node or none at all.
    pub fn forward_iq_answer(&self, to: &Jid, answer: &Element) -> bool {
        let Some(cluster) = self.cluster() else {
            return false;
        };
        let Some(node) = answer.get_attr("id").and_then(node_of) else {
            return false;
        };
        self.host(to.domain()).is_some()
            && node != cluster.node()
            && cluster.peers().iter().any(|p| p == node)
            && cluster.answer_iq(node, answer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::cluster::{Cluster, Pending as Later, RemoteSession};
    use crate::xmpp::ns;

    /// Node `n1` of a cluster whose only live peer is `n2`; records the answers it hands on.
    #[derive(Default)]
    struct NodeOne(Mutex<Vec<(String, String)>>);

    impl Cluster for NodeOne {
        fn node(&self) -> &str {
            "n1"
        }
        fn is_connected(&self) -> bool {
            true
        }
        fn sessions_of(&self, _: &Jid) -> Vec<RemoteSession> {
            Vec::new()
        }
        fn sessions(&self, _: Option<&str>) -> Vec<RemoteSession> {
            Vec::new()
        }
        fn forward(&self, _: &[&str], _: &Element) -> bool {
            true
        }
        fn changed(&self, _: &Jid) {}
        fn presence(&self, _: &str, _: &Jid, _: &Jid) -> bool {
            true
        }
        fn kick(&self, _: &str, _: &Jid) -> bool {
            true
        }
        fn close(
            &self,
            _: &str,
            _: &Jid,
            _: crate::xmpp::error::StreamErrorCondition,
            _: &str,
        ) -> Later<Option<Vec<String>>> {
            Box::pin(async { None })
        }
        fn peers(&self) -> Vec<String> {
            vec!["n2".into()]
        }
        fn answer_iq(&self, node: &str, answer: &Element) -> bool {
            let id = answer.get_attr("id").unwrap_or_default().to_string();
            self.0.lock().unwrap().push((node.to_string(), id));
            true
        }
    }

    #[test]
    fn answers_go_to_the_live_node_their_id_names() {
        let mut config = crate::config::Config::default();
        config.hosts[0].name = "h".into();
        let core = Core::new(
            config,
            crate::storage::Store::memory(),
            crate::modules::BUILTIN,
        )
        .unwrap();
        let result = |id: &str| {
            Element::new("iq", ns::CLIENT)
                .attr("type", "result")
                .attr("id", id)
                .attr("from", "b@h/x")
        };
        let h = Jid::parse("h").unwrap();
        // No cluster: nothing is forwarded.
        assert!(!core.forward_iq_answer(&h, &result("n2~caps-1")));
        let one = Arc::new(NodeOne::default());
        let as_cluster: Arc<dyn Cluster> = one.clone();
        assert!(core.cluster.set(as_cluster).is_ok());
        assert!(core.forward_iq_answer(&h, &result("n2~caps-1")));
        assert!(core.forward_iq_answer(&Jid::parse("a@h").unwrap(), &result("n2~p")));
        // Its own name, a node not alive, a plain id, a domain not served here: kept.
        for (to, id) in [
            ("h", "n1~c"),
            ("h", "n3~c"),
            ("h", "caps-1"),
            ("other", "n2~c"),
        ] {
            assert!(
                !core.forward_iq_answer(&Jid::parse(to).unwrap(), &result(id)),
                "{id}"
            );
        }
        let handed = one.0.lock().unwrap().clone();
        assert_eq!(
            handed,
            [
                ("n2".into(), "n2~caps-1".into()),
                ("n2".into(), "n2~p".into())
            ]
        );
    }

    #[test]
    fn cluster_ids_name_their_node() {
        let id = cluster_id("n1", "caps-00ff");
        assert_eq!(id, "n1~caps-00ff");
        assert_eq!(node_of(&id), Some("n1"));
        // The caller's id may itself hold the separator: the node is what comes first.
        assert_eq!(node_of(&cluster_id("n-2_b", "a~b")), Some("n-2_b"));
        for plain in ["caps-00ff", "", "~x", "push1"] {
            assert_eq!(node_of(plain), None, "{plain}");
        }
    }
}
