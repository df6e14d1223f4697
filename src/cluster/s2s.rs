//! Server-to-server streams in a cluster: one outgoing stream per (local domain, remote
//! domain) pair in the whole cluster, whichever node needs it.
//!
//! The first node that needs a pair's stream takes its lease in the [`S2S_BUCKET`] bucket: a
//! compare-and-set create of the pair's key ([`key`]) whose value is the node's name. Every
//! node follows the bucket with a watch, so routing asks NATS nothing. A node that does not
//! hold a pair's lease forwards the stanza, serialised once ([`Frame::Outgoing`]), to the
//! holder, which writes it on its own stream; when that node cannot be reached the stanza
//! bounces with `remote-server-timeout`. The holder drops the lease when its stream ends (or
//! when it leaves the cluster); the lease of a holder that stops heartbeating (the session
//! directory's liveness) is dropped by the survivors, or replaced by the next node that needs
//! the pair, whichever comes first (compare-and-set on the lease's revision either way). Stanzas routed while a claim is in flight wait
//! for it, in order. A node cut off from NATS sends on a stream of its own.
//!
//! The same bucket holds the cluster's dialback secret ([`SECRET_KEY`], made by the first node
//! that looks, compare-and-set), so a key made by one node verifies on any other: a remote
//! server may verify it by connecting to whichever node its DNS or `[s2s.hosts]` names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::wire::Frame;
use super::{ClusterError, Node, lock, nats};
use crate::core::Core;
use crate::core::cluster::{Cluster, Outgoing};
use crate::xmpp::Jid;
use crate::xmpp::error::StanzaErrorCondition as C;

/// The bucket of s2s leases (and the dialback secret).
pub const S2S_BUCKET: &str = "oxpecker_s2s";
/// The key of the dialback secret every node uses.
pub const SECRET_KEY: &str = "dialback-secret";
/// How many stanzas may wait for one pair's claim before more bounce.
const CLAIM_QUEUE: usize = 1000;

/// A (local domain, remote domain) pair.
type Pair = (String, String);

/// The key of `pair`'s lease: `pair.<local>.<remote>`, both base64url.
pub fn key(pair: &Pair) -> String {
    format!(
        "pair.{}.{}",
        URL_SAFE_NO_PAD.encode(&pair.0),
        URL_SAFE_NO_PAD.encode(&pair.1)
    )
}

/// The pair a lease key names.
pub fn parse_key(key: &str) -> Option<Pair> {
    let (local, remote) = key.strip_prefix("pair.")?.split_once('.')?;
    let domain = |s: &str| String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok();
    Some((domain(local)?, domain(remote)?))
}

/// This node's view of the s2s leases, and its claims in flight.
#[derive(Default)]
pub struct Leases {
    /// The node these leases belong to (set once it is built).
    node: OnceLock<Weak<Node>>,
    /// Who holds each pair, with the lease's revision.
    held: Mutex<HashMap<Pair, (Arc<str>, u64)>>,
    /// Stanzas waiting, in order, for a claim in flight.
    claiming: Mutex<HashMap<Pair, Vec<Outgoing>>>,
    /// The bucket, while this node follows it.
    bucket: Mutex<Option<kv::Store>>,
}

impl Leases {
    /// The holder of `pair`'s lease, as last heard.
    pub fn holder(&self, pair: &Pair) -> Option<Arc<str>> {
        lock(&self.held).get(pair).map(|(n, _)| n.clone())
    }

    fn bucket(&self) -> Option<kv::Store> {
        lock(&self.bucket).clone()
    }

    /// Records that `holder` holds `pair` at `revision` (an older word changes nothing).
    fn set(&self, pair: Pair, holder: Arc<str>, revision: u64) {
        let mut held = lock(&self.held);
        if held.get(&pair).is_none_or(|(_, r)| *r <= revision) {
            held.insert(pair, (holder, revision));
        }
    }

    /// Follows one change of the bucket.
    fn heard(&self, entry: kv::Entry) {
        let Some(pair) = parse_key(&entry.key) else {
            return;
        };
        if entry.operation == kv::Operation::Put {
            let holder = Arc::from(String::from_utf8_lossy(&entry.value).as_ref());
            self.set(pair, holder, entry.revision);
        } else {
            let mut held = lock(&self.held);
            if held.get(&pair).is_some_and(|(_, r)| *r <= entry.revision) {
                held.remove(&pair);
            }
        }
    }
}

/// Where the stanzas of a pair go once its claim settled.
enum Route {
    Here,
    Node(Arc<str>),
}

/// Starts following the s2s bucket for `node`.
pub(super) fn start(node: &Arc<Node>, core: &Core) {
    let _ = node.s2s.node.set(Arc::downgrade(node));
    core.tasks
        .spawn(node.clone().run_s2s(core.shutdown.clone()));
}

impl Node {
    /// [`crate::core::cluster::Cluster::outgoing`]: keeps `out` for this node's stream, or
    /// forwards it to the pair's holder, or waits for a claim.
    pub(super) fn route_outgoing(&self, out: Outgoing) -> Option<Outgoing> {
        if !self.is_connected() || self.s2s.bucket().is_none() {
            return Some(out);
        }
        let pair = (out.0.domain().to_string(), out.1.domain().to_string());
        let mut claiming = lock(&self.s2s.claiming);
        if let Some(waiting) = claiming.get_mut(&pair) {
            if waiting.len() < CLAIM_QUEUE {
                waiting.push(out);
            } else {
                drop(claiming);
                self.bounce(out, C::ResourceConstraint);
            }
            return None;
        }
        match self.s2s.holder(&pair) {
            Some(h) if *h == *self.name => return Some(out),
            Some(h) if !self.directory.is_gone(&h) => {
                drop(claiming);
                self.forward_outgoing(&h, out);
                return None;
            }
            _ => {}
        }
        let Some(node) = self.s2s.node.get().and_then(Weak::upgrade) else {
            return Some(out);
        };
        let Some(core) = self.core.upgrade() else {
            return Some(out);
        };
        claiming.insert(pair.clone(), vec![out]);
        drop(claiming);
        core.tasks.spawn(node.claim(pair));
        None
    }

    /// Takes `pair`'s lease (or learns who has it), then sends what waited for it.
    async fn claim(self: Arc<Self>, pair: Pair) {
        let route = match self.take(&pair).await {
            Ok(route) => route,
            Err(e) => {
                tracing::warn!(error = %e, local = %pair.0, remote = %pair.1, "cluster: no s2s lease; using this node's own stream");
                Route::Here
            }
        };
        // Sent under the lock: a stanza routed meanwhile goes after these.
        let mut claiming = lock(&self.s2s.claiming);
        for out in claiming.remove(&pair).unwrap_or_default() {
            match &route {
                Route::Here => self.send_here(out),
                Route::Node(n) => self.forward_outgoing(n, out),
            }
        }
    }

    /// Creates `pair`'s lease for this node, or replaces a gone holder's, or learns the live
    /// holder's name.
    async fn take(&self, pair: &Pair) -> Result<Route, ClusterError> {
        let bucket = self
            .s2s
            .bucket()
            .ok_or_else(|| nats("not following the s2s bucket"))?;
        let key = key(pair);
        let me: Arc<str> = Arc::from(self.name.as_str());
        for _ in 0..4 {
            let created = bucket.create(&key, self.name.clone().into()).await;
            if let Ok(revision) = created {
                self.s2s.set(pair.clone(), me, revision);
                return Ok(Route::Here);
            }
            let entry = bucket.entry(&key).await.map_err(nats)?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                match created {
                    Err(e) if e.kind() != kv::CreateErrorKind::AlreadyExists => {
                        return Err(nats(e));
                    }
                    _ => continue,
                }
            };
            let holder = String::from_utf8_lossy(&entry.value).into_owned();
            if holder != self.name && !self.directory.is_gone(&holder) {
                let holder: Arc<str> = Arc::from(holder);
                self.s2s.set(pair.clone(), holder.clone(), entry.revision);
                return Ok(Route::Node(holder));
            }
            // A gone node's lease, or this node's own with a release in flight: a new revision
            // makes it this node's (unless another node replaced it first).
            if let Ok(revision) = bucket
                .update(&key, self.name.clone().into(), entry.revision)
                .await
            {
                tracing::info!(local = %pair.0, remote = %pair.1, from = %holder, "cluster: took over an s2s lease");
                self.s2s.set(pair.clone(), me, revision);
                return Ok(Route::Here);
            }
        }
        Err(nats("s2s lease contended"))
    }

    /// [`crate::core::cluster::Cluster::outgoing_closed`]: this node's stream for `pair`
    /// ended, so its lease goes (if it is still the one this node took).
    pub(super) fn release_pair(&self, pair: Pair) {
        let revision = {
            let mut held = lock(&self.s2s.held);
            match held.get(&pair) {
                Some((h, r)) if **h == *self.name => {
                    let r = *r;
                    held.remove(&pair);
                    r
                }
                _ => return,
            }
        };
        let (Some(bucket), Some(core)) = (self.s2s.bucket(), self.core.upgrade()) else {
            return;
        };
        core.tasks.spawn(async move {
            if let Err(e) = bucket
                .delete_expect_revision(key(&pair), Some(revision))
                .await
            {
                tracing::debug!(error = %e, "cluster: s2s lease already moved on");
            }
        });
    }

    /// Writes `out` on this node's own stream for its pair.
    fn send_here(&self, (from, to, stanza): Outgoing) {
        if let Some(f) = self
            .core
            .upgrade()
            .and_then(|c| c.federation.get().cloned())
        {
            f.send(from, to, stanza);
        }
    }

    /// Hands `out` to `node`, the holder of its pair's lease; bounces it when that node
    /// cannot be reached now.
    fn forward_outgoing(&self, node: &str, (from, to, mut stanza): Outgoing) {
        stanza.set_attr("from", Some(from.to_string()));
        stanza.set_attr("to", Some(to.to_string()));
        if !self.queue(node, Frame::outgoing(&stanza)) {
            self.bounce((from, to, stanza), C::RemoteServerTimeout);
        }
    }

    fn bounce(&self, (_, _, stanza): Outgoing, condition: C) {
        if let Some(core) = self.core.upgrade() {
            let c = core.clone();
            core.tasks
                .spawn(async move { c.bounce(&stanza, condition).await });
        }
    }

    /// A stanza another node forwarded because this node holds its pair's lease: out on
    /// this node's stream.
    pub(super) fn send_forwarded(&self, stanza: crate::xmpp::Element) {
        let jid = |name: &str| stanza.get_attr(name).and_then(|s| Jid::parse(s).ok());
        match (jid("from"), jid("to")) {
            (Some(from), Some(to)) => self.send_here((from, to, stanza)),
            _ => tracing::warn!("cluster: dropping a forwarded s2s stanza without from and to"),
        }
    }

    /// Follows the s2s bucket: one epoch per NATS connection, started over after a loss.
    async fn run_s2s(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            while !self.connected() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            let result = self.s2s_epoch(&shutdown).await;
            *lock(&self.s2s.bucket) = None;
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.name, "cluster: s2s leases interrupted; starting over");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn s2s_epoch(&self, shutdown: &CancellationToken) -> Result<(), ClusterError> {
        let js = jetstream::new(self.client.clone());
        let bucket = Self::bucket(&js, S2S_BUCKET, Duration::ZERO).await?;
        self.share_secret(&bucket).await?;
        let mut watch = bucket.watch_with_history("pair.>").await.map_err(nats)?;
        lock(&self.s2s.held).clear();
        *lock(&self.s2s.bucket) = Some(bucket.clone());
        let mut check = tokio::time::interval(Duration::from_millis(500));
        let mut sweep = tokio::time::interval((self.ttl / 4).max(Duration::from_millis(250)));
        loop {
            tokio::select! {
                _ = sweep.tick() => self.sweep_pair_leases(&bucket).await,
                _ = shutdown.cancelled() => {
                    self.drop_leases(&bucket).await;
                    return Ok(());
                }
                _ = check.tick() => {
                    if !self.connected() {
                        return Err(nats("disconnected"));
                    }
                }
                entry = watch.next() => {
                    let entry = entry.ok_or_else(|| nats("s2s watch ended"))?.map_err(nats)?;
                    self.s2s.heard(entry);
                }
            }
        }
    }

    /// Installs the cluster's dialback secret in the s2s manager, making it if none exists.
    async fn share_secret(&self, bucket: &kv::Store) -> Result<(), ClusterError> {
        let mut fresh = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
        let secret = match bucket.create(SECRET_KEY, fresh.to_vec().into()).await {
            Ok(_) => fresh,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let value = bucket
                    .get(SECRET_KEY)
                    .await
                    .map_err(nats)?
                    .ok_or_else(|| nats("no dialback secret"))?;
                <[u8; 32]>::try_from(value.as_ref())
                    .map_err(|_| nats("malformed dialback secret"))?
            }
            Err(e) => return Err(nats(e)),
        };
        if let Some(f) = self
            .core
            .upgrade()
            .and_then(|c| c.federation.get().cloned())
        {
            f.share_dialback_secret(secret);
        }
        Ok(())
    }

    /// Drops the leases of nodes that are gone (each survivor tries; the revision makes one
    /// delete count).
    async fn sweep_pair_leases(&self, bucket: &kv::Store) {
        let gone: Vec<(Pair, u64)> = lock(&self.s2s.held)
            .iter()
            .filter(|(_, (h, _))| **h != *self.name && self.directory.is_gone(h))
            .map(|(p, (_, r))| (p.clone(), *r))
            .collect();
        for (pair, revision) in gone {
            if bucket
                .delete_expect_revision(key(&pair), Some(revision))
                .await
                .is_ok()
            {
                tracing::info!(local = %pair.0, remote = %pair.1, "cluster: dropped a gone node's s2s lease");
            }
        }
    }

    /// Leaving the cluster: the leases this node holds go at once.
    async fn drop_leases(&self, bucket: &kv::Store) {
        let mine: Vec<(Pair, u64)> = lock(&self.s2s.held)
            .iter()
            .filter(|(_, (h, _))| **h == *self.name)
            .map(|(p, (_, r))| (p.clone(), *r))
            .collect();
        let goodbye = async {
            for (pair, revision) in mine {
                let _ = bucket
                    .delete_expect_revision(key(&pair), Some(revision))
                    .await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lease_keys_name_the_pair() {
        let pair = ("a.example".to_string(), "b-x.example".to_string());
        let k = key(&pair);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{k}"
        );
        assert_eq!(parse_key(&k), Some(pair));
        assert_eq!(parse_key(SECRET_KEY), None);
        assert_eq!(parse_key("pair.!!.x"), None);
    }

    #[test]
    fn an_older_word_about_a_lease_changes_nothing() {
        let leases = Leases::default();
        let pair = ("a".to_string(), "b".to_string());
        leases.set(pair.clone(), Arc::from("n2"), 5);
        leases.set(pair.clone(), Arc::from("n1"), 4);
        assert_eq!(leases.holder(&pair).as_deref(), Some("n2"));
        leases.set(pair.clone(), Arc::from("n1"), 6);
        assert_eq!(leases.holder(&pair).as_deref(), Some("n1"));
    }
}
