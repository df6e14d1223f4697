//! The sessions of a node that died (killed, cut off, never said goodbye): once the survivors
//! see it silent for the TTL, the one that speaks for the gone
//! ([`super::directory::Directory::speaks_for_the_gone`]: the live node with the lowest name)
//! removes its directory keys and sends, on behalf of each of its available sessions, the
//! unavailable presence that session's own node would have sent on a normal close: to the
//! account's presence subscribers (its roster, shared groups included) and to the account's
//! other available resources on every node. Directed presence and room occupancy were known
//! only to the dead node and are not announced here.

use std::sync::Arc;

use crate::core::Core;
use crate::core::cluster::RemoteSession;
use crate::core::events::Origin;
use crate::xmpp::{Element, Jid, ns};

/// Announces `sessions` (of gone nodes) as unavailable to everyone who saw them available.
pub async fn announce(core: Arc<Core>, sessions: Vec<RemoteSession>) {
    let available: Vec<RemoteSession> = sessions.into_iter().filter(|s| s.available).collect();
    if !available.is_empty() {
        tracing::info!(
            sessions = available.len(),
            "cluster: announcing a gone node's sessions unavailable"
        );
    }
    for session in available {
        for to in audience(&core, &session.jid).await {
            let presence = Element::new("presence", ns::CLIENT)
                .attr("type", "unavailable")
                .attr("from", session.jid.as_str())
                .attr("to", to.as_str());
            core.route(Origin::Server, presence).await;
        }
    }
}

/// Who gets the unavailable presence of `full`: the account's subscribers, then its other
/// available resources here and on the other live nodes.
async fn audience(core: &Core, full: &Jid) -> Vec<Jid> {
    let user = full.bare();
    let mut to: Vec<Jid> = core
        .roster_items(&user)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|i| i.subscription.has_from())
        .filter_map(|i| Jid::parse(&i.jid).ok())
        .filter(|j| *j != user)
        .collect();
    to.extend(
        core.sessions
            .resources(&user)
            .into_iter()
            .filter(|s| s.is_available())
            .map(|s| s.jid.clone()),
    );
    to.extend(
        core.remote_sessions(&user)
            .into_iter()
            .filter(|r| r.available && r.jid != *full)
            .map(|r| r.jid),
    );
    to
}
