//! The MUC manager of one component host: the live rooms, their storage, the service limits,
//! fan-out, and the operations the admin faces (REST, shell) call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde_json::{Value, json};

use super::room::{
    Affiliation, Fanout, Hat, Out, Outgoing, Role, Room, RoomConfig, Roster, Stored,
};
use crate::core::Core;
use crate::core::cluster::{Cluster, RoomHolder};
use crate::core::events::Origin;
use crate::storage::StorageError;
use crate::xmpp::{Element, Jid};

/// Keyval store of persistent rooms (keyed by room node).
pub const ROOMS_STORE: &str = "muc_rooms";
/// Keyval store of destroyed rooms' tombstones (keyed by room node).
pub const TOMBSTONES_STORE: &str = "muc_tombstones";
/// Archive store of room messages (keyed by room node).
pub const ARCHIVE_STORE: &str = "muc_log";
/// Keyval store of rooms' vCards (keyed by room node), XEP-0486 avatars.
pub const VCARDS_STORE: &str = "muc_vcards";
/// Keyval store of the service's own settings (the occupant-id salt).
pub const SERVICE_STORE: &str = "muc_service";

/// Who may create rooms (`muc_room_creation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// Anyone, local or remote.
    Anyone,
    /// Users of this server's hosts.
    Local,
    /// Server admins only.
    Admin,
}

/// The service limits, from the component's options.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Who may create rooms.
    pub creation: Creation,
    /// Most rooms one bare JID may own through creation.
    pub max_rooms_per_creator: usize,
    /// Most occupants per room.
    pub max_occupants: usize,
    /// Largest groupchat body in bytes.
    pub max_message_size: usize,
    /// Longest nick in characters.
    pub max_nick_length: usize,
    /// Largest history length a room may keep.
    pub max_history: usize,
    /// Messages an occupant may send in a burst.
    pub rate_burst: f64,
    /// Messages per second an occupant may send once the burst is spent.
    pub rate_per_second: f64,
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MucError {
    /// No such room.
    #[error("no such room")]
    NotFound,
    /// The room exists (or its tombstone does).
    #[error("the room already exists or was destroyed (destroy it again to allow re-creating it)")]
    Exists,
    /// The JID or value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The acting user may not do this.
    #[error("refused: {0}")]
    Refused(String),
    /// Another cluster node hosts the room (it holds the room's lease).
    #[error("the room is hosted on cluster node {0}")]
    Elsewhere(String),
    /// The cluster could not be asked who hosts the room.
    #[error("the cluster cannot be reached to take the room")]
    Unreachable,
}

/// A room's summary for listings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RoomSummary {
    /// The room's JID.
    pub jid: String,
    /// Its name.
    pub name: String,
    /// Occupants present.
    pub occupants: usize,
    /// Persistent.
    pub persistent: bool,
    /// Public.
    pub public: bool,
    /// In a cluster, the node hosting the room now (none: stored, live nowhere); occupants
    /// are counted by that node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The MUC manager of one component host.
pub struct MucService {
    /// The component's domain.
    pub host: String,
    /// The limits.
    pub limits: Limits,
    core: Weak<Core>,
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
    buckets: Mutex<HashMap<Jid, Bucket>>,
    salt: tokio::sync::OnceCell<String>,
    /// In a cluster, the rooms on other nodes that local sessions joined (session → room →
    /// occupant JID), so that a session ending without unavailable presence leaves them too.
    remote_joins: Mutex<HashMap<Jid, HashMap<Jid, Jid>>>,
}

/// When the service goes (its module unloads or is reloaded), the live rooms' occupants are
/// told they were removed (332) rather than left believing they are joined.
impl Drop for MucService {
    fn drop(&mut self) {
        let Some(core) = self.core() else {
            return;
        };
        let rooms = std::mem::take(&mut *self.map());
        if let Some(cluster) = core.cluster() {
            for room in rooms.values() {
                cluster.release_room(&lock(room).jid);
            }
        }
        for room in rooms.values() {
            for (to, stanza) in lock(room).shut_down() {
                match core.sessions.get(&to) {
                    Some(s) => {
                        s.send(stanza);
                    }
                    None if tokio::runtime::Handle::try_current().is_ok() => {
                        let core = core.clone();
                        core.tasks
                            .clone()
                            .spawn(async move { core.route(Origin::Server, stanza).await });
                    }
                    None => {}
                }
            }
        }
    }
}

/// Locks a room; a poisoned lock still yields the state.
pub fn lock(room: &Mutex<Room>) -> std::sync::MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(|e| e.into_inner())
}

impl MucService {
    /// A service for component `host`.
    pub fn new(core: Weak<Core>, host: &str, limits: Limits) -> Self {
        MucService {
            host: host.to_string(),
            limits,
            core,
            rooms: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            salt: tokio::sync::OnceCell::new(),
            remote_joins: Mutex::new(HashMap::new()),
        }
    }

    /// The server, while it runs.
    pub fn core(&self) -> Option<Arc<Core>> {
        self.core.upgrade()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Room>>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's JID for `node`.
    pub fn room_jid(&self, node: &str) -> Result<Jid, MucError> {
        Jid::new(Some(node), &self.host, None).map_err(|e| MucError::Invalid(e.to_string()))
    }

    /// The installed cluster, if this server is a node of one.
    fn cluster(&self) -> Option<Arc<dyn Cluster>> {
        self.core()?.cluster().cloned()
    }

    /// Who hosts room `node` in the cluster, from the lease cache (always here without one).
    pub fn holder(&self, node: &str) -> RoomHolder {
        match (self.cluster(), self.room_jid(node)) {
            (Some(c), Ok(room)) => c.room_holder(&room),
            _ => RoomHolder::Here,
        }
    }

    /// Makes sure this node holds room `node`'s lease (taking it when nobody does) before the
    /// room is live here; nothing without a cluster.
    async fn lease(&self, cluster: &dyn Cluster, node: &str) -> Result<(), MucError> {
        let room = self.room_jid(node)?;
        let holder = match cluster.room_holder(&room) {
            RoomHolder::Nobody => cluster.claim_room(&room).await,
            known => Some(known),
        };
        match holder {
            Some(RoomHolder::Node(n)) => {
                self.forget_moved(node);
                Err(MucError::Elsewhere(n.to_string()))
            }
            Some(_) => Ok(()),
            None => Err(MucError::Unreachable),
        }
    }

    /// Forgets this node's copy of room `node`, now hosted by another node (this one was cut
    /// off meanwhile): its local occupants are told they were removed (332), so that their
    /// clients join again, at the holder.
    pub fn forget_moved(&self, node: &str) {
        let Some(room) = self.map().remove(node) else {
            return;
        };
        let Some(core) = self.core() else {
            return;
        };
        for (to, stanza) in lock(&room).shut_down() {
            if let Some(s) = core.sessions.get(&to) {
                s.send(stanza);
            }
        }
    }

    /// Notes a presence that local session `from` sent to `occupant` (`room@service/nick`) on
    /// another node: joined there (`joined`), or left.
    pub fn joined_elsewhere(&self, from: &Jid, occupant: &Jid, joined: bool) {
        let mut map = self.remote_joins.lock().unwrap_or_else(|e| e.into_inner());
        if joined {
            map.entry(from.clone())
                .or_default()
                .insert(occupant.bare(), occupant.clone());
        } else if let Some(rooms) = map.get_mut(from) {
            rooms.remove(&occupant.bare());
            if rooms.is_empty() {
                map.remove(from);
            }
        }
    }

    /// Gives up the cluster lease of room `node`, which left this node's memory.
    fn released(&self, node: &str) {
        if let (Some(c), Ok(room)) = (self.cluster(), self.room_jid(node)) {
            c.release_room(&room);
        }
    }

    /// A live room, loading a persistent one from storage. In a cluster the room is live on
    /// the node holding its lease only: elsewhere this is [`MucError::Elsewhere`].
    pub async fn room(&self, node: &str) -> Result<Option<Arc<Mutex<Room>>>, MucError> {
        let live = self.map().get(node).cloned();
        let cluster = self.cluster();
        if let Some(r) = live {
            if let Some(c) = &cluster {
                self.lease(c.as_ref(), node).await?;
            }
            return Ok(Some(r));
        }
        let Some(core) = self.core() else {
            return Ok(None);
        };
        if let Some(c) = &cluster
            && let RoomHolder::Node(n) = c.room_holder(&self.room_jid(node)?)
        {
            return Err(MucError::Elsewhere(n.to_string()));
        }
        let Some(value) = core.store.keyval(&self.host, ROOMS_STORE).get(node).await? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_value(value)
            .map_err(|e| MucError::Invalid(format!("stored room {node}: {e}")))?;
        if let Some(c) = &cluster {
            self.lease(c.as_ref(), node).await?;
        }
        let mut room = Room::restore(self.room_jid(node)?, stored);
        if room.config.enable_archiving && room.config.history_length > 0 {
            room.history = self.recent_history(&core, node, &room).await;
        }
        let room = Arc::new(Mutex::new(room));
        Ok(Some(
            self.map().entry(node.to_string()).or_insert(room).clone(),
        ))
    }

    /// The last messages of a room's archive, as history for a room loaded from storage.
    async fn recent_history(
        &self,
        core: &Core,
        node: &str,
        room: &Room,
    ) -> std::collections::VecDeque<super::room::HistoryItem> {
        let q = crate::storage::ArchiveQuery {
            limit: Some(room.config.history_length),
            reverse: true,
            ..Default::default()
        };
        let page = match core
            .store
            .archive(&self.host, ARCHIVE_STORE)
            .find(node, &q)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(room = node, error = %e, "cannot read a room's recent history");
                return Default::default();
            }
        };
        let mut history: std::collections::VecDeque<_> = page
            .items
            .into_iter()
            .filter_map(|item| {
                let mut stanza = item.value["xml"]
                    .as_str()
                    .and_then(|x| crate::xmpp::parser::parse_element(x).ok())?;
                let chars = stanza
                    .get_child("body", crate::xmpp::ns::CLIENT)
                    .map(|b| b.text_content().len())
                    .unwrap_or(0);
                stanza.push(
                    Element::new("stanza-id", crate::xmpp::ns::SID)
                        .attr("id", item.id)
                        .attr("by", room.jid.as_str()),
                );
                Some(super::room::HistoryItem {
                    stanza,
                    when: item.when,
                    chars,
                })
            })
            .collect();
        history.make_contiguous().reverse();
        history
    }

    /// The tombstone of a destroyed room (`{reason, alternate}`), if any.
    pub async fn tombstone(&self, node: &str) -> Result<Option<Value>, MucError> {
        let Some(core) = self.core() else {
            return Ok(None);
        };
        Ok(core
            .store
            .keyval(&self.host, TOMBSTONES_STORE)
            .get(node)
            .await?)
    }

    /// Creates a room owned by `owner` (`None` for a room made by an admin face); locked rooms
    /// wait for their owner's configuration.
    pub async fn create(
        &self,
        node: &str,
        owner: Option<&Jid>,
        config: RoomConfig,
        locked: bool,
    ) -> Result<Arc<Mutex<Room>>, MucError> {
        if self.room(node).await?.is_some() || self.tombstone(node).await?.is_some() {
            return Err(MucError::Exists);
        }
        if let Some(c) = self.cluster() {
            self.lease(c.as_ref(), node).await?;
        }
        let mut room = Room::new(self.room_jid(node)?, config);
        room.locked = locked;
        if let Some(o) = owner {
            room.affiliations
                .insert(o.bare().to_string(), Affiliation::Owner);
        }
        let room = Arc::new(Mutex::new(room));
        let room = {
            let mut map = self.map();
            if map.contains_key(node) {
                return Err(MucError::Exists);
            }
            map.insert(node.to_string(), room.clone());
            room
        };
        if !locked {
            self.save(node).await?;
        }
        Ok(room)
    }

    /// Stores a persistent room's config and affiliations (deletes a room no longer persistent).
    pub async fn save(&self, node: &str) -> Result<(), MucError> {
        let Some(core) = self.core() else {
            return Ok(());
        };
        let Some(room) = self.map().get(node).cloned() else {
            return Ok(());
        };
        let value = {
            let r = lock(&room);
            if r.locked {
                return Ok(());
            }
            r.config
                .persistent
                .then(|| serde_json::to_value(r.stored()))
                .transpose()
                .map_err(|e| MucError::Invalid(e.to_string()))?
        };
        core.store
            .keyval(&self.host, ROOMS_STORE)
            .set(node, value)
            .await?;
        Ok(())
    }

    /// Takes session `full` out of every room it is in, as if it had sent unavailable presence
    /// (its session ended without one: `resource-unbind`).
    pub async fn session_ended(&self, full: &Jid) {
        let rooms: Vec<(String, Arc<Mutex<Room>>)> = self
            .map()
            .iter()
            .map(|(node, room)| (node.clone(), room.clone()))
            .collect();
        for (node, room) in rooms {
            let out = {
                let mut r = lock(&room);
                if r.occupant_of(full).is_none() {
                    continue;
                }
                r.leave(
                    full,
                    Some(&Element::new("presence", crate::xmpp::ns::CLIENT)),
                )
            };
            self.send_outgoing(out).await;
            self.vanish_if_empty(&node).await;
        }
        self.forget_bucket(full);
        let elsewhere = self
            .remote_joins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(full);
        if let (Some(rooms), Some(core)) = (elsewhere, self.core()) {
            // Left on the nodes hosting them, as if the session had said goodbye.
            for occupant in rooms.into_values() {
                let bye = Element::new("presence", crate::xmpp::ns::CLIENT)
                    .attr("from", full.as_str())
                    .attr("to", occupant.as_str())
                    .attr("type", "unavailable");
                core.route(Origin::Server, bye).await;
            }
        }
    }

    /// Forgets an empty room from memory (a persistent one stays stored).
    pub fn evict_if_empty(&self, node: &str) {
        let evicted = {
            let mut map = self.map();
            let empty = map
                .get(node)
                .is_some_and(|room| lock(room).occupants.is_empty());
            empty && map.remove(node).is_some()
        };
        if evicted {
            self.released(node);
        }
    }

    /// Forgets an empty room; a temporary one vanishes for good, its archive with it.
    pub async fn vanish_if_empty(&self, node: &str) {
        let temporary = {
            let mut map = self.map();
            let Some(room) = map.get(node) else {
                return;
            };
            let (empty, persistent) = {
                let r = lock(room);
                (r.occupants.is_empty(), r.config.persistent)
            };
            if !empty {
                return;
            }
            map.remove(node);
            !persistent
        };
        self.released(node);
        if temporary {
            self.delete_archive(node).await;
        }
    }

    /// Deletes a room's archive.
    async fn delete_archive(&self, node: &str) {
        let Some(core) = self.core() else {
            return;
        };
        let archive = core.store.archive(&self.host, ARCHIVE_STORE);
        if let Err(e) = archive
            .delete(node, &crate::storage::ArchiveQuery::default())
            .await
        {
            tracing::warn!(room = node, error = %e, "cannot delete a room's archive");
        }
    }

    /// Destroys a room (occupants are told, a tombstone is kept); destroying a tombstone
    /// removes it so the room may be created again.
    pub async fn destroy(
        &self,
        node: &str,
        reason: Option<&str>,
        alternate: Option<&str>,
    ) -> Result<(), MucError> {
        let core = self.core().ok_or(MucError::NotFound)?;
        let Some(room) = self.room(node).await? else {
            if self.tombstone(node).await?.is_some() {
                core.store
                    .keyval(&self.host, TOMBSTONES_STORE)
                    .set(node, None)
                    .await?;
                return Ok(());
            }
            return Err(MucError::NotFound);
        };
        let out = lock(&room).destroy(reason, alternate);
        self.map().remove(node);
        self.released(node);
        core.store
            .keyval(&self.host, TOMBSTONES_STORE)
            .set(
                node,
                Some(json!({ "reason": reason, "alternate": alternate })),
            )
            .await?;
        core.store
            .keyval(&self.host, ROOMS_STORE)
            .set(node, None)
            .await?;
        self.delete_archive(node).await;
        core.store
            .keyval(&self.host, VCARDS_STORE)
            .set(node, None)
            .await?;
        self.send(out).await;
        Ok(())
    }

    /// Every room, live or stored.
    pub async fn list(&self) -> Result<Vec<RoomSummary>, MucError> {
        Ok(self
            .scan()
            .await?
            .into_iter()
            .map(|(summary, _)| summary)
            .collect())
    }

    /// Every unlocked room with its affiliations: live rooms from memory, stored ones read
    /// without loading them (a listing does not fill memory with idle rooms).
    async fn scan(
        &self,
    ) -> Result<Vec<(RoomSummary, std::collections::BTreeMap<String, Affiliation>)>, MucError> {
        let live: Vec<Arc<Mutex<Room>>> = self.map().values().cloned().collect();
        let mut out = Vec::with_capacity(live.len());
        let mut seen = std::collections::HashSet::new();
        for room in live {
            let r = lock(&room);
            seen.insert(r.jid.node().unwrap_or_default().to_string());
            if r.locked {
                continue;
            }
            out.push((
                RoomSummary {
                    jid: r.jid.to_string(),
                    name: r.config.name.clone(),
                    occupants: r.occupants.len(),
                    persistent: r.config.persistent,
                    public: r.config.public,
                    node: None,
                },
                r.affiliations.clone(),
            ));
        }
        if let Some(core) = self.core() {
            let store = core.store.keyval(&self.host, ROOMS_STORE);
            for node in store.users().await? {
                if seen.contains(&node) {
                    continue;
                }
                let Some(value) = store.get(&node).await? else {
                    continue;
                };
                let Ok(stored) = serde_json::from_value::<Stored>(value) else {
                    continue;
                };
                out.push((
                    RoomSummary {
                        jid: self.room_jid(&node)?.to_string(),
                        name: stored.config.name.clone(),
                        occupants: 0,
                        persistent: stored.config.persistent,
                        public: stored.config.public,
                        node: None,
                    },
                    stored.affiliations,
                ));
            }
        }
        if let Some(cluster) = self.cluster() {
            self.add_nodes(cluster.as_ref(), &mut out);
        }
        out.sort_by(|a, b| a.0.jid.cmp(&b.0.jid));
        Ok(out)
    }

    /// Names the hosting node of every listed room, and adds the rooms live on other nodes
    /// that storage does not list (temporary ones: what the lease bucket knows of them).
    fn add_nodes(
        &self,
        cluster: &dyn Cluster,
        out: &mut Vec<(RoomSummary, std::collections::BTreeMap<String, Affiliation>)>,
    ) {
        let leases: HashMap<String, String> = cluster
            .rooms(&self.host)
            .into_iter()
            .map(|(room, node)| (room.to_string(), node.to_string()))
            .collect();
        let live_here: std::collections::HashSet<String> = self
            .map()
            .values()
            .map(|r| lock(r).jid.to_string())
            .collect();
        for (summary, _) in out.iter_mut() {
            summary.node = leases.get(&summary.jid).cloned().or_else(|| {
                live_here
                    .contains(&summary.jid)
                    .then(|| cluster.node().to_string())
            });
        }
        let listed: std::collections::HashSet<String> =
            out.iter().map(|(s, _)| s.jid.clone()).collect();
        for (jid, node) in leases {
            if listed.contains(&jid) {
                continue;
            }
            out.push((
                RoomSummary {
                    name: String::new(),
                    occupants: 0,
                    persistent: false,
                    public: false,
                    node: Some(node),
                    jid,
                },
                Default::default(),
            ));
        }
    }

    /// A room's configuration, occupants and affiliations as JSON.
    pub async fn describe(&self, node: &str) -> Result<Value, MucError> {
        let room = self.room(node).await?.ok_or(MucError::NotFound)?;
        let r = lock(&room);
        let occupants: Vec<Value> = r
            .occupants
            .values()
            .map(|o| {
                json!({
                    "nick": o.nick,
                    "jid": o.bare.as_str(),
                    "role": o.role.as_str(),
                    "affiliation": r.affiliation(&o.bare).as_str(),
                    "sessions": o.sessions.len(),
                })
            })
            .collect();
        let affiliations: serde_json::Map<String, Value> = r
            .affiliations
            .iter()
            .map(|(j, a)| (j.clone(), Value::from(a.as_str())))
            .collect();
        Ok(json!({
            "jid": r.jid.as_str(),
            "config": r.config,
            "subject": r.subject.as_ref().map(|s| s.1.clone()),
            "occupants": occupants,
            "affiliations": affiliations,
            "hats": r.hats,
        }))
    }

    /// Puts a hat on `jid` in room `node` (`on`) or takes it off (XEP-0317), on behalf of
    /// `actor` (`None`: the server); only the room's owners and admins (and server admins)
    /// may. The change is stored and the user's presence broadcast again.
    pub async fn set_hat(
        &self,
        node: &str,
        actor: Option<&Jid>,
        jid: &Jid,
        hat: Hat,
        on: bool,
    ) -> Result<(), MucError> {
        let room = self.room(node).await?.ok_or(MucError::NotFound)?;
        let is_server_admin = |a: &Jid| {
            self.core()
                .is_some_and(|c| c.config.load().is_admin(a.bare().as_str()))
        };
        let out = {
            let mut r = lock(&room);
            if let Some(a) = actor.filter(|a| !is_server_admin(a))
                && r.affiliation(&a.bare()) < Affiliation::Admin
            {
                return Err(MucError::Refused(
                    "only the room's owners and admins manage hats".into(),
                ));
            }
            r.set_hat(&jid.bare(), hat, on)
                .map_err(|e| MucError::Invalid(e.to_string()))?
        };
        self.save(node).await?;
        self.send(out).await;
        Ok(())
    }

    /// Every hat worn in room `node`: each user's bare JID with the hat.
    pub async fn hats(&self, node: &str) -> Result<Vec<(String, Hat)>, MucError> {
        let room = self.room(node).await?.ok_or(MucError::NotFound)?;
        let r = lock(&room);
        Ok(r.hats
            .iter()
            .flat_map(|(j, hats)| hats.iter().map(move |h| (j.clone(), h.clone())))
            .collect())
    }

    /// Sets a bare JID's affiliation (admin operation): present occupants' roles follow.
    pub async fn set_affiliation(
        &self,
        node: &str,
        jid: &Jid,
        affiliation: Affiliation,
        reason: Option<&str>,
    ) -> Result<(), MucError> {
        self.set_affiliation_as(node, None, jid, affiliation, reason)
            .await
    }

    /// [`Self::set_affiliation`] on behalf of `actor` (`None`: the server, which may do
    /// anything), with the room's rules for who may change what; server admins count as owners.
    pub async fn set_affiliation_as(
        &self,
        node: &str,
        actor: Option<&Jid>,
        jid: &Jid,
        affiliation: Affiliation,
        reason: Option<&str>,
    ) -> Result<(), MucError> {
        let room = self.room(node).await?.ok_or(MucError::NotFound)?;
        let is_server_admin = |a: &Jid| {
            self.core()
                .is_some_and(|c| c.config.load().is_admin(a.bare().as_str()))
        };
        let out = {
            let mut r = lock(&room);
            if let Some(a) = actor.filter(|a| !is_server_admin(a)) {
                let mine = r.affiliation(&a.bare());
                r.check_affiliation_change(mine, &jid.bare(), affiliation)
                    .map_err(|e| MucError::Refused(e.to_string()))?;
            }
            r.set_affiliation(&jid.bare(), affiliation, reason)
        };
        self.save(node).await?;
        self.send(out).await;
        Ok(())
    }

    /// A bare JID's affiliation.
    pub async fn get_affiliation(&self, node: &str, jid: &Jid) -> Result<Affiliation, MucError> {
        let room = self.room(node).await?.ok_or(MucError::NotFound)?;
        Ok(lock(&room).affiliation(&jid.bare()))
    }

    /// The role of the occupant `nick` (`none` when absent).
    pub async fn get_role(&self, node: &str, nick: &str) -> Result<Role, MucError> {
        let room = self.room(node).await?.ok_or(MucError::NotFound)?;
        Ok(lock(&room)
            .occupants
            .get(nick)
            .map(|o| o.role)
            .unwrap_or(Role::None))
    }

    /// Creates the members-only persistent room of shared-roster group `id` on `host`
    /// (`create_default_muc`), named after the group, its members the group's members.
    pub async fn create_group_room(
        &self,
        host: &str,
        id: &str,
        name: &str,
    ) -> Result<Jid, MucError> {
        let core = self.core().ok_or(MucError::NotFound)?;
        let node = id.to_lowercase();
        let jid = self.room_jid(&node)?;
        let config = RoomConfig {
            name: name.to_string(),
            persistent: true,
            members_only: true,
            public: false,
            ..RoomConfig::default()
        };
        let room = self.create(&node, None, config, true).await?;
        let members = core
            .groups
            .members(host, id)
            .await
            .map_err(|e| MucError::Invalid(e.to_string()))?;
        {
            let mut r = lock(&room);
            r.group = Some(super::room::GroupLink {
                host: host.to_string(),
                id: id.to_string(),
            });
            for m in members {
                if let Ok(j) = Jid::new(Some(&m), host, None) {
                    r.affiliations.insert(j.to_string(), Affiliation::Member);
                }
            }
            r.forget_all_views();
            r.locked = false;
        }
        self.save(&node).await?;
        Ok(jid)
    }

    /// Brings `user`'s affiliation with a group's room in line with the group: a member of the
    /// group is a member of the room, a former one is no longer (owners and admins are kept).
    pub async fn sync_group_member(&self, node: &str, user: &Jid) -> Result<(), MucError> {
        let Some(core) = self.core() else {
            return Ok(());
        };
        let Some(room) = self.room(node).await? else {
            return Ok(());
        };
        let (link, current) = {
            let r = lock(&room);
            (r.group.clone(), r.affiliation(&user.bare()))
        };
        let Some(link) = link else {
            return Ok(());
        };
        let is_member = user.domain() == link.host
            && core
                .groups
                .members(&link.host, &link.id)
                .await
                .map_err(|e| MucError::Invalid(e.to_string()))?
                .iter()
                .any(|m| Some(m.as_str()) == user.node());
        let wanted = match (is_member, current) {
            (true, Affiliation::None) => Affiliation::Member,
            (false, Affiliation::Member) => Affiliation::None,
            _ => return Ok(()),
        };
        self.set_affiliation(node, user, wanted, None).await
    }

    /// Rooms owned by `owner` among the live and stored rooms.
    pub async fn owned_by(&self, owner: &Jid) -> Result<usize, MucError> {
        let owner = owner.bare();
        Ok(self
            .scan()
            .await?
            .iter()
            .filter(|(_, affs)| affs.get(owner.as_str()) == Some(&Affiliation::Owner))
            .count())
    }

    /// The XEP-0421 occupant id of `bare` in room `room`: stable, opaque, per room.
    pub async fn occupant_id(&self, room: &Jid, bare: &Jid) -> String {
        use base64::Engine;
        use sha2::Digest;
        let salt = self
            .salt
            .get_or_init(|| async {
                let Some(core) = self.core() else {
                    return String::new();
                };
                let store = core.store.keyval(&self.host, SERVICE_STORE);
                if let Ok(Some(v)) = store.get("salt").await
                    && let Some(s) = v.as_str()
                {
                    return s.to_string();
                }
                let s: String = (0..4)
                    .map(|_| crate::core::sessions::random_resource())
                    .collect();
                if let Err(e) = store.set("salt", Some(Value::from(s.clone()))).await {
                    tracing::warn!(error = %e, "cannot store the occupant-id salt");
                }
                s
            })
            .await;
        let mut h = sha2::Sha256::new();
        h.update(salt.as_bytes());
        h.update([0]);
        h.update(room.as_str().as_bytes());
        h.update([0]);
        h.update(bare.as_str().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..18])
    }

    /// Takes one message from `sender`'s rate bucket; `false` if it is empty.
    pub fn take_token(&self, sender: &Jid) -> bool {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = map.entry(sender.clone()).or_insert(Bucket {
            tokens: self.limits.rate_burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.limits.rate_per_second;
        b.tokens = (b.tokens + refill).min(self.limits.rate_burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets a sender's rate bucket (when it leaves).
    pub fn forget_bucket(&self, sender: &Jid) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sender);
    }

    /// Sends what a room rule produced ([`Out`] or [`Outgoing`]), as [`Self::send_outgoing`].
    pub async fn send(&self, out: impl Into<Outgoing>) {
        self.send_outgoing(out.into()).await;
    }

    /// Sends each stanza to its recipient: straight to a local session's queue, otherwise
    /// through the core's router (remote occupants, resumed sessions).
    async fn send_each(&self, out: Out) {
        let Some(core) = self.core() else {
            return;
        };
        for (to, stanza) in out {
            match core.sessions.get(&to) {
                Some(s) => {
                    s.send(stanza);
                }
                None => core.route(Origin::Server, stanza).await,
            }
        }
    }

    /// Sends a fan-out: the stanza is serialised once and each local session gets that XML
    /// with its own `to`; other recipients (remote occupants, resumed sessions) get an
    /// addressed copy through the core's router.
    pub async fn fan_out(&self, f: Fanout) {
        let Some(core) = self.core() else {
            return;
        };
        for to in f.to {
            match core.sessions.get(&to) {
                Some(s) => {
                    s.send_shared(&f.stanza);
                }
                None => core.route(Origin::Server, f.stanza.addressed(&to)).await,
            }
        }
    }

    /// Sends a joining session the others' cached presences, serialised once for everyone
    /// who joins after them. A roster longer than half the session's queue streams as the
    /// client reads (the rest paced), so that a big room does not overflow the newcomer's
    /// queue and get it disconnected.
    async fn send_roster(&self, roster: Roster) {
        let Some(core) = self.core() else {
            return;
        };
        match core.sessions.get(&roster.to) {
            Some(s) => {
                let half = core.config.load().c2s.send_queue / 2;
                for p in &roster.presences {
                    let sent = if s.queued() < half {
                        s.send_shared(p)
                    } else {
                        s.send_shared_paced(p).await
                    };
                    if !sent {
                        break;
                    }
                }
            }
            None => {
                for p in &roster.presences {
                    core.route(Origin::Server, p.addressed(&roster.to)).await;
                }
            }
        }
    }

    /// Sends what a presence to the room produced: the roster, the single stanzas, then the
    /// fan-outs.
    pub async fn send_outgoing(&self, out: Outgoing) {
        if let Some(roster) = out.roster {
            self.send_roster(roster).await;
        }
        self.send_each(out.each).await;
        for f in out.shared {
            self.fan_out(f).await;
        }
    }

    /// Sends one stanza through the router (replies, invitations).
    pub async fn route(&self, stanza: Element) {
        if let Some(core) = self.core() {
            core.route(Origin::Server, stanza).await;
        }
    }
}
