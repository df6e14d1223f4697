//! XEP-0280 Message Carbons (`urn:xmpp:carbons:2`): a client enables or disables carbons for its
//! session; then it gets a `<received/>` copy of eligible messages delivered to its account's
//! other resources, and a `<sent/>` copy of eligible messages its account's other resources send.
//!
//! Who gets a copy, and which messages are eligible (§6), is part of the one delivery decision
//! ([`crate::core::delivery`]): a resource that enabled carbons and does not get the message
//! itself gets a copy, also when `bare_message_delivery = "highest"` left it out. This module
//! turns carbons on and off (republishing the session in a cluster's directory, so other nodes
//! know) and wraps the copies, which bypass routing: they go straight to local sessions' queues,
//! and to a session on another node forwarded to its full JID, which that node delivers to that
//! session only.

use crate::core::cluster::RemoteSession;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::{Element, Jid, ns, stanza};

/// The `carbons` module.
pub struct Carbons;

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(ns::CARBONS);
        ctx.add_feature(ns::CARBONS_RULES);
        for (name, on) in [("enable", true), ("disable", false)] {
            ctx.hook(
                &format!("iq-set/bare/{}:{name}", ns::CARBONS),
                priority::HANDLER,
                handler(move |ev| async move {
                    let Some(session) = ev.origin.session().cloned() else {
                        return Flow::Continue(ev);
                    };
                    if ev.to != session.jid.bare() {
                        ev.reply_error(C::Forbidden.into()).await;
                        return Flow::Handled;
                    }
                    if session.carbons() != on {
                        session.set_carbons(on);
                        ev.core.sessions_changed(&session.jid);
                    }
                    ev.reply(stanza::iq_result(&ev.stanza, None)).await;
                    Flow::Handled
                }),
            );
        }
        for event in ["message/bare", "message/full"] {
            ctx.hook(
                event,
                priority::CARBONS,
                handler(|ev| async move {
                    received(&ev);
                    Flow::Continue(ev)
                }),
            );
        }
        for event in ["pre-message/bare", "pre-message/full"] {
            ctx.hook(
                event,
                priority::CARBONS,
                handler(|ev| async move {
                    sent(&ev);
                    Flow::Continue(ev)
                }),
            );
        }
        Ok(())
    }
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
        Element::new(kind, ns::CARBONS)
            .child(Element::new("forwarded", ns::FORWARD).child(msg.clone())),
    )
}

/// `<received/>` copies of a message for a local user, to the resources the delivery decision names.
fn received(ev: &StanzaEvent) {
    let d = ev.core.delivery_targets(&ev.from, &ev.to, &ev.stanza);
    if d.carbons.is_empty() && d.remote_carbons.is_empty() {
        return;
    }
    let user = ev.to.bare();
    copy(ev, "received", &user, d.carbons, &d.remote_carbons);
}

/// Sends the `kind` copies of the event's message to `local` and `remote` sessions of `user`.
fn copy(
    ev: &StanzaEvent,
    kind: &str,
    user: &Jid,
    local: Vec<std::sync::Arc<crate::core::sessions::SessionHandle>>,
    remote: &[RemoteSession],
) {
    for s in local {
        s.send(wrap(kind, user, &s.jid, &ev.stanza));
    }
    for r in remote {
        let copy = wrap(kind, user, &r.jid, &ev.stanza);
        // Best effort, as for a local queue that is full: the original is not held back.
        ev.core.forward(&copy, std::slice::from_ref(r));
    }
}

/// `<sent/>` copies of a message a local client sends, to its account's other enabled resources.
fn sent(ev: &StanzaEvent) {
    let Some(origin) = ev.origin.session() else {
        return;
    };
    let user = ev.from.bare();
    let targets = ev.core.sent_carbon_targets(origin, &ev.to, &ev.stanza);
    copy(ev, "sent", &user, targets.local, &targets.remote);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wrapping_keeps_the_original() {
        let msg = |ty: &str| Element::new("message", ns::CLIENT).attr("type", ty);
        let user = Jid::parse("a@h").unwrap();
        let to = Jid::parse("a@h/b").unwrap();
        let m = msg("chat")
            .attr("from", "c@h/x")
            .child(Element::new("body", ns::CLIENT).text("hi"));
        let w = wrap("received", &user, &to, &m);
        assert_eq!(
            w.to_xml(ns::CLIENT),
            "<message from=\"a@h\" to=\"a@h/b\" type=\"chat\"><received xmlns=\"urn:xmpp:carbons:2\"><forwarded xmlns=\"urn:xmpp:forward:0\"><message xmlns=\"jabber:client\" type=\"chat\" from=\"c@h/x\"><body>hi</body></message></forwarded></received></message>"
        );
    }
}
