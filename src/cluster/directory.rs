//! The session directory each node keeps in memory: what the JetStream key-value watch said
//! about other nodes' sessions, and when each node last heartbeated. Routing reads it with no
//! round trip; a node silent for longer than the TTL counts as gone with its sessions.
//!
//! In the bucket, one key per account and node, `<bare JID, base64url>.<node>`, holds that
//! node's sessions of the account (JSON [`Entry`] list): two nodes never write the same key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;

use crate::core::cluster::RemoteSession;
use crate::core::sessions::SessionHandle;
use crate::xmpp::Jid;

/// One session as stored in the directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The resource.
    #[serde(rename = "r")]
    pub resource: String,
    /// The presence priority.
    #[serde(rename = "p")]
    pub priority: i8,
    /// Whether it is available.
    #[serde(rename = "a")]
    pub available: bool,
    /// Whether its connection is encrypted.
    #[serde(rename = "s")]
    pub secure: bool,
}

impl Entry {
    /// The entry of a local session.
    pub fn of(s: &SessionHandle) -> Entry {
        Entry {
            resource: s.jid.resource().unwrap_or_default().to_string(),
            priority: s.priority(),
            available: s.is_available(),
            secure: s.secure,
        }
    }
}

/// The key of `node`'s sessions of `bare`.
pub fn key(bare: &Jid, node: &str) -> String {
    format!("{}.{node}", URL_SAFE_NO_PAD.encode(bare.as_str()))
}

/// The account and node a key names.
pub fn parse_key(key: &str) -> Option<(Jid, &str)> {
    let (account, node) = key.split_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(account).ok()?;
    let bare = Jid::parse(std::str::from_utf8(&bytes).ok()?).ok()?;
    (bare.resource().is_none() && !node.is_empty()).then_some((bare, node))
}

/// Other nodes' sessions and liveness, as last heard.
pub struct Directory {
    me: String,
    ttl: Duration,
    started: Instant,
    /// Whether this node is connected to the cluster now; while not, the cache is kept as it
    /// was (nothing can be learnt) and liveness is not judged.
    online: AtomicBool,
    by_bare: DashMap<Jid, Vec<(Arc<str>, Entry)>>,
    /// When each node last heartbeated (`None`: it said goodbye).
    seen: Mutex<HashMap<Arc<str>, Option<Instant>>>,
}

impl Directory {
    /// An empty directory for node `me`, whose peers count as gone after `ttl` of silence.
    pub fn new(me: &str, ttl: Duration) -> Directory {
        Directory {
            me: me.to_string(),
            ttl,
            started: Instant::now(),
            online: AtomicBool::new(false),
            by_bare: DashMap::new(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Option<Instant>>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a fresh view (connected again: the watch replays the whole bucket).
    pub fn reset(&self) {
        self.by_bare.clear();
        self.seen().clear();
    }

    /// Marks this node connected or not.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Whether this node is connected to the cluster.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// `node` heartbeated now.
    pub fn heard(&self, node: &str) {
        let mut seen = self.seen();
        match seen.get_mut(node) {
            Some(t) => *t = Some(Instant::now()),
            None => {
                seen.insert(Arc::from(node), Some(Instant::now()));
            }
        }
    }

    /// `node` left (its liveness key was deleted): it counts as gone at once.
    pub fn left(&self, node: &str) {
        let mut seen = self.seen();
        match seen.get_mut(node) {
            Some(t) => *t = None,
            None => {
                seen.insert(Arc::from(node), None);
            }
        }
    }

    /// Whether `node` counts as alive (always, while this node is cut off and cannot know).
    fn alive(&self, seen: &HashMap<Arc<str>, Option<Instant>>, node: &str) -> bool {
        if !self.is_online() {
            return true;
        }
        seen.get(node)
            .is_some_and(|t| t.is_some_and(|t| t.elapsed() < self.ttl))
    }

    /// Whether `node` is known to be gone: it left, or fell silent for the TTL, or was never
    /// heard though this node has listened for a TTL (never while this node is cut off).
    pub fn is_gone(&self, node: &str) -> bool {
        if !self.is_online() {
            return false;
        }
        match self.seen().get(node) {
            Some(Some(t)) => t.elapsed() >= self.ttl,
            Some(None) => true,
            None => self.started.elapsed() >= self.ttl,
        }
    }

    /// The other nodes alive now, by name, sorted.
    pub fn peers(&self) -> Vec<String> {
        let seen = self.seen();
        let mut peers: Vec<String> = seen
            .keys()
            .filter(|n| ***n != *self.me && self.alive(&seen, n))
            .map(|n| n.to_string())
            .collect();
        peers.sort();
        peers
    }

    /// Records what the bucket says `node` serves of `bare` (`None`: nothing any more).
    pub fn update(&self, bare: Jid, node: &str, entries: Option<Vec<Entry>>) {
        if node == self.me {
            return;
        }
        let mut list = self.by_bare.entry(bare.clone()).or_default();
        list.retain(|(n, _)| &**n != node);
        if let Some(entries) = entries {
            let node: Arc<str> = Arc::from(node);
            list.extend(entries.into_iter().map(|e| (node.clone(), e)));
        }
        let empty = list.is_empty();
        drop(list);
        if empty {
            self.by_bare.remove_if(&bare, |_, l| l.is_empty());
        }
    }

    fn remote(bare: &Jid, node: &Arc<str>, e: &Entry) -> Option<RemoteSession> {
        Some(RemoteSession {
            node: node.clone(),
            jid: bare.with_resource(&e.resource).ok()?,
            priority: e.priority,
            available: e.available,
            secure: e.secure,
        })
    }

    /// The sessions of `bare` on live nodes.
    pub fn sessions_of(&self, bare: &Jid) -> Vec<RemoteSession> {
        let Some(list) = self.by_bare.get(bare) else {
            return Vec::new();
        };
        let seen = self.seen();
        list.iter()
            .filter(|(n, _)| self.alive(&seen, n))
            .filter_map(|(n, e)| Self::remote(bare, n, e))
            .collect()
    }

    /// Every session on live nodes, of `host` (or all hosts).
    pub fn sessions(&self, host: Option<&str>) -> Vec<RemoteSession> {
        let seen = self.seen();
        self.by_bare
            .iter()
            .filter(|e| host.is_none_or(|h| e.key().domain() == h))
            .flat_map(|e| {
                e.value()
                    .iter()
                    .filter(|(n, _)| self.alive(&seen, n))
                    .filter_map(|(n, s)| Self::remote(e.key(), n, s))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Forgets the nodes that stopped heartbeating (or never did, once a TTL has passed since
    /// this node started) and returns the bucket keys of their sessions, for removal.
    pub fn sweep(&self) -> Vec<String> {
        if !self.is_online() {
            return Vec::new();
        }
        let seen = self.seen();
        let settled = self.started.elapsed() >= self.ttl;
        let gone = |n: &Arc<str>| match seen.get(n) {
            Some(Some(t)) => t.elapsed() >= self.ttl,
            Some(None) => true,
            None => settled,
        };
        let mut keys = Vec::new();
        self.by_bare.retain(|bare, list| {
            list.retain(|(n, _)| {
                if gone(n) {
                    keys.push(key(bare, n));
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn entry(r: &str, p: i8) -> Entry {
        Entry {
            resource: r.into(),
            priority: p,
            available: true,
            secure: true,
        }
    }

    #[test]
    fn keys_name_the_account_and_node() {
        let bare = j("o.neil+x@example.org");
        let k = key(&bare, "node-2");
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_eq!(parse_key(&k), Some((bare, "node-2")));
        assert_eq!(parse_key("nodot"), None);
        assert_eq!(parse_key("!!.n"), None);
    }

    #[test]
    fn sessions_of_silent_nodes_vanish() {
        let d = Directory::new("me", Duration::from_secs(60));
        d.set_online(true);
        let bob = j("bob@h");
        d.update(
            bob.clone(),
            "b",
            Some(vec![entry("phone", 1), entry("pc", 5)]),
        );
        d.update(bob.clone(), "me", Some(vec![entry("own", 0)]));
        assert!(d.sessions_of(&bob).is_empty(), "node b never heartbeated");
        d.heard("b");
        let names: Vec<String> = d
            .sessions_of(&bob)
            .iter()
            .map(|s| s.jid.to_string())
            .collect();
        assert_eq!(
            names,
            ["bob@h/phone", "bob@h/pc"],
            "own entries are not remote"
        );
        assert_eq!(d.sessions(Some("h")).len(), 2);
        assert!(d.sessions(Some("other")).is_empty());
        // Cut off from the cluster, the last view stands.
        d.left("b");
        d.set_online(false);
        assert_eq!(d.sessions_of(&bob).len(), 2);
        assert!(d.sweep().is_empty());
        d.set_online(true);
        assert!(d.sessions_of(&bob).is_empty(), "b left");
        assert_eq!(d.sweep(), vec![key(&bob, "b")]);
        d.heard("b");
        assert!(d.sessions_of(&bob).is_empty(), "swept");
        d.update(bob.clone(), "b", Some(vec![entry("pc", 5)]));
        d.update(bob.clone(), "b", None);
        assert!(d.sessions_of(&bob).is_empty());
    }

    #[test]
    fn a_node_is_gone_only_when_known_to_be() {
        let d = Directory::new("me", Duration::from_secs(60));
        assert!(!d.is_gone("b"), "cut off: nothing is judged");
        d.set_online(true);
        assert!(
            !d.is_gone("b"),
            "not heard yet, but this node only just started"
        );
        d.heard("b");
        assert!(!d.is_gone("b"));
        assert_eq!(d.peers(), ["b"]);
        d.left("b");
        assert!(d.is_gone("b"));
        assert!(d.peers().is_empty());
    }
}
