//! The stanza handlers of the `muc` module: each parses once, asks the room (under its lock)
//! for the stanzas to send, releases the lock, then stores and sends.

use std::sync::Arc;

use serde_json::json;

use super::room::{Affiliation, JoinRequest, Role, Room, RoomConfig};
use super::room_iq;
use super::service::{ARCHIVE_STORE, Creation, MucError, MucService, lock};
use crate::core::accounts::now;
use crate::core::cluster::RoomHolder;
use crate::core::events::StanzaEvent;
use crate::core::sessions::random_resource;
use crate::modules::mam;
use crate::xmpp::error::{ErrorType, StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, datetime, ns, stanza};

/// A stanza error with text.
pub(super) fn err(condition: C, text: &str) -> StanzaError {
    StanzaError::with_text(condition, text)
}

/// An internal error, logged.
pub(super) fn internal(e: MucError) -> StanzaError {
    tracing::error!(error = %e, "muc operation failed");
    StanzaError::new(C::InternalServerError)
}

fn node(ev: &StanzaEvent) -> String {
    ev.to.node().unwrap_or_default().to_string()
}

/// The requester's affiliation, server admins counting as owners.
pub(super) fn effective_affiliation(ev: &StanzaEvent, room: &Room) -> Affiliation {
    if ev.core.config.load().is_admin(ev.from.bare().as_str()) {
        return Affiliation::Owner;
    }
    room.affiliation(&ev.from.bare())
}

/// The MUC entry in a cluster: a stanza to a room held by another node is forwarded there,
/// once, and `None` returned; otherwise (no cluster: one `Option` check) the event is served
/// here, where the room's handler takes the lease if nobody holds it.
pub async fn hosted_here(svc: &Arc<MucService>, ev: StanzaEvent) -> Option<StanzaEvent> {
    let Some(cluster) = ev.core.cluster() else {
        return Some(ev);
    };
    if ev.to.node().is_none() {
        return Some(ev);
    }
    match cluster.room_holder(&ev.to.bare()) {
        RoomHolder::Node(holder) => {
            forward(svc, ev, &holder).await;
            None
        }
        RoomHolder::Here | RoomHolder::Nobody => Some(ev),
    }
}

/// Hands a stanza for a room to `holder`, the node hosting it (dropping any stale copy of
/// the room here); bounced with `remote-server-timeout` when the cluster cannot take it now.
async fn forward(svc: &Arc<MucService>, ev: StanzaEvent, holder: &str) {
    svc.forget_moved(&node(&ev));
    if ev.origin.session().is_some() && ev.stanza.name() == "presence" && ev.to.resource().is_some()
    {
        match stanza::stanza_type(&ev.stanza, "available") {
            "available" => svc.joined_elsewhere(&ev.from, &ev.to, true),
            "unavailable" => svc.joined_elsewhere(&ev.from, &ev.to, false),
            _ => {}
        }
    }
    let sent = ev
        .core
        .cluster()
        .is_some_and(|c| c.forward_to_room(holder, &ev.stanza));
    if !sent {
        ev.reply_error(StanzaError::new(C::RemoteServerTimeout))
            .await;
    }
}

/// Presence to `room@service/nick`: join, update, nick change or leave.
pub async fn presence(svc: &Arc<MucService>, ev: StanzaEvent) {
    let node = node(&ev);
    let asked = ev.to.resource().unwrap_or_default();
    match stanza::stanza_type(&ev.stanza, "available") {
        "available" => {}
        "unavailable" => {
            leave(svc, &ev, &node).await;
            return;
        }
        "error" => {
            if !kick_on_error(svc, &ev, &node).await {
                leave(svc, &ev, &node).await;
            }
            return;
        }
        _ => return,
    }
    let nick = match Room::enforce_nick(asked, svc.limits.max_nick_length) {
        Ok(nick) => nick,
        Err(e) => {
            ev.reply_error(e).await;
            return;
        }
    };
    let nick_changed = nick != asked;
    let x = ev.stanza.get_child("x", ns::MUC);
    let mut created = false;
    let room = match svc.room(&node).await {
        Ok(Some(r)) => r,
        Ok(None) => match create_on_join(svc, &ev, &node, x.is_some()).await {
            Ok(r) => {
                created = true;
                r
            }
            Err(e) => {
                // Another node made the room live first: the join goes there.
                if let RoomHolder::Node(holder) = svc.holder(&node) {
                    forward(svc, ev, &holder).await;
                    return;
                }
                ev.reply_error(e).await;
                return;
            }
        },
        Err(MucError::Elsewhere(holder)) => {
            forward(svc, ev, &holder).await;
            return;
        }
        Err(e) => {
            ev.reply_error(internal(e)).await;
            return;
        }
    };
    // A group's room follows the group's membership.
    if !created && let Err(e) = svc.sync_group_member(&node, &ev.from).await {
        tracing::warn!(error = %e, "cannot sync a group room's membership");
    }
    let history = x.and_then(|x| x.get_child("history", ns::MUC));
    let num = |name: &str| {
        history
            .and_then(|h| h.get_attr(name))
            .and_then(|v| v.parse().ok())
    };
    let room_jid = lock(&room).jid.clone();
    let req = JoinRequest {
        max_stanzas: num("maxstanzas"),
        max_chars: num("maxchars"),
        seconds: history
            .and_then(|h| h.get_attr("seconds"))
            .and_then(|v| v.parse().ok()),
        since: history
            .and_then(|h| h.get_attr("since"))
            .and_then(datetime::parse),
        password: x
            .and_then(|x| x.get_child("password", ns::MUC))
            .map(Element::text_content),
        occupant_id: svc.occupant_id(&room_jid, &ev.from.bare()).await,
        server_admin: ev.core.config.load().is_admin(ev.from.bare().as_str()),
        max_occupants: svc.limits.max_occupants,
        now: now(),
        nick_changed,
    };
    let result = lock(&room).presence(&ev.from, &nick, ev.stanza.clone(), &req, created);
    match result {
        Ok(out) => svc.send_outgoing(out).await,
        Err(e) => {
            if created {
                svc.evict_if_empty(&node);
            }
            ev.reply_error(e).await;
        }
    }
}

async fn create_on_join(
    svc: &Arc<MucService>,
    ev: &StanzaEvent,
    node: &str,
    speaks_muc: bool,
) -> Result<Arc<std::sync::Mutex<Room>>, StanzaError> {
    match svc.tombstone(node).await {
        Ok(Some(t)) => {
            let mut e = err(C::Gone, "this room was destroyed");
            if let Some(alt) = t["alternate"].as_str() {
                e.text = Some(format!("this room was destroyed; see {alt}"));
            }
            return Err(e);
        }
        Ok(None) => {}
        Err(e) => return Err(internal(e)),
    }
    let bare = ev.from.bare();
    let is_admin = ev.core.config.load().is_admin(bare.as_str());
    let allowed = match svc.limits.creation {
        Creation::Anyone => true,
        Creation::Local => ev.core.user_host(bare.domain()).is_some(),
        Creation::Admin => is_admin,
    };
    if !allowed {
        return Err(StanzaError {
            kind: ErrorType::Cancel,
            ..err(C::NotAllowed, "you may not create rooms here")
        });
    }
    if !is_admin && svc.owned_by(&bare).await.map_err(internal)? >= svc.limits.max_rooms_per_creator
    {
        return Err(err(C::PolicyViolation, "you own too many rooms"));
    }
    // A client that speaks MUC gets a locked room to configure (or accept as an instant room);
    // an old groupchat client gets an instant room at once (XEP-0045 §10.1).
    match svc
        .create(node, Some(&ev.from), RoomConfig::default(), speaks_muc)
        .await
    {
        Ok(r) => Ok(r),
        Err(MucError::Exists) => match svc.room(node).await {
            Ok(Some(r)) => Ok(r),
            _ => Err(err(C::Conflict, "the room is being created")),
        },
        Err(MucError::Elsewhere(_)) => Err(err(C::Conflict, "the room is being created")),
        Err(e) => Err(internal(e)),
    }
}

async fn leave(svc: &Arc<MucService>, ev: &StanzaEvent, node: &str) {
    let Ok(Some(room)) = svc.room(node).await else {
        return;
    };
    let out = lock(&room).leave(&ev.from, Some(&ev.stanza));
    svc.forget_bucket(&ev.from);
    svc.send_outgoing(out).await;
    svc.vanish_if_empty(node).await;
}

/// Error conditions that show an occupant's session is unreachable, so that it is removed
/// rather than left in the room as a ghost (a remote server that went away never sends
/// unavailable presence).
const KICKABLE: &[&str] = &[
    "gone",
    "internal-server-error",
    "item-not-found",
    "jid-malformed",
    "recipient-unavailable",
    "redirect",
    "remote-server-not-found",
    "remote-server-timeout",
    "service-unavailable",
];

/// The defined condition of an error stanza, if it has one.
fn error_condition(stanza: &Element) -> Option<&str> {
    stanza
        .get_child("error", ns::CLIENT)
        .or_else(|| stanza.get_child("error", ns::SERVER))
        .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
        .map(|c| c.name())
}

/// An error bounced by an occupant's session: with a [`KICKABLE`] condition the session is
/// removed (status 333). Whether it was.
async fn kick_on_error(svc: &Arc<MucService>, ev: &StanzaEvent, node: &str) -> bool {
    let Some(cond) = error_condition(&ev.stanza).filter(|c| KICKABLE.contains(c)) else {
        return false;
    };
    let Ok(Some(room)) = svc.room(node).await else {
        return false;
    };
    let reason = format!("Kicked: {}", cond.replace('-', " "));
    let out = lock(&room).remove_on_error(&ev.from, &reason);
    if out.is_empty() {
        return false;
    }
    tracing::info!(room = %ev.to.bare(), occupant = %ev.from, condition = cond, "occupant removed after an error reply");
    svc.forget_bucket(&ev.from);
    svc.send_outgoing(out).await;
    svc.vanish_if_empty(node).await;
    true
}

/// Presence to the room's bare JID: a join needs a nick.
pub async fn presence_without_nick(ev: StanzaEvent) {
    if stanza::stanza_type(&ev.stanza, "available") == "available" {
        ev.reply_error(StanzaError {
            kind: ErrorType::Modify,
            ..err(C::JidMalformed, "join with room@service/nick")
        })
        .await;
    }
}

/// A message to the room: groupchat, invitations, declines, voice requests.
pub async fn message_to_room(svc: &Arc<MucService>, ev: StanzaEvent) {
    let node = node(&ev);
    let ty = stanza::stanza_type(&ev.stanza, "normal").to_string();
    if ty == "error" {
        kick_on_error(svc, &ev, &node).await;
        return;
    }
    let room = match svc.room(&node).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            ev.reply_error(err(C::ItemNotFound, "no such room")).await;
            return;
        }
        Err(MucError::Elsewhere(holder)) => {
            forward(svc, ev, &holder).await;
            return;
        }
        Err(e) => {
            ev.reply_error(internal(e)).await;
            return;
        }
    };
    if ty == "groupchat" {
        groupchat(svc, &room, ev, &node).await;
    } else if let Some(x) = ev.stanza.get_child("x", ns::MUC_USER) {
        let x = x.clone();
        invitations(svc, &room, &ev, &x).await;
    } else if is_voice_request(&ev.stanza) {
        voice_request(svc, &room, &ev).await;
    } else {
        ev.reply_error(err(C::BadRequest, "send groupchat messages to the room"))
            .await;
    }
}

async fn groupchat(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: StanzaEvent,
    node: &str,
) {
    let body_len = ev
        .stanza
        .get_child("body", ns::CLIENT)
        .map(|b| b.text_content().len())
        .unwrap_or(0);
    let subject = ev
        .stanza
        .get_child("subject", ns::CLIENT)
        .map(Element::text_content);
    let checked = {
        let r = lock(room);
        match r.occupant_of(&ev.from) {
            None => Err(err(C::NotAcceptable, "join the room first")),
            Some(occ) if occ.role < Role::Participant => {
                Err(err(C::Forbidden, "you have no voice in this room"))
            }
            Some(occ)
                if subject.is_some()
                    && body_len == 0
                    && !(r.config.change_subject || occ.role == Role::Moderator) =>
            {
                Err(err(C::Forbidden, "you may not change the subject"))
            }
            Some(occ) => Ok((
                occ.nick.clone(),
                occ.id.clone(),
                r.config.enable_archiving,
                r.jid.clone(),
            )),
        }
    };
    let (nick, occupant_id, archiving, room_jid) = match checked {
        Ok(c) => c,
        Err(e) => {
            ev.reply_error(e).await;
            return;
        }
    };
    if body_len > svc.limits.max_message_size {
        ev.reply_error(StanzaError {
            kind: ErrorType::Modify,
            ..err(C::NotAcceptable, "the message is too long")
        })
        .await;
        return;
    }
    if !svc.take_token(&ev.from) {
        ev.reply_error(StanzaError {
            kind: ErrorType::Wait,
            ..err(C::PolicyViolation, "you are sending messages too fast")
        })
        .await;
        return;
    }
    let is_subject = subject.is_some() && body_len == 0;
    let occupant_jid = format!("{room_jid}/{nick}");
    let mut msg = ev.stanza;
    msg.set_attr("from", Some(occupant_jid.clone()));
    msg.set_attr("to", None);
    mam::strip_stanza_ids(&mut msg, &room_jid);
    msg.remove_children("occupant-id", ns::OCCUPANT_ID);
    msg.push(Element::new("occupant-id", ns::OCCUPANT_ID).attr("id", occupant_id));
    let when = now();
    let id = if archiving && body_len > 0 {
        let value = json!({ "xml": msg.to_xml(ns::CLIENT) });
        match ev
            .core
            .store
            .archive(&svc.host, ARCHIVE_STORE)
            .append_lazy(node, None, when, &occupant_jid, value)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(room = %room_jid, error = %e, "room archive append failed");
                random_resource()
            }
        }
    } else {
        random_resource()
    };
    msg.push(
        Element::new("stanza-id", ns::SID)
            .attr("id", id)
            .attr("by", room_jid.as_str()),
    );
    let out = {
        let mut r = lock(room);
        if is_subject {
            r.subject = Some((nick, subject.unwrap_or_default()));
            r.to_everyone(msg)
        } else {
            r.broadcast_message(msg, when, body_len)
        }
    };
    svc.fan_out(out).await;
    if is_subject && let Err(e) = svc.save(node).await {
        tracing::error!(error = %e, "cannot store the room subject");
    }
}

async fn invitations(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
    x: &Element,
) {
    let (room_jid, may_invite, members_only, password, aff) = {
        let r = lock(room);
        let aff = effective_affiliation(ev, &r);
        let present = r.occupant_of(&ev.from).is_some();
        (
            r.jid.clone(),
            present
                && (r.config.allow_invites || aff >= Affiliation::Admin || !r.config.members_only),
            r.config.members_only,
            r.config.password.clone(),
            aff,
        )
    };
    for child in x.children() {
        let Some(to) = child.get_attr("to").and_then(|t| Jid::parse(t).ok()) else {
            continue;
        };
        let reason = child.get_child("reason", ns::MUC_USER).cloned();
        if child.is("invite", ns::MUC_USER) {
            if !may_invite {
                ev.reply_error(err(C::Forbidden, "you may not invite to this room"))
                    .await;
                return;
            }
            if members_only
                && (aff >= Affiliation::Admin || lock(room).config.allow_invites)
                && lock(room).affiliation(&to.bare()) < Affiliation::Member
            {
                let _ = svc
                    .set_affiliation(
                        room_jid.node().unwrap_or_default(),
                        &to,
                        Affiliation::Member,
                        None,
                    )
                    .await;
            }
            let mut invite =
                Element::new("invite", ns::MUC_USER).attr("from", ev.from.bare().to_string());
            if let Some(r) = reason {
                invite.push(r);
            }
            let mut ux = Element::new("x", ns::MUC_USER).child(invite);
            if !password.is_empty() {
                ux.push(Element::new("password", ns::MUC_USER).text(password.clone()));
            }
            let msg = Element::new("message", ns::CLIENT)
                .attr("from", room_jid.as_str())
                .attr("to", to.as_str())
                .attr("id", random_resource())
                .child(ux)
                .child(Element::new("x", ns::CONFERENCE).attr("jid", room_jid.as_str()));
            svc.route(msg).await;
        } else if child.is("decline", ns::MUC_USER) {
            let mut decline =
                Element::new("decline", ns::MUC_USER).attr("from", ev.from.bare().to_string());
            if let Some(r) = reason {
                decline.push(r);
            }
            let msg = Element::new("message", ns::CLIENT)
                .attr("from", room_jid.as_str())
                .attr("to", to.as_str())
                .attr("id", random_resource())
                .child(Element::new("x", ns::MUC_USER).child(decline));
            svc.route(msg).await;
        }
    }
}

fn is_voice_request(msg: &Element) -> bool {
    msg.get_child("x", ns::DATA).is_some_and(|x| {
        x.children().any(|f| {
            f.get_attr("var") == Some("FORM_TYPE")
                && f.get_child("value", ns::DATA)
                    .map(Element::text_content)
                    .as_deref()
                    == Some("http://jabber.org/protocol/muc#request")
        })
    })
}

async fn voice_request(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
) {
    let out = {
        let r = lock(room);
        if r.occupant_of(&ev.from).is_none() {
            return;
        }
        let mut out = Vec::new();
        for m in r.occupants.values().filter(|o| o.role == Role::Moderator) {
            for (j, _) in &m.sessions {
                let mut copy = ev.stanza.clone();
                copy.set_attr("from", Some(r.jid.to_string()));
                copy.set_attr("to", Some(j.to_string()));
                out.push((j.clone(), copy));
            }
        }
        out
    };
    svc.send(out).await;
}

/// A message to `room/nick`: a private message between occupants.
pub async fn private_message(svc: &Arc<MucService>, ev: StanzaEvent) {
    let ty = stanza::stanza_type(&ev.stanza, "normal");
    if ty == "error" {
        kick_on_error(svc, &ev, &node(&ev)).await;
        return;
    }
    if ty == "groupchat" {
        ev.reply_error(StanzaError {
            kind: ErrorType::Modify,
            ..err(C::BadRequest, "groupchat messages go to the room")
        })
        .await;
        return;
    }
    let room = match svc.room(&node(&ev)).await {
        Ok(Some(room)) => room,
        Err(MucError::Elsewhere(holder)) => {
            forward(svc, ev, &holder).await;
            return;
        }
        _ => {
            ev.reply_error(err(C::ItemNotFound, "no such room")).await;
            return;
        }
    };
    let target = ev.to.resource().unwrap_or_default().to_string();
    let out = pm_copies(&lock(&room), &ev, &target);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            ev.reply_error(e).await;
            return;
        }
    };
    svc.send(out).await;
}

/// The copies of a private message for each session of occupant `target`.
fn pm_copies(r: &Room, ev: &StanzaEvent, target: &str) -> Result<super::room::Out, StanzaError> {
    let sender = r
        .occupant_of(&ev.from)
        .ok_or_else(|| err(C::NotAcceptable, "join the room first"))?;
    let allowed = match r.config.allow_pm.as_str() {
        "anyone" => true,
        "participants" => sender.role >= Role::Participant,
        "moderators" => sender.role == Role::Moderator,
        _ => false,
    };
    if !allowed {
        return Err(err(C::Forbidden, "private messages are not allowed here"));
    }
    let to = r
        .occupants
        .get(target)
        .ok_or_else(|| err(C::ItemNotFound, "no such occupant"))?;
    let mut msg = ev.stanza.clone();
    msg.set_attr("from", Some(r.occupant_jid(&sender.nick)));
    msg.remove_children("x", ns::MUC_USER);
    msg.push(Element::new("x", ns::MUC_USER));
    Ok(to
        .sessions
        .iter()
        .map(|(j, _)| {
            let mut copy = msg.clone();
            copy.set_attr("to", Some(j.to_string()));
            (j.clone(), copy)
        })
        .collect())
}

/// An IQ to the room's bare JID.
pub async fn iq_to_room(svc: &Arc<MucService>, ev: StanzaEvent) {
    let ty = stanza::stanza_type(&ev.stanza, "").to_string();
    if ty != "get" && ty != "set" {
        return;
    }
    let Some(payload) = ev.stanza.first_child().cloned() else {
        ev.reply_error(err(C::BadRequest, "empty IQ")).await;
        return;
    };
    let node = node(&ev);
    let room = match svc.room(&node).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            ev.reply_error(err(C::ItemNotFound, "no such room")).await;
            return;
        }
        Err(MucError::Elsewhere(holder)) => {
            forward(svc, ev, &holder).await;
            return;
        }
        Err(e) => {
            ev.reply_error(internal(e)).await;
            return;
        }
    };
    let result = match (ty.as_str(), payload.ns()) {
        ("get", ns::DISCO_INFO) => Ok(Some(room_iq::room_info(&lock(&room)))),
        ("get", ns::DISCO_ITEMS) if payload.get_attr("node") == Some(ns::COMMANDS) => {
            Ok(Some(super::hats::command_items(&lock(&room).jid)))
        }
        ("get", ns::DISCO_ITEMS) => Ok(Some(Element::new("query", ns::DISCO_ITEMS))),
        ("set", ns::COMMANDS) => super::hats::command(svc, &room, &ev, &payload, &node).await,
        (_, ns::MUC_ADMIN) => room_iq::admin(svc, &room, &ev, &payload, &node).await,
        (_, ns::MUC_OWNER) => room_iq::owner(svc, &room, &ev, &payload, &node).await,
        ("get", ns::VCARD) => room_iq::room_vcard(&ev, &svc.host, &node).await,
        ("set", ns::VCARD) => room_iq::set_room_vcard(svc, &room, &ev, payload, &node).await,
        ("set", ns::MAM) => {
            room_iq::room_archive_query(svc, &room, &ev, &payload, &node).await;
            return;
        }
        _ => Err(StanzaError::new(C::ServiceUnavailable)),
    };
    match result {
        Ok(p) => ev.reply(stanza::iq_result(&ev.stanza, p)).await,
        Err(e) => ev.reply_error(e).await,
    }
}

/// An IQ to `room/nick`: XEP-0410 self-ping; anything else is not forwarded.
pub async fn iq_to_occupant(svc: &Arc<MucService>, ev: StanzaEvent) {
    let ty = stanza::stanza_type(&ev.stanza, "");
    if ty != "get" && ty != "set" {
        return;
    }
    let joined = match svc.room(&node(&ev)).await {
        Ok(Some(room)) => {
            let r = lock(&room);
            let nick = ev.to.resource().unwrap_or_default();
            r.occupant_of(&ev.from).is_some() && r.occupants.contains_key(nick)
        }
        Err(MucError::Elsewhere(holder)) => {
            forward(svc, ev, &holder).await;
            return;
        }
        _ => false,
    };
    if !joined {
        ev.reply_error(err(C::NotAcceptable, "you are not joined"))
            .await;
        return;
    }
    if ty == "get" && ev.stanza.get_child("ping", ns::PING).is_some() {
        ev.reply(stanza::iq_result(&ev.stanza, None)).await;
        return;
    }
    ev.reply_error(StanzaError::new(C::FeatureNotImplemented))
        .await;
}

/// disco#info on the service itself.
pub async fn service_info(ev: StanzaEvent) {
    let Some(host) = ev.core.host(ev.to.domain()).cloned() else {
        return;
    };
    if ev
        .stanza
        .first_child()
        .and_then(|q| q.get_attr("node"))
        .is_some()
    {
        ev.reply_error(StanzaError::new(C::ItemNotFound)).await;
        return;
    }
    let mut q = Element::new("query", ns::DISCO_INFO);
    for (category, kind, name) in host.identities() {
        q.push(
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", category)
                .attr("type", kind)
                .attr("name", name),
        );
    }
    for f in host.features() {
        q.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
    }
    ev.reply(stanza::iq_result(&ev.stanza, Some(q))).await;
}

/// disco#items on the service: its public rooms.
pub async fn service_items(svc: &Arc<MucService>, ev: StanzaEvent) {
    let mut q = Element::new("query", ns::DISCO_ITEMS);
    match svc.list().await {
        Ok(rooms) => {
            for r in rooms.into_iter().filter(|r| r.public) {
                let name = if r.name.is_empty() {
                    r.jid.split('@').next().unwrap_or_default().to_string()
                } else {
                    r.name
                };
                q.push(
                    Element::new("item", ns::DISCO_ITEMS)
                        .attr("jid", r.jid)
                        .attr("name", name),
                );
            }
        }
        Err(e) => {
            ev.reply_error(internal(e)).await;
            return;
        }
    }
    ev.reply(stanza::iq_result(&ev.stanza, Some(q))).await;
}
