//! XEP-0163 Personal Eventing Protocol: a XEP-0060 pubsub service on every account's bare JID.
//!
//! - **Owner operations** (`pubsub`): publish (auto-creating the node, with XEP-0060 §7.1.5
//!   publish-options preconditions), retract, create; (`pubsub#owner`) delete, purge,
//!   configure get/set, affiliations get/set, default configuration.
//! - **Retrieval** by anyone the node's access model allows: `presence` (default: contacts with
//!   a `from`/`both` subscription), `open`, `whitelist` (the owner and JIDs it affiliated as
//!   members or publishers). Outcasts never.
//! - **Notifications** (`<message type='headline'><event/></message>`) on publish, retract,
//!   purge and delete go to the owner's available resources and to each available resource of
//!   a contact allowed by the access model that advertises `<node>+notify` in its XEP-0115
//!   caps ([`caps`]). When a resource becomes available (or changes caps) it gets the last item
//!   of each node it wants, of its own account and of every account whose presence it has.
//! - **Storage**: nodes and items in map store [`store::STORE`] (durable); bounded by
//!   `pep_max_nodes` per account, `pep_max_items` per node (also what `max_items=max` means)
//!   and `pep_max_item_size` bytes per item. The caps cache holds `pep_caps_cache_size` sets.
//! - **Other modules** use the [`Service`] of a host through [`service`] (publish, retract,
//!   items) and hook the stanza event [`PUBLISH_EVENT`], fired after a client's publish with
//!   `<publish node=…><item id=…>payload</item></publish>` as the stanza and the owner as
//!   `from` and `to` (return `Flow::Continue`).
//!
//! Account disco#info lists the [`FEATURES`] (host items `account-feature`) and the identity
//! `pubsub/pep`; disco#items on the bare JID lists the nodes the requester may see.

pub mod caps;
pub mod form;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde_json::json;

use crate::core::Core;
use crate::core::accounts::now;
use crate::core::events::{Flow, Origin, StanzaEvent, handler};
use crate::core::module_api::ModuleHandle;
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::core::router::PRESENCE_FORWARDED;
use crate::core::sessions::SessionHandle;
use crate::storage::StorageError;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, datetime, ns, stanza};
use caps::{CapsCache, Lookup, Notify};
use form::{AccessModel, Form, NodeConfig, SendLast};
use store::{Affiliation, ItemRecord, NodeRecord, Op, Repo};

/// The stanza event fired on the owner's host after a client's publish.
pub const PUBLISH_EVENT: &str = "pep-publish-item";
/// Account disco#info features of the PEP service.
pub const FEATURES: &[&str] = &[
    ns::PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];
/// Default of `pep_max_nodes`.
pub const DEFAULT_MAX_NODES: i64 = 256;
/// Default of `pep_max_items`.
pub const DEFAULT_MAX_ITEMS: i64 = 256;
/// Default of `pep_max_item_size` (bytes).
pub const DEFAULT_MAX_ITEM_SIZE: i64 = 128 * 1024;
/// Longest node name (bytes).
pub const MAX_NODE_LEN: usize = 1024;
/// Longest item id (bytes; XEP-0402 uses room JIDs as ids).
pub const MAX_ID_LEN: usize = 3072;
/// Most affiliations per node.
pub const MAX_AFFILIATIONS: usize = 1000;
/// Most sessions whose last caps are remembered (to spot caps changes).
const MAX_SEEN: usize = 100_000;
/// Remote contacts' resources remembered per owner (their presence, for +notify).
const MAX_REMOTE_RESOURCES: usize = 1024;
/// Owner locks (striped by JID): one owner's changes are serialised.
const LOCKS: usize = 64;

/// The `pep` module.
pub struct Pep;

/// The service's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most nodes per account.
    pub max_nodes: usize,
    /// Most items per node.
    pub max_items: u32,
    /// Largest item in bytes.
    pub max_item_size: usize,
}

/// Why a PEP operation failed; each maps to a XEP-0060 error.
#[derive(Debug, thiserror::Error)]
pub enum PepError {
    /// Only the owner may do this.
    #[error("only the owner may do this")]
    Forbidden,
    /// The node does not exist.
    #[error("no such node")]
    NodeNotFound,
    /// The item does not exist.
    #[error("no such item")]
    ItemNotFound,
    /// Malformed request, with the pubsub error condition (empty for none).
    #[error("bad request ({0})")]
    BadRequest(&'static str),
    /// A publish-options precondition (the named field) does not hold.
    #[error("precondition {0} not met")]
    Precondition(String),
    /// An unacceptable configuration value.
    #[error("{0}")]
    NotAcceptable(String),
    /// The item is larger than the limit.
    #[error("the item is larger than {0} bytes")]
    PayloadTooBig(usize),
    /// The account has as many nodes as allowed.
    #[error("at most {0} nodes per account")]
    MaxNodes(usize),
    /// The node already exists.
    #[error("the node exists")]
    Conflict,
    /// The requester lacks the presence subscription the access model requires.
    #[error("presence subscription required")]
    PresenceRequired,
    /// The requester is not on the whitelist.
    #[error("not on the whitelist")]
    ClosedNode,
    /// The requester is an outcast.
    #[error("blocked")]
    Outcast,
    /// A pubsub feature this service does not offer.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl PepError {
    /// The stanza error and the pubsub application condition for this failure.
    pub fn to_error(&self) -> (StanzaError, Option<Element>) {
        let app = |name: &str| Some(Element::new(name, ns::PUBSUB_ERRORS));
        match self {
            PepError::Forbidden | PepError::Outcast => (C::Forbidden.into(), None),
            PepError::NodeNotFound | PepError::ItemNotFound => (C::ItemNotFound.into(), None),
            PepError::BadRequest(cond) => (
                C::BadRequest.into(),
                (!cond.is_empty()).then(|| Element::new(*cond, ns::PUBSUB_ERRORS)),
            ),
            PepError::Precondition(field) => (
                StanzaError::with_text(C::Conflict, format!("{field} does not match")),
                app("precondition-not-met"),
            ),
            PepError::NotAcceptable(text) => {
                (StanzaError::with_text(C::NotAcceptable, text.clone()), None)
            }
            PepError::PayloadTooBig(_) => (
                StanzaError::with_text(C::NotAcceptable, self.to_string()),
                app("payload-too-big"),
            ),
            PepError::MaxNodes(_) => (
                StanzaError::with_text(C::NotAllowed, self.to_string()),
                app("max-nodes-exceeded"),
            ),
            PepError::Conflict => (C::Conflict.into(), None),
            PepError::PresenceRequired => (
                C::NotAuthorized.into(),
                app("presence-subscription-required"),
            ),
            PepError::ClosedNode => (C::NotAllowed.into(), app("closed-node")),
            PepError::Unsupported(feature) => (
                C::FeatureNotImplemented.into(),
                Some(Element::new("unsupported", ns::PUBSUB_ERRORS).attr("feature", *feature)),
            ),
            PepError::Storage(e) => (crate::core::faults::stanza_error(e, "PEP"), None),
        }
    }
}

/// A publish request.
pub struct Publish {
    /// The node (created if missing).
    pub node: String,
    /// The item id (generated if `None`).
    pub id: Option<String>,
    /// The payload.
    pub payload: Element,
    /// Publish-options: configuration of a node created now, and preconditions if asked.
    pub options: Option<Form>,
    /// Check `options` as preconditions on an existing node (XEP-0060 §7.1.5).
    pub preconditions: bool,
    /// Fire [`PUBLISH_EVENT`] afterwards (false for publishes other modules make).
    pub fire_event: bool,
}

/// The PEP service of one host.
pub struct Service {
    host: String,
    limits: Limits,
    locks: [tokio::sync::Mutex<()>; LOCKS],
    caps: Arc<CapsCache>,
    seen: Mutex<HashMap<u64, String>>,
    /// The last available presence of remote contacts' resources, per local owner (bare JID):
    /// for remote contacts this stands in for the session list, so their +notify caps count.
    remote: Mutex<HashMap<Jid, HashMap<Jid, Element>>>,
    module: Weak<ModuleHandle>,
}

type Slot = RwLock<Option<Arc<Service>>>;

/// The PEP service of `host`, if the `pep` module is loaded there.
pub fn service(core: &Core, host: &str) -> Option<Arc<Service>> {
    let slot = {
        let map = core.shared.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&format!("/{host}/pep/service"))?.0.clone()
    };
    let slot = slot.downcast::<Slot>().ok()?;
    slot.read().ok().and_then(|g| g.clone())
}

fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A `<message type='headline'>` carrying `<event>inner</event>` from `owner` to `to`.
fn event_message(owner: &Jid, to: &Jid, inner: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .attr("type", "headline")
        .attr("from", owner.to_string())
        .attr("to", to.to_string())
        .attr("id", new_id())
        .child(Element::new("event", ns::PUBSUB_EVENT).child(inner))
}

/// Whether a contact (already known to have the owner's presence) may get the node's events.
fn contact_allowed(rec: &NodeRecord, contact: &Jid) -> bool {
    match rec.affiliations.get(contact.as_str()) {
        Some(Affiliation::Outcast) => false,
        Some(_) => true,
        None => rec.config.access_model != AccessModel::Whitelist,
    }
}

impl Service {
    /// The service's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The server-wide caps cache.
    pub fn caps(&self) -> &Arc<CapsCache> {
        &self.caps
    }

    async fn lock(&self, owner: &Jid) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(owner.as_str());
        self.locks[(h as usize) % LOCKS].lock().await
    }

    fn repo(core: &Core, owner: &Jid) -> Result<Repo, PepError> {
        Repo::new(core, owner).ok_or(PepError::Forbidden)
    }

    /// Checks that `requester` (bare) may retrieve items of `owner`'s node `rec`.
    pub async fn check_access(
        core: &Core,
        owner: &Jid,
        requester: &Jid,
        rec: &NodeRecord,
    ) -> Result<(), PepError> {
        if requester == owner {
            return Ok(());
        }
        match rec.affiliations.get(requester.as_str()) {
            Some(Affiliation::Outcast) => return Err(PepError::Outcast),
            Some(_) => return Ok(()),
            None => {}
        }
        match rec.config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Whitelist => Err(PepError::ClosedNode),
            AccessModel::Presence => {
                let subscribed = core
                    .roster_item(owner, requester)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|i| i.subscription.has_from());
                if subscribed {
                    Ok(())
                } else {
                    Err(PepError::PresenceRequired)
                }
            }
        }
    }

    /// Publishes an item on `owner`'s node; returns the item id. Notifies and, if asked, fires
    /// [`PUBLISH_EVENT`].
    pub async fn publish(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        req: Publish,
    ) -> Result<String, PepError> {
        let node = req.node;
        if node.is_empty() || node.len() > MAX_NODE_LEN {
            return Err(PepError::BadRequest("nodeid-required"));
        }
        let id = match req.id {
            Some(id) if id.is_empty() || id.len() > MAX_ID_LEN => {
                return Err(PepError::BadRequest(""));
            }
            Some(id) => id,
            None => new_id(),
        };
        let xml = req.payload.to_xml("");
        if xml.len() > self.limits.max_item_size {
            return Err(PepError::PayloadTooBig(self.limits.max_item_size));
        }
        let max = self.limits.max_items;
        let rec = {
            let _guard = self.lock(owner).await;
            let repo = Self::repo(core, owner)?;
            let mut rec = match repo.node(&node).await? {
                Some(rec) => {
                    if req.preconditions
                        && let Some(form) = &req.options
                        && let Some(field) = rec.config.unmet_precondition(form, max)
                    {
                        return Err(PepError::Precondition(field));
                    }
                    rec
                }
                None => {
                    if repo.index().await?.len() >= self.limits.max_nodes {
                        return Err(PepError::MaxNodes(self.limits.max_nodes));
                    }
                    let mut config = NodeConfig::default();
                    if let Some(form) = &req.options {
                        config.apply(form, max, req.preconditions).map_err(|e| {
                            if req.preconditions {
                                PepError::Precondition(match e {
                                    form::FormError::BadValue { field, .. } => field,
                                    form::FormError::Unsupported(f) => f,
                                    other => other.to_string(),
                                })
                            } else {
                                PepError::NotAcceptable(e.to_string())
                            }
                        })?;
                    }
                    NodeRecord {
                        config,
                        ..NodeRecord::default()
                    }
                }
            };
            rec.items.retain(|i| *i != id);
            rec.items.push(id.clone());
            let mut ops = trim(&node, &mut rec, max);
            ops.push(Op::Item(
                node.clone(),
                id.clone(),
                Some(ItemRecord { xml, when: now() }),
            ));
            ops.push(Op::Node(node.clone(), Some(rec.clone())));
            repo.write(ops).await?;
            rec
        };
        if rec.config.deliver_notifications {
            let mut item = Element::new("item", ns::PUBSUB_EVENT).attr("id", id.clone());
            if rec.config.deliver_payloads {
                item.push(req.payload.clone());
            }
            let inner = Element::new("items", ns::PUBSUB_EVENT)
                .attr("node", node.clone())
                .child(item);
            self.broadcast(core, owner, &node, &rec, inner).await;
        }
        if req.fire_event
            && let Some(host) = core.host(owner.domain()).cloned()
        {
            let stanza = Element::new("publish", ns::PUBSUB)
                .attr("node", node.clone())
                .child(
                    Element::new("item", ns::PUBSUB)
                        .attr("id", id.clone())
                        .child(req.payload),
                );
            let ev = StanzaEvent {
                core: core.clone(),
                origin: Origin::Server,
                stanza,
                from: owner.clone(),
                to: owner.clone(),
                refusal: Default::default(),
            };
            let _ = host.events.fire(PUBLISH_EVENT, ev).await;
        }
        Ok(id)
    }

    /// Removes an item; notifies when `notify` says so (`None`: the node's `notify_retract`).
    pub async fn retract(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        node: &str,
        id: &str,
        notify: Option<bool>,
    ) -> Result<(), PepError> {
        let rec = {
            let _guard = self.lock(owner).await;
            let repo = Self::repo(core, owner)?;
            let mut rec = repo.node(node).await?.ok_or(PepError::NodeNotFound)?;
            if !rec.items.iter().any(|i| i == id) {
                return Err(PepError::ItemNotFound);
            }
            rec.items.retain(|i| i != id);
            repo.write(vec![
                Op::Item(node.to_string(), id.to_string(), None),
                Op::Node(node.to_string(), Some(rec.clone())),
            ])
            .await?;
            rec
        };
        if notify.unwrap_or(rec.config.notify_retract) && rec.config.deliver_notifications {
            let inner = Element::new("items", ns::PUBSUB_EVENT)
                .attr("node", node)
                .child(Element::new("retract", ns::PUBSUB_EVENT).attr("id", id));
            self.broadcast(core, owner, node, &rec, inner).await;
        }
        Ok(())
    }

    /// The node's record and items (oldest first), without access checks.
    pub async fn items(
        &self,
        core: &Core,
        owner: &Jid,
        node: &str,
    ) -> Result<(NodeRecord, Vec<(String, ItemRecord)>), PepError> {
        let repo = Self::repo(core, owner)?;
        let rec = repo.node(node).await?.ok_or(PepError::NodeNotFound)?;
        let mut out = Vec::with_capacity(rec.items.len());
        for id in &rec.items {
            if let Some(item) = repo.item(node, id).await? {
                out.push((id.clone(), item));
            }
        }
        Ok((rec, out))
    }

    /// One item's payload, without access checks (`None` if the node or item is missing).
    pub async fn item(
        &self,
        core: &Core,
        owner: &Jid,
        node: &str,
        id: &str,
    ) -> Result<Option<Element>, PepError> {
        let repo = Self::repo(core, owner)?;
        Ok(repo.item(node, id).await?.and_then(|i| i.payload()))
    }

    /// The node's record, if it exists.
    pub async fn node(
        &self,
        core: &Core,
        owner: &Jid,
        node: &str,
    ) -> Result<Option<NodeRecord>, PepError> {
        Ok(Self::repo(core, owner)?.node(node).await?)
    }

    /// Creates a node with `config` applied to the defaults.
    pub async fn create(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        node: &str,
        config: Option<&Form>,
    ) -> Result<(), PepError> {
        if node.is_empty() || node.len() > MAX_NODE_LEN {
            return Err(PepError::NotAcceptable(
                "instant nodes are not supported; name the node".into(),
            ));
        }
        let _guard = self.lock(owner).await;
        let repo = Self::repo(core, owner)?;
        if repo.node(node).await?.is_some() {
            return Err(PepError::Conflict);
        }
        if repo.index().await?.len() >= self.limits.max_nodes {
            return Err(PepError::MaxNodes(self.limits.max_nodes));
        }
        let mut rec = NodeRecord::default();
        if let Some(f) = config {
            rec.config
                .apply(f, self.limits.max_items, false)
                .map_err(|e| PepError::NotAcceptable(e.to_string()))?;
        }
        repo.write(vec![Op::Node(node.to_string(), Some(rec))])
            .await?;
        Ok(())
    }

    /// Deletes a node and its items (notifying `<delete/>`), or with `purge` only its items.
    pub async fn delete(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        node: &str,
        purge: bool,
    ) -> Result<(), PepError> {
        let rec = {
            let _guard = self.lock(owner).await;
            let repo = Self::repo(core, owner)?;
            let mut rec = repo.node(node).await?.ok_or(PepError::NodeNotFound)?;
            let mut ops: Vec<Op> = rec
                .items
                .drain(..)
                .map(|id| Op::Item(node.to_string(), id, None))
                .collect();
            ops.push(Op::Node(node.to_string(), purge.then(|| rec.clone())));
            repo.write(ops).await?;
            rec
        };
        let notify = rec.config.deliver_notifications && (purge || rec.config.notify_delete);
        if notify {
            let inner = if purge {
                Element::new("purge", ns::PUBSUB_EVENT).attr("node", node)
            } else {
                Element::new("delete", ns::PUBSUB_EVENT).attr("node", node)
            };
            self.broadcast(core, owner, node, &rec, inner).await;
        }
        Ok(())
    }

    /// Applies a submitted configuration form (unknown fields are ignored), trimming items.
    pub async fn configure(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        node: &str,
        config: &Form,
    ) -> Result<(), PepError> {
        let _guard = self.lock(owner).await;
        let repo = Self::repo(core, owner)?;
        let mut rec = repo.node(node).await?.ok_or(PepError::NodeNotFound)?;
        rec.config
            .apply(config, self.limits.max_items, false)
            .map_err(|e| PepError::NotAcceptable(e.to_string()))?;
        let mut ops = trim(node, &mut rec, self.limits.max_items);
        ops.push(Op::Node(node.to_string(), Some(rec)));
        repo.write(ops).await?;
        Ok(())
    }

    /// Sets affiliations (`None` removes one).
    pub async fn set_affiliations(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        node: &str,
        changes: Vec<(Jid, Option<Affiliation>)>,
    ) -> Result<(), PepError> {
        let _guard = self.lock(owner).await;
        let repo = Self::repo(core, owner)?;
        let mut rec = repo.node(node).await?.ok_or(PepError::NodeNotFound)?;
        for (jid, aff) in changes {
            match aff {
                Some(a) => {
                    rec.affiliations.insert(jid.to_string(), a);
                }
                None => {
                    rec.affiliations.remove(jid.as_str());
                }
            }
        }
        if rec.affiliations.len() > MAX_AFFILIATIONS {
            return Err(PepError::NotAcceptable(format!(
                "at most {MAX_AFFILIATIONS} affiliations per node"
            )));
        }
        repo.write(vec![Op::Node(node.to_string(), Some(rec))])
            .await?;
        Ok(())
    }

    /// Sends `<event>inner</event>` about `owner`'s `node` to the owner's available resources
    /// and to contacts' resources that want it (+notify); unknown caps are resolved first.
    async fn broadcast(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        node: &str,
        rec: &NodeRecord,
        inner: Element,
    ) {
        for s in core.sessions.resources(owner) {
            if s.is_available() {
                core.route(Origin::Server, event_message(owner, &s.jid, inner.clone()))
                    .await;
            }
        }
        // The owner's resources on other cluster nodes, forwarded there by the delivery decision.
        for r in core.remote_sessions(owner) {
            if r.available {
                core.route(Origin::Server, event_message(owner, &r.jid, inner.clone()))
                    .await;
            }
        }
        let roster = core.roster_items(owner).await.unwrap_or_default();
        for item in roster.iter().filter(|i| i.subscription.has_from()) {
            let Ok(contact) = Jid::parse(&item.jid) else {
                continue;
            };
            if contact == *owner || !contact_allowed(rec, &contact) {
                continue;
            }
            // Local contacts' resources are sessions here, or on another cluster node (known
            // by the presence that node forwarded, while the directory lists the session);
            // remote ones are known by the presence their server sent the owner.
            let resources: Vec<(Jid, Option<Element>)> = if core.host(contact.domain()).is_some() {
                let mut here: Vec<(Jid, Option<Element>)> = core
                    .sessions
                    .resources(&contact)
                    .into_iter()
                    .filter(|s| s.is_available())
                    .map(|s| (s.jid.clone(), s.last_presence()))
                    .collect();
                if core.cluster().is_some() {
                    let there = core.remote_sessions(&contact);
                    here.extend(
                        self.remote_resources(owner, &contact)
                            .into_iter()
                            .filter(|(j, _)| there.iter().any(|r| r.jid == *j)),
                    );
                }
                here
            } else {
                self.remote_resources(owner, &contact)
            };
            for (jid, presence) in resources {
                match self.caps.lookup(&jid, presence.as_ref()) {
                    Lookup::NoCaps => {}
                    Lookup::Known(n) => {
                        if n.contains(node) {
                            core.route(Origin::Server, event_message(owner, &jid, inner.clone()))
                                .await;
                        }
                    }
                    Lookup::Unknown(caps) => {
                        let Some(module) = self.module.upgrade() else {
                            continue;
                        };
                        let (core, cache, host) =
                            (core.clone(), self.caps.clone(), self.host.clone());
                        let (msg, node) =
                            (event_message(owner, &jid, inner.clone()), node.to_string());
                        module.spawn(async move {
                            let n = cache.resolve(&core, &host, &jid, &caps).await;
                            if n.is_some_and(|n| n.contains(&node)) {
                                core.route(Origin::Server, msg).await;
                            }
                        });
                    }
                }
            }
        }
    }

    /// The available resources of remote `contact` that sent `owner` presence, with it.
    fn remote_resources(&self, owner: &Jid, contact: &Jid) -> Vec<(Jid, Option<Element>)> {
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        remote
            .get(owner)
            .map(|m| {
                m.iter()
                    .filter(|(jid, _)| jid.bare() == *contact)
                    .map(|(jid, p)| (jid.clone(), Some(p.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Presence from a remote contact's resource `from` (of another server, or of this
    /// domain on another cluster node) to local `owner`: available is kept
    /// (and new caps resolved, then the owner's last items it wants sent, as for a local
    /// contact coming online; a contact on another node gets those from its own node, which
    /// sees its presence as a local session's); unavailable is forgotten.
    fn on_remote_presence(&self, core: &Arc<Core>, owner: &Jid, from: &Jid, presence: &Element) {
        match presence.get_attr("type") {
            None => {
                let fresh = {
                    let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
                    if remote.len() >= MAX_SEEN && !remote.contains_key(owner) {
                        remote.clear();
                    }
                    let resources = remote.entry(owner.clone()).or_default();
                    if resources.len() >= MAX_REMOTE_RESOURCES && !resources.contains_key(from) {
                        resources.clear();
                    }
                    let key = |p: &Element| caps::caps_of(p).map(|c| c.key());
                    let before = resources.insert(from.clone(), presence.clone());
                    before.as_ref().and_then(key) != key(presence)
                };
                let (Some(caps), true, Some(module)) =
                    (caps::caps_of(presence), fresh, self.module.upgrade())
                else {
                    return;
                };
                let (core, cache, host, owner, from) = (
                    core.clone(),
                    self.caps.clone(),
                    self.host.clone(),
                    owner.clone(),
                    from.clone(),
                );
                module.spawn(async move {
                    let Some(notify) = cache.resolve(&core, &host, &from, &caps).await else {
                        return;
                    };
                    if core.host(from.domain()).is_none()
                        && let Some(svc) = service(&core, owner.domain())
                    {
                        svc.send_last_items(&core, &owner, &from, &notify, false)
                            .await;
                    }
                });
            }
            Some("unavailable") => {
                let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(m) = remote.get_mut(owner) {
                    m.remove(from);
                    if m.is_empty() {
                        remote.remove(owner);
                    }
                }
                drop(remote);
                self.caps.forget(from);
            }
            _ => {}
        }
    }

    /// Sends `to` (a full JID that wants `notify` nodes) the last item of each such node of
    /// `owner` it may see and that delivers its last item on presence (or, with `on_sub`, on
    /// the implicit subscription a new presence subscription makes).
    async fn send_last_items(
        &self,
        core: &Arc<Core>,
        owner: &Jid,
        to: &Jid,
        notify: &Notify,
        on_sub: bool,
    ) {
        let contact = to.bare();
        if contact != *owner {
            let subscribed = core
                .roster_item(owner, &contact)
                .await
                .ok()
                .flatten()
                .is_some_and(|i| i.subscription.has_from());
            if !subscribed {
                return;
            }
        }
        let Some(repo) = Repo::new(core, owner) else {
            return;
        };
        let index = repo.index().await.unwrap_or_default();
        for node in index.iter().filter(|n| notify.contains(*n)) {
            let Ok(Some(rec)) = repo.node(node).await else {
                continue;
            };
            if !rec.config.deliver_notifications
                || !match rec.config.send_last_published_item {
                    SendLast::OnSubAndPresence => true,
                    SendLast::OnSub => on_sub,
                    SendLast::Never => false,
                }
                || (contact != *owner && !contact_allowed(&rec, &contact))
            {
                continue;
            }
            let Some(id) = rec.items.last() else {
                continue;
            };
            let Ok(Some(item)) = repo.item(node, id).await else {
                continue;
            };
            let mut el = Element::new("item", ns::PUBSUB_EVENT).attr("id", id.clone());
            if rec.config.deliver_payloads
                && let Some(p) = item.payload()
            {
                el.push(p);
            }
            let inner = Element::new("items", ns::PUBSUB_EVENT)
                .attr("node", node.clone())
                .child(el);
            let msg = event_message(owner, to, inner).child(
                Element::new("delay", ns::DELAY)
                    .attr("stamp", datetime::format(item.when))
                    .attr("from", owner.to_string()),
            );
            core.route(Origin::Server, msg).await;
        }
    }

    /// `owner` approved `contact`'s presence subscription: each available resource of the
    /// contact gets the owner's last items it wants (XEP-0060 `on_sub`).
    fn on_subscribed(&self, core: &Arc<Core>, owner: &Jid, contact: &Jid) {
        let Some(module) = self.module.upgrade() else {
            return;
        };
        for session in core.sessions.resources(contact) {
            let Some(caps) = session
                .last_presence()
                .filter(|_| session.is_available())
                .as_ref()
                .and_then(caps::caps_of)
            else {
                continue;
            };
            let (core, cache, host, owner) = (
                core.clone(),
                self.caps.clone(),
                self.host.clone(),
                owner.clone(),
            );
            module.spawn(async move {
                let Some(notify) = cache.resolve(&core, &host, &session.jid, &caps).await else {
                    return;
                };
                if let Some(svc) = service(&core, owner.domain()) {
                    svc.send_last_items(&core, &owner, &session.jid, &notify, true)
                        .await;
                }
            });
        }
    }

    /// A client's broadcast presence: on becoming available or changing caps, resolve its
    /// caps and send it the last items it wants; on unavailable, forget it.
    fn on_presence(&self, core: &Arc<Core>, session: &Arc<SessionHandle>, presence: &Element) {
        match presence.get_attr("type") {
            None => {
                let caps = caps::caps_of(presence);
                let key = caps.as_ref().map(caps::Caps::key).unwrap_or_default();
                let fresh = {
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.len() >= MAX_SEEN && !seen.contains_key(&session.id) {
                        seen.clear();
                    }
                    seen.insert(session.id, key.clone()) != Some(key)
                };
                let (Some(caps), true, Some(module)) = (caps, fresh, self.module.upgrade()) else {
                    return;
                };
                let (core, cache, host, session) = (
                    core.clone(),
                    self.caps.clone(),
                    self.host.clone(),
                    session.clone(),
                );
                module.spawn(async move {
                    let Some(notify) = cache.resolve(&core, &host, &session.jid, &caps).await
                    else {
                        return;
                    };
                    if notify.is_empty() {
                        return;
                    }
                    let me = session.jid.bare();
                    let mut owners = vec![me.clone()];
                    for item in core.roster_items(&me).await.unwrap_or_default() {
                        if item.subscription.has_to()
                            && let Ok(j) = Jid::parse(&item.jid)
                            && j != me
                        {
                            owners.push(j);
                        }
                    }
                    for owner in owners {
                        if let Some(svc) = service(&core, owner.domain()) {
                            svc.send_last_items(&core, &owner, &session.jid, &notify, false)
                                .await;
                        }
                    }
                });
            }
            Some("unavailable") => {
                self.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&session.id);
                self.caps.forget(&session.jid);
            }
            _ => {}
        }
    }
}

/// Whether presence from `from` to `owner` counts for PEP: an unavailable one (or any other
/// type) always, to forget it; an available one only from a contact that may see the
/// owner's PEP (subscription from).
async fn counts(core: &Core, owner: &Jid, from: &Jid, presence: &Element) -> bool {
    presence.get_attr("type").is_some()
        || core
            .roster_item(owner, &from.bare())
            .await
            .ok()
            .flatten()
            .is_some_and(|i| i.subscription.has_from())
}

/// Drops the oldest items beyond the node's limit; returns the item deletions.
fn trim(node: &str, rec: &mut NodeRecord, server_max: u32) -> Vec<Op> {
    let keep = rec.config.effective_max(server_max) as usize;
    let excess = rec.items.len().saturating_sub(keep);
    rec.items
        .drain(..excess)
        .map(|id| Op::Item(node.to_string(), id, None))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// IQ handlers

async fn reply_pep_error(ev: &StanzaEvent, e: PepError) {
    if let PepError::Storage(err) = &e {
        tracing::warn!(jid = %ev.to, error = %err, "PEP storage failed");
    }
    let (err, app) = e.to_error();
    if let Some(mut r) = stanza::error_reply(&ev.stanza, &err) {
        if let (Some(app), Some(el)) = (app, r.get_child_mut("error", ns::CLIENT)) {
            el.push(app);
        }
        ev.reply(r).await;
    }
}

async fn reply_ok(ev: &StanzaEvent, payload: Option<Element>) {
    ev.reply(stanza::iq_result(&ev.stanza, payload)).await;
}

/// The owner check of owner-only operations.
fn owner_only(ev: &StanzaEvent) -> Result<(), PepError> {
    if ev.from.bare() == ev.to {
        Ok(())
    } else {
        Err(PepError::Forbidden)
    }
}

fn node_attr(el: &Element) -> Result<String, PepError> {
    match el.get_attr("node") {
        Some(n) if !n.is_empty() && n.len() <= MAX_NODE_LEN => Ok(n.to_string()),
        _ => Err(PepError::BadRequest("nodeid-required")),
    }
}

fn submitted_form(parent: Option<&Element>) -> Result<Option<Form>, PepError> {
    match parent.and_then(|p| p.get_child("x", ns::DATA)) {
        None => Ok(None),
        Some(x) => form::parse_form(x)
            .map(Some)
            .map_err(|_| PepError::BadRequest("invalid-options")),
    }
}

async fn pubsub_set(svc: &Service, ev: &StanzaEvent) -> Result<Option<Element>, PepError> {
    let ps = ev
        .stanza
        .get_child("pubsub", ns::PUBSUB)
        .ok_or(PepError::BadRequest(""))?;
    let op = ps.first_child().ok_or(PepError::BadRequest(""))?;
    match op.name() {
        "publish" => {
            owner_only(ev)?;
            let node = node_attr(op)?;
            let mut items = op.children().filter(|c| c.is("item", ns::PUBSUB));
            let item = items.next().ok_or(PepError::BadRequest("item-required"))?;
            if items.next().is_some() {
                return Err(PepError::BadRequest("invalid-payload"));
            }
            let mut payloads = item.children();
            let payload = payloads
                .next()
                .ok_or(PepError::BadRequest("payload-required"))?
                .clone();
            if payloads.next().is_some() {
                return Err(PepError::BadRequest("invalid-payload"));
            }
            let options = submitted_form(ps.get_child("publish-options", ns::PUBSUB))?;
            if let Some(f) = &options
                && f.form_type
                    .as_deref()
                    .is_some_and(|t| t != form::PUBLISH_OPTIONS)
            {
                return Err(PepError::BadRequest("invalid-options"));
            }
            let id = svc
                .publish(
                    &ev.core,
                    &ev.to,
                    Publish {
                        node: node.clone(),
                        id: item.get_attr("id").map(str::to_string),
                        payload,
                        options,
                        preconditions: true,
                        fire_event: true,
                    },
                )
                .await?;
            Ok(Some(
                Element::new("pubsub", ns::PUBSUB).child(
                    Element::new("publish", ns::PUBSUB)
                        .attr("node", node)
                        .child(Element::new("item", ns::PUBSUB).attr("id", id)),
                ),
            ))
        }
        "retract" => {
            owner_only(ev)?;
            let node = node_attr(op)?;
            let mut items = op.children().filter(|c| c.is("item", ns::PUBSUB));
            let id = items
                .next()
                .and_then(|i| i.get_attr("id"))
                .ok_or(PepError::BadRequest("item-required"))?;
            let notify = match op.get_attr("notify") {
                Some("1" | "true") => Some(true),
                Some("0" | "false") => Some(false),
                _ => None,
            };
            svc.retract(&ev.core, &ev.to, &node, id, notify).await?;
            Ok(None)
        }
        "create" => {
            owner_only(ev)?;
            let node = op.get_attr("node").unwrap_or("");
            let config = submitted_form(ps.get_child("configure", ns::PUBSUB))?;
            svc.create(&ev.core, &ev.to, node, config.as_ref()).await?;
            Ok(None)
        }
        "subscribe" => Err(PepError::Unsupported("subscribe")),
        "unsubscribe" => Err(PepError::Unsupported("subscribe")),
        "options" => Err(PepError::Unsupported("subscription-options")),
        _ => Err(PepError::BadRequest("")),
    }
}

async fn pubsub_get(svc: &Service, ev: &StanzaEvent) -> Result<Option<Element>, PepError> {
    let ps = ev
        .stanza
        .get_child("pubsub", ns::PUBSUB)
        .ok_or(PepError::BadRequest(""))?;
    let op = ps.first_child().ok_or(PepError::BadRequest(""))?;
    match op.name() {
        "items" => {
            let node = node_attr(op)?;
            let requester = ev.from.bare();
            let owner = &ev.to;
            let Some(rec) = svc.node(&ev.core, owner, &node).await? else {
                return Err(PepError::NodeNotFound);
            };
            Service::check_access(&ev.core, owner, &requester, &rec).await?;
            let wanted: Vec<&str> = op
                .children()
                .filter(|c| c.is("item", ns::PUBSUB))
                .filter_map(|c| c.get_attr("id"))
                .collect();
            let ids: Vec<&String> = if wanted.is_empty() {
                let max = op
                    .get_attr("max_items")
                    .and_then(|m| m.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                let skip = rec.items.len().saturating_sub(max);
                rec.items.iter().skip(skip).collect()
            } else {
                rec.items
                    .iter()
                    .filter(|i| wanted.contains(&i.as_str()))
                    .collect()
            };
            let repo = Service::repo(&ev.core, owner)?;
            let mut items = Element::new("items", ns::PUBSUB).attr("node", node.clone());
            for id in ids {
                let Some(rec_item) = repo.item(&node, id).await? else {
                    continue;
                };
                let mut el = Element::new("item", ns::PUBSUB).attr("id", id.clone());
                if let Some(p) = rec_item.payload() {
                    el.push(p);
                }
                items.push(el);
            }
            Ok(Some(Element::new("pubsub", ns::PUBSUB).child(items)))
        }
        "subscriptions" => Err(PepError::Unsupported("retrieve-subscriptions")),
        "affiliations" => Err(PepError::Unsupported("retrieve-affiliations")),
        "default" | "options" => Err(PepError::Unsupported("subscription-options")),
        _ => Err(PepError::BadRequest("")),
    }
}

async fn owner_set(svc: &Service, ev: &StanzaEvent) -> Result<Option<Element>, PepError> {
    owner_only(ev)?;
    let ps = ev
        .stanza
        .get_child("pubsub", ns::PUBSUB_OWNER)
        .ok_or(PepError::BadRequest(""))?;
    let op = ps.first_child().ok_or(PepError::BadRequest(""))?;
    let node = node_attr(op)?;
    match op.name() {
        "delete" => svc.delete(&ev.core, &ev.to, &node, false).await?,
        "purge" => svc.delete(&ev.core, &ev.to, &node, true).await?,
        "configure" => {
            let form = submitted_form(Some(op))?.ok_or(PepError::BadRequest(""))?;
            if form.kind != "cancel" {
                svc.configure(&ev.core, &ev.to, &node, &form).await?;
            }
        }
        "affiliations" => {
            let mut changes = Vec::new();
            for a in op
                .children()
                .filter(|c| c.is("affiliation", ns::PUBSUB_OWNER))
                .take(MAX_AFFILIATIONS + 1)
            {
                let jid = a
                    .get_attr("jid")
                    .and_then(|j| Jid::parse(j).ok())
                    .ok_or(PepError::BadRequest(""))?
                    .bare();
                let aff = match a.get_attr("affiliation") {
                    Some("none") => None,
                    Some(v) => Some(Affiliation::parse(v).ok_or(PepError::BadRequest(""))?),
                    None => return Err(PepError::BadRequest("")),
                };
                if jid == ev.to {
                    return Err(PepError::NotAcceptable(
                        "the owner's affiliation cannot change".into(),
                    ));
                }
                changes.push((jid, aff));
            }
            svc.set_affiliations(&ev.core, &ev.to, &node, changes)
                .await?;
        }
        _ => return Err(PepError::BadRequest("")),
    }
    Ok(None)
}

async fn owner_get(svc: &Service, ev: &StanzaEvent) -> Result<Option<Element>, PepError> {
    owner_only(ev)?;
    let ps = ev
        .stanza
        .get_child("pubsub", ns::PUBSUB_OWNER)
        .ok_or(PepError::BadRequest(""))?;
    let op = ps.first_child().ok_or(PepError::BadRequest(""))?;
    if op.name() == "default" {
        let out = Element::new("pubsub", ns::PUBSUB_OWNER).child(
            Element::new("default", ns::PUBSUB_OWNER).child(NodeConfig::default().to_form()),
        );
        return Ok(Some(out));
    }
    let node = node_attr(op)?;
    let rec = svc
        .node(&ev.core, &ev.to, &node)
        .await?
        .ok_or(PepError::NodeNotFound)?;
    let inner = match op.name() {
        "configure" => Element::new("configure", ns::PUBSUB_OWNER)
            .attr("node", node)
            .child(rec.config.to_form()),
        "affiliations" => {
            let mut el = Element::new("affiliations", ns::PUBSUB_OWNER)
                .attr("node", node)
                .child(
                    Element::new("affiliation", ns::PUBSUB_OWNER)
                        .attr("jid", ev.to.to_string())
                        .attr("affiliation", "owner"),
                );
            for (jid, a) in &rec.affiliations {
                el.push(
                    Element::new("affiliation", ns::PUBSUB_OWNER)
                        .attr("jid", jid.clone())
                        .attr("affiliation", a.as_str()),
                );
            }
            el
        }
        _ => return Err(PepError::BadRequest("")),
    };
    Ok(Some(Element::new("pubsub", ns::PUBSUB_OWNER).child(inner)))
}

/// disco#items on an account: the nodes the requester may see (or a node's item ids).
async fn disco_items(_svc: &Service, ev: &StanzaEvent) -> Result<Option<Element>, PepError> {
    let owner = &ev.to;
    let requester = ev.from.bare();
    let repo = Service::repo(&ev.core, owner)?;
    let asked = ev.stanza.first_child().and_then(|q| q.get_attr("node"));
    let mut query = Element::new("query", ns::DISCO_ITEMS);
    if let Some(node) = asked {
        query.set_attr("node", Some(node.to_string()));
        let rec = repo.node(node).await?.ok_or(PepError::NodeNotFound)?;
        Service::check_access(&ev.core, owner, &requester, &rec).await?;
        for id in &rec.items {
            query.push(
                Element::new("item", ns::DISCO_ITEMS)
                    .attr("jid", owner.to_string())
                    .attr("name", id.clone()),
            );
        }
        return Ok(Some(query));
    }
    for node in repo.index().await? {
        let Some(rec) = repo.node(&node).await? else {
            continue;
        };
        if Service::check_access(&ev.core, owner, &requester, &rec)
            .await
            .is_ok()
        {
            query.push(
                Element::new("item", ns::DISCO_ITEMS)
                    .attr("jid", owner.to_string())
                    .attr("node", node),
            );
        }
    }
    Ok(Some(query))
}

/// A boxed IQ operation result.
type OpFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Element>, PepError>> + Send + 'a>,
>;
/// An IQ operation: the payload of the result, or the error.
type IqOp = for<'a> fn(&'a Service, &'a StanzaEvent) -> OpFuture<'a>;

fn op_pubsub_set<'a>(s: &'a Service, e: &'a StanzaEvent) -> OpFuture<'a> {
    Box::pin(pubsub_set(s, e))
}
fn op_pubsub_get<'a>(s: &'a Service, e: &'a StanzaEvent) -> OpFuture<'a> {
    Box::pin(pubsub_get(s, e))
}
fn op_owner_set<'a>(s: &'a Service, e: &'a StanzaEvent) -> OpFuture<'a> {
    Box::pin(owner_set(s, e))
}
fn op_owner_get<'a>(s: &'a Service, e: &'a StanzaEvent) -> OpFuture<'a> {
    Box::pin(owner_get(s, e))
}
fn op_disco_items<'a>(s: &'a Service, e: &'a StanzaEvent) -> OpFuture<'a> {
    Box::pin(disco_items(s, e))
}

impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    fn options(&self) -> &'static [&'static str] {
        &[
            "pep_max_nodes",
            "pep_max_items",
            "pep_max_item_size",
            "pep_caps_cache_size",
        ]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let limits = Limits {
            max_nodes: ctx.option_integer("pep_max_nodes", DEFAULT_MAX_NODES, 1, 100_000) as usize,
            max_items: ctx.option_integer("pep_max_items", DEFAULT_MAX_ITEMS, 1, 100_000) as u32,
            max_item_size: ctx.option_integer(
                "pep_max_item_size",
                DEFAULT_MAX_ITEM_SIZE,
                256,
                16 << 20,
            ) as usize,
        };
        let cache_size = ctx.option_integer(
            "pep_caps_cache_size",
            caps::DEFAULT_CACHE_SIZE as i64,
            1,
            1_000_000,
        ) as usize;
        let caps: Arc<CapsCache> = ctx
            .shared("/*/pep/caps")
            .ok_or_else(|| LoadError::Shared("/*/pep/caps".into()))?;
        caps.set_max(cache_size);
        let svc = Arc::new(Service {
            host: ctx.host().to_string(),
            limits,
            locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            caps,
            seen: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            module: Arc::downgrade(&ctx.handle()),
        });
        let slot: Arc<Slot> = ctx
            .shared("service")
            .ok_or_else(|| LoadError::Shared("service".into()))?;
        *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(svc.clone());

        for f in FEATURES {
            ctx.add_item(super::disco::ACCOUNT_FEATURE, json!(f));
        }
        ctx.add_item(
            super::disco::ACCOUNT_IDENTITY,
            json!({ "category": "pubsub", "type": "pep", "name": "" }),
        );

        let ops: [(String, IqOp); 5] = [
            (format!("iq-set/bare/{}:pubsub", ns::PUBSUB), op_pubsub_set),
            (format!("iq-get/bare/{}:pubsub", ns::PUBSUB), op_pubsub_get),
            (
                format!("iq-set/bare/{}:pubsub", ns::PUBSUB_OWNER),
                op_owner_set,
            ),
            (
                format!("iq-get/bare/{}:pubsub", ns::PUBSUB_OWNER),
                op_owner_get,
            ),
            (
                format!("iq-get/bare/{}:query", ns::DISCO_ITEMS),
                op_disco_items,
            ),
        ];
        for (event, op) in ops {
            let svc = svc.clone();
            ctx.hook(
                &event,
                priority::HANDLER,
                handler(move |ev| {
                    let svc = svc.clone();
                    async move {
                        // PEP lives on existing accounts only.
                        if ev.from.bare() != ev.to
                            && !ev.core.accounts.exists(&ev.to).await.unwrap_or(false)
                        {
                            return Flow::Continue(ev);
                        }
                        match op(&svc, &ev).await {
                            Ok(payload) => reply_ok(&ev, payload).await,
                            Err(e) => reply_pep_error(&ev, e).await,
                        }
                        Flow::Handled
                    }
                }),
            );
        }
        let presence_svc = svc.clone();
        ctx.hook(
            "pre-presence/bare",
            priority::BEFORE_PRESENCE,
            handler(move |ev| {
                let svc = presence_svc.clone();
                async move {
                    if let Some(session) = ev.origin.session()
                        && ev.stanza.get_attr("to").is_none()
                    {
                        svc.on_presence(&ev.core, session, &ev.stanza);
                    }
                    Flow::Continue(ev)
                }
            }),
        );
        // A contact whose subscription was just approved gets the last items (implicit
        // subscription); the approver's roster is already updated when this arrives.
        let sub_svc = svc.clone();
        ctx.hook(
            "presence/bare",
            priority::BEFORE_PRESENCE,
            handler(move |ev| {
                let svc = sub_svc.clone();
                async move {
                    if ev.stanza.get_attr("type") == Some("subscribed")
                        && ev.core.host(ev.from.domain()).is_some()
                        && ev.from.node().is_some()
                    {
                        svc.on_subscribed(&ev.core, &ev.from.bare(), &ev.to);
                    }
                    // A remote contact's resource tells the owner its presence (and caps); kept
                    // only from contacts that may see the owner's PEP (subscription from). In a
                    // cluster, a survivor's unavailable presence for a gone node's session
                    // arrives here too, from this domain but from no session of this node.
                    let elsewhere = ev.core.host(ev.from.domain()).is_none()
                        || (ev.core.cluster().is_some()
                            && ev.stanza.get_attr("type") == Some("unavailable")
                            && ev.core.sessions.get(&ev.from).is_none());
                    if elsewhere
                        && ev.from.resource().is_some()
                        && ev.to.is_bare()
                        && ev.core.host(ev.to.domain()).is_some()
                        && counts(&ev.core, &ev.to, &ev.from, &ev.stanza).await
                    {
                        svc.on_remote_presence(&ev.core, &ev.to, &ev.from, &ev.stanza);
                    }
                    Flow::Continue(ev)
                }
            }),
        );
        // A contact's resource on another cluster node: its presence (broadcast to the owner,
        // or answering the owner's probe) was forwarded here, where the owner has a session.
        let forwarded_svc = svc.clone();
        ctx.hook(
            PRESENCE_FORWARDED,
            priority::HANDLER,
            handler(move |ev| {
                let svc = forwarded_svc.clone();
                async move {
                    let owner = ev.to.bare();
                    if ev.from.resource().is_some()
                        && ev.from.bare() != owner
                        && counts(&ev.core, &owner, &ev.from, &ev.stanza).await
                    {
                        svc.on_remote_presence(&ev.core, &owner, &ev.from, &ev.stanza);
                    }
                    Flow::Continue(ev)
                }
            }),
        );
        Ok(())
    }
}
