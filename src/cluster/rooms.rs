//! MUC rooms in a cluster: each room is hosted by one node at a time, the holder of its lease
//! in the JetStream key-value bucket [`ROOMS_BUCKET`] (key: the room's bare JID in base64url,
//! value: the node's name).
//!
//! - **Taking a room.** A node takes a lease with a compare-and-set create, so that of two
//!   nodes making the same room live at once exactly one wins; the loser forwards to the
//!   winner. A node takes a lease only when the room becomes live in its memory (created by a
//!   join, or loaded from the shared store), and gives it up when the room leaves its memory
//!   (emptied, destroyed, module unloaded) or the node stops cleanly.
//! - **Keeping it.** A lease has no expiry of its own: it is valid while its holder heartbeats
//!   (the [`super::directory`] heartbeat). Each node follows the bucket by a watch, so the
//!   MUC entry check ([`crate::core::cluster::Cluster::room_holder`]) is a cache read.
//! - **Forwarding.** A stanza to a room (or an occupant) held by another node is serialised
//!   once ([`super::wire::Frame::Room`]) and routed there as if a local session had sent it;
//!   the holder's answers and fan-out reach occupants on other nodes through the one delivery
//!   decision (remote full JIDs are forwarded to their node), so each copy crosses once.
//! - **Takeover.** When a holder stops heartbeating, its leases count as free: the next node
//!   that needs the room takes it over (a compare-and-set update on the dead holder's value,
//!   after checking its heartbeat key is gone) and loads it from the shared store — a
//!   persistent room keeps its configuration, affiliations, subject and archive; a temporary
//!   room of a dead node is gone. Survivors also remove dead nodes' leases after a TTL.
//!   Occupants on surviving nodes are not in the new holder's memory: XEP-0045 has no "room
//!   moved" signal, so they are told nothing, and their next XEP-0410 self-ping (or message)
//!   is answered `not-acceptable`, which makes clients (Conversations, Gajim, Dino, slixmpp's
//!   plugin) join again.
//! - **One node's view at a time.** A node that finds its in-memory room leased to another
//!   node (it was cut off meanwhile) forgets its copy, tells its local occupants they were
//!   removed (status 332, so that they join again, at the holder) and forwards.
//! - **Senders the directory does not list yet.** A room frame carries the sending node's
//!   sessions of the sender's account, which the holder uses for one TTL where its directory
//!   has nothing of that node for the account yet: a client that joins right after binding is
//!   answered even if its directory key (which travels through JetStream) comes later.
//! - **Sessions that end.** The node of an occupant whose session ends without unavailable
//!   presence sends that presence to the rooms it joined on other nodes (the MUC service
//!   remembers them), so the holder removes the occupant at once. A dead node's occupants are
//!   removed by the holder when a stanza to them bounces (the existing error-kick rule).
//! - Loops are not possible while caches agree (the holder serves, never forwards); while a
//!   lease changes hands a stanza may take one extra hop to the new holder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::directory::Entry;
use super::{ClusterError, NODES_BUCKET, Node, nats};
use crate::core::cluster::{RemoteSession, RoomHolder};
use crate::xmpp::{Element, Jid};

/// The bucket of room leases: room bare JID → holding node.
pub const ROOMS_BUCKET: &str = "oxpecker_rooms";

/// The room leases as this node knows them.
#[derive(Default)]
pub struct Leases {
    /// Every lease in the bucket, as the watch last said: room → (node, revision).
    cache: DashMap<Jid, (Arc<str>, u64)>,
    /// The leases this node holds now, with their revisions.
    held: Mutex<HashMap<Jid, u64>>,
    /// The rooms and nodes buckets, while connected.
    buckets: Mutex<Option<(kv::Store, kv::Store)>>,
    /// Lease writes of this node, one at a time (a release is written before a new claim).
    ops: tokio::sync::Mutex<()>,
    /// Sessions of other nodes that sent room stanzas here lately, by account: the answers
    /// must find them even before the directory lists them.
    senders: DashMap<Jid, Vec<(Arc<str>, Entry, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bucket key of `room`.
pub fn key(room: &Jid) -> String {
    URL_SAFE_NO_PAD.encode(room.as_str())
}

/// The room a bucket key names.
pub fn parse_key(key: &str) -> Option<Jid> {
    let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
    let room = Jid::parse(std::str::from_utf8(&bytes).ok()?).ok()?;
    (room.node().is_some() && room.resource().is_none()).then_some(room)
}

impl Leases {
    fn buckets(&self) -> Option<(kv::Store, kv::Store)> {
        lock(&self.buckets).clone()
    }

    fn holds(&self, room: &Jid) -> bool {
        lock(&self.held).contains_key(room)
    }

    fn hold(&self, me: &str, room: &Jid, revision: u64) {
        lock(&self.held).insert(room.clone(), revision);
        self.cache.insert(room.clone(), (Arc::from(me), revision));
    }

    /// Takes `room`'s lease unless a live node holds it (see the module doc); `None` when the
    /// bucket cannot be reached.
    pub(super) async fn claim(&self, me: &str, room: &Jid) -> Option<RoomHolder> {
        let _one = self.ops.lock().await;
        if self.holds(room) {
            return Some(RoomHolder::Here);
        }
        let (leases, nodes) = self.buckets()?;
        let key = key(room);
        for _ in 0..4 {
            match leases.create(&key, me.to_string().into()).await {
                Ok(revision) => {
                    self.hold(me, room, revision);
                    tracing::debug!(%room, node = %me, "cluster: room lease taken");
                    return Some(RoomHolder::Here);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cluster: cannot take a room lease");
                    return None;
                }
            }
            let entry = match leases.entry(&key).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cluster: cannot read a room lease");
                    return None;
                }
            };
            let holder = String::from_utf8_lossy(&entry.value).into_owned();
            if holder == me {
                // Ours from an earlier connection: still ours.
                self.hold(me, room, entry.revision);
                return Some(RoomHolder::Here);
            }
            let alive = match nodes.get(&holder).await {
                Ok(beat) => beat.is_some(),
                Err(_) => return None,
            };
            if alive {
                let holder: Arc<str> = Arc::from(holder);
                self.cache
                    .insert(room.clone(), (holder.clone(), entry.revision));
                return Some(RoomHolder::Node(holder));
            }
            // The holder is gone: take its lease over, unless another survivor is first.
            if let Ok(revision) = leases
                .update(&key, me.to_string().into(), entry.revision)
                .await
            {
                self.hold(me, room, revision);
                tracing::info!(%room, from = %holder, node = %me, "cluster: room taken over");
                return Some(RoomHolder::Here);
            }
        }
        None
    }
}

impl Node {
    /// Who holds `room`'s lease, from the cache.
    pub(super) fn room_holder_cached(&self, room: &Jid) -> RoomHolder {
        let Some(entry) = self.rooms.cache.get(room) else {
            return RoomHolder::Nobody;
        };
        let node = entry.0.clone();
        drop(entry);
        if *node == *self.name {
            if self.rooms.holds(room) {
                RoomHolder::Here
            } else {
                RoomHolder::Nobody
            }
        } else if self.directory.is_alive(&node) {
            RoomHolder::Node(node)
        } else {
            RoomHolder::Nobody
        }
    }

    /// The rooms of `service` held by live nodes (this one included).
    pub(super) fn leased_rooms(&self, service: &str) -> Vec<(Jid, Arc<str>)> {
        let rooms: Vec<Jid> = self
            .rooms
            .cache
            .iter()
            .filter(|e| e.key().domain() == service)
            .map(|e| e.key().clone())
            .collect();
        let mut out: Vec<(Jid, Arc<str>)> = rooms
            .into_iter()
            .filter_map(|room| match self.room_holder_cached(&room) {
                RoomHolder::Here => Some((room, Arc::from(self.name.as_str()))),
                RoomHolder::Node(n) => Some((room, n)),
                RoomHolder::Nobody => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out
    }

    /// Gives up `room`'s lease (the room left this node's memory); written in the background.
    pub(super) fn release(&self, room: &Jid) {
        let Some(revision) = lock(&self.rooms.held).remove(room) else {
            return;
        };
        self.rooms
            .cache
            .remove_if(room, |_, (n, r)| **n == *self.name && *r == revision);
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let room = room.clone();
        let me = self.name.clone();
        let rooms = self.rooms.clone();
        core.tasks.spawn(async move {
            let _one = rooms.ops.lock().await;
            if rooms.holds(&room) {
                return; // taken again meanwhile
            }
            if let Some((leases, _)) = rooms.buckets()
                && let Err(e) = leases
                    .delete_expect_revision(key(&room), Some(revision))
                    .await
            {
                tracing::debug!(%room, node = %me, error = %e, "cluster: room lease not released");
            }
        });
    }

    /// This node's sessions of the account sending `stanza` (none for another domain's user).
    pub(super) fn sender_entries(&self, stanza: &Element) -> Vec<Entry> {
        match stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()) {
            Some(from) => self.entries_of(&from),
            None => Vec::new(),
        }
    }

    /// This node's sessions of `jid`'s account, as its directory key lists them.
    pub(super) fn entries_of(&self, from: &Jid) -> Vec<Entry> {
        let Some(core) = self.core.upgrade() else {
            return Vec::new();
        };
        core.sessions
            .resources(&from.bare())
            .iter()
            .map(|s| Entry::of(s))
            .collect()
    }

    /// Takes in what a room stanza from `node` says of its sender's sessions there, so that
    /// the answers reach the sender even before its directory key arrives by watch (the two
    /// travel different ways); kept for one TTL, never over what the directory says.
    pub(super) fn learn_sender(&self, node: &str, sender: Vec<Entry>, stanza: &Element) {
        if let Some(from) = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()) {
            self.learn_sessions(node, sender, &from);
        }
    }

    /// Takes in what `node` says of its sessions of `from`'s account (a room stanza's sender, a
    /// probe's asker), kept for one TTL, never over what the directory says.
    pub(super) fn learn_sessions(&self, node: &str, sender: Vec<Entry>, from: &Jid) {
        if sender.is_empty() || node == self.name {
            return;
        }
        let node: Arc<str> = Arc::from(node);
        let now = Instant::now();
        let mut hints = self.rooms.senders.entry(from.bare()).or_default();
        hints.retain(|(n, _, _)| *n != node);
        hints.extend(sender.into_iter().map(|e| (node.clone(), e, now)));
    }

    /// Adds to `found` (the directory's sessions of `bare`) the sessions a recent room stanza
    /// or probe announced, of nodes the directory does not list for the account yet.
    pub(super) fn with_senders(&self, bare: &Jid, found: &mut Vec<RemoteSession>) {
        let Some(hints) = self.rooms.senders.get(bare) else {
            return;
        };
        let listed: Vec<Arc<str>> = found.iter().map(|s| s.node.clone()).collect();
        for (node, e, at) in hints.iter() {
            // Once the directory lists the node's sessions of the account, it knows better.
            if at.elapsed() >= self.ttl || listed.contains(node) || !self.directory.is_alive(node) {
                continue;
            }
            let Ok(jid) = bare.with_resource(&e.resource) else {
                continue;
            };
            if !found.iter().any(|s| s.jid == jid) {
                found.push(RemoteSession {
                    node: node.clone(),
                    jid,
                    priority: e.priority,
                    available: e.available,
                    secure: e.secure,
                    carbons: e.carbons,
                    roster: e.roster,
                });
            }
        }
    }

    /// Forgets the sender hints older than a TTL.
    fn forget_old_senders(&self) {
        self.rooms.senders.retain(|_, hints| {
            hints.retain(|(_, _, at)| at.elapsed() < self.ttl);
            !hints.is_empty()
        });
    }

    /// Follows the rooms bucket: one epoch per NATS connection, started over after a loss.
    pub(super) async fn run_rooms(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            while !self.connected() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            let result = self.rooms_epoch(&shutdown).await;
            *lock(&self.rooms.buckets) = None;
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.name, "cluster: room leases interrupted; starting over");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn rooms_epoch(&self, shutdown: &CancellationToken) -> Result<(), ClusterError> {
        let js = jetstream::new(self.client.clone());
        let leases = Self::bucket(&js, ROOMS_BUCKET, Duration::ZERO).await?;
        let nodes = Self::bucket(&js, NODES_BUCKET, self.ttl).await?;
        {
            // Keep only the leases the bucket still says are ours (survivors may have removed
            // them while this node was cut off).
            let _one = self.rooms.ops.lock().await;
            let held: Vec<(Jid, u64)> = lock(&self.rooms.held)
                .iter()
                .map(|(r, v)| (r.clone(), *v))
                .collect();
            for (room, _) in held {
                let ours = match leases.entry(key(&room)).await.map_err(nats)? {
                    Some(e) => {
                        e.operation == kv::Operation::Put && *e.value == *self.name.as_bytes()
                    }
                    None => false,
                };
                if !ours {
                    lock(&self.rooms.held).remove(&room);
                }
            }
            self.rooms.cache.clear();
            *lock(&self.rooms.buckets) = Some((leases.clone(), nodes.clone()));
        }
        let mut watch = leases.watch_with_history(">").await.map_err(nats)?;
        let started = Instant::now();
        let mut tick = tokio::time::interval((self.ttl / 2).max(Duration::from_millis(250)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.leave_rooms(&leases).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    if !self.connected() {
                        return Err(ClusterError::Nats("disconnected".into()));
                    }
                    self.forget_old_senders();
                    if started.elapsed() >= self.ttl {
                        self.sweep_leases(&leases, &nodes).await;
                    }
                }
                entry = watch.next() => {
                    let entry = entry.ok_or_else(|| nats("room watch ended"))?.map_err(nats)?;
                    self.on_lease(entry, &leases).await;
                }
            }
        }
    }

    /// Follows one change of the rooms bucket.
    async fn on_lease(&self, entry: kv::Entry, leases: &kv::Store) {
        let Some(room) = parse_key(&entry.key) else {
            return;
        };
        if entry.operation != kv::Operation::Put {
            self.rooms.cache.remove(&room);
            let mut held = lock(&self.rooms.held);
            if held.get(&room).is_some_and(|r| *r < entry.revision) {
                tracing::info!(%room, node = %self.name, "cluster: a room lease of this node was removed");
                held.remove(&room);
            }
            return;
        }
        let holder: Arc<str> = Arc::from(String::from_utf8_lossy(&entry.value).as_ref());
        self.rooms
            .cache
            .insert(room.clone(), (holder.clone(), entry.revision));
        if *holder != *self.name {
            let mut held = lock(&self.rooms.held);
            if held.get(&room).is_some_and(|r| *r < entry.revision) {
                tracing::info!(%room, node = %self.name, to = %holder, "cluster: a room of this node moved");
                held.remove(&room);
            }
            return;
        }
        if self.rooms.holds(&room) {
            return;
        }
        // A lease naming this node that it does not hold: left over from an earlier run (or
        // a claim finishing now, which the lock waits for).
        let _one = self.rooms.ops.lock().await;
        if !self.rooms.holds(&room) {
            self.rooms
                .cache
                .remove_if(&room, |_, (_, r)| *r == entry.revision);
            let _ = leases
                .delete_expect_revision(&entry.key, Some(entry.revision))
                .await;
        }
    }

    /// Removes the leases of nodes whose heartbeat key is gone.
    async fn sweep_leases(&self, leases: &kv::Store, nodes: &kv::Store) {
        if !self.directory.is_online() {
            return;
        }
        let silent: Vec<(Jid, Arc<str>, u64)> = self
            .rooms
            .cache
            .iter()
            .filter(|e| *e.value().0 != *self.name && !self.directory.is_alive(&e.value().0))
            .map(|e| (e.key().clone(), e.value().0.clone(), e.value().1))
            .collect();
        let mut gone: HashMap<Arc<str>, bool> = HashMap::new();
        for (room, node, revision) in silent {
            let is_gone = match gone.get(&node) {
                Some(g) => *g,
                None => {
                    let g = matches!(nodes.get(&*node).await, Ok(None));
                    gone.insert(node.clone(), g);
                    g
                }
            };
            if is_gone {
                tracing::info!(%room, %node, "cluster: removing a gone node's room lease");
                let _ = leases
                    .delete_expect_revision(key(&room), Some(revision))
                    .await;
            }
        }
    }

    /// Gives up every lease at shutdown.
    async fn leave_rooms(&self, leases: &kv::Store) {
        let held: Vec<(Jid, u64)> = lock(&self.rooms.held).drain().collect();
        let goodbye = async {
            for (room, revision) in held {
                let _ = leases
                    .delete_expect_revision(key(&room), Some(revision))
                    .await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), goodbye)
            .await
            .is_err()
        {
            tracing::warn!(node = %self.name, "cluster: could not release room leases in time");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn room_keys_read_back_and_refuse_what_is_not_a_room() {
        let room = Jid::parse("o.neil+x@conference.example.org").unwrap();
        let k = key(&room);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
        assert_eq!(parse_key(&k), Some(room));
        assert_eq!(parse_key(&key(&Jid::parse("conference.h").unwrap())), None);
        assert_eq!(parse_key(&key(&Jid::parse("r@c.h/nick").unwrap())), None);
        assert_eq!(parse_key("!!"), None);
    }
}
