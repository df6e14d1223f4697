//! XEP-0317 hats through ad-hoc commands (XEP-0050) at the room JID: `…:don` puts a hat on a
//! user, `…:doff` takes it off, `…:dlist` lists the hats worn. Only the room's owners and
//! admins (and server admins) may run them; the work is [`MucService::set_hat`].

use std::sync::Arc;

use super::handlers::{effective_affiliation, err, internal};
use super::room::{Affiliation, Hat, Room};
use super::service::{MucError, MucService, lock};
use crate::core::events::StanzaEvent;
use crate::xmpp::error::{ErrorType, StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, ns};

/// The commands: node suffix (after `urn:xmpp:hats:commands:`) and name.
const COMMANDS: &[(&str, &str)] = &[
    ("don", "Add a hat"),
    ("doff", "Remove a hat"),
    ("dlist", "List hats"),
];

fn node_of(suffix: &str) -> String {
    format!("{}:{suffix}", ns::HATS_COMMANDS)
}

/// The room's disco#items for the commands node: the hat commands.
pub(super) fn command_items(room: &Jid) -> Element {
    COMMANDS.iter().fold(
        Element::new("query", ns::DISCO_ITEMS).attr("node", ns::COMMANDS),
        |q, (suffix, name)| {
            q.child(
                Element::new("item", ns::DISCO_ITEMS)
                    .attr("jid", room.as_str())
                    .attr("node", node_of(suffix))
                    .attr("name", *name),
            )
        },
    )
}

fn field(var: &str, ty: &str, label: &str, value: Option<&str>) -> Element {
    let mut f = Element::new("field", ns::DATA)
        .attr("var", var)
        .attr("type", ty);
    if !label.is_empty() {
        f.set_attr("label", Some(label.to_string()));
    }
    if let Some(v) = value {
        f.push(Element::new("value", ns::DATA).text(v));
    }
    f
}

/// The input form of `don` (with a title) or `doff` (without).
fn input_form(with_title: bool) -> Element {
    let mut x = Element::new("x", ns::DATA)
        .attr("type", "form")
        .child(field("FORM_TYPE", "hidden", "", Some(ns::HATS_COMMANDS)))
        .child(
            field("hats#jid", "jid-single", "User", None).child(Element::new("required", ns::DATA)),
        )
        .child(
            field("hats#hat", "text-single", "Hat URI", None)
                .child(Element::new("required", ns::DATA)),
        );
    if with_title {
        x.push(field("hats#title", "text-single", "Title", None));
    }
    x
}

/// The first value of field `var` of a submitted form.
fn value(x: &Element, var: &str) -> Option<String> {
    x.children()
        .find(|f| f.is("field", ns::DATA) && f.get_attr("var") == Some(var))
        .and_then(|f| f.get_child("value", ns::DATA))
        .map(Element::text_content)
}

/// The hats worn, as a result form with one item per (user, hat).
fn list_form(hats: &[(String, Hat)]) -> Element {
    let reported = Element::new("reported", ns::DATA)
        .child(field("hats#jid", "jid-single", "User", None))
        .child(field("hats#hat", "text-single", "Hat URI", None))
        .child(field("hats#title", "text-single", "Title", None));
    hats.iter().fold(
        Element::new("x", ns::DATA)
            .attr("type", "result")
            .child(field("FORM_TYPE", "hidden", "", Some(ns::HATS_COMMANDS)))
            .child(reported),
        |x, (jid, hat)| {
            x.child(
                Element::new("item", ns::DATA)
                    .child(field("hats#jid", "", "", Some(jid)))
                    .child(field("hats#hat", "", "", Some(&hat.uri)))
                    .child(field("hats#title", "", "", Some(&hat.title))),
            )
        },
    )
}

fn command_el(node: &str, session: &str, status: &str) -> Element {
    Element::new("command", ns::COMMANDS)
        .attr("node", node)
        .attr("sessionid", session)
        .attr("status", status)
}

fn modify(condition: C, text: &str) -> StanzaError {
    StanzaError {
        kind: ErrorType::Modify,
        ..err(condition, text)
    }
}

/// Runs a hat command `cmd` (the `<command/>` of an IQ set to room `node`): returns the
/// `<command/>` to answer with, or the stanza error.
pub(super) async fn command(
    svc: &Arc<MucService>,
    room: &Arc<std::sync::Mutex<Room>>,
    ev: &StanzaEvent,
    cmd: &Element,
    node: &str,
) -> Result<Option<Element>, StanzaError> {
    let cmd_node = cmd.get_attr("node").unwrap_or_default().to_string();
    let Some(suffix) = COMMANDS
        .iter()
        .map(|(s, _)| *s)
        .find(|s| node_of(s) == cmd_node)
    else {
        return Err(err(C::ItemNotFound, "no such command"));
    };
    if effective_affiliation(ev, &lock(room)) < Affiliation::Admin {
        return Err(err(C::Forbidden, "only owners and admins manage hats"));
    }
    let session = cmd
        .get_attr("sessionid")
        .map(str::to_string)
        .unwrap_or_else(crate::core::sessions::random_resource);
    if cmd.get_attr("action") == Some("cancel") {
        return Ok(Some(command_el(&cmd_node, &session, "canceled")));
    }
    let done = command_el(&cmd_node, &session, "completed");
    if suffix == "dlist" {
        let hats = svc.hats(node).await.map_err(internal)?;
        return Ok(Some(done.child(list_form(&hats))));
    }
    let Some(x) = cmd
        .get_child("x", ns::DATA)
        .filter(|x| x.get_attr("type") == Some("submit"))
    else {
        let reply = command_el(&cmd_node, &session, "executing")
            .child(
                Element::new("actions", ns::COMMANDS)
                    .attr("execute", "complete")
                    .child(Element::new("complete", ns::COMMANDS)),
            )
            .child(input_form(suffix == "don"));
        return Ok(Some(reply));
    };
    let jid = value(x, "hats#jid")
        .and_then(|j| Jid::parse(j.trim()).ok())
        .ok_or_else(|| modify(C::BadRequest, "hats#jid must be a JID"))?;
    let uri = value(x, "hats#hat").unwrap_or_default();
    let title = value(x, "hats#title").unwrap_or_default();
    let on = suffix == "don";
    match svc
        .set_hat(node, Some(&ev.from), &jid, Hat { uri, title }, on)
        .await
    {
        Ok(()) => {}
        Err(MucError::Invalid(text)) => return Err(modify(C::NotAcceptable, &text)),
        Err(MucError::Refused(text)) => return Err(err(C::Forbidden, &text)),
        Err(MucError::NotFound) => return Err(err(C::ItemNotFound, "no such room")),
        Err(e) => return Err(internal(e)),
    }
    let text = if on { "Hat added" } else { "Hat removed" };
    Ok(Some(
        done.child(
            Element::new("note", ns::COMMANDS)
                .attr("type", "info")
                .text(text),
        ),
    ))
}
