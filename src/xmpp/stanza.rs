//! Stanza helpers: kinds, addressing, replies and error bounces (RFC 6120 §8).

use super::element::Element;
use super::error::StanzaError;
use super::ns;

/// The three stanza kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

impl Kind {
    /// The kind of a first-level element in `jabber:client`, if it is a stanza.
    pub fn of(el: &Element) -> Option<Kind> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }

    /// The element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }
}

/// The stanza's `type` attribute, or `default` when absent.
pub fn stanza_type<'a>(el: &'a Element, default: &'a str) -> &'a str {
    el.get_attr("type").unwrap_or(default)
}

/// Whether the stanza is itself an error (and so must never be answered with one).
pub fn is_error(el: &Element) -> bool {
    el.get_attr("type") == Some("error")
}

/// An IQ `result` answering `request` (addresses swapped, same id), with an optional payload.
pub fn iq_result(request: &Element, payload: Option<Element>) -> Element {
    let mut el = Element::new("iq", ns::CLIENT).attr("type", "result");
    copy_reply_addressing(request, &mut el);
    if let Some(p) = payload {
        el.push(p);
    }
    el
}

/// The error bounce of `stanza` (RFC 6120 §8.3.1), or `None` for a stanza that is already an error.
pub fn error_reply(stanza: &Element, error: &StanzaError) -> Option<Element> {
    if is_error(stanza) {
        return None;
    }
    let mut el = Element::new(stanza.name(), stanza.ns()).attr("type", "error");
    copy_reply_addressing(stanza, &mut el);
    // Include the original payload for message/presence, as RFC 6120 §8.3.1 permits; an IQ's
    // request child helps the requester correlate.
    for child in stanza.children() {
        if child.name() != "error" {
            el.push(child.clone());
        }
    }
    el.push(error.to_element());
    Some(el)
}

fn copy_reply_addressing(request: &Element, reply: &mut Element) {
    if let Some(id) = request.get_attr("id") {
        reply.set_attr("id", Some(id.to_string()));
    }
    if let Some(from) = request.get_attr("from") {
        reply.set_attr("to", Some(from.to_string()));
    }
    if let Some(to) = request.get_attr("to") {
        reply.set_attr("from", Some(to.to_string()));
    }
}

/// The event name suffix for an IQ payload: `<ns>:<name>` of its first child (Prosody's convention).
pub fn iq_payload_key(iq: &Element) -> Option<String> {
    iq.first_child().map(|c| format!("{}:{}", c.ns(), c.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::error::StanzaErrorCondition;

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let req = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", "x1")
            .attr("from", "a@b/c")
            .attr("to", "b")
            .child(Element::new("query", "urn:unknown"));
        let err = error_reply(
            &req,
            &StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
        )
        .unwrap();
        assert_eq!(err.get_attr("to"), Some("a@b/c"));
        assert_eq!(err.get_attr("from"), Some("b"));
        assert_eq!(err.get_attr("id"), Some("x1"));
        assert_eq!(err.get_attr("type"), Some("error"));
        assert!(error_reply(&err, &StanzaErrorCondition::BadRequest.into()).is_none());
        assert_eq!(iq_payload_key(&req).as_deref(), Some("urn:unknown:query"));
    }
}
