//! XEP-0191 Blocking Command (`urn:xmpp:blocking`): blocklist get, block, unblock (all), pushes to
//! the user's resources, and enforcement on routing.
//!
//! Enforcement (§3.5): inbound messages and presence between a user and an entity they blocked are
//! dropped silently, inbound IQ get/set gets `service-unavailable`; both directions are checked on
//! the receiving host so server-generated stanzas (presence broadcasts) are covered too. Outbound
//! from the blocker (`pre-*` events), messages and IQs get `not-acceptable` with
//! `<blocked xmlns='urn:xmpp:blocking:errors'/>`, presence is dropped.
//!
//! Blocklists live in map store `blocklist` (user → blocked JID → `true`) and are cached in
//! memory by the module ([`Blocklists`], one per server, shared by the module's instances on
//! every host), so the per-stanza check does not touch storage.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use serde_json::Value;

use crate::core::Core;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::storage::StorageError;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::stanza::{self, Kind};
use crate::xmpp::{Element, Jid, ns};

/// The map store holding blocklists.
pub const STORE: &str = "blocklist";
/// Most items on one blocklist.
pub const MAX_ITEMS: usize = 1000;
/// Cached blocklists kept per server before the cache is emptied.
const MAX_CACHED: usize = 100_000;

/// One user's blocked JIDs, indexed for the per-stanza check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockList {
    items: BTreeSet<Jid>,
    domains: HashSet<String>,
}

impl BlockList {
    /// A blocklist of `items`.
    pub fn new(items: impl IntoIterator<Item = Jid>) -> Self {
        let mut list = BlockList::default();
        for j in items {
            list.insert(j);
        }
        list
    }

    fn insert(&mut self, j: Jid) {
        if j.node().is_none() && j.resource().is_none() {
            self.domains.insert(j.domain().to_string());
        }
        self.items.insert(j);
    }

    /// The blocked JIDs, sorted.
    pub fn items(&self) -> impl Iterator<Item = &Jid> {
        self.items.iter()
    }

    /// Whether nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether `jid` is blocked (XEP-0016 §2.1 matching: full JID, bare JID, domain/resource, domain).
    pub fn blocks(&self, jid: &Jid) -> bool {
        if self.items.is_empty() {
            return false;
        }
        self.items.contains(jid)
            || (jid.resource().is_some()
                && jid.node().is_some()
                && self.items.contains(&jid.bare()))
            || self.domains.contains(jid.domain())
    }
}

/// Whether blocklist `item` covers `jid` (XEP-0016 §2.1).
pub fn item_matches(item: &Jid, jid: &Jid) -> bool {
    BlockList::new([item.clone()]).blocks(jid)
}

/// Why changing a blocklist failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The list would exceed [`MAX_ITEMS`].
    #[error("a blocklist holds at most {0} items")]
    TooMany(usize),
    /// The JID has no user part.
    #[error("not a user JID: {0}")]
    NotAUser(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// The path under which the hosts of one server share their [`Blocklists`] (a user on one host
/// may block or be blocked by a user on another).
const SHARED_PATH: &str = "/blocking/lists";

/// The blocklists of one server: a cache keyed by account (an O(1) lookup per stanza) and one
/// writer lock per account, so a change (which waits for the store's flush) only holds up other
/// changes to the same list. Held by the module, shared by its instances on every host.
#[derive(Default)]
pub struct Blocklists {
    lists: DashMap<Jid, Arc<BlockList>>,
    writers: DashMap<Jid, Arc<tokio::sync::Mutex<()>>>,
}

/// The writer lock of one account; the lock entry goes when nobody holds or awaits it.
struct WriterGuard<'a> {
    writers: &'a DashMap<Jid, Arc<tokio::sync::Mutex<()>>>,
    user: Jid,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        // Under the shard lock: a count of one means no other task holds or awaits this lock.
        self.writers
            .remove_if(&self.user, |_, m| Arc::strong_count(m) == 1);
    }
}

async fn load(core: &Core, user: &Jid) -> Result<BlockList, StorageError> {
    let Some(node) = user.node() else {
        return Ok(BlockList::default());
    };
    let map = core.store.map(user.domain(), STORE).get_all(node).await?;
    Ok(BlockList::new(
        map.keys().filter_map(|k| Jid::parse(k).ok()),
    ))
}

impl Blocklists {
    /// Takes the writer lock of `user` (bare JID).
    async fn write_lock(&self, user: &Jid) -> WriterGuard<'_> {
        let lock = self.writers.entry(user.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        WriterGuard {
            writers: &self.writers,
            user: user.clone(),
            guard: Some(guard),
        }
    }

    /// How many blocklists are cached.
    pub fn cached(&self) -> usize {
        self.lists.len()
    }

    /// The blocklist of local user `user` (bare JID), from the cache when possible.
    pub async fn get(&self, core: &Core, user: &Jid) -> Result<Arc<BlockList>, StorageError> {
        let user = user.bare();
        if let Some(l) = self.lists.get(&user) {
            return Ok(l.clone());
        }
        let list = Arc::new(load(core, &user).await?);
        if self.lists.len() >= MAX_CACHED {
            self.lists.clear();
        }
        self.lists.insert(user, list.clone());
        Ok(list)
    }

    /// Whether local user `user` blocks `jid`; a storage failure counts as not blocked (and is logged).
    pub async fn is_blocked(&self, core: &Core, user: &Jid, jid: &Jid) -> bool {
        match self.get(core, user).await {
            Ok(l) => l.blocks(jid),
            Err(e) => {
                tracing::warn!(%user, error = %e, "cannot read blocklist");
                false
            }
        }
    }

    /// Adds `items` to the blocklist of `user`; returns the JIDs that were not blocked before.
    pub async fn block(
        &self,
        core: &Core,
        user: &Jid,
        items: &[Jid],
    ) -> Result<Vec<Jid>, BlockError> {
        let user = user.bare();
        let node = user
            .node()
            .ok_or_else(|| BlockError::NotAUser(user.to_string()))?;
        let _w = self.write_lock(&user).await;
        let mut list = load(core, &user).await?;
        let new: Vec<Jid> = items
            .iter()
            .filter(|j| !list.items.contains(*j))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if list.items.len().saturating_add(new.len()) > MAX_ITEMS {
            return Err(BlockError::TooMany(MAX_ITEMS));
        }
        let ops = new
            .iter()
            .map(|j| (j.to_string(), Some(Value::Bool(true))))
            .collect();
        core.store
            .map(user.domain(), STORE)
            .set_many(node, ops)
            .await?;
        for j in &new {
            list.insert(j.clone());
        }
        self.lists.insert(user, Arc::new(list));
        Ok(new)
    }

    /// Removes `items` (all with `None`) from the blocklist of `user`; returns the JIDs removed.
    pub async fn unblock(
        &self,
        core: &Core,
        user: &Jid,
        items: Option<&[Jid]>,
    ) -> Result<Vec<Jid>, BlockError> {
        let user = user.bare();
        let node = user
            .node()
            .ok_or_else(|| BlockError::NotAUser(user.to_string()))?;
        let _w = self.write_lock(&user).await;
        let list = load(core, &user).await?;
        let removed: Vec<Jid> = match items {
            None => list.items.iter().cloned().collect(),
            Some(items) => list
                .items
                .iter()
                .filter(|j| items.contains(j))
                .cloned()
                .collect(),
        };
        let ops = removed.iter().map(|j| (j.to_string(), None)).collect();
        core.store
            .map(user.domain(), STORE)
            .set_many(node, ops)
            .await?;
        let kept = list.items.iter().filter(|j| !removed.contains(j)).cloned();
        self.lists.insert(user, Arc::new(BlockList::new(kept)));
        Ok(removed)
    }

    /// Deletes the stored blocklist of `user` (account removal).
    pub async fn forget(&self, core: &Core, user: &Jid) -> Result<(), StorageError> {
        let user = user.bare();
        let Some(node) = user.node() else {
            return Ok(());
        };
        let _w = self.write_lock(&user).await;
        core.store
            .map(user.domain(), STORE)
            .delete_user(node)
            .await?;
        self.lists.remove(&user);
        Ok(())
    }
}

/// The `blocking` module.
pub struct Blocking;

/// Whether `jid` is a local account JID (a user on a host served here).
fn is_local_user(core: &Core, jid: &Jid) -> bool {
    jid.node().is_some() && core.host(jid.domain()).is_some()
}

/// Whether `jid` is a served host itself (never blocked: the user's own server answers from it).
fn is_local_server(core: &Core, jid: &Jid) -> bool {
    jid.node().is_none() && core.host(jid.domain()).is_some()
}

/// Receiving-side enforcement for `message/*`, `presence/*` and `iq/*`.
async fn inbound(ev: StanzaEvent, lists: &Blocklists) -> Flow {
    if ev.from.bare() == ev.to.bare()
        || is_local_server(&ev.core, &ev.from)
        || is_local_server(&ev.core, &ev.to)
    {
        return Flow::Continue(ev);
    }
    let recipient_blocks = is_local_user(&ev.core, &ev.to)
        && lists.is_blocked(&ev.core, &ev.to.bare(), &ev.from).await;
    let sender_blocks = !recipient_blocks
        && is_local_user(&ev.core, &ev.from)
        && lists.is_blocked(&ev.core, &ev.from.bare(), &ev.to).await;
    if !recipient_blocks && !sender_blocks {
        return Flow::Continue(ev);
    }
    let ty = stanza::stanza_type(&ev.stanza, "");
    if recipient_blocks
        && Kind::of(&ev.stanza) == Some(Kind::Iq)
        && (ty == "get" || ty == "set")
        && let Some(reply) =
            stanza::error_reply(&ev.stanza, &StanzaError::new(C::ServiceUnavailable))
    {
        ev.reply(reply).await;
    }
    tracing::debug!(from = %ev.from, to = %ev.to, "stanza dropped by blocklist");
    Flow::Handled
}

/// Sending-side enforcement for `pre-*` events (stanzas from the blocker's own clients).
async fn outbound(ev: StanzaEvent, lists: &Blocklists) -> Flow {
    if ev.from.bare() == ev.to.bare() || is_local_server(&ev.core, &ev.to) {
        return Flow::Continue(ev);
    }
    if !lists.is_blocked(&ev.core, &ev.from.bare(), &ev.to).await {
        return Flow::Continue(ev);
    }
    let kind = Kind::of(&ev.stanza);
    if kind != Some(Kind::Presence)
        && let Some(mut reply) =
            stanza::error_reply(&ev.stanza, &StanzaError::new(C::NotAcceptable))
    {
        if let Some(err) = reply.get_child_mut("error", ns::CLIENT) {
            err.push(Element::new("blocked", ns::BLOCKING_ERRORS));
        }
        ev.reply(reply).await;
    }
    Flow::Handled
}

fn push_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("block-push-{n:016x}")
}

/// Sends a blocklist push (`block` or `unblock` with `items`) to every resource of `user`, on
/// every node.
fn push(core: &Core, user: &Jid, name: &str, items: &[Jid]) {
    let mut payload = Element::new(name, ns::BLOCKING);
    for j in items {
        payload.push(Element::new("item", ns::BLOCKING).attr("jid", j.to_string()));
    }
    let push = |to: &Jid| {
        Element::new("iq", ns::CLIENT)
            .attr("type", "set")
            .attr("id", push_id())
            .attr("to", to.to_string())
            .child(payload.clone())
    };
    for s in core.sessions.resources(user) {
        s.send(push(&s.jid));
    }
    core.push_to_other_nodes(user, |_| true, push);
}

/// XEP-0191 §3.3: the blocked contacts' sessions, on every node, see the user's available
/// resources (on every node) go offline.
fn send_unavailable(core: &Core, user: &Jid, blocked: &[Jid]) {
    for item in blocked {
        if core.host(item.domain()).is_none() {
            continue;
        }
        let (mut local, mut remote) = if item.node().is_some() {
            (
                core.sessions.resources(&item.bare()),
                core.remote_sessions(&item.bare()),
            )
        } else {
            (
                core.sessions.all(Some(item.domain())),
                core.all_remote_sessions(Some(item.domain())),
            )
        };
        local.retain(|t| item_matches(item, &t.jid));
        remote.retain(|r| item_matches(item, &r.jid));
        core.send_unavailable_to(user, &local, &remote);
    }
}

/// The JIDs of the `<item/>` children, or `None` if one is missing or malformed.
fn items_of(payload: &Element) -> Option<Vec<Jid>> {
    payload
        .children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|c| c.get_attr("jid").and_then(|j| Jid::parse(j).ok()))
        .collect()
}

async fn get_blocklist(ev: StanzaEvent, lists: &Blocklists) -> Flow {
    if ev.from.bare() != ev.to {
        ev.reply_error(C::Forbidden.into()).await;
        return Flow::Handled;
    }
    match lists.get(&ev.core, &ev.to).await {
        Ok(list) => {
            let mut payload = Element::new("blocklist", ns::BLOCKING);
            for j in list.items() {
                payload.push(Element::new("item", ns::BLOCKING).attr("jid", j.to_string()));
            }
            ev.reply(stanza::iq_result(&ev.stanza, Some(payload))).await;
        }
        Err(e) => {
            tracing::warn!(jid = %ev.to, error = %e, "cannot read blocklist");
            ev.reply_error(C::InternalServerError.into()).await;
        }
    }
    Flow::Handled
}

async fn set_block(ev: StanzaEvent, lists: &Blocklists) -> Flow {
    if ev.from.bare() != ev.to {
        ev.reply_error(C::Forbidden.into()).await;
        return Flow::Handled;
    }
    let Some(payload) = ev.stanza.first_child() else {
        ev.reply_error(C::BadRequest.into()).await;
        return Flow::Handled;
    };
    let is_block = payload.name() == "block";
    let Some(items) = items_of(payload) else {
        ev.reply_error(C::JidMalformed.into()).await;
        return Flow::Handled;
    };
    let result = if is_block {
        if items.is_empty() {
            ev.reply_error(C::BadRequest.into()).await;
            return Flow::Handled;
        }
        lists.block(&ev.core, &ev.to, &items).await
    } else if items.is_empty() {
        lists.unblock(&ev.core, &ev.to, None).await
    } else {
        lists.unblock(&ev.core, &ev.to, Some(&items)).await
    };
    match result {
        Ok(changed) => {
            ev.reply(stanza::iq_result(&ev.stanza, None)).await;
            if is_block {
                push(&ev.core, &ev.to, "block", &items);
                send_unavailable(&ev.core, &ev.to, &changed);
            } else if items.is_empty() {
                push(&ev.core, &ev.to, "unblock", &[]);
            } else {
                push(&ev.core, &ev.to, "unblock", &items);
            }
        }
        Err(BlockError::TooMany(n)) => {
            let err = StanzaError::with_text(
                C::PolicyViolation,
                format!("a blocklist holds at most {n} items"),
            );
            ev.reply_error(err).await;
        }
        Err(e) => {
            tracing::warn!(jid = %ev.to, error = %e, "cannot change blocklist");
            ev.reply_error(C::InternalServerError.into()).await;
        }
    }
    Flow::Handled
}

impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let lists: Arc<Blocklists> = ctx
            .shared(SHARED_PATH)
            .ok_or_else(|| LoadError::Shared(SHARED_PATH.to_owned()))?;
        // Not a plain store: the cached list goes too, under the writer lock.
        let l = lists.clone();
        ctx.on_user_deleted(move |core, jid| {
            let l = l.clone();
            async move { l.forget(&core, &jid).await }
        });
        ctx.add_feature(ns::BLOCKING);
        let l = lists.clone();
        ctx.hook(
            &format!("iq-get/bare/{}:blocklist", ns::BLOCKING),
            priority::HANDLER,
            handler(move |ev| {
                let l = l.clone();
                async move { get_blocklist(ev, &l).await }
            }),
        );
        for name in ["block", "unblock"] {
            let l = lists.clone();
            ctx.hook(
                &format!("iq-set/bare/{}:{name}", ns::BLOCKING),
                priority::HANDLER,
                handler(move |ev| {
                    let l = l.clone();
                    async move { set_block(ev, &l).await }
                }),
            );
        }
        for kind in ["message", "presence", "iq"] {
            for dest in ["bare", "full"] {
                let l = lists.clone();
                let inbound = handler(move |ev| {
                    let l = l.clone();
                    async move { inbound(ev, &l).await }
                });
                ctx.hook(&format!("{kind}/{dest}"), priority::BLOCKING, inbound);
            }
            for dest in ["host", "bare", "full"] {
                let l = lists.clone();
                let outbound = handler(move |ev| {
                    let l = l.clone();
                    async move { outbound(ev, &l).await }
                });
                ctx.hook(&format!("pre-{kind}/{dest}"), priority::BLOCKING, outbound);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{Config, HostConfig};
    use crate::storage::Store;

    /// A server core with `blocking` on hosts `a` and `b`.
    fn core() -> Arc<Core> {
        let mut config = Config {
            modules_enabled: vec!["blocking".into()],
            ..Config::default()
        };
        config.hosts = ["a", "b"]
            .map(|name| HostConfig {
                name: name.into(),
                ..HostConfig::default()
            })
            .to_vec();
        Core::new(config, Store::memory(), crate::modules::BUILTIN).unwrap()
    }

    /// The blocklists the module instances of `core` share.
    fn lists(core: &Core) -> Arc<Blocklists> {
        let shared = core.shared.lock().unwrap();
        let (value, holders) = shared.get(SHARED_PATH).unwrap();
        assert_eq!(*holders, 2, "one per host");
        value.clone().downcast::<Blocklists>().unwrap()
    }

    #[tokio::test]
    async fn two_servers_keep_their_own_blocklists() {
        let (one, two) = (core(), core());
        let (l1, l2) = (lists(&one), lists(&two));
        assert!(!Arc::ptr_eq(&l1, &l2));
        let alice = j("alice@a");
        l1.block(&one, &alice, &[j("bob@b")]).await.unwrap();
        assert!(l1.is_blocked(&one, &alice, &j("bob@b/phone")).await);
        assert_eq!((l1.cached(), l2.cached()), (1, 0));
        assert!(!l2.is_blocked(&two, &alice, &j("bob@b")).await);
        // Both hosts of one server see the same list (bob on host b checks alice on host a).
        assert!(Arc::ptr_eq(&l1, &lists(&one)));
        // The writer lock of an account goes once the change is done.
        assert!(l1.writers.is_empty());
        l1.forget(&one, &alice).await.unwrap();
        assert!(!l1.is_blocked(&one, &alice, &j("bob@b")).await);
    }

    #[tokio::test]
    async fn writers_of_different_accounts_do_not_wait_for_each_other() {
        let core = core();
        let l = lists(&core);
        let held = l.write_lock(&j("alice@a")).await;
        // With alice's list locked, bob's change still completes.
        l.block(&core, &j("bob@a"), &[j("carol@b")]).await.unwrap();
        assert_eq!(l.writers.len(), 1);
        drop(held);
        assert!(l.writers.is_empty());
    }

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn matching_follows_xep_0016() {
        // user@domain/resource: only that resource.
        let full = j("a@x/r");
        assert!(item_matches(&full, &j("a@x/r")));
        assert!(!item_matches(&full, &j("a@x/s")));
        assert!(!item_matches(&full, &j("a@x")));
        // user@domain: any resource.
        let bare = j("a@x");
        assert!(item_matches(&bare, &j("a@x")));
        assert!(item_matches(&bare, &j("a@x/any")));
        assert!(!item_matches(&bare, &j("b@x")));
        // domain/resource: only that.
        let dr = j("x/r");
        assert!(item_matches(&dr, &j("x/r")));
        assert!(!item_matches(&dr, &j("a@x/r")));
        assert!(!item_matches(&dr, &j("x")));
        // domain: everything there.
        let d = j("x");
        for s in ["x", "a@x", "a@x/r", "x/r"] {
            assert!(item_matches(&d, &j(s)), "{s}");
        }
        assert!(!item_matches(&d, &j("a@y")));
        assert!(!BlockList::default().blocks(&j("a@x")));
    }

    #[test]
    fn items_must_all_be_valid() {
        let ok = Element::new("block", ns::BLOCKING)
            .child(Element::new("item", ns::BLOCKING).attr("jid", "a@x"));
        assert_eq!(items_of(&ok), Some(vec![j("a@x")]));
        let bad = ok
            .clone()
            .child(Element::new("item", ns::BLOCKING).attr("jid", "@@"));
        assert_eq!(items_of(&bad), None);
        let missing = ok.child(Element::new("item", ns::BLOCKING));
        assert_eq!(items_of(&missing), None);
    }
}
