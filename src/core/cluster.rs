//! The other nodes of a cluster as the core sees them: the sessions they serve (from the
//! cluster's session directory) and the way to hand them a stanza. The server installs a
//! [`Cluster`] (NATS, in `crate::cluster`) when `[cluster]` is configured; without one every
//! answer here is "nothing remote" and the single-node paths stay as they were.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Core;
use super::admin_ops::AdminOp;
use crate::xmpp::error::StreamErrorCondition;
use crate::xmpp::{Element, Jid};

/// A session bound on another node, as the session directory lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSession {
    /// The node serving it.
    pub node: Arc<str>,
    /// Its full JID.
    pub jid: Jid,
    /// Its presence priority.
    pub priority: i8,
    /// Whether it sent available presence.
    pub available: bool,
    /// Whether its connection is encrypted.
    pub secure: bool,
    /// Whether it enabled XEP-0280 message carbons.
    pub carbons: bool,
    /// Whether it fetched its roster (so it gets roster pushes).
    pub roster: bool,
}

/// An answer another node sends back later.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Who hosts a MUC room, as its lease in the cluster says (one node at a time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomHolder {
    /// This node holds the room's lease (or there is no cluster).
    Here,
    /// Another live node holds it: stanzas for the room go there.
    Node(Arc<str>),
    /// No live node holds it: the next node to need the room takes it.
    Nobody,
}

/// The cluster as the core uses it; every call is cheap (a cache read or a bounded queue).
pub trait Cluster: Send + Sync {
    /// This node's name.
    fn node(&self) -> &str;
    /// Whether this node can reach the cluster now.
    fn is_connected(&self) -> bool;
    /// The sessions of `bare` on other nodes (from the local cache: no round trip).
    fn sessions_of(&self, bare: &Jid) -> Vec<RemoteSession>;
    /// Every session on other nodes, of `host` (or every host).
    fn sessions(&self, host: Option<&str>) -> Vec<RemoteSession>;
    /// Queues `stanza` (its `to` set), serialised once, for each of `nodes`, which deliver it
    /// to their own sessions only; false when no node could be reached now (the sender gets
    /// `remote-server-timeout`).
    fn forward(&self, nodes: &[&str], stanza: &Element) -> bool;
    /// The local sessions of `bare` changed (bound, unbound, presence): republish them.
    fn changed(&self, bare: &Jid);
    /// Asks `node` to send the current presence of its sessions of `user` to `to` (a probe
    /// answered, or a new session shown its account's other resources).
    fn presence(&self, node: &str, user: &Jid, to: &Jid) -> bool;
    /// Asks `node` to close its session `full` because it was bound again here (`conflict`).
    fn kick(&self, node: &str, full: &Jid) -> bool;
    /// Asks `node` to close its sessions of `jid` (bare: all, full: that one) with the stream
    /// error `condition` and `text`; the full JIDs it closed, or `None` when it did not answer.
    fn close(
        &self,
        node: &str,
        jid: &Jid,
        condition: StreamErrorCondition,
        text: &str,
    ) -> Pending<Option<Vec<String>>>;
    /// Who holds the lease of room `room` (a bare JID), from the local cache: no round trip.
    fn room_holder(&self, _room: &Jid) -> RoomHolder {
        RoomHolder::Here
    }
    /// Takes the lease of room `room` for this node unless a live node holds it; the holder
    /// afterwards ([`RoomHolder::Here`] or the winner), `None` when the cluster cannot be asked.
    fn claim_room(&self, _room: &Jid) -> Pending<Option<RoomHolder>> {
        Box::pin(async { Some(RoomHolder::Here) })
    }
    /// Gives up the lease of room `room`: the room left this node's memory.
    fn release_room(&self, _room: &Jid) {}
    /// Hands `stanza` (addressed to a room or occupant, its `from` verified here) to `node`,
    /// which holds the room and serves it as if its own session had sent it; false when it
    /// could not be queued now.
    fn forward_to_room(&self, _node: &str, _stanza: &Element) -> bool {
        false
    }
    /// The rooms of MUC service `service` held by any live node, with that node.
    fn rooms(&self, _service: &str) -> Vec<(Jid, Arc<str>)> {
        Vec::new()
    }
    /// Asks `node` to end its resumable session `previd` of `bare`: the client tried to resume
    /// it here (XEP-0198 resumption is refused across nodes); false when `node` is unreachable.
    fn end_resumable(&self, node: &str, bare: &Jid, previd: &str) -> bool {
        let _ = (node, bare, previd);
        false
    }
    /// Takes a stanza for a remote domain when another node holds (or this node is taking)
    /// the lease of its (from-domain, to-domain) pair's outgoing stream; gives it back when
    /// this node sends it on its own stream.
    fn outgoing(&self, from: Jid, to: Jid, stanza: Element) -> Option<Outgoing> {
        Some((from, to, stanza))
    }
    /// This node's outgoing stream for (`local`, `remote`) ended: its lease goes.
    fn outgoing_closed(&self, _local: &str, _remote: &str) {}
    /// Asks `node` to run the admin operation `op` as its own shell would; its answer, or
    /// `None` when it did not answer in time.
    fn admin(
        &self,
        _node: &str,
        _op: &AdminOp,
    ) -> Pending<Option<Result<serde_json::Value, String>>> {
        Box::pin(async { None })
    }
    /// The other nodes alive now, by name.
    fn peers(&self) -> Vec<String> {
        Vec::new()
    }
    /// Hands `node` the answer to an IQ it sent ([`Core::send_iq`]) that reached this node
    /// instead; false when it could not be queued now.
    fn answer_iq(&self, _node: &str, _answer: &Element) -> bool {
        false
    }
}

/// A stanza for a remote domain: its sender, its recipient and itself.
pub type Outgoing = (Jid, Jid, Element);

impl Core {
    /// The installed cluster, if this server is a node of one.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.get()
    }

    /// The sessions of `bare` on other nodes (none on a single node).
    pub fn remote_sessions(&self, bare: &Jid) -> Vec<RemoteSession> {
        match self.cluster.get() {
            Some(c) => c.sessions_of(bare),
            None => Vec::new(),
        }
    }

    /// Every session of `host` (or every host) on other nodes (none on a single node).
    pub fn all_remote_sessions(&self, host: Option<&str>) -> Vec<RemoteSession> {
        match self.cluster.get() {
            Some(c) => c.sessions(host),
            None => Vec::new(),
        }
    }

    /// Tells the cluster that the local sessions of `jid`'s account changed (nothing, and no
    /// bare JID built, on a single node: the router asks this for every broadcast presence).
    pub fn sessions_changed(&self, jid: &Jid) {
        if let Some(c) = self.cluster.get() {
            c.changed(&jid.bare());
        }
    }

    /// The distinct accounts online on `host` on any node, sorted.
    pub fn online_users_everywhere(&self, host: Option<&str>) -> Vec<Jid> {
        let mut users = self.sessions.online_users(host);
        if self.cluster.get().is_some() {
            users.extend(
                self.all_remote_sessions(host)
                    .into_iter()
                    .map(|s| s.jid.bare()),
            );
            users.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            users.dedup();
        }
        users
    }

    /// The other nodes serving sessions of `bare` that pass `keep`, each once, sorted.
    pub fn nodes_serving(
        &self,
        bare: &Jid,
        keep: impl Fn(&RemoteSession) -> bool,
    ) -> Vec<Arc<str>> {
        let mut nodes: Vec<Arc<str>> = self
            .remote_sessions(bare)
            .into_iter()
            .filter(|r| keep(r))
            .map(|r| r.node)
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Whether `bare` has a session on any node.
    pub fn is_online_anywhere(&self, bare: &Jid) -> bool {
        self.sessions.is_online(bare) || !self.remote_sessions(bare).is_empty()
    }
}
