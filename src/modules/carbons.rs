//! XEP-0280 Message Carbons (`urn:xmpp:carbons:2`): a client enables or disables carbons for its
//! session; then it gets a `<received/>` copy of eligible messages delivered to its account's
//! other resources, and a `<sent/>` copy of eligible messages its account's other resources send.
//!
//! Eligibility (§6): `chat` messages, `normal` messages with a body, and messages carrying
//! chat states, receipts or chat markers; never errors, groupchat or headlines, never messages
//! with `<private xmlns='urn:xmpp:carbons:2'/>` or a XEP-0334 `<no-copy/>` hint, never a carbon
//! or archive result itself. Copies bypass routing (they go straight to the sessions' queues).

use std::sync::Arc;

use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::sessions::SessionHandle;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::{Element, Jid, ns, stanza};

/// XEP-0280 namespace.
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0280 feature telling clients the server follows the current eligibility rules.
pub const NS_CARBONS_RULES: &str = "urn:xmpp:carbons:rules:0";
/// XEP-0297 stanza forwarding.
const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 message processing hints.
const NS_HINTS: &str = "urn:xmpp:hints";
/// Payload namespaces that make a bodiless message eligible (chat states, receipts, markers).
const IM_PAYLOADS: &[&str] = &[
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
];
/// Runs after the archive (which adds the stanza id the copies should carry), before delivery.
const PRIORITY: i32 = 10;

/// The `carbons` module.
pub struct Carbons;

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(NS_CARBONS);
        ctx.add_feature(NS_CARBONS_RULES);
        for (name, on) in [("enable", true), ("disable", false)] {
            ctx.hook(
                &format!("iq-set/bare/{NS_CARBONS}:{name}"),
                0,
                handler(move |ev| async move {
                    let Some(session) = ev.origin.session().cloned() else {
                        return Flow::Continue(ev);
                    };
                    if ev.to != session.jid.bare() {
                        ev.reply_error(C::Forbidden.into()).await;
                        return Flow::Handled;
                    }
                    session.set_carbons(on);
                    ev.reply(stanza::iq_result(&ev.stanza, None)).await;
                    Flow::Handled
                }),
            );
        }
        for event in ["message/bare", "message/full"] {
            ctx.hook(
                event,
                PRIORITY,
                handler(|ev| async move {
                    received(&ev);
                    Flow::Continue(ev)
                }),
            );
        }
        for event in ["pre-message/bare", "pre-message/full"] {
            ctx.hook(
                event,
                PRIORITY,
                handler(|ev| async move {
                    sent(&ev);
                    Flow::Continue(ev)
                }),
            );
        }
        Ok(())
    }
}

/// Whether a message is copied at all (XEP-0280 §6 and §7).
pub fn eligible(msg: &Element) -> bool {
    let ty = msg.get_attr("type").unwrap_or("normal");
    if !matches!(ty, "chat" | "normal") {
        return false;
    }
    if msg.get_child("private", NS_CARBONS).is_some()
        || msg.get_child("no-copy", NS_HINTS).is_some()
        || msg.get_child("received", NS_CARBONS).is_some()
        || msg.get_child("sent", NS_CARBONS).is_some()
        || msg.get_child("result", "urn:xmpp:mam:2").is_some()
    {
        return false;
    }
    ty == "chat"
        || msg.get_child("body", ns::CLIENT).is_some()
        || msg.children().any(|c| IM_PAYLOADS.contains(&c.ns()))
}

/// The copy of `msg` for `to`, wrapped in `<received/>` or `<sent/>` (`kind`).
pub fn wrap(kind: &str, user: &Jid, to: &Jid, msg: &Element) -> Element {
    let mut el = Element::new("message", ns::CLIENT)
        .attr("from", user.as_str())
        .attr("to", to.as_str());
    if let Some(t) = msg.get_attr("type") {
        el.set_attr("type", Some(t.to_string()));
    }
    el.child(
        Element::new(kind, NS_CARBONS)
            .child(Element::new("forwarded", NS_FORWARD).child(msg.clone())),
    )
}

/// Whether the router's delivery of a message to `to` reaches `s` directly.
fn gets_original(s: &SessionHandle, to: &Jid, target_online: bool) -> bool {
    if to.resource().is_some() && target_online {
        s.jid == *to
    } else {
        // Bare delivery (RFC 6121 §8.5.2): every available resource with non-negative priority.
        s.is_available() && s.priority() >= 0
    }
}

fn copy_to(
    sessions: &[Arc<SessionHandle>],
    skip: impl Fn(&SessionHandle) -> bool,
    make: impl Fn(&Jid) -> Element,
) {
    for s in sessions {
        if s.carbons() && !skip(s) {
            s.send(make(&s.jid));
        }
    }
}

/// `<received/>` copies of a message for a local user, to their enabled resources that do not
/// get the message itself.
fn received(ev: &StanzaEvent) {
    let user = ev.to.bare();
    if user.node().is_none() || ev.from.bare() == user || !eligible(&ev.stanza) {
        return;
    }
    let sessions = ev.core.sessions.resources(&user);
    if !sessions.iter().any(|s| s.carbons()) {
        return;
    }
    let target_online = sessions.iter().any(|s| s.jid == ev.to);
    copy_to(
        &sessions,
        |s| gets_original(s, &ev.to, target_online),
        |to| wrap("received", &user, to, &ev.stanza),
    );
}

/// `<sent/>` copies of a message a local client sends, to its account's other enabled resources.
fn sent(ev: &StanzaEvent) {
    let Some(origin) = ev.origin.session() else {
        return;
    };
    let user = ev.from.bare();
    if ev.to.bare() == user || !eligible(&ev.stanza) {
        return;
    }
    let sessions = ev.core.sessions.resources(&user);
    copy_to(
        &sessions,
        |s| s.id == origin.id,
        |to| wrap("sent", &user, to, &ev.stanza),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(ty: Option<&str>) -> Element {
        let mut m = Element::new("message", ns::CLIENT);
        if let Some(t) = ty {
            m.set_attr("type", Some(t.into()));
        }
        m
    }

    #[test]
    fn eligibility_rules() {
        let body = || Element::new("body", ns::CLIENT).text("hi");
        assert!(eligible(&msg(Some("chat"))));
        assert!(eligible(&msg(None).child(body())));
        assert!(!eligible(&msg(Some("normal"))));
        assert!(eligible(
            &msg(None).child(Element::new("received", "urn:xmpp:receipts"))
        ));
        assert!(!eligible(&msg(Some("groupchat")).child(body())));
        assert!(!eligible(&msg(Some("headline")).child(body())));
        assert!(!eligible(&msg(Some("error")).child(body())));
        assert!(!eligible(
            &msg(Some("chat"))
                .child(body())
                .child(Element::new("private", NS_CARBONS))
        ));
        assert!(!eligible(
            &msg(Some("chat"))
                .child(body())
                .child(Element::new("no-copy", NS_HINTS))
        ));
        assert!(!eligible(
            &msg(Some("chat")).child(Element::new("sent", NS_CARBONS))
        ));
    }

    #[test]
    fn wrapping_keeps_the_original() {
        let user = Jid::parse("a@h").unwrap();
        let to = Jid::parse("a@h/b").unwrap();
        let m = msg(Some("chat"))
            .attr("from", "c@h/x")
            .child(Element::new("body", ns::CLIENT).text("hi"));
        let w = wrap("received", &user, &to, &m);
        assert_eq!(
            w.to_xml(ns::CLIENT),
            "<message from=\"a@h\" to=\"a@h/b\" type=\"chat\"><received xmlns=\"urn:xmpp:carbons:2\"><forwarded xmlns=\"urn:xmpp:forward:0\"><message xmlns=\"jabber:client\" type=\"chat\" from=\"c@h/x\"><body>hi</body></message></forwarded></received></message>"
        );
    }
}
