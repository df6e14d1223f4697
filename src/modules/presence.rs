//! RFC 6121 §3–4: presence subscriptions (the full state machine, with pre-approval and
//! requests stored while the contact is offline) and presence broadcast, probes and directed presence.

use std::sync::Arc;

use crate::core::Core;
use crate::core::events::{Flow, Origin, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::core::roster::RosterItem;
use crate::core::sessions::SessionHandle;
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, Jid, ns, stanza};

/// The `presence` module.
pub struct Presence;

impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_stream_feature(Element::new("sub", ns::PRE_APPROVAL));
        ctx.hook("pre-presence/bare", priority::HANDLER, handler(outbound));
        ctx.hook("pre-presence/full", priority::HANDLER, handler(outbound));
        ctx.hook("presence/bare", priority::HANDLER, handler(inbound));
        ctx.hook("presence/full", priority::HANDLER, handler(inbound));
        ctx.hook(
            "presence/initial",
            priority::HANDLER,
            handler(|ev| async move {
                initial(&ev).await;
                Flow::Continue(ev)
            }),
        );
        Ok(())
    }
}

fn is_subscription(ty: &str) -> bool {
    matches!(
        ty,
        "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"
    )
}

/// Presence sent by a local client.
async fn outbound(mut ev: StanzaEvent) -> Flow {
    let ty = stanza::stanza_type(&ev.stanza, "").to_string();
    let Some(session) = ev.origin.session().cloned() else {
        return Flow::Continue(ev);
    };
    if ev.stanza.get_attr("to").is_none() {
        // Broadcast presence (RFC 6121 §4.2, §4.4, §4.5).
        if ty.is_empty() || ty == "unavailable" {
            broadcast(&ev.core, &session, &ev.stanza, ty == "unavailable").await;
        }
        return Flow::Handled;
    }
    let contact = ev.to.bare();
    if is_subscription(&ty) {
        if contact == ev.from.bare() || contact.node().is_none() {
            return Flow::Handled;
        }
        // Subscription stanzas are stamped with bare JIDs (RFC 6121 §3.1.2).
        ev.stanza.set_attr("from", Some(ev.from.bare().to_string()));
        ev.stanza.set_attr("to", Some(contact.to_string()));
        let user = ev.from.bare();
        let route = outbound_subscription(&ev.core, &user, &contact, &ty).await;
        if !route {
            return Flow::Handled;
        }
        // Routed to the bare JID so the contact's account (not one resource) handles it.
        let core = ev.core.clone();
        core.route(Origin::Server, ev.stanza).await;
        after_outbound(&core, &user, &contact, &ty).await;
        return Flow::Handled;
    }
    match ty.as_str() {
        "probe" => Flow::Handled,
        "" | "unavailable" => {
            // Directed presence (RFC 6121 §4.6): remember it so disconnect sends unavailable.
            let subscribed = ev
                .core
                .roster_item(&ev.from.bare(), &contact)
                .await
                .ok()
                .flatten()
                .is_some_and(|i| i.subscription.has_from());
            if !subscribed {
                session.set_directed(&ev.to, ty.is_empty());
            }
            Flow::Continue(ev)
        }
        _ => Flow::Continue(ev),
    }
}

/// Sends `user`'s subscription request to `contact` exactly as the user's own
/// `<presence type='subscribe'/>` would (the roster item gets `ask`, the request is routed):
/// the admin API's roster add of a remote contact.
pub async fn request_subscription(core: &Arc<Core>, user: &Jid, contact: &Jid) {
    let (user, contact) = (user.bare(), contact.bare());
    if outbound_subscription(core, &user, &contact, "subscribe").await {
        let p = Element::new("presence", ns::CLIENT)
            .attr("type", "subscribe")
            .attr("from", user.to_string())
            .attr("to", contact.to_string());
        core.route(Origin::Server, p).await;
    }
}

/// Follow-ups once an outbound subscription stanza was routed.
async fn after_outbound(core: &Arc<Core>, user: &Jid, contact: &Jid, ty: &str) {
    match ty {
        // The approver's presence goes to the new subscriber (RFC 6121 §3.1.5).
        "subscribed" => core.send_current_presence(user, contact).await,
        // Cancelling a subscription sends unavailable from every resource (RFC 6121 §3.2.2).
        "unsubscribed" => send_unavailable(core, user, contact),
        _ => {}
    }
}

fn send_unavailable(core: &Arc<Core>, user: &Jid, contact: &Jid) {
    core.send_unavailable_to(
        user,
        &core.sessions.resources(contact),
        &core.remote_sessions(contact),
    );
}

/// Updates the sender's roster for an outbound subscription stanza; returns whether to route it.
async fn outbound_subscription(core: &Arc<Core>, user: &Jid, contact: &Jid, ty: &str) -> bool {
    let existing = core.roster.item(user, contact).await.ok().flatten();
    let pending = core
        .roster
        .has_pending_in(user, contact)
        .await
        .unwrap_or(false);
    let mut item = existing.clone().unwrap_or_else(|| RosterItem::new(contact));
    let route = match ty {
        "subscribe" => {
            if !item.subscription.has_to() {
                item.ask = true;
            }
            true
        }
        "unsubscribe" => {
            item.subscription = item.subscription.with_to(false);
            item.ask = false;
            existing.is_some()
        }
        "subscribed" => {
            if pending {
                item.subscription = item.subscription.with_from(true);
                item.approved = false;
                let _ = core.roster.set_pending_in(user, contact, None).await;
                true
            } else if item.subscription.has_from() {
                false
            } else {
                // Pre-approval (RFC 6121 §3.4).
                item.approved = true;
                false
            }
        }
        "unsubscribed" => {
            let had = item.subscription.has_from() || pending;
            item.subscription = item.subscription.with_from(false);
            item.approved = false;
            if pending {
                let _ = core.roster.set_pending_in(user, contact, None).await;
            }
            had
        }
        _ => false,
    };
    let changed = existing.as_ref() != Some(&item);
    let creates = existing.is_none() && matches!(ty, "subscribe" | "subscribed");
    if changed && (existing.is_some() || creates) {
        let _ = core.roster.put(user, contact, Some(&item)).await;
        let _ = core.push_current(user, contact).await;
    }
    route
}

/// Presence arriving for a local account.
async fn inbound(ev: StanzaEvent) -> Flow {
    let ty = stanza::stanza_type(&ev.stanza, "").to_string();
    if !is_subscription(&ty) && ty != "probe" {
        return Flow::Continue(ev);
    }
    let core = ev.core.clone();
    let user = ev.to.bare();
    let contact = ev.from.bare();
    if user == contact {
        return Flow::Handled;
    }
    let effective = core.roster_item(&user, &contact).await.ok().flatten();
    let personal = core.roster.item(&user, &contact).await.ok().flatten();
    let sub = effective
        .as_ref()
        .map(|i| i.subscription)
        .unwrap_or_default();
    let mut item = personal
        .clone()
        .unwrap_or_else(|| RosterItem::new(&contact));
    let mut stanza = ev.stanza.clone();
    stanza.set_attr("from", Some(contact.to_string()));
    stanza.set_attr("to", Some(user.to_string()));
    match ty.as_str() {
        "probe" if sub.has_from() => core.send_current_presence(&user, &ev.from).await,
        "subscribe" => {
            if sub.has_from() {
                core.route_presence(&user, &contact, "subscribed").await;
            } else if item.approved {
                item.approved = false;
                item.subscription = item.subscription.with_from(true);
                save(&core, &user, &contact, &item).await;
                core.route_presence(&user, &contact, "subscribed").await;
                core.send_current_presence(&user, &contact).await;
            } else {
                // Stored until answered, and delivered now to available resources (RFC 6121 §3.1.3).
                let _ = core
                    .roster
                    .set_pending_in(&user, &contact, Some(&stanza))
                    .await;
                deliver(&core, &user, &stanza);
            }
        }
        "unsubscribe" => {
            let pending = core
                .roster
                .has_pending_in(&user, &contact)
                .await
                .unwrap_or(false);
            if pending {
                let _ = core.roster.set_pending_in(&user, &contact, None).await;
            }
            if item.subscription.has_from() {
                item.subscription = item.subscription.with_from(false);
                save(&core, &user, &contact, &item).await;
                deliver(&core, &user, &stanza);
                send_unavailable(&core, &user, &contact);
            } else if pending {
                deliver(&core, &user, &stanza);
            }
        }
        "subscribed" if item.ask => {
            item.ask = false;
            item.subscription = item.subscription.with_to(true);
            save(&core, &user, &contact, &item).await;
            deliver(&core, &user, &stanza);
        }
        "unsubscribed" if item.subscription.has_to() || item.ask => {
            item.ask = false;
            item.subscription = item.subscription.with_to(false);
            save(&core, &user, &contact, &item).await;
            deliver(&core, &user, &stanza);
        }
        _ => {}
    }
    Flow::Handled
}

async fn save(core: &Arc<Core>, user: &Jid, contact: &Jid, item: &RosterItem) {
    let _ = core.roster.put(user, contact, Some(item)).await;
    let _ = core.push_current(user, contact).await;
}

/// Delivers a stanza to every available resource of `user`, on every node.
fn deliver(core: &Arc<Core>, user: &Jid, stanza: &Element) {
    core.deliver_to_available(user, stanza);
}

/// Broadcasts a client's presence to its subscribers, its own resources and (on unavailable) directed recipients.
async fn broadcast(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    presence: &Element,
    unavailable: bool,
) {
    let user = session.jid.bare();
    let mut p = presence.clone();
    p.set_attr("from", Some(session.jid.to_string()));
    let items = core.roster_items(&user).await.unwrap_or_default();
    let mut subscribers = Vec::new();
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        if let Ok(contact) = Jid::parse(&item.jid) {
            let mut out = p.clone();
            out.set_attr("to", Some(contact.to_string()));
            core.route(Origin::Server, out).await;
            subscribers.push(contact);
        }
    }
    for s in core.sessions.resources(&user) {
        if s.is_available() || s.id == session.id {
            let mut out = p.clone();
            out.set_attr("to", Some(s.jid.to_string()));
            s.send(out);
        }
    }
    // The account's available resources on other cluster nodes.
    for r in core.remote_sessions(&user) {
        if r.available {
            let mut out = p.clone();
            out.set_attr("to", Some(r.jid.to_string()));
            core.route(Origin::Server, out).await;
        }
    }
    if unavailable {
        for to in session.take_directed() {
            if subscribers.contains(&to.bare()) {
                continue;
            }
            let mut out = p.clone();
            out.set_attr("to", Some(to.to_string()));
            core.route(Origin::Server, out).await;
        }
    }
}

/// After initial presence: probe contacts, show other resources, redeliver pending subscription requests.
async fn initial(ev: &StanzaEvent) {
    let core = &ev.core;
    let Some(session) = ev.origin.session() else {
        return;
    };
    let user = session.jid.bare();
    let items = core.roster_items(&user).await.unwrap_or_default();
    for item in items.iter().filter(|i| i.subscription.has_to()) {
        if let Ok(contact) = Jid::parse(&item.jid) {
            let probe = Element::new("presence", ns::CLIENT)
                .attr("type", "probe")
                .attr("from", session.jid.to_string())
                .attr("to", contact.to_string());
            core.route(Origin::Server, probe).await;
        }
    }
    // The user's other available resources (RFC 6121 §4.2.2).
    for s in core.sessions.resources(&user) {
        if s.id != session.id
            && let Some(mut p) = s.last_presence()
        {
            p.set_attr("from", Some(s.jid.to_string()));
            p.set_attr("to", Some(session.jid.to_string()));
            session.send(p);
        }
    }
    if let Some(cluster) = core.cluster() {
        for node in core.nodes_serving(&user, |_| true) {
            cluster.presence(&node, &user, &session.jid);
        }
    }
    if let Ok(pending) = core.roster.pending_in(&user).await {
        for (contact, request) in pending {
            let el = request
                .as_str()
                .and_then(|x| parse_element(x).ok())
                .unwrap_or_else(|| {
                    Element::new("presence", ns::CLIENT)
                        .attr("type", "subscribe")
                        .attr("from", contact.clone())
                });
            let mut el = el;
            el.set_attr("to", Some(user.to_string()));
            session.send(el);
        }
    }
}
