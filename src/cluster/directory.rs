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
    /// Whether it enabled XEP-0280 carbons (absent in entries written before this flag: off).
    #[serde(rename = "c", default, skip_serializing_if = "is_false")]
    pub carbons: bool,
    /// Whether it fetched its roster, so roster pushes reach it (absent before this flag: off).
    #[serde(rename = "q", default, skip_serializing_if = "is_false")]
    pub roster: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Entry {
    /// The entry of a local session.
    pub fn of(s: &SessionHandle) -> Entry {
        Entry {
            resource: s.jid.resource().unwrap_or_default().to_string(),
            priority: s.priority(),
            available: s.is_available(),
            secure: s.secure,
            carbons: s.carbons(),
            roster: s.roster_requested(),
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
    /// When the current view started (this node connected, or connected again).
    started: Mutex<Instant>,
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
            started: Mutex::new(Instant::now()),
            online: AtomicBool::new(false),
            by_bare: DashMap::new(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Option<Instant>>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a fresh view (connected again: the watch replays the whole bucket). A node not
    /// heard from again counts as gone only once a TTL has passed since.
    pub fn reset(&self) {
        self.by_bare.clear();
        self.seen().clear();
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
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

    /// Whether `node` heartbeated within the TTL (always true while this node is cut off).
    pub fn is_alive(&self, node: &str) -> bool {
        self.alive(&self.seen(), node)
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
            None => {
                self.started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed()
                    >= self.ttl
            }
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
            carbons: e.carbons,
            roster: e.roster,
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
    /// the view started) and returns the bucket keys of their sessions, for removal.
    pub fn sweep(&self) -> Vec<String> {
        self.sweep_departed().keys
    }

    /// [`Directory::sweep`], also returning the sessions the gone nodes served (what the
    /// survivors announce as gone, [`crate::cluster::departed`]).
    pub fn sweep_departed(&self) -> Swept {
        let mut swept = Swept::default();
        if !self.is_online() {
            return swept;
        }
        let seen = self.seen();
        let settled = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= self.ttl;
        let gone = |n: &Arc<str>| match seen.get(n) {
            Some(Some(t)) => t.elapsed() >= self.ttl,
            Some(None) => true,
            None => settled,
        };
        self.by_bare.retain(|bare, list| {
            list.retain(|(n, e)| {
                if gone(n) {
                    swept.keys.push(key(bare, n));
                    swept.sessions.extend(Self::remote(bare, n, e));
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        swept.keys.sort();
        swept.keys.dedup();
        swept
    }

    /// Whether this node speaks for the cluster about gone nodes (removes their keys and
    /// announces their sessions gone): it is the live node with the lowest name, so exactly
    /// one survivor does it.
    pub fn speaks_for_the_gone(&self) -> bool {
        let seen = self.seen();
        !seen.keys().any(|n| **n < *self.me && self.alive(&seen, n))
    }
}

/// What a sweep found on the nodes that are gone.
#[derive(Debug, Default)]
pub struct Swept {
    /// The bucket keys of their sessions, sorted.
    pub keys: Vec<String>,
    /// Their sessions, as last published.
    pub sessions: Vec<RemoteSession>,
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
            carbons: false,
            roster: false,
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
    fn entries_without_the_newer_flags_still_read() {
        let old: Vec<Entry> =
            serde_json::from_str(r#"[{"r":"g","p":0,"a":true,"s":true}]"#).unwrap();
        assert_eq!(old, vec![entry("g", 0)]);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"[{"r":"g","p":0,"a":true,"s":true}]"#,
            "flags that are off are not written"
        );
        let mut on = entry("g", 0);
        on.carbons = true;
        on.roster = true;
        let text = serde_json::to_string(&on).unwrap();
        assert!(
            text.contains(r#""c":true"#) && text.contains(r#""q":true"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), on);
    }

    #[test]
    fn the_lowest_live_node_speaks_for_the_gone() {
        let ttl = Duration::from_millis(50);
        let b = Directory::new("b", ttl);
        b.set_online(true);
        b.heard("b");
        b.heard("c");
        assert!(b.speaks_for_the_gone(), "nobody lower is alive");
        b.heard("a");
        assert!(!b.speaks_for_the_gone(), "a is lower and alive");
        let bob = j("bob@h");
        b.update(bob.clone(), "a", Some(vec![entry("phone", 0)]));
        b.left("a");
        assert!(b.speaks_for_the_gone(), "a said goodbye");
        let swept = b.sweep_departed();
        assert_eq!(swept.keys, vec![key(&bob, "a")]);
        let gone: Vec<String> = swept.sessions.iter().map(|s| s.jid.to_string()).collect();
        assert_eq!(gone, ["bob@h/phone"]);
        assert!(b.sweep_departed().sessions.is_empty(), "announced once");
    }

    #[test]
    fn a_fresh_view_waits_a_ttl_before_judging_unheard_nodes() {
        // Long enough that the first sweep surely comes within it, even on a loaded machine.
        let ttl = Duration::from_secs(1);
        let d = Directory::new("me", ttl);
        d.set_online(true);
        std::thread::sleep(ttl);
        d.reset();
        // The watch replayed a session before the node's heartbeat: not gone yet.
        d.update(j("bob@h"), "b", Some(vec![entry("phone", 0)]));
        assert!(d.sweep_departed().keys.is_empty());
        std::thread::sleep(ttl);
        assert_eq!(d.sweep_departed().keys, vec![key(&j("bob@h"), "b")]);
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
