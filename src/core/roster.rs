//! The roster manager: contact lists and subscription states (RFC 6121 §2–3), roster versions,
//! pending inbound subscription requests, and roster pushes. Shared-group members
//! ([`super::groups`]) are merged in as virtual `both` items.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Core;
use crate::storage::{StorageError, Store};
use crate::xmpp::{Element, Jid, ns};

/// The map store of personal roster items (user → contact → [`RosterItem`]).
pub const ITEMS: &str = "roster";
/// The map store of pending inbound subscription requests (user → contact → request XML).
pub const PENDING: &str = "roster_pending";
const VERSIONS: &str = "roster_version";

/// Why a roster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The roster is at its size limit.
    #[error("the roster is full ({0} items)")]
    Full(usize),
    /// The JID cannot be a roster item (e.g. the user's own JID).
    #[error("invalid contact: {0}")]
    InvalidContact(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Reading shared groups failed.
    #[error("groups: {0}")]
    Groups(String),
}

/// A subscription state (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    /// Neither direction.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Whether the user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// This state with the `to` direction set or cleared.
    pub fn with_to(self, on: bool) -> Self {
        Self::from_parts(on, self.has_from())
    }

    /// This state with the `from` direction set or cleared.
    pub fn with_from(self, on: bool) -> Self {
        Self::from_parts(self.has_to(), on)
    }

    fn from_parts(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// A roster item as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub jid: String,
    /// The user's name for the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The subscription state.
    #[serde(default)]
    pub subscription: Subscription,
    /// A subscription request to the contact is pending (pending-out).
    #[serde(default)]
    pub ask: bool,
    /// The user pre-approved the contact's subscription request (RFC 6121 §3.4).
    #[serde(default)]
    pub approved: bool,
    /// Roster groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl RosterItem {
    /// A new item with no subscription.
    pub fn new(contact: &Jid) -> Self {
        RosterItem {
            jid: contact.to_string(),
            ..RosterItem::default()
        }
    }

    /// The `<item/>` element for roster results and pushes.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("item", ns::ROSTER)
            .attr("jid", self.jid.clone())
            .attr("subscription", self.subscription.as_str());
        if let Some(n) = &self.name {
            el.set_attr("name", Some(n.clone()));
        }
        if self.ask {
            el.set_attr("ask", Some("subscribe".into()));
        }
        if self.approved {
            el.set_attr("approved", Some("true".into()));
        }
        for g in &self.groups {
            el.push(Element::new("group", ns::ROSTER).text(g.clone()));
        }
        el
    }
}

/// The roster manager.
pub struct RosterManager {
    store: Store,
}

fn node(user: &Jid) -> &str {
    user.node().unwrap_or_default()
}

impl RosterManager {
    /// A manager over `store`.
    pub fn new(store: Store) -> Self {
        RosterManager { store }
    }

    /// The user's own items (without shared-group items), by contact JID.
    pub async fn personal(&self, user: &Jid) -> Result<BTreeMap<String, RosterItem>, RosterError> {
        let raw = self
            .store
            .map(user.domain(), ITEMS)
            .get_all(node(user))
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_value::<RosterItem>(v).ok().map(|i| (k, i)))
            .collect())
    }

    /// One personal item.
    pub async fn item(&self, user: &Jid, contact: &Jid) -> Result<Option<RosterItem>, RosterError> {
        let v = self
            .store
            .map(user.domain(), ITEMS)
            .get(node(user), contact.as_str())
            .await?;
        Ok(v.and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Writes (or with `None` removes) a personal item and bumps the roster version. Durable on return.
    pub async fn put(
        &self,
        user: &Jid,
        contact: &Jid,
        item: Option<&RosterItem>,
    ) -> Result<(), RosterError> {
        let value = item.and_then(|i| serde_json::to_value(i).ok());
        self.store
            .map(user.domain(), ITEMS)
            .set(node(user), contact.as_str(), value)
            .await?;
        self.bump(user).await
    }

    async fn bump(&self, user: &Jid) -> Result<(), RosterError> {
        let kv = self.store.keyval(user.domain(), VERSIONS);
        let v = kv
            .get(node(user))
            .await?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        kv.set(node(user), Some(Value::from(v + 1))).await?;
        Ok(())
    }

    /// The personal roster version counter.
    pub async fn version(&self, user: &Jid) -> Result<u64, RosterError> {
        Ok(self
            .store
            .keyval(user.domain(), VERSIONS)
            .get(node(user))
            .await?
            .and_then(|v| v.as_u64())
            .unwrap_or(0))
    }

    /// Stored inbound subscription requests (contact → the request stanza as XML, if kept).
    pub async fn pending_in(&self, user: &Jid) -> Result<BTreeMap<String, Value>, RosterError> {
        Ok(self
            .store
            .map(user.domain(), PENDING)
            .get_all(node(user))
            .await?)
    }

    /// Records (or clears) an inbound subscription request from `contact`.
    pub async fn set_pending_in(
        &self,
        user: &Jid,
        contact: &Jid,
        request: Option<&Element>,
    ) -> Result<(), RosterError> {
        let v = request.map(|r| Value::from(r.to_xml(ns::CLIENT)));
        self.store
            .map(user.domain(), PENDING)
            .set(node(user), contact.as_str(), v)
            .await?;
        Ok(())
    }

    /// Whether `contact` has a pending inbound request.
    pub async fn has_pending_in(&self, user: &Jid, contact: &Jid) -> Result<bool, RosterError> {
        Ok(self
            .store
            .map(user.domain(), PENDING)
            .get(node(user), contact.as_str())
            .await?
            .is_some())
    }

    /// Deletes everything roster-related of a user (account deletion).
    pub async fn delete_user(&self, user: &Jid) -> Result<(), RosterError> {
        self.store
            .map(user.domain(), ITEMS)
            .delete_user(node(user))
            .await?;
        self.store
            .map(user.domain(), PENDING)
            .delete_user(node(user))
            .await?;
        self.store
            .keyval(user.domain(), VERSIONS)
            .set(node(user), None)
            .await?;
        Ok(())
    }
}

impl Core {
    /// The full roster: personal items merged with shared-group members (as `both` items).
    pub async fn roster_items(&self, user: &Jid) -> Result<Vec<RosterItem>, RosterError> {
        let mut items = self.roster.personal(user).await?;
        for (group_name, members) in self.groups.shared_contacts(user).await? {
            for m in members {
                let entry = items
                    .entry(m.to_string())
                    .or_insert_with(|| RosterItem::new(&m));
                entry.subscription = Subscription::Both;
                entry.ask = false;
                if !entry.groups.contains(&group_name) {
                    entry.groups.push(group_name.clone());
                }
            }
        }
        Ok(items.into_values().collect())
    }

    /// The effective item for one contact (personal merged with shared groups).
    pub async fn roster_item(
        &self,
        user: &Jid,
        contact: &Jid,
    ) -> Result<Option<RosterItem>, RosterError> {
        let mut item = self.roster.item(user, contact).await?;
        let groups = self.groups.common_groups(user, contact).await?;
        if !groups.is_empty() {
            let entry = item.get_or_insert_with(|| RosterItem::new(contact));
            entry.subscription = Subscription::Both;
            entry.ask = false;
            for g in groups {
                if !entry.groups.contains(&g) {
                    entry.groups.push(g);
                }
            }
        }
        Ok(item)
    }

    /// The version string clients see (personal counter and the host's group counter).
    pub async fn roster_version(&self, user: &Jid) -> Result<String, RosterError> {
        let personal = self.roster.version(user).await?;
        let groups = self
            .groups
            .version(user.domain())
            .await
            .map_err(|e| RosterError::Groups(e.to_string()))?;
        Ok(format!("{personal}-{groups}"))
    }

    /// Sends a roster push of `item` (or its removal) to every session of `user` that fetched
    /// its roster, on this node and (forwarded to its full JID) on the others.
    pub fn roster_push(&self, user: &Jid, item: Element, version: Option<&str>) {
        let mut query = Element::new("query", ns::ROSTER).child(item);
        if let Some(v) = version {
            query.set_attr("ver", Some(v.to_string()));
        }
        let push = |to: &Jid| {
            Element::new("iq", ns::CLIENT)
                .attr("type", "set")
                .attr("id", format!("push{}", rand_id()))
                .attr("to", to.to_string())
                .child(query.clone())
        };
        for s in self.sessions.resources(user) {
            if s.roster_requested() {
                s.send(push(&s.jid));
            }
        }
        self.push_to_other_nodes(user, |r| r.roster, push);
    }

    /// Forwards `push(full JID)` to each session of `user` on another node that `wanted`; the
    /// push comes from the account's bare JID (RFC 6121 §2.1.6), and the session's node
    /// delivers it to that session only, as its delivery decision says.
    pub fn push_to_other_nodes(
        &self,
        user: &Jid,
        wanted: impl Fn(&super::cluster::RemoteSession) -> bool,
        push: impl Fn(&Jid) -> Element,
    ) {
        for r in self.remote_sessions(user).iter().filter(|r| wanted(r)) {
            let mut iq = push(&r.jid);
            iq.set_attr("from", Some(user.bare().to_string()));
            self.forward(&iq, std::slice::from_ref(r));
        }
    }

    /// Sends unavailable presence from each available resource of `user`, on any node, straight
    /// to the sessions `local` (here) and `remote` (on other nodes), bypassing the router's
    /// policy: what a cancelled subscription (RFC 6121 §3.2.2) or a block (XEP-0191 §3.3) owes
    /// the contact's sessions.
    pub fn send_unavailable_to(
        &self,
        user: &Jid,
        local: &[Arc<super::sessions::SessionHandle>],
        remote: &[super::cluster::RemoteSession],
    ) {
        if local.is_empty() && remote.is_empty() {
            return;
        }
        let mut mine: Vec<Jid> = self
            .sessions
            .resources(user)
            .into_iter()
            .filter(|s| s.is_available())
            .map(|s| s.jid.clone())
            .collect();
        mine.extend(
            self.remote_sessions(user)
                .into_iter()
                .filter(|r| r.available)
                .map(|r| r.jid),
        );
        let unavailable = |from: &Jid, to: &Jid| {
            Element::new("presence", ns::CLIENT)
                .attr("type", "unavailable")
                .attr("from", from.to_string())
                .attr("to", to.to_string())
        };
        for from in &mine {
            for t in local {
                t.send(unavailable(from, &t.jid));
            }
            for r in remote {
                self.forward(&unavailable(from, &r.jid), std::slice::from_ref(r));
            }
        }
    }

    /// Delivers `stanza` (addressed to `user`'s bare JID) to `user`'s available resources on
    /// every node, bypassing the router: inbound subscription stanzas (RFC 6121 §3).
    pub fn deliver_to_available(&self, user: &Jid, stanza: &Element) {
        for s in self.sessions.resources(user) {
            if s.is_available() {
                s.send(stanza.clone());
            }
        }
        let remote: Vec<_> = self
            .remote_sessions(user)
            .into_iter()
            .filter(|r| r.available)
            .collect();
        if !remote.is_empty() {
            // Once per node, which hands it to its own available resources.
            self.forward(stanza, &remote);
        }
    }

    /// Pushes the current effective item for `contact` (or a removal) to `user`'s interested sessions.
    pub async fn push_current(&self, user: &Jid, contact: &Jid) -> Result<(), RosterError> {
        let el = match self.roster_item(user, contact).await? {
            Some(i) => i.to_element(),
            None => Element::new("item", ns::ROSTER)
                .attr("jid", contact.to_string())
                .attr("subscription", "remove"),
        };
        let ver = self.roster_version(user).await?;
        self.roster_push(user, el, Some(&ver));
        Ok(())
    }

    /// Routes the current presence of every available session of `from_user` to `to` (a full
    /// JID, or a bare JID meaning its available sessions), through the router so policy such as
    /// blocking applies.
    pub async fn send_current_presence(self: &Arc<Self>, from_user: &Jid, to: &Jid) {
        // A local recipient must be online (on some node); a remote one is reached through its server.
        if self.host(to.domain()).is_some() && !self.is_online_anywhere(&to.bare()) {
            return;
        }
        self.send_local_presence(from_user, to).await;
        // Sessions on other cluster nodes: their node knows their presence and sends it.
        if let Some(cluster) = self.cluster() {
            for node in self.nodes_serving(&from_user.bare(), |r| r.available) {
                cluster.presence(&node, &from_user.bare(), to);
            }
        }
    }

    /// [`Core::send_current_presence`] for the sessions of `from_user` on this node only (what
    /// another cluster node asks of this one).
    pub async fn send_local_presence(self: &Arc<Self>, from_user: &Jid, to: &Jid) {
        for s in self.sessions.resources(&from_user.bare()) {
            let Some(mut p) = s.last_presence() else {
                continue;
            };
            p.set_attr("from", Some(s.jid.to_string()));
            p.set_attr("to", Some(to.to_string()));
            self.route(super::events::Origin::Server, p).await;
        }
    }

    /// Makes `user` and `contact` (both local) subscribed to each other, with pushes and presence exchange.
    pub async fn add_mutual(
        self: &Arc<Self>,
        user: &Jid,
        contact: &Jid,
    ) -> Result<(), RosterError> {
        if user == contact {
            return Err(RosterError::InvalidContact(contact.to_string()));
        }
        for (a, b) in [(user, contact), (contact, user)] {
            let mut item = self
                .roster
                .item(a, b)
                .await?
                .unwrap_or_else(|| RosterItem::new(b));
            item.subscription = Subscription::Both;
            item.ask = false;
            item.approved = false;
            self.roster.put(a, b, Some(&item)).await?;
            self.roster.set_pending_in(a, b, None).await?;
            self.push_current(a, b).await?;
        }
        self.send_current_presence(user, contact).await;
        self.send_current_presence(contact, user).await;
        Ok(())
    }

    /// Removes `contact` from `user`'s roster with RFC 6121 §2.5 semantics; returns whether it existed.
    pub async fn roster_remove(
        self: &Arc<Self>,
        user: &Jid,
        contact: &Jid,
    ) -> Result<bool, RosterError> {
        let Some(item) = self.roster.item(user, contact).await? else {
            return Ok(false);
        };
        let had_pending = self.roster.has_pending_in(user, contact).await?;
        self.roster.put(user, contact, None).await?;
        self.roster.set_pending_in(user, contact, None).await?;
        self.push_current(user, contact).await?;
        if item.subscription.has_to() || item.ask {
            self.route_presence(user, contact, "unsubscribe").await;
        }
        if item.subscription.has_from() || had_pending {
            self.route_presence(user, contact, "unsubscribed").await;
        }
        Ok(true)
    }

    /// Routes a server-generated subscription presence of `ty` from `from` (bare) to `to`.
    pub async fn route_presence(self: &Arc<Self>, from: &Jid, to: &Jid, ty: &str) {
        let p = Element::new("presence", ns::CLIENT)
            .attr("type", ty)
            .attr("from", from.to_string())
            .attr("to", to.to_string());
        self.route(super::events::Origin::Server, p).await;
    }
}

fn rand_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:x}")
}
