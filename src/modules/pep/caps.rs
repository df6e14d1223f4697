//! XEP-0115 entity capabilities, as far as PEP needs them: which nodes a client resource wants
//! notifications for (`<node>+notify` features, XEP-0163 §6.1.2).
//!
//! A resource's `<c xmlns='http://jabber.org/protocol/caps' hash ver node/>` is resolved once per
//! ver with a disco#info query to that resource. An answer whose XEP-0115 §5 hash matches the
//! ver goes into the server-wide cache (shared by every host); one that does not (or a legacy
//! ver without `hash`) is kept for that full JID only, so a bad client cannot poison the cache.
//! Concurrent lookups of one ver wait for the query in flight. Everything is bounded: cache
//! entries, +notify nodes per entry, queries in flight.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};

use crate::core::Core;
use crate::core::iq::IqError;
use crate::xmpp::{Element, Jid, ns};

/// Default bound of the cache (`pep_caps_cache_size`).
pub const DEFAULT_CACHE_SIZE: usize = 1000;
/// Most +notify nodes remembered per capability set.
pub const MAX_NOTIFY: usize = 64;
/// Longest node name remembered.
pub const MAX_NODE_LEN: usize = 256;
/// Most disco#info queries for caps in flight at once.
pub const MAX_QUERIES: usize = 64;
/// How long a resource has to answer the disco#info query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The nodes a capability set asks notifications for.
pub type Notify = Arc<BTreeSet<String>>;

/// A parsed `<c/>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// The hash algorithm (`sha-1`, …); `None` for legacy caps.
    pub hash: Option<String>,
    /// The verification string.
    pub ver: String,
    /// The client's software URI.
    pub node: String,
}

impl Caps {
    /// The cache key (hash and ver).
    pub fn key(&self) -> String {
        format!("{}\n{}", self.hash.as_deref().unwrap_or(""), self.ver)
    }
}

/// The caps advertised in a presence, if any.
pub fn caps_of(presence: &Element) -> Option<Caps> {
    let c = presence.get_child("c", ns::CAPS)?;
    let ver = c.get_attr("ver")?;
    let node = c.get_attr("node").unwrap_or("");
    if ver.is_empty() || ver.len() > 256 || node.len() > 1024 {
        return None;
    }
    Some(Caps {
        hash: c.get_attr("hash").map(str::to_string),
        ver: ver.to_string(),
        node: node.to_string(),
    })
}

/// A form field: var and values.
type Field = (String, Vec<String>);

/// The XEP-0115 §5.1 verification string `S` of a disco#info `<query/>`, or `None` when the
/// answer is ill-formed per §5.4 (duplicate identities, features or form types).
pub fn verification_string(query: &Element) -> Option<String> {
    let mut identities: Vec<(&str, &str, &str, &str)> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            (
                i.get_attr("category").unwrap_or(""),
                i.get_attr("type").unwrap_or(""),
                i.get_attr("xml:lang").unwrap_or(""),
                i.get_attr("name").unwrap_or(""),
            )
        })
        .collect();
    identities.sort();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.get_attr("var"))
        .collect();
    features.sort();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut forms: Vec<(String, Vec<Field>)> = Vec::new();
    for x in query.children().filter(|c| c.is("x", ns::DATA)) {
        let mut form_type: Option<String> = None;
        let mut fields = Vec::new();
        let mut valid = false;
        for f in x.children().filter(|c| c.is("field", ns::DATA)) {
            let Some(var) = f.get_attr("var") else {
                continue;
            };
            let mut values: Vec<String> = f
                .children()
                .filter(|c| c.is("value", ns::DATA))
                .map(|v| v.text_content())
                .collect();
            if var == "FORM_TYPE" {
                values.dedup();
                if form_type.is_some() || values.len() != 1 {
                    return None;
                }
                valid = f.get_attr("type") == Some("hidden");
                form_type = values.pop();
                continue;
            }
            values.sort();
            fields.push((var.to_string(), values));
        }
        // A form without a hidden FORM_TYPE is ignored (§5.4 step 3.6).
        if let (true, Some(t)) = (valid, form_type) {
            fields.sort();
            forms.push((t, fields));
        }
    }
    forms.sort();
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut s = String::new();
    for (c, t, l, n) in identities {
        s.push_str(&format!("{c}/{t}/{l}/{n}<"));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (t, fields) in forms {
        s.push_str(&t);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Some(s)
}

/// The XEP-0115 ver of a disco#info `<query/>` under `hash` (`sha-1` or `sha-256`).
pub fn compute_ver(query: &Element, hash: &str) -> Option<String> {
    let s = verification_string(query)?;
    let digest = match hash {
        "sha-1" => Sha1::digest(s.as_bytes()).to_vec(),
        "sha-256" => Sha256::digest(s.as_bytes()).to_vec(),
        _ => return None,
    };
    Some(STANDARD.encode(digest))
}

/// The nodes a disco#info `<query/>` asks notifications for, bounded.
pub fn notify_nodes(query: &Element) -> BTreeSet<String> {
    query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.get_attr("var")?.strip_suffix("+notify"))
        .filter(|n| !n.is_empty() && n.len() <= MAX_NODE_LEN)
        .take(MAX_NOTIFY)
        .map(str::to_string)
        .collect()
}

/// The outcome of a caps query.
enum Answer {
    /// The disco#info `<query/>` and its +notify nodes.
    Info(Element, Notify),
    /// The resource did not answer usably.
    Failed,
    /// Not asked (too many queries in flight).
    Busy,
}

/// What is known about a resource's caps without asking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The resource advertises no caps: it wants no notifications.
    NoCaps,
    /// Known.
    Known(Notify),
    /// Must be resolved (with [`CapsCache::resolve`]).
    Unknown(Caps),
}

#[derive(Default)]
struct Inner {
    verified: HashMap<String, Notify>,
    order: VecDeque<String>,
    per_jid: HashMap<String, (String, Notify)>,
    in_flight: HashMap<String, watch::Receiver<Option<Option<Notify>>>>,
}

/// The server-wide caps cache (shared by the PEP service of every host).
pub struct CapsCache {
    inner: Mutex<Inner>,
    max: AtomicUsize,
    queries: Semaphore,
}

impl Default for CapsCache {
    fn default() -> Self {
        CapsCache {
            inner: Mutex::new(Inner::default()),
            max: AtomicUsize::new(DEFAULT_CACHE_SIZE),
            queries: Semaphore::new(MAX_QUERIES),
        }
    }
}

impl CapsCache {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the most entries kept (verified and per-JID each).
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// Number of verified capability sets cached.
    pub fn len(&self) -> usize {
        self.inner().verified.len()
    }

    /// Whether no verified capability set is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is known of `jid`'s caps as advertised in `presence`.
    pub fn lookup(&self, jid: &Jid, presence: Option<&Element>) -> Lookup {
        match presence.and_then(caps_of) {
            Some(caps) => self.lookup_key(jid, &caps, &caps.key()),
            None => Lookup::NoCaps,
        }
    }

    /// Forgets what `jid` alone answered (it went offline).
    pub fn forget(&self, jid: &Jid) {
        self.inner().per_jid.remove(jid.as_str());
    }

    fn insert_verified(&self, key: String, notify: Notify) {
        let max = self.max.load(Ordering::Relaxed);
        let mut inner = self.inner();
        if inner.verified.insert(key.clone(), notify).is_none() {
            inner.order.push_back(key);
        }
        while inner.verified.len() > max {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.verified.remove(&old);
                }
                None => break,
            }
        }
    }

    fn insert_per_jid(&self, jid: &Jid, key: String, notify: Notify) {
        let max = self.max.load(Ordering::Relaxed);
        let mut inner = self.inner();
        if inner.per_jid.len() >= max && !inner.per_jid.contains_key(jid.as_str()) {
            // Bounded: drop an arbitrary entry; it is asked again if still needed.
            if let Some(k) = inner.per_jid.keys().next().cloned() {
                inner.per_jid.remove(&k);
            }
        }
        inner.per_jid.insert(jid.to_string(), (key, notify));
    }

    /// The +notify nodes of `jid` advertising `caps`: cached, or asked with one disco#info query
    /// per ver (sent from `from`, the server). `None` when the resource did not answer usably.
    pub async fn resolve(
        &self,
        core: &Arc<Core>,
        from: &str,
        jid: &Jid,
        caps: &Caps,
    ) -> Option<Notify> {
        let key = caps.key();
        if let Lookup::Known(n) = self.lookup_key(jid, caps, &key) {
            return Some(n);
        }
        let verifiable = caps
            .hash
            .as_deref()
            .is_some_and(|h| h == "sha-1" || h == "sha-256");
        // One query per ver: later askers wait for the one in flight.
        let leader = if verifiable {
            let waiter = {
                let mut inner = self.inner();
                match inner.in_flight.get(&key) {
                    // A receiver whose sender is gone is stale (its task was cancelled).
                    Some(rx) if rx.has_changed().is_ok() => Ok(rx.clone()),
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        inner.in_flight.insert(key.clone(), rx);
                        Err(tx)
                    }
                }
            };
            match waiter {
                Ok(mut rx) => {
                    let waited = tokio::time::timeout(
                        QUERY_TIMEOUT + Duration::from_secs(1),
                        rx.wait_for(|v| v.is_some()),
                    )
                    .await;
                    let got: Option<Option<Notify>> = match waited {
                        Ok(Ok(v)) => (*v).clone(),
                        _ => None,
                    };
                    if let Some(Some(n)) = got {
                        return Some(n);
                    }
                    // The answer held only for the other resource: ask this one itself.
                    None
                }
                Err(tx) => Some(tx),
            }
        } else {
            None
        };
        let result = self.query(core, from, jid, caps).await;
        let verified = match &result {
            Answer::Info(query, _) => {
                verifiable
                    && caps
                        .hash
                        .as_deref()
                        .and_then(|h| compute_ver(query, h))
                        .is_some_and(|v| v == caps.ver)
            }
            _ => false,
        };
        let notify = match result {
            Answer::Info(_, n) if verified => {
                self.insert_verified(key.clone(), n.clone());
                Some(n)
            }
            Answer::Info(_, n) => {
                self.insert_per_jid(jid, key.clone(), n.clone());
                Some(n)
            }
            // No usable answer: remember "nothing" for this JID until its caps change.
            Answer::Failed => {
                self.insert_per_jid(jid, key.clone(), Notify::default());
                None
            }
            // Too busy to ask now: asked again next time.
            Answer::Busy => None,
        };
        if let Some(tx) = leader {
            self.inner().in_flight.remove(&key);
            let shared = if verified { notify.clone() } else { None };
            let _ = tx.send(Some(shared));
        }
        notify
    }

    fn lookup_key(&self, jid: &Jid, caps: &Caps, key: &str) -> Lookup {
        let inner = self.inner();
        if caps.hash.is_some()
            && let Some(n) = inner.verified.get(key)
        {
            return Lookup::Known(n.clone());
        }
        match inner.per_jid.get(jid.as_str()) {
            Some((k, n)) if k == key => Lookup::Known(n.clone()),
            _ => Lookup::Unknown(caps.clone()),
        }
    }

    async fn query(&self, core: &Arc<Core>, from: &str, jid: &Jid, caps: &Caps) -> Answer {
        let Ok(_permit) = self.queries.try_acquire() else {
            return Answer::Busy;
        };
        let id = format!("caps-{:016x}", rand::random::<u64>());
        let mut query = Element::new("query", ns::DISCO_INFO);
        if !caps.node.is_empty() {
            query.set_attr("node", Some(format!("{}#{}", caps.node, caps.ver)));
        }
        let iq = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", id)
            .attr("from", from)
            .attr("to", jid.to_string())
            .child(query);
        match core.send_iq(iq, Some(QUERY_TIMEOUT)).await {
            Ok(reply) => match reply.get_child("query", ns::DISCO_INFO) {
                Some(query) => {
                    let notify = Arc::new(notify_nodes(query));
                    Answer::Info(query.clone(), notify)
                }
                None => Answer::Failed,
            },
            Err(IqError::Overflow | IqError::Shutdown | IqError::DuplicateId) => Answer::Busy,
            Err(_) => Answer::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::parser::parse_element;

    #[test]
    fn simple_example_of_xep_0115_section_5_2() {
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='client' name='Exodus 0.9.1' type='pc'/>\
               <feature var='http://jabber.org/protocol/caps'/>\
               <feature var='http://jabber.org/protocol/disco#info'/>\
               <feature var='http://jabber.org/protocol/disco#items'/>\
               <feature var='http://jabber.org/protocol/muc'/>\
             </query>",
        )
        .unwrap();
        assert_eq!(
            verification_string(&q).unwrap(),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        assert_eq!(
            compute_ver(&q, "sha-1").as_deref(),
            Some("QgayPKawpkPSDYmwT/WM94uAlu0=")
        );
        assert_eq!(compute_ver(&q, "md5"), None);
    }

    #[test]
    fn complex_example_of_xep_0115_section_5_3() {
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
               <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
               <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
               <feature var='http://jabber.org/protocol/caps'/>\
               <feature var='http://jabber.org/protocol/disco#info'/>\
               <feature var='http://jabber.org/protocol/disco#items'/>\
               <feature var='http://jabber.org/protocol/muc'/>\
               <x xmlns='jabber:x:data' type='result'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
                 <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
                 <field var='os'><value>Mac</value></field>\
                 <field var='os_version'><value>10.5.1</value></field>\
                 <field var='software'><value>Psi</value></field>\
                 <field var='software_version'><value>0.11</value></field>\
               </x>\
             </query>",
        )
        .unwrap();
        assert_eq!(
            compute_ver(&q, "sha-1").as_deref(),
            Some("q07IKJEyjvHSyhy//CH0CxmKi8w=")
        );
    }

    #[test]
    fn ill_formed_answers_have_no_ver() {
        let dup = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <feature var='a'/><feature var='a'/></query>",
        )
        .unwrap();
        assert_eq!(verification_string(&dup), None);
        let two_forms = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>t</value></field></x>\
               <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>t</value></field></x>\
             </query>",
        )
        .unwrap();
        assert_eq!(verification_string(&two_forms), None);
        // A form whose FORM_TYPE is not hidden is ignored, not fatal.
        let not_hidden = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'><feature var='f'/>\
               <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>t</value></field></x>\
             </query>",
        )
        .unwrap();
        assert_eq!(verification_string(&not_hidden).as_deref(), Some("f<"));
    }

    #[test]
    fn notify_nodes_and_caps_parsing() {
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <feature var='urn:xmpp:avatar:metadata+notify'/>\
               <feature var='+notify'/>\
               <feature var='urn:xmpp:avatar:data'/></query>",
        )
        .unwrap();
        let n = notify_nodes(&q);
        assert_eq!(
            n.into_iter().collect::<Vec<_>>(),
            vec!["urn:xmpp:avatar:metadata"]
        );
        let p = parse_element(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>",
        )
        .unwrap();
        let c = caps_of(&p).unwrap();
        assert_eq!(
            (c.hash.as_deref(), c.ver.as_str(), c.node.as_str()),
            (Some("sha-1"), "v=", "n")
        );
        assert!(caps_of(&parse_element("<presence/>").unwrap()).is_none());
    }

    #[test]
    fn cache_is_bounded_and_per_jid_answers_stay_per_jid() {
        let cache = CapsCache::default();
        cache.set_max(2);
        for i in 0..5 {
            cache.insert_verified(format!("k{i}"), Notify::default());
        }
        assert_eq!(cache.len(), 2);
        let jid = Jid::parse("a@b/c").unwrap();
        let other = Jid::parse("x@b/c").unwrap();
        let p = parse_element(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
        )
        .unwrap();
        let caps = caps_of(&p).unwrap();
        cache.insert_per_jid(
            &jid,
            caps.key(),
            Arc::new(BTreeSet::from(["n1".to_string()])),
        );
        assert!(matches!(cache.lookup(&jid, Some(&p)), Lookup::Known(_)));
        assert!(matches!(cache.lookup(&other, Some(&p)), Lookup::Unknown(_)));
        cache.forget(&jid);
        assert!(matches!(cache.lookup(&jid, Some(&p)), Lookup::Unknown(_)));
        assert_eq!(cache.lookup(&jid, None), Lookup::NoCaps);
    }
}
