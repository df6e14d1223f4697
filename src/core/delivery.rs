//! The one delivery decision: which sessions of a local account receive a stanza, which get a
//! XEP-0280 carbon copy instead, and what happens when no session takes it.
//!
//! Every path that hands a stanza to a local account asks here and re-derives nothing: the
//! router's default delivery, the carbons module (`<received/>` and `<sent/>` copies), push
//! (XEP-0357: wake a device only when the message waits) and the admin API's message fate.
//! Group chat, s2s inbound and cluster forwarding are meant to call the same functions with the
//! stanza's verified `from`; nothing here depends on where the stanza came from.
//!
//! In a cluster the decision is taken among the sessions of every node ([`Scope::Cluster`]:
//! local ones and those the session directory lists, [`super::cluster`]); the chosen remote
//! sessions are in [`Delivery::remote`], and the router forwards the stanza once to each of
//! their nodes, which decides again among its own sessions only ([`Scope::Local`]). So offline
//! storage happens only when no node has an available session.
//!
//! Rules (RFC 6121 §8.5 and XEP-0280 §6):
//! - a full JID that is online gets the stanza itself; a message to an offline full JID of type
//!   normal, chat or headline is handled as addressed to the bare JID, groupchat bounces;
//! - a message to a bare JID goes to the available resources with non-negative priority, or
//!   (chat and normal, [`BareMessageDelivery::Highest`]) only to those of the highest priority;
//! - no such resource: headlines and errors are dropped, groupchat bounces, others go to offline
//!   storage when the account exists and a module hooks `message/offline`, else bounce;
//! - presence to a bare JID goes to every available resource, to a full JID only if it is online;
//! - an eligible message (see [`carbon_eligible`]) is copied to every resource that enabled
//!   carbons and does not get the message itself — whatever the policy chose — on every node
//!   (the directory lists which remote sessions enabled carbons);
//! - a carbon copy (a message carrying `<received/>` or `<sent/>`) to a full JID goes to that
//!   session only: when it is gone the copy is dropped, never stored or sent to another resource.
//!
//! XEP-0352 holds are not a choice of recipient: an inactive session still receives, and its
//! queue ([`SessionHandle::send`]) holds presence back until the client is active again.

use std::sync::Arc;

use super::Core;
use super::cluster::RemoteSession;
use super::router::Dest;
use super::sessions::SessionHandle;
use crate::config::BareMessageDelivery;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::stanza::{self, Kind};
use crate::xmpp::{Element, Jid, ns};

/// The event offline storage hooks (XEP-0160); without a handler nothing is stored.
pub const OFFLINE_EVENT: &str = "message/offline";

/// What becomes of a stanza for a local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The recipients get it now (queued for a hibernating session until it resumes).
    Delivered,
    /// No session takes it; it goes to offline storage (the `message/offline` event).
    Offline,
    /// The sender gets this error back.
    Bounce(C),
    /// Dropped silently (errors, headlines and presence with nobody to take them, IQ results).
    Dropped,
}

/// The delivery decision for one stanza.
#[derive(Clone)]
pub struct Delivery {
    /// The sessions that get the stanza itself (empty unless the fate is [`Fate::Delivered`]).
    pub recipients: Vec<Arc<SessionHandle>>,
    /// The sessions on other cluster nodes that get the stanza itself (forwarded to their node).
    pub remote: Vec<RemoteSession>,
    /// The sessions that get a XEP-0280 `<received/>` copy instead.
    pub carbons: Vec<Arc<SessionHandle>>,
    /// The sessions on other cluster nodes that get a `<received/>` copy instead.
    pub remote_carbons: Vec<RemoteSession>,
    /// What happens to the stanza.
    pub fate: Fate,
}

impl Delivery {
    /// Whether the stanza waits for its user: stored offline, or queued only for hibernating
    /// sessions (what a push notification is for).
    pub fn waits(&self) -> bool {
        match self.fate {
            Fate::Offline => true,
            Fate::Delivered => {
                self.remote.is_empty() && self.recipients.iter().all(|s| s.is_hibernating())
            }
            Fate::Bounce(_) | Fate::Dropped => false,
        }
    }
}

/// Whether a message is carbon-copied at all (XEP-0280 §6): chat, normal with a body or an IM
/// payload (chat states, receipts, markers); never private, `<no-copy/>`, a carbon or a MAM result.
pub fn carbon_eligible(msg: &Element) -> bool {
    let ty = msg.get_attr("type").unwrap_or("normal");
    if !matches!(ty, "chat" | "normal") {
        return false;
    }
    if msg.get_child("private", ns::CARBONS).is_some()
        || msg.get_child("no-copy", ns::HINTS).is_some()
        || is_carbon_copy(msg)
        || msg.get_child("result", ns::MAM).is_some()
    {
        return false;
    }
    ty == "chat"
        || msg.get_child("body", ns::CLIENT).is_some()
        || msg
            .children()
            .any(|c| [ns::CHATSTATES, ns::RECEIPTS, ns::CHAT_MARKERS].contains(&c.ns()))
}

/// What the decision reads of a session, local or on another node.
trait Candidate: Clone {
    fn full_jid(&self) -> &Jid;
    fn is_available(&self) -> bool;
    fn priority(&self) -> i8;
}

impl Candidate for Arc<SessionHandle> {
    fn full_jid(&self) -> &Jid {
        &self.jid
    }
    fn is_available(&self) -> bool {
        SessionHandle::is_available(self)
    }
    fn priority(&self) -> i8 {
        SessionHandle::priority(self)
    }
}

/// A session of an account anywhere in the cluster.
#[derive(Clone)]
enum Anywhere {
    Local(Arc<SessionHandle>),
    Remote(RemoteSession),
}

impl Candidate for Anywhere {
    fn full_jid(&self) -> &Jid {
        match self {
            Anywhere::Local(s) => &s.jid,
            Anywhere::Remote(r) => &r.jid,
        }
    }
    fn is_available(&self) -> bool {
        match self {
            Anywhere::Local(s) => s.is_available(),
            Anywhere::Remote(r) => r.available,
        }
    }
    fn priority(&self) -> i8 {
        match self {
            Anywhere::Local(s) => s.priority(),
            Anywhere::Remote(r) => r.priority,
        }
    }
}

/// Where the decision looks for sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// This node and, in a cluster, the others (what every local origin asks).
    Cluster,
    /// This node only: a stanza another node forwarded here is never forwarded again.
    Local,
}

/// The recipients and fate among an account's `resources`, before offline storage is checked.
fn decide<T: Candidate>(
    resources: &[T],
    to: &Jid,
    kind: Kind,
    ty: &str,
    policy: BareMessageDelivery,
) -> (Vec<T>, Fate) {
    let dest = Dest::of(to);
    let exact = || -> Vec<T> {
        resources
            .iter()
            .filter(|s| s.full_jid() == to)
            .take(1)
            .cloned()
            .collect()
    };
    let delivered = |r: Vec<T>, otherwise: Fate| {
        if r.is_empty() {
            (r, otherwise)
        } else {
            (r, Fate::Delivered)
        }
    };
    let request = matches!(ty, "get" | "set");
    match (kind, dest) {
        (Kind::Iq, Dest::Full) => delivered(exact(), Fate::Bounce(C::ServiceUnavailable)),
        (Kind::Iq, _) if request => (Vec::new(), Fate::Bounce(C::ServiceUnavailable)),
        (Kind::Iq, _) | (_, Dest::Host) => (Vec::new(), Fate::Dropped),
        (Kind::Presence, Dest::Full) => delivered(exact(), Fate::Dropped),
        (Kind::Presence, Dest::Bare) => {
            let r = resources
                .iter()
                .filter(|s| s.is_available())
                .cloned()
                .collect();
            delivered(r, Fate::Dropped)
        }
        (Kind::Message, dest) => {
            if dest == Dest::Full {
                let r = exact();
                if !r.is_empty() {
                    return (r, Fate::Delivered);
                }
            }
            match ty {
                "error" => return (Vec::new(), Fate::Dropped),
                "groupchat" => return (Vec::new(), Fate::Bounce(C::ServiceUnavailable)),
                _ => {}
            }
            let mut r: Vec<_> = resources
                .iter()
                .filter(|s| s.is_available() && s.priority() >= 0)
                .cloned()
                .collect();
            let highest_only =
                policy == BareMessageDelivery::Highest && matches!(ty, "" | "normal" | "chat");
            if highest_only && let Some(max) = r.iter().map(|s| s.priority()).max() {
                r.retain(|s| s.priority() == max);
            }
            let nobody = if ty == "headline" {
                Fate::Dropped
            } else {
                Fate::Offline
            };
            delivered(r, nobody)
        }
    }
}

impl Core {
    /// Who receives `stanza` (from `from`, to `to`) now, with what is known without storage: a
    /// [`Fate::Offline`] here is not yet checked against the account and offline storage (see
    /// [`Core::delivery`]). For hooks that run before delivery and only need the sessions.
    pub fn delivery_targets(&self, from: &Jid, to: &Jid, stanza: &Element) -> Delivery {
        self.targets_in(Scope::Cluster, from, to, stanza)
    }

    /// [`Core::delivery_targets`] among the sessions of `scope`.
    fn targets_in(&self, scope: Scope, from: &Jid, to: &Jid, stanza: &Element) -> Delivery {
        let nobody = |fate| Delivery {
            recipients: Vec::new(),
            remote: Vec::new(),
            carbons: Vec::new(),
            remote_carbons: Vec::new(),
            fate,
        };
        let Some(kind) = Kind::of(stanza) else {
            return nobody(Fate::Dropped);
        };
        if self.host(to.domain()).is_none() {
            return nobody(Fate::Bounce(C::RemoteServerNotFound));
        }
        let account = to.bare();
        let mut resources = if to.node().is_some() {
            self.sessions.resources(&account)
        } else {
            Vec::new()
        };
        let policy = self.config.load().bare_message_delivery(to.domain());
        let ty = stanza::stanza_type(stanza, "");
        let mut remote_sessions = match scope {
            Scope::Cluster if to.node().is_some() => self.remote_sessions(&account),
            _ => Vec::new(),
        };
        if kind == Kind::Message && to.resource().is_some() && is_carbon_copy(stanza) {
            resources.retain(|s| s.jid == *to);
            remote_sessions.retain(|r| r.jid == *to);
            if resources.is_empty() && remote_sessions.is_empty() {
                return nobody(Fate::Dropped);
            }
        }
        let copied = kind == Kind::Message
            && from.bare() != account
            && (resources.iter().any(|s| s.carbons()) || remote_sessions.iter().any(|r| r.carbons))
            && carbon_eligible(stanza);
        let mut remote_carbons: Vec<RemoteSession> = if copied {
            remote_sessions
                .iter()
                .filter(|r| r.carbons)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let (recipients, remote, fate) = if remote_sessions.is_empty() {
            let (r, fate) = decide(&resources, to, kind, ty, policy);
            (r, Vec::new(), fate)
        } else {
            let all: Vec<Anywhere> = resources
                .iter()
                .cloned()
                .map(Anywhere::Local)
                .chain(remote_sessions.into_iter().map(Anywhere::Remote))
                .collect();
            let (chosen, fate) = decide(&all, to, kind, ty, policy);
            let (mut local, mut remote) = (Vec::new(), Vec::new());
            for c in chosen {
                match c {
                    Anywhere::Local(s) => local.push(s),
                    Anywhere::Remote(r) => remote.push(r),
                }
            }
            (local, remote, fate)
        };
        let carbons = if copied {
            resources
                .iter()
                .filter(|s| s.carbons() && !recipients.iter().any(|r| r.id == s.id))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        remote_carbons.retain(|c| !remote.iter().any(|r| r.jid == c.jid));
        Delivery {
            recipients,
            remote,
            carbons,
            remote_carbons,
            fate,
        }
    }

    /// The full delivery decision for `stanza`: [`Core::delivery_targets`], with
    /// [`Fate::Offline`] confirmed (the account exists and a module stores offline messages)
    /// or turned into a `service-unavailable` bounce. Any origin may ask — a local client, the
    /// server, and later group chat, s2s inbound and cluster forwarding with the stanza's
    /// verified `from` — and gets the same answer.
    pub async fn delivery(&self, from: &Jid, to: &Jid, stanza: &Element) -> Delivery {
        self.delivery_in(Scope::Cluster, from, to, stanza).await
    }

    /// [`Core::delivery`] among the sessions of `scope` ([`Scope::Local`] for a stanza another
    /// cluster node forwarded here).
    pub async fn delivery_in(
        &self,
        scope: Scope,
        from: &Jid,
        to: &Jid,
        stanza: &Element,
    ) -> Delivery {
        let mut d = self.targets_in(scope, from, to, stanza);
        if d.fate == Fate::Offline {
            let stores = self
                .host(to.domain())
                .is_some_and(|h| h.events.has_handlers(OFFLINE_EVENT));
            let exists = stores && self.accounts.exists(&to.bare()).await.unwrap_or(false);
            if !exists {
                d.fate = Fate::Bounce(C::ServiceUnavailable);
            }
        }
        d
    }

    /// The sessions that get a XEP-0280 `<sent/>` copy of `stanza`, sent by `origin` to `to`:
    /// the sender's other resources that enabled carbons, on this node and on the others, for
    /// an eligible message to someone else.
    pub fn sent_carbon_targets(
        &self,
        origin: &SessionHandle,
        to: &Jid,
        stanza: &Element,
    ) -> CarbonTargets {
        let user = origin.jid.bare();
        if to.bare() == user || !carbon_eligible(stanza) {
            return CarbonTargets::default();
        }
        CarbonTargets {
            local: self
                .sessions
                .resources(&user)
                .into_iter()
                .filter(|s| s.carbons() && s.id != origin.id)
                .collect(),
            remote: self
                .remote_sessions(&user)
                .into_iter()
                .filter(|r| r.carbons)
                .collect(),
        }
    }
}

/// The sessions that get a carbon copy, here and on other cluster nodes.
#[derive(Clone, Default)]
pub struct CarbonTargets {
    /// Sessions on this node.
    pub local: Vec<Arc<SessionHandle>>,
    /// Sessions on other nodes (the copy is forwarded to each, addressed to its full JID).
    pub remote: Vec<RemoteSession>,
}

/// Whether `msg` is a XEP-0280 copy the server made (`<received/>` or `<sent/>`).
pub fn is_carbon_copy(msg: &Element) -> bool {
    msg.get_child("received", ns::CARBONS).is_some() || msg.get_child("sent", ns::CARBONS).is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::ResourceConflict;
    use crate::core::sessions::{BoundSession, Sessions};

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// Binds `res` for bob with a presence of `priority` (`None`: no initial presence).
    fn bind(sessions: &Sessions, res: &str, priority: Option<i8>) -> BoundSession {
        let b = sessions
            .bind(
                &j("bob@h"),
                res,
                ResourceConflict::Refuse,
                8,
                crate::core::sessions::Connection::new("peer", true),
            )
            .unwrap();
        if let Some(p) = priority {
            b.handle.set_presence(true, p, None);
        }
        b
    }

    fn names(r: &[Arc<SessionHandle>]) -> Vec<&str> {
        r.iter().map(|s| s.jid.resource().unwrap()).collect()
    }

    #[test]
    fn bare_messages_follow_priority_and_policy() {
        let sessions = Sessions::new();
        let _a = bind(&sessions, "a", Some(5));
        let _b = bind(&sessions, "b", Some(1));
        let _c = bind(&sessions, "c", Some(-1));
        let _d = bind(&sessions, "d", None);
        let all = sessions.resources(&j("bob@h"));
        let bare = j("bob@h");
        let (r, f) = decide(&all, &bare, Kind::Message, "chat", BareMessageDelivery::All);
        assert_eq!((names(&r), f), (vec!["a", "b"], Fate::Delivered));
        let (r, _) = decide(
            &all,
            &bare,
            Kind::Message,
            "chat",
            BareMessageDelivery::Highest,
        );
        assert_eq!(names(&r), vec!["a"]);
        // Headlines ignore "highest" (RFC 6121 §8.5.2.1.1 only covers chat and normal).
        let (r, _) = decide(
            &all,
            &bare,
            Kind::Message,
            "headline",
            BareMessageDelivery::Highest,
        );
        assert_eq!(names(&r), vec!["a", "b"]);
        // An offline full JID is treated as the bare one; an online one gets it alone.
        let (r, _) = decide(
            &all,
            &j("bob@h/x"),
            Kind::Message,
            "",
            BareMessageDelivery::All,
        );
        assert_eq!(names(&r), vec!["a", "b"]);
        let (r, _) = decide(
            &all,
            &j("bob@h/c"),
            Kind::Message,
            "",
            BareMessageDelivery::All,
        );
        assert_eq!(names(&r), vec!["c"]);
        // Presence to the bare JID reaches every available resource, whatever its priority.
        let (r, _) = decide(
            &all,
            &bare,
            Kind::Presence,
            "",
            BareMessageDelivery::Highest,
        );
        assert_eq!(names(&r), vec!["a", "b", "c"]);
    }

    #[test]
    fn nobody_online_gives_the_protocol_fate() {
        let none: Vec<Arc<SessionHandle>> = Vec::new();
        let bare = j("bob@h");
        let p = BareMessageDelivery::All;
        let fate = |to: &Jid, kind, ty| decide(&none, to, kind, ty, p).1;
        assert_eq!(fate(&bare, Kind::Message, "chat"), Fate::Offline);
        assert_eq!(fate(&bare, Kind::Message, ""), Fate::Offline);
        assert_eq!(fate(&bare, Kind::Message, "headline"), Fate::Dropped);
        assert_eq!(fate(&bare, Kind::Message, "error"), Fate::Dropped);
        assert_eq!(
            fate(&bare, Kind::Message, "groupchat"),
            Fate::Bounce(C::ServiceUnavailable)
        );
        assert_eq!(
            fate(&j("bob@h/x"), Kind::Iq, "get"),
            Fate::Bounce(C::ServiceUnavailable)
        );
        assert_eq!(
            fate(&bare, Kind::Iq, "set"),
            Fate::Bounce(C::ServiceUnavailable)
        );
        assert_eq!(fate(&bare, Kind::Iq, "result"), Fate::Dropped);
        assert_eq!(fate(&bare, Kind::Presence, ""), Fate::Dropped);
        assert_eq!(fate(&j("h"), Kind::Message, "chat"), Fate::Dropped);
    }

    #[tokio::test]
    async fn carbons_reach_the_resources_highest_leaves_out() {
        let mut config = crate::config::Config::default();
        config.hosts[0].name = "h".into();
        config.modules_enabled = vec!["offline".into()];
        config.bare_message_delivery = BareMessageDelivery::Highest;
        let core = Core::new(
            config,
            crate::storage::Store::memory(),
            crate::modules::BUILTIN,
        )
        .unwrap();
        let bind = |res: &str, p: i8| {
            let b = core
                .sessions
                .bind(
                    &j("bob@h"),
                    res,
                    ResourceConflict::Refuse,
                    8,
                    crate::core::sessions::Connection::new("peer", true),
                )
                .unwrap();
            b.handle.set_presence(true, p, None);
            b
        };
        let top = bind("top", 5);
        let low = bind("low", 1);
        low.handle.set_carbons(true);
        top.handle.set_carbons(true);
        let chat = Element::new("message", ns::CLIENT)
            .attr("type", "chat")
            .child(Element::new("body", ns::CLIENT).text("hi"));
        let d = core.delivery(&j("alice@h/x"), &j("bob@h"), &chat).await;
        assert_eq!(d.fate, Fate::Delivered);
        assert_eq!(names(&d.recipients), vec!["top"]);
        assert_eq!(names(&d.carbons), vec!["low"]);
        assert!(!d.waits());
        // Queued only for a hibernating session, the message waits (push wakes the device).
        top.handle.set_hibernating(true);
        let d = core.delivery(&j("alice@h/x"), &j("bob@h"), &chat).await;
        assert_eq!(names(&d.recipients), vec!["top"]);
        assert!(d.waits());
        top.handle.set_hibernating(false);
        // Nobody available: an existing account's message goes offline and waits.
        core.accounts.create(&j("dave@h"), "pw").await.unwrap();
        let d = core.delivery(&j("alice@h/x"), &j("dave@h"), &chat).await;
        assert_eq!(d.fate, Fate::Offline);
        assert!(d.waits());
        // Nothing online: the account does not exist, so the message bounces.
        let d = core.delivery(&j("alice@h/x"), &j("carol@h"), &chat).await;
        assert_eq!(d.fate, Fate::Bounce(C::ServiceUnavailable));
        // The sender's other carbons-enabled resources get a <sent/> copy.
        let sent = core.sent_carbon_targets(&top.handle, &j("alice@h"), &chat);
        assert_eq!(names(&sent.local), vec!["low"]);
        assert!(
            core.sent_carbon_targets(&top.handle, &j("bob@h/low"), &chat)
                .local
                .is_empty(),
            "messages to oneself are not copied"
        );
    }

    /// A cluster whose other node serves the given sessions and records what it was handed.
    struct OtherNode(Vec<RemoteSession>);

    impl super::super::cluster::Cluster for OtherNode {
        fn node(&self) -> &str {
            "me"
        }
        fn is_connected(&self) -> bool {
            true
        }
        fn sessions_of(&self, bare: &Jid) -> Vec<RemoteSession> {
            self.0
                .iter()
                .filter(|r| r.jid.bare() == *bare)
                .cloned()
                .collect()
        }
        fn sessions(&self, _: Option<&str>) -> Vec<RemoteSession> {
            self.0.clone()
        }
        fn forward(&self, _: &[&str], _: &Element) -> bool {
            true
        }
        fn changed(&self, _: &Jid) {}
        fn presence(&self, _: &str, _: &Jid, _: &Jid) -> bool {
            true
        }
        fn kick(&self, _: &str, _: &Jid) -> bool {
            true
        }
        fn close(
            &self,
            _: &str,
            _: &Jid,
            _: crate::xmpp::error::StreamErrorCondition,
            _: &str,
        ) -> super::super::cluster::Pending<Option<Vec<String>>> {
            Box::pin(async { None })
        }
    }

    #[tokio::test]
    async fn carbons_and_their_copies_span_nodes() {
        let mut config = crate::config::Config::default();
        config.hosts[0].name = "h".into();
        let core = Core::new(
            config,
            crate::storage::Store::memory(),
            crate::modules::BUILTIN,
        )
        .unwrap();
        let remote = |res: &str, carbons: bool| RemoteSession {
            node: Arc::from("other"),
            jid: j(&format!("bob@h/{res}")),
            priority: 0,
            available: true,
            secure: true,
            carbons,
            roster: false,
        };
        let other: Arc<dyn super::super::cluster::Cluster> =
            Arc::new(OtherNode(vec![remote("far", true), remote("plain", false)]));
        assert!(core.cluster.set(other).is_ok());
        let here = core
            .sessions
            .bind(
                &j("bob@h"),
                "here",
                ResourceConflict::Refuse,
                8,
                crate::core::sessions::Connection::new("peer", true),
            )
            .unwrap();
        here.handle.set_presence(true, 0, None);
        let chat = Element::new("message", ns::CLIENT)
            .attr("type", "chat")
            .child(Element::new("body", ns::CLIENT).text("hi"));
        let remote_names =
            |r: &[RemoteSession]| -> Vec<String> { r.iter().map(|s| s.jid.to_string()).collect() };
        // To the local resource: the carbon-enabled one on the other node gets a copy.
        let d = core
            .delivery(&j("alice@h/x"), &j("bob@h/here"), &chat)
            .await;
        assert_eq!(names(&d.recipients), vec!["here"]);
        assert!(d.remote.is_empty());
        assert_eq!(remote_names(&d.remote_carbons), ["bob@h/far"]);
        // To the remote one itself: no copy for it.
        let d = core.delivery(&j("alice@h/x"), &j("bob@h/far"), &chat).await;
        assert_eq!(remote_names(&d.remote), ["bob@h/far"]);
        assert!(d.remote_carbons.is_empty() && d.carbons.is_empty());
        // Sent by the local resource: the remote carbon-enabled one gets a <sent/> copy.
        let sent = core.sent_carbon_targets(&here.handle, &j("alice@h"), &chat);
        assert_eq!(remote_names(&sent.remote), ["bob@h/far"]);
        assert!(sent.local.is_empty());
        // A copy goes to its own session only: gone, it is dropped, never stored or spread.
        let copy = Element::new("message", ns::CLIENT)
            .attr("type", "chat")
            .child(Element::new("received", ns::CARBONS).child(chat.clone()));
        let d = core.delivery(&j("bob@h"), &j("bob@h/gone"), &copy).await;
        assert_eq!(d.fate, Fate::Dropped);
        assert!(d.recipients.is_empty() && d.remote.is_empty());
        let d = core.delivery(&j("bob@h"), &j("bob@h/far"), &copy).await;
        assert_eq!(remote_names(&d.remote), ["bob@h/far"]);
    }

    #[test]
    fn eligibility_follows_xep_0280() {
        let msg = |ty: Option<&str>| {
            let mut m = Element::new("message", ns::CLIENT);
            if let Some(t) = ty {
                m.set_attr("type", Some(t.into()));
            }
            m
        };
        let body = || Element::new("body", ns::CLIENT).text("hi");
        assert!(carbon_eligible(&msg(Some("chat"))));
        assert!(carbon_eligible(&msg(None).child(body())));
        assert!(!carbon_eligible(&msg(Some("normal"))));
        assert!(carbon_eligible(
            &msg(None).child(Element::new("received", ns::RECEIPTS))
        ));
        for ty in ["groupchat", "headline", "error"] {
            assert!(!carbon_eligible(&msg(Some(ty)).child(body())), "{ty}");
        }
        for (name, namespace) in [
            ("private", ns::CARBONS),
            ("no-copy", ns::HINTS),
            ("sent", ns::CARBONS),
            ("result", ns::MAM),
        ] {
            assert!(
                !carbon_eligible(
                    &msg(Some("chat"))
                        .child(body())
                        .child(Element::new(name, namespace))
                ),
                "{name}"
            );
        }
    }
}
