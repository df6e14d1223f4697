//! Several nodes serving the same domains as one server, meeting at a NATS server (the
//! official `async-nats` client): each node listens on its own subject
//! (`oxpecker.node.<name>`), publishes its sessions in a JetStream key-value bucket (the
//! [`directory`]) with a heartbeat per node, and watches the bucket to keep a local copy that
//! routing reads without a round trip. The core sees all of it through
//! [`crate::core::cluster::Cluster`], which [`Node`] implements; stanzas for a session on
//! another node are serialised once ([`wire`]) and delivered there by that node's local
//! delivery only. An answer to an IQ another node sent (its id names that node:
//! [`crate::core::iq::cluster_id`]) is handed back to it ([`wire::Frame::IqAnswer`]).
//!
//! Faults: a node that stops heartbeating is gone after `node_ttl_secs` (its sessions leave
//! every view, and one survivor removes their keys and sends their contacts the unavailable
//! presence they would have sent: [`departed`]); a node that loses NATS keeps
//! serving its own sessions, bounces stanzas for other nodes with `remote-server-timeout`,
//! reconnects by itself and then republishes its sessions.

pub mod departed;
pub mod directory;
pub mod ops;
pub mod rooms;
pub mod s2s;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::core::admin_ops::AdminOp;
use crate::core::cluster::{Cluster, Outgoing, Pending, RemoteSession, RoomHolder};
use crate::core::events::Origin;
use crate::xmpp::error::{StreamError, StreamErrorCondition};
use crate::xmpp::{Element, Jid};
use directory::{Directory, Entry};
use wire::Frame;

/// The bucket of the session directory: one key per account and node.
pub const SESSIONS_BUCKET: &str = "oxpecker_sessions";
/// The bucket of node heartbeats, whose values expire after the TTL.
pub const NODES_BUCKET: &str = "oxpecker_nodes";
/// Node `n` listens on this prefix followed by `n`.
pub const SUBJECT_PREFIX: &str = "oxpecker.node.";
/// How long an admin close waits for the owning node's answer.
const CLOSE_PATIENCE: Duration = Duration::from_secs(3);

/// Why the cluster could not be joined or lost its footing (logged; the node keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS URL or options were refused.
    #[error("cannot use NATS at {url}: {reason}")]
    Connect {
        /// The configured `nats_url`.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// A NATS or JetStream operation failed (the node reconnects and starts over).
    #[error("NATS: {0}")]
    Nats(String),
}

/// `url` with any `user:password@` taken out, for messages.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        (None, Some((_, host))) => host.to_string(),
        _ => url.to_string(),
    }
}

fn nats(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

/// This server as a node of a cluster.
pub struct Node {
    name: String,
    ttl: Duration,
    client: async_nats::Client,
    directory: Directory,
    outbox: mpsc::Sender<(String, Vec<u8>)>,
    /// Accounts whose local sessions changed since they were last published.
    dirty: Mutex<HashSet<Jid>>,
    dirty_wake: Notify,
    /// Woken by the client on every connection state change.
    state_wake: Arc<Notify>,
    /// What this node last wrote for each account (the directory value).
    published: Mutex<HashMap<Jid, Vec<u8>>>,
    /// The MUC room leases ([`rooms`]).
    rooms: Arc<rooms::Leases>,
    core: Weak<Core>,
    /// The s2s stream leases ([`s2s`]).
    s2s: s2s::Leases,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Joins the cluster `[cluster]` describes (nothing when `nats_url` is unset): connects in
    /// the background, installs the node in `core` and starts its tasks on `core.tasks`.
    pub async fn start(core: &Arc<Core>) -> Result<Option<Arc<Node>>, ClusterError> {
        let cfg = core.config.load().cluster.clone();
        let Some(url) = cfg.nats_url.clone() else {
            return Ok(None);
        };
        let name = cfg.node();
        let state_wake = Arc::new(Notify::new());
        let wake = state_wake.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("oxpecker {name}"))
            .retry_on_initial_connect()
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100u64.saturating_mul(attempts as u64).min(2000))
            })
            .event_callback(move |event| {
                let wake = wake.clone();
                async move {
                    tracing::info!(%event, "cluster: NATS connection");
                    wake.notify_one();
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| ClusterError::Connect {
                url: without_credentials(&url),
                reason: e.to_string(),
            })?;
        let (outbox, rx) = mpsc::channel(cfg.forward_queue);
        let node = Arc::new(Node {
            directory: Directory::new(&name, Duration::from_secs(cfg.node_ttl_secs)),
            ttl: Duration::from_secs(cfg.node_ttl_secs),
            name,
            client,
            outbox,
            dirty: Mutex::new(HashSet::new()),
            dirty_wake: Notify::new(),
            state_wake,
            published: Mutex::new(HashMap::new()),
            rooms: Arc::default(),
            core: Arc::downgrade(core),
            s2s: s2s::Leases::default(),
        });
        let inbox = node
            .client
            .subscribe(format!("{SUBJECT_PREFIX}{}", node.name))
            .await
            .map_err(nats)?;
        let shutdown = core.shutdown.clone();
        core.tasks
            .spawn(node.clone().run_outbox(rx, shutdown.clone()));
        core.tasks
            .spawn(node.clone().run_inbox(inbox, shutdown.clone()));
        core.tasks.spawn(node.clone().run_rooms(shutdown.clone()));
        core.tasks.spawn(node.clone().run_directory(shutdown));
        s2s::start(&node, core);
        let as_cluster: Arc<dyn Cluster> = node.clone();
        let _ = core.cluster.set(as_cluster);
        // The URL may carry credentials: it is not logged.
        tracing::info!(node = %node.name, "cluster: joining");
        Ok(Some(node))
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn subject(node: &str) -> String {
        format!("{SUBJECT_PREFIX}{node}")
    }

    /// Publishes what other parts of the node queued for other nodes.
    async fn run_outbox(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(String, Vec<u8>)>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = rx.recv() => next,
            };
            let Some((subject, payload)) = next else {
                return;
            };
            if let Err(e) = self.client.publish(subject, payload.into()).await {
                tracing::warn!(error = %e, "cluster: could not publish to a node");
            }
        }
    }

    /// Serves what other nodes send to this node's subject.
    async fn run_inbox(
        self: Arc<Self>,
        mut inbox: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = inbox.next() => msg,
            };
            let Some(msg) = msg else {
                return;
            };
            let Some(core) = self.core.upgrade() else {
                return;
            };
            match Frame::decode(&msg.payload) {
                Ok(Frame::Deliver(stanza)) => core.deliver_forwarded(stanza).await,
                Ok(Frame::Room(node, sender, stanza)) => {
                    self.learn_sender(&node, sender, &stanza);
                    core.route(Origin::Server, stanza).await
                }
                Ok(Frame::Presence(user, to, asker)) => {
                    if let Some((node, sessions)) = asker {
                        self.learn_sessions(&node, sessions, &to);
                    }
                    core.send_local_presence(&user, &to).await
                }
                Ok(Frame::Kick(full)) => {
                    if let Some(s) = core.sessions.get(&full) {
                        s.close(StreamError::with_text(
                            StreamErrorCondition::Conflict,
                            "replaced by a new session",
                        ));
                    }
                }
                Ok(Frame::Close(jid, condition, text)) => {
                    let closed = core
                        .close_sessions(jid.as_str(), condition, &text)
                        .unwrap_or_default();
                    if let Some(reply) = msg.reply {
                        let body = serde_json::to_vec(&closed).unwrap_or_default();
                        if let Err(e) = self.client.publish(reply, body.into()).await {
                            tracing::warn!(error = %e, "cluster: could not answer a close");
                        }
                    }
                }
                Ok(Frame::EndResumable(bare, previd)) => {
                    core.end_resumable(&bare, &previd);
                }
                Ok(Frame::Outgoing(stanza)) => self.send_forwarded(stanza),
                Ok(Frame::Admin(op)) => self.answer_admin(core, op, msg.reply),
                Ok(Frame::IqAnswer(answer)) => {
                    if !core.iq.resolve(&answer) {
                        tracing::debug!("cluster: an iq answer no waiter here tracks");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cluster: dropping a message"),
            }
        }
    }

    /// Keeps the directory: one epoch per NATS connection, started over after a loss.
    async fn run_directory(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            while !self.connected() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.state_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            let result = self.epoch(&shutdown).await;
            self.directory.set_online(false);
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.name, "cluster: directory interrupted; starting over");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Key-value bucket `name` (one value per key, values expiring after `max_age`, zero =
    /// never), created by the first node that needs it. The stream is made here as
    /// `create_key_value` would make it: that call first reads account fields that Debian's
    /// nats-server 2.9 does not send.
    async fn bucket(
        js: &jetstream::Context,
        name: &str,
        max_age: Duration,
    ) -> Result<kv::Store, ClusterError> {
        if let Ok(store) = js.get_key_value(name).await {
            return Ok(store);
        }
        let config = jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        };
        // Another node may create it meanwhile: what counts is that it exists now.
        let created = js.create_stream(config).await;
        match js.get_key_value(name).await {
            Ok(store) => Ok(store),
            Err(e) => Err(match created {
                Err(c) => nats(c),
                Ok(_) => nats(e),
            }),
        }
    }

    /// One connection's life: heartbeat, publish local changes, follow the bucket.
    async fn epoch(&self, shutdown: &CancellationToken) -> Result<(), ClusterError> {
        let js = jetstream::new(self.client.clone());
        let sessions = Self::bucket(&js, SESSIONS_BUCKET, Duration::ZERO).await?;
        let nodes = Self::bucket(&js, NODES_BUCKET, self.ttl).await?;
        self.directory.reset();
        nodes.put(&self.name, "up".into()).await.map_err(nats)?;
        // Others may have dropped this node's entries while it was away: write them all again.
        lock(&self.published).clear();
        if let Some(core) = self.core.upgrade() {
            let mut dirty = lock(&self.dirty);
            dirty.extend(core.sessions.all(None).iter().map(|s| s.jid.bare()));
        }
        self.publish_dirty(&sessions).await?;
        let mut node_watch = nodes.watch_with_history(">").await.map_err(nats)?;
        let mut session_watch = sessions.watch_with_history(">").await.map_err(nats)?;
        self.directory.set_online(true);
        tracing::info!(node = %self.name, "cluster: directory online");
        let mut beat = tokio::time::interval(self.ttl / 3);
        let mut sweep = tokio::time::interval((self.ttl / 4).max(Duration::from_millis(250)));
        for t in [&mut beat, &mut sweep] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.leave(&nodes, &sessions).await;
                    return Ok(());
                }
                _ = self.state_wake.notified() => {
                    if !self.connected() {
                        return Err(ClusterError::Nats("disconnected".into()));
                    }
                }
                _ = beat.tick() => {
                    nodes.put(&self.name, "up".into()).await.map_err(nats)?;
                }
                _ = sweep.tick() => {
                    let swept = self.directory.sweep_departed();
                    // One survivor removes the keys and announces the sessions gone.
                    if !swept.keys.is_empty() && self.directory.speaks_for_the_gone() {
                        if let Some(core) = self.core.upgrade() {
                            core.tasks.spawn(departed::announce(core.clone(), swept.sessions));
                        }
                        for key in swept.keys {
                            tracing::info!(%key, "cluster: removing a gone node's sessions");
                            sessions.delete(&key).await.map_err(nats)?;
                        }
                    }
                }
                _ = self.dirty_wake.notified() => self.publish_dirty(&sessions).await?,
                entry = node_watch.next() => {
                    let entry = entry.ok_or_else(|| nats("node watch ended"))?.map_err(nats)?;
                    match entry.operation {
                        kv::Operation::Put => self.directory.heard(&entry.key),
                        kv::Operation::Delete | kv::Operation::Purge => {
                            tracing::info!(node = %entry.key, "cluster: node left");
                            self.directory.left(&entry.key);
                        }
                    }
                }
                entry = session_watch.next() => {
                    let entry = entry.ok_or_else(|| nats("session watch ended"))?.map_err(nats)?;
                    self.on_entry(entry, &sessions).await?;
                }
            }
        }
    }

    /// Follows one change of the session bucket.
    async fn on_entry(&self, entry: kv::Entry, sessions: &kv::Store) -> Result<(), ClusterError> {
        let Some((bare, node)) = directory::parse_key(&entry.key) else {
            return Ok(());
        };
        let put = entry.operation == kv::Operation::Put;
        if node == self.name {
            // Left over from an earlier run of this node: not ours any more.
            if put && !lock(&self.published).contains_key(&bare) {
                sessions.delete(&entry.key).await.map_err(nats)?;
            }
            return Ok(());
        }
        let entries = put
            .then(|| serde_json::from_slice::<Vec<Entry>>(&entry.value).ok())
            .flatten();
        self.directory.update(bare, node, entries);
        Ok(())
    }

    /// Writes the current local sessions of every account that changed.
    async fn publish_dirty(&self, sessions: &kv::Store) -> Result<(), ClusterError> {
        let bares: Vec<Jid> = lock(&self.dirty).drain().collect();
        let Some(core) = self.core.upgrade() else {
            return Ok(());
        };
        for (i, bare) in bares.iter().enumerate() {
            let entries: Vec<Entry> = core
                .sessions
                .resources(bare)
                .iter()
                .map(|s| Entry::of(s))
                .collect();
            let key = directory::key(bare, &self.name);
            let result = if entries.is_empty() {
                let had = lock(&self.published).remove(bare).is_some();
                if had {
                    sessions.delete(&key).await.map(|_| ()).map_err(nats)
                } else {
                    Ok(())
                }
            } else {
                let value = serde_json::to_vec(&entries).unwrap_or_default();
                let same = lock(&self.published).get(bare) == Some(&value);
                if same {
                    Ok(())
                } else {
                    lock(&self.published).insert(bare.clone(), value.clone());
                    sessions
                        .put(&key, value.into())
                        .await
                        .map(|_| ())
                        .map_err(nats)
                }
            };
            if let Err(e) = result {
                // Written again after the reconnection.
                lock(&self.dirty).extend(bares.get(i..).unwrap_or_default().iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Leaves the cluster at shutdown: the heartbeat key and this node's entries go at once.
    async fn leave(&self, nodes: &kv::Store, sessions: &kv::Store) {
        let keys: Vec<String> = lock(&self.published)
            .drain()
            .map(|(bare, _)| directory::key(&bare, &self.name))
            .collect();
        let goodbye = async {
            let _ = nodes.delete(&self.name).await;
            for key in keys {
                let _ = sessions.delete(&key).await;
            }
            let _ = self.client.flush().await;
        };
        if tokio::time::timeout(Duration::from_secs(2), goodbye)
            .await
            .is_err()
        {
            tracing::warn!(node = %self.name, "cluster: could not say goodbye in time");
        }
    }

    fn queue(&self, node: &str, payload: Vec<u8>) -> bool {
        self.is_connected() && self.outbox.try_send((Self::subject(node), payload)).is_ok()
    }
}

impl Cluster for Node {
    fn node(&self) -> &str {
        &self.name
    }

    fn is_connected(&self) -> bool {
        self.directory.is_online() && self.connected()
    }

    fn sessions_of(&self, bare: &Jid) -> Vec<RemoteSession> {
        let mut found = self.directory.sessions_of(bare);
        self.with_senders(bare, &mut found);
        found
    }

    fn sessions(&self, host: Option<&str>) -> Vec<RemoteSession> {
        self.directory.sessions(host)
    }

    fn forward(&self, nodes: &[&str], stanza: &Element) -> bool {
        let Some((last, others)) = nodes.split_last() else {
            return false;
        };
        let payload = Frame::deliver(stanza);
        let mut any = false;
        for node in others {
            any |= self.queue(node, payload.clone());
        }
        self.queue(last, payload) || any
    }

    fn changed(&self, bare: &Jid) {
        lock(&self.dirty).insert(bare.clone());
        self.dirty_wake.notify_one();
    }

    fn presence(&self, node: &str, user: &Jid, to: &Jid) -> bool {
        let asker = Some((self.name.clone(), self.entries_of(to)));
        self.queue(
            node,
            Frame::Presence(user.clone(), to.clone(), asker).encode(),
        )
    }

    fn kick(&self, node: &str, full: &Jid) -> bool {
        self.queue(node, Frame::Kick(full.clone()).encode())
    }

    fn close(
        &self,
        node: &str,
        jid: &Jid,
        condition: StreamErrorCondition,
        text: &str,
    ) -> Pending<Option<Vec<String>>> {
        let client = self.client.clone();
        let subject = Self::subject(node);
        let payload = Frame::Close(jid.clone(), condition, text.to_string()).encode();
        Box::pin(async move {
            let answer =
                tokio::time::timeout(CLOSE_PATIENCE, client.request(subject, payload.into()))
                    .await
                    .ok()?
                    .ok()?;
            serde_json::from_slice(&answer.payload).ok()
        })
    }

    fn room_holder(&self, room: &Jid) -> RoomHolder {
        self.room_holder_cached(room)
    }

    fn claim_room(&self, room: &Jid) -> Pending<Option<RoomHolder>> {
        let (leases, me, room) = (self.rooms.clone(), self.name.clone(), room.clone());
        Box::pin(async move { leases.claim(&me, &room).await })
    }

    fn release_room(&self, room: &Jid) {
        self.release(room);
    }

    fn forward_to_room(&self, node: &str, stanza: &Element) -> bool {
        let sender = self.sender_entries(stanza);
        self.queue(node, Frame::room(&self.name, &sender, stanza))
    }

    fn rooms(&self, service: &str) -> Vec<(Jid, Arc<str>)> {
        self.leased_rooms(service)
    }

    fn end_resumable(&self, node: &str, bare: &Jid, previd: &str) -> bool {
        self.queue(
            node,
            Frame::EndResumable(bare.clone(), previd.to_string()).encode(),
        )
    }

    fn outgoing(&self, from: Jid, to: Jid, stanza: Element) -> Option<Outgoing> {
        self.route_outgoing((from, to, stanza))
    }

    fn outgoing_closed(&self, local: &str, remote: &str) {
        self.release_pair((local.to_string(), remote.to_string()));
    }

    fn admin(
        &self,
        node: &str,
        op: &AdminOp,
    ) -> Pending<Option<Result<serde_json::Value, String>>> {
        self.ask_admin(node, op)
    }

    fn peers(&self) -> Vec<String> {
        self.directory.peers()
    }

    fn answer_iq(&self, node: &str, answer: &Element) -> bool {
        self.queue(node, Frame::iq_answer(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn urls_in_messages_carry_no_credentials() {
        assert_eq!(
            without_credentials("nats://u:secret@10.0.0.5:4222"),
            "nats://10.0.0.5:4222"
        );
        assert_eq!(without_credentials("u:p@h:4222"), "h:4222");
        assert_eq!(without_credentials("nats://h:4222"), "nats://h:4222");
    }
}
