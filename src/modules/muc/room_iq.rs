//! IQs to a room's bare JID beyond the plain ones: disco#info, the admin (roles and
//! affiliations) and owner (configuration, destruction) requests, the room's vCard (avatar)
//! and its archive (XEP-0313).

use std::sync::Arc;

use serde_json::json;

use super::form;
use super::handlers::{effective_affiliation, err, internal};
use super::room::{Affiliation, AffiliationRefused, Outgoing, Role, Room};
use super::service::{ARCHIVE_STORE, MucService, VCARDS_STORE, lock};
use crate::core::events::StanzaEvent;
use crate::modules::mam;
use crate::xmpp::error::{ErrorType, StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, ns, stanza};

/// The room's disco#info: identity, features and `muc#roominfo`.
pub(super) fn room_info(r: &Room) -> Element {
    let c = &r.config;
    let mut q = Element::new("query", ns::DISCO_INFO).child(
        Element::new("identity", ns::DISCO_INFO)
            .attr("category", "conference")
            .attr("type", "text")
            .attr(
                "name",
                if c.name.is_empty() {
                    r.jid.node().unwrap_or_default()
                } else {
                    c.name.as_str()
                },
            ),
    );
    let mut features = vec![
        ns::MUC,
        ns::MUC_STABLE_ID,
        ns::SID,
        ns::OCCUPANT_ID,
        ns::HATS,
        ns::COMMANDS,
        ns::DISCO_INFO,
        ns::VCARD,
        if c.persistent {
            "muc_persistent"
        } else {
            "muc_temporary"
        },
        if c.public { "muc_public" } else { "muc_hidden" },
        if c.members_only {
            "muc_membersonly"
        } else {
            "muc_open"
        },
        if c.moderated {
            "muc_moderated"
        } else {
            "muc_unmoderated"
        },
        if c.password.is_empty() {
            "muc_unsecured"
        } else {
            "muc_passwordprotected"
        },
        if c.whois_anyone {
            "muc_nonanonymous"
        } else {
            "muc_semianonymous"
        },
    ];
    if c.enable_archiving {
        features.push(ns::MAM);
    }
    for f in features {
        q.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
    }
    let subject = r.subject.as_ref().map(|s| s.1.as_str()).unwrap_or("");
    let mut info = form::room_info(c, r.occupants.len(), subject);
    if let Some(h) = &r.avatar_hash {
        info.push(
            Element::new("field", ns::DATA)
                .attr("var", "muc#roominfo_avatarhash")
                .attr("type", "text-multi")
                .child(Element::new("value", ns::DATA).text(h.clone())),
        );
    }
    q.push(info);
    q
}

/// The room's vCard (empty when it has none).
pub(super) async fn room_vcard(
    ev: &StanzaEvent,
    host: &str,
    node: &str,
) -> Result<Option<Element>, StanzaError> {
    let stored = ev
        .core
        .store
        .keyval(host, VCARDS_STORE)
        .get(node)
        .await
        .map_err(|e| internal(e.into()))?;
    let vcard = stored
        .and_then(|v| v["xml"].as_str().map(str::to_string))
        .and_then(|x| crate::xmpp::parser::parse_element(&x).ok())
        .unwrap_or_else(|| Element::new("vCard", ns::VCARD));
    Ok(Some(vcard))
}

/// An owner sets the room's vCard; its photo becomes the room's avatar (XEP-0486), announced
/// to every occupant with the new hash.
pub(super) async fn set_room_vcard(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
    vcard: Element,
    node: &str,
) -> Result<Option<Element>, StanzaError> {
    if effective_affiliation(ev, &lock(room)) != Affiliation::Owner {
        return Err(err(C::Forbidden, "only owners may set the room's vCard"));
    }
    let hash = crate::modules::vcard_legacy::photo_of(&vcard)
        .map(|p| crate::modules::vcard_legacy::sha1_hex(&p.data));
    ev.core
        .store
        .keyval(&svc.host, VCARDS_STORE)
        .set(node, Some(json!({ "xml": vcard.to_xml(ns::CLIENT) })))
        .await
        .map_err(|e| internal(e.into()))?;
    let out = {
        let mut r = lock(room);
        r.avatar_hash = hash.clone();
        let shown = hash.unwrap_or_default();
        // One presence for everyone (`to_everyone` drops the `to`).
        r.to_everyone(r.avatar_presence(&shown, &r.jid))
    };
    svc.save(node).await.map_err(internal)?;
    svc.send(out).await;
    Ok(None)
}

/// `muc#admin`: role and affiliation lists (get) and changes (set), all checked first.
pub(super) async fn admin(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
    query: &Element,
    node: &str,
) -> Result<Option<Element>, StanzaError> {
    let items: Vec<&Element> = query
        .children()
        .filter(|i| i.is("item", ns::MUC_ADMIN))
        .collect();
    let set = stanza::stanza_type(&ev.stanza, "") == "set";
    let mut out = Outgoing::default();
    let reply = {
        let mut r = lock(room);
        let my_aff = effective_affiliation(ev, &r);
        let my_role = r
            .occupant_of(&ev.from)
            .map(|o| o.role)
            .unwrap_or(Role::None);
        if !set {
            let Some(item) = items.first() else {
                return Err(err(C::BadRequest, "name an affiliation or role"));
            };
            let mut q = Element::new("query", ns::MUC_ADMIN);
            if let Some(a) = item.get_attr("affiliation").map(Affiliation::parse) {
                let a = a.ok_or_else(|| err(C::BadRequest, "unknown affiliation"))?;
                if my_aff < Affiliation::Admin
                    && !(a == Affiliation::Member && my_aff == Affiliation::Member)
                {
                    return Err(err(
                        C::Forbidden,
                        "only admins and owners may list affiliations",
                    ));
                }
                for (jid, _) in r.affiliations.iter().filter(|(_, v)| **v == a) {
                    q.push(
                        Element::new("item", ns::MUC_ADMIN)
                            .attr("affiliation", a.as_str())
                            .attr("jid", jid.clone()),
                    );
                }
            } else if let Some(role) = item.get_attr("role").map(Role::parse) {
                let role = role.ok_or_else(|| err(C::BadRequest, "unknown role"))?;
                if my_role < Role::Moderator {
                    return Err(err(C::Forbidden, "only moderators may list roles"));
                }
                for o in r.occupants.values().filter(|o| o.role == role) {
                    q.push(
                        Element::new("item", ns::MUC_ADMIN)
                            .attr("role", role.as_str())
                            .attr("nick", o.nick.clone())
                            .attr("jid", o.bare.to_string())
                            .attr("affiliation", r.affiliation(&o.bare).as_str()),
                    );
                }
            } else {
                return Err(err(C::BadRequest, "name an affiliation or role"));
            }
            return Ok(Some(q));
        }
        // Check every item first, so a refused batch changes nothing.
        let mut changes = Vec::new();
        for item in &items {
            let reason = item
                .get_child("reason", ns::MUC_ADMIN)
                .map(Element::text_content);
            if let Some(role) = item.get_attr("role") {
                let role = Role::parse(role).ok_or_else(|| err(C::BadRequest, "unknown role"))?;
                let nick = item
                    .get_attr("nick")
                    .ok_or_else(|| err(C::BadRequest, "name the nick"))?;
                let target = r
                    .occupants
                    .get(nick)
                    .ok_or_else(|| err(C::ItemNotFound, "no such occupant"))?;
                let target_aff = r.affiliation(&target.bare);
                let needed = if role == Role::Moderator
                    || target.role == Role::Moderator && role < Role::Moderator
                {
                    Affiliation::Admin
                } else {
                    Affiliation::None
                };
                if my_role < Role::Moderator && my_aff < Affiliation::Admin || my_aff < needed {
                    return Err(err(C::Forbidden, "you may not change this role"));
                }
                if target_aff >= Affiliation::Admin && role < Role::Moderator {
                    return Err(StanzaError {
                        kind: ErrorType::Cancel,
                        ..err(C::NotAllowed, "admins and owners keep their role")
                    });
                }
                changes.push((None, Some(nick.to_string()), Change::Role(role), reason));
            } else if let Some(aff) = item.get_attr("affiliation") {
                let aff = Affiliation::parse(aff)
                    .ok_or_else(|| err(C::BadRequest, "unknown affiliation"))?;
                let jid = match (item.get_attr("jid"), item.get_attr("nick")) {
                    (Some(j), _) => Jid::parse(j)
                        .map_err(|_| err(C::JidMalformed, "bad jid"))?
                        .bare(),
                    (None, Some(n)) => r
                        .occupants
                        .get(n)
                        .map(|o| o.bare.clone())
                        .ok_or_else(|| err(C::ItemNotFound, "no such occupant"))?,
                    _ => return Err(err(C::BadRequest, "name the jid")),
                };
                r.check_affiliation_change(my_aff, &jid, aff)
                    .map_err(|refused| match refused {
                        AffiliationRefused::Forbidden => err(C::Forbidden, &refused.to_string()),
                        AffiliationRefused::LastOwner => err(C::Conflict, &refused.to_string()),
                    })?;
                changes.push((Some(jid), None, Change::Aff(aff), reason));
            } else {
                return Err(err(C::BadRequest, "name a role or an affiliation"));
            }
        }
        for (jid, nick, change, reason) in changes {
            match (change, jid, nick) {
                (Change::Role(Role::None), _, Some(n)) => {
                    out.extend(r.remove_occupant(&n, &[307], reason.as_deref()))
                }
                (Change::Role(role), _, Some(n)) => out.extend(r.set_role(&n, role)),
                (Change::Aff(a), Some(j), _) => {
                    out.extend(r.set_affiliation(&j, a, reason.as_deref()))
                }
                _ => {}
            }
        }
        None
    };
    svc.send(out).await;
    svc.save(node).await.map_err(internal)?;
    svc.vanish_if_empty(node).await;
    Ok(reply)
}

/// One checked change of an admin request.
enum Change {
    /// A new role for a nick.
    Role(Role),
    /// A new affiliation for a bare JID.
    Aff(Affiliation),
}

/// `muc#owner`: the configuration form (get), a submitted or cancelled form, `<destroy/>`.
pub(super) async fn owner(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
    query: &Element,
    node: &str,
) -> Result<Option<Element>, StanzaError> {
    if effective_affiliation(ev, &lock(room)) != Affiliation::Owner {
        return Err(err(C::Forbidden, "only owners may configure the room"));
    }
    if stanza::stanza_type(&ev.stanza, "") == "get" {
        let form = form::config_form(&lock(room).config);
        return Ok(Some(Element::new("query", ns::MUC_OWNER).child(form)));
    }
    if let Some(d) = query.get_child("destroy", ns::MUC_OWNER) {
        let reason = d
            .get_child("reason", ns::MUC_OWNER)
            .map(Element::text_content);
        svc.destroy(node, reason.as_deref(), d.get_attr("jid"))
            .await
            .map_err(internal)?;
        return Ok(None);
    }
    let Some(x) = query.get_child("x", ns::DATA) else {
        return Err(err(C::BadRequest, "send a form or <destroy/>"));
    };
    match x.get_attr("type") {
        Some("cancel") => {
            let locked = lock(room).locked;
            if locked {
                svc.destroy(node, None, None).await.map_err(internal)?;
                // A cancelled creation leaves no tombstone.
                svc.destroy(node, None, None).await.map_err(internal)?;
            }
            Ok(None)
        }
        Some("submit") => {
            let out = {
                let mut r = lock(room);
                let old = r.config.clone();
                let mut config = old.clone();
                form::apply(x, &mut config, svc.limits.max_history)?;
                r.config = config;
                let was_locked = std::mem::replace(&mut r.locked, false);
                while r.history.len() > r.config.history_length {
                    r.history.pop_front();
                }
                if was_locked {
                    Outgoing::default()
                } else {
                    r.config_changed(&old)
                }
            };
            svc.save(node).await.map_err(internal)?;
            svc.send(out).await;
            Ok(None)
        }
        _ => Err(err(C::BadRequest, "the form must be submit or cancel")),
    }
}

/// XEP-0313 at the room JID: one RSM page of the room's archive, then `<fin/>`.
pub(super) async fn room_archive_query(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
    query: &Element,
    node: &str,
) {
    let (room_jid, allowed, archiving) = {
        let r = lock(room);
        let allowed = r.occupant_of(&ev.from).is_some()
            || effective_affiliation(ev, &r) >= Affiliation::Member
            || (r.config.public && !r.config.members_only);
        (r.jid.clone(), allowed, r.config.enable_archiving)
    };
    if !allowed {
        ev.reply_error(err(C::Forbidden, "only members may read this archive"))
            .await;
        return;
    }
    if !archiving {
        ev.reply_error(err(C::ServiceUnavailable, "this room keeps no archive"))
            .await;
        return;
    }
    let parsed = mam::parse_form(query.get_child("x", ns::DATA))
        .and_then(|f| mam::parse_rsm(query.get_child("set", ns::RSM)).map(|r| (f, r)));
    let (filter, rsm) = match parsed {
        Ok(p) => p,
        Err(e) => {
            ev.reply_error(e.to_stanza_error()).await;
            return;
        }
    };
    let cap = (ev.core.config.load().c2s.send_queue / 2).clamp(1, 100);
    let archive = ev.core.store.archive(&svc.host, ARCHIVE_STORE);
    let page = match mam::run_query(&archive, node, &filter, &rsm, cap).await {
        Ok(p) => p,
        Err(e) => {
            ev.reply_error(e.to_stanza_error()).await;
            return;
        }
    };
    let queryid = query.get_attr("queryid");
    let mut out = Vec::with_capacity(page.items.len());
    for item in &page.items {
        if let Some(m) = mam::result_message(&room_jid, &ev.from, queryid, item) {
            out.push((ev.from.clone(), m));
        }
    }
    svc.send(out).await;
    let mut set = Element::new("set", ns::RSM);
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.push(Element::new("first", ns::RSM).text(first.id.clone()));
        set.push(Element::new("last", ns::RSM).text(last.id.clone()));
    }
    if let Some(n) = page.count {
        set.push(Element::new("count", ns::RSM).text(n.to_string()));
    }
    let mut fin = Element::new("fin", ns::MAM).child(set);
    if page.complete {
        fin.set_attr("complete", Some("true".into()));
    }
    ev.reply(stanza::iq_result(&ev.stanza, Some(fin))).await;
}
