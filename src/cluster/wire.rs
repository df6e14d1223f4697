//! What nodes send each other on their subjects: one tag byte, then the body. A stanza is
//! serialised once by the sender and parsed once by the receiving node.

use super::directory::Entry;
use crate::core::admin_ops::AdminOp;
use crate::xmpp::error::StreamErrorCondition;
use crate::xmpp::{Element, Jid, ns};

/// One message to a node.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// Deliver this stanza (with its `from` and `to`) to local sessions only.
    Deliver(Element),
    /// Send the current presence of the local sessions of this account to this JID; with the
    /// asking node and its sessions of that JID's account (what its directory key says, which
    /// may not have arrived yet: a probe follows a login at once), so that the answer finds them.
    Presence(Jid, Jid, Option<(String, Vec<Entry>)>),
    /// Close the local session bound to this full JID: it was bound again on another node.
    Kick(Jid),
    /// Close the local sessions of this JID with this condition and text; answer the full JIDs closed.
    Close(Jid, StreamErrorCondition, String),
    /// Serve this stanza to a room this node holds, as if a local session had sent it; with the
    /// sending node and its sessions of the sender's account (what its directory key says,
    /// which may not have arrived yet), so that the answers find the sender.
    Room(String, Vec<Entry>, Element),
    /// End the local resumable session of this account with this XEP-0198 id: the client tried
    /// to resume it on another node (its unacknowledged stanzas are routed again).
    EndResumable(Jid, String),
    /// Send this stanza (with its `from` and `to`) to its remote domain on this node's
    /// outgoing s2s stream: this node holds the domain pair's lease.
    Outgoing(Element),
    /// Run this admin operation here, as the shell would; answer its result.
    Admin(AdminOp),
    /// The answer to an IQ this node sent, which reached the sending node's router instead:
    /// resolve the waiter here.
    IqAnswer(Element),
}

/// Why a frame could not be read (the sender is another node: logged and dropped).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a frame of ours.
    #[error("malformed cluster frame: {0}")]
    Malformed(&'static str),
}

/// The stream error conditions an admin close may carry across nodes.
fn condition_name(c: StreamErrorCondition) -> &'static str {
    match c {
        StreamErrorCondition::Reset => "reset",
        StreamErrorCondition::Conflict => "conflict",
        StreamErrorCondition::SystemShutdown => "system-shutdown",
        StreamErrorCondition::NotAuthorized => "not-authorized",
        _ => "policy-violation",
    }
}

fn condition_of(name: &str) -> StreamErrorCondition {
    match name {
        "reset" => StreamErrorCondition::Reset,
        "conflict" => StreamErrorCondition::Conflict,
        "system-shutdown" => StreamErrorCondition::SystemShutdown,
        "not-authorized" => StreamErrorCondition::NotAuthorized,
        _ => StreamErrorCondition::PolicyViolation,
    }
}

impl Frame {
    /// The bytes to publish.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Frame::Deliver(stanza) => return Frame::deliver(stanza),
            Frame::Room(node, sender, stanza) => return Frame::room(node, sender, stanza),
            Frame::Presence(user, to, asker) => {
                out.push('P');
                out.push_str(user.as_str());
                out.push('\n');
                out.push_str(to.as_str());
                if let Some((node, sessions)) = asker {
                    out.push('\n');
                    out.push_str(node);
                    out.push('\n');
                    out.push_str(&serde_json::to_string(sessions).unwrap_or_else(|_| "[]".into()));
                }
            }
            Frame::Kick(jid) => {
                out.push('K');
                out.push_str(jid.as_str());
            }
            Frame::Close(jid, condition, text) => {
                out.push('C');
                out.push_str(jid.as_str());
                out.push('\n');
                out.push_str(condition_name(*condition));
                out.push('\n');
                out.push_str(text);
            }
            Frame::EndResumable(bare, previd) => {
                out.push('H');
                out.push_str(bare.as_str());
                out.push('\n');
                out.push_str(previd);
            }
            Frame::Outgoing(stanza) => return Frame::outgoing(stanza),
            Frame::IqAnswer(stanza) => return Frame::iq_answer(stanza),
            Frame::Admin(op) => {
                out.push('A');
                out.push_str(&serde_json::to_string(op).unwrap_or_default());
            }
        }
        out.into_bytes()
    }

    /// The bytes of a [`Frame::Deliver`] of `stanza`, without copying the element first.
    pub fn deliver(stanza: &Element) -> Vec<u8> {
        let mut out = String::from("D");
        out.push_str(&stanza.to_xml(ns::CLIENT));
        out.into_bytes()
    }

    /// The bytes of a [`Frame::Room`] of `stanza`, without copying the element first.
    pub fn room(node: &str, sender: &[Entry], stanza: &Element) -> Vec<u8> {
        let mut out = String::from("R");
        out.push_str(node);
        out.push('\n');
        out.push_str(&serde_json::to_string(sender).unwrap_or_else(|_| "[]".into()));
        out.push('\n');
        out.push_str(&stanza.to_xml(ns::CLIENT));
        out.into_bytes()
    }

    /// The bytes of a [`Frame::Outgoing`] of `stanza`, without copying the element first.
    pub fn outgoing(stanza: &Element) -> Vec<u8> {
        let mut out = String::from("S");
        out.push_str(&stanza.to_xml(ns::CLIENT));
        out.into_bytes()
    }

    /// The bytes of a [`Frame::IqAnswer`] of `stanza`, without copying the element first.
    pub fn iq_answer(stanza: &Element) -> Vec<u8> {
        let mut out = String::from("Q");
        out.push_str(&stanza.to_xml(ns::CLIENT));
        out.into_bytes()
    }

    /// Reads a published frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        let text = std::str::from_utf8(bytes).map_err(|_| WireError::Malformed("not UTF-8"))?;
        let mut chars = text.chars();
        let tag = chars.next().ok_or(WireError::Malformed("empty"))?;
        let body = chars.as_str();
        let jid = |s: &str| Jid::parse(s).map_err(|_| WireError::Malformed("bad JID"));
        match tag {
            'D' => crate::xmpp::parser::parse_element(body)
                .map(Frame::Deliver)
                .map_err(|_| WireError::Malformed("bad stanza")),
            'R' => {
                let mut parts = body.splitn(3, '\n');
                let node = parts.next().unwrap_or_default().to_string();
                let sender = serde_json::from_str(parts.next().unwrap_or_default())
                    .map_err(|_| WireError::Malformed("bad sender"))?;
                let stanza = crate::xmpp::parser::parse_element(parts.next().unwrap_or_default())
                    .map_err(|_| WireError::Malformed("bad stanza"))?;
                Ok(Frame::Room(node, sender, stanza))
            }
            'K' => Ok(Frame::Kick(jid(body)?)),
            'P' => {
                let mut parts = body.splitn(4, '\n');
                let user = jid(parts.next().unwrap_or_default())?;
                let to = jid(parts.next().ok_or(WireError::Malformed("no recipient"))?)?;
                let asker = match (parts.next(), parts.next()) {
                    (Some(node), Some(sessions)) => Some((
                        node.to_string(),
                        serde_json::from_str(sessions)
                            .map_err(|_| WireError::Malformed("bad sessions"))?,
                    )),
                    (None, _) => None,
                    (Some(_), None) => return Err(WireError::Malformed("no sessions")),
                };
                Ok(Frame::Presence(user, to, asker))
            }
            'C' => {
                let mut parts = body.splitn(3, '\n');
                let target = jid(parts.next().unwrap_or_default())?;
                let condition = condition_of(parts.next().unwrap_or_default());
                Ok(Frame::Close(
                    target,
                    condition,
                    parts.next().unwrap_or_default().to_string(),
                ))
            }
            'H' => {
                let (bare, previd) = body
                    .split_once('\n')
                    .ok_or(WireError::Malformed("no resumption id"))?;
                Ok(Frame::EndResumable(jid(bare)?, previd.to_string()))
            }
            'S' => crate::xmpp::parser::parse_element(body)
                .map(Frame::Outgoing)
                .map_err(|_| WireError::Malformed("bad stanza")),
            'Q' => crate::xmpp::parser::parse_element(body)
                .map(Frame::IqAnswer)
                .map_err(|_| WireError::Malformed("bad stanza")),
            'A' => serde_json::from_str(body)
                .map(Frame::Admin)
                .map_err(|_| WireError::Malformed("bad admin operation")),
            _ => Err(WireError::Malformed("unknown tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_read_back_as_written() {
        let msg = Element::new("message", ns::CLIENT)
            .attr("from", "a@h/x")
            .attr("to", "b@h")
            .attr("type", "chat")
            .child(Element::new("body", ns::CLIENT).text("<&> \n ok"));
        let j = |s: &str| Jid::parse(s).unwrap();
        for frame in [
            Frame::Deliver(msg.clone()),
            Frame::Room(
                "n2".into(),
                vec![Entry {
                    resource: "x".into(),
                    priority: 1,
                    available: true,
                    secure: false,
                    carbons: false,
                    roster: false,
                }],
                msg,
            ),
            Frame::Kick(j("b@h/phone")),
            Frame::Presence(j("b@h"), j("a@h/x"), None),
            Frame::Presence(
                j("b@h"),
                j("a@h/x"),
                Some((
                    "n1".into(),
                    vec![Entry {
                        resource: "x".into(),
                        priority: 0,
                        available: false,
                        secure: true,
                        carbons: false,
                        roster: false,
                    }],
                )),
            ),
            Frame::Close(j("b@h"), StreamErrorCondition::Reset, "bye\nnow".into()),
            Frame::EndResumable(j("b@h"), "0f3a".into()),
        ] {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
        for bad in [
            &b""[..],
            b"X",
            b"Kno@@",
            b"D<unclosed",
            b"Rn\n[]\n<unclosed",
            b"Rn\nnot json\n<a/>",
            b"\xff",
            b"Hb@h",
            b"Pb@h\na@h/x\nn1",
            b"Pb@h\na@h/x\nn1\nnot json",
        ] {
            assert!(Frame::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn s2s_and_admin_frames_read_back_as_written() {
        let msg = Element::new("message", ns::CLIENT)
            .attr("from", "a@h/x")
            .attr("to", "b@remote.example")
            .child(Element::new("body", ns::CLIENT).text("<&>"));
        let op = AdminOp::ModuleUnload {
            module: "ping".into(),
            host: Some("h".into()),
        };
        let answer = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "n1~caps-1")
            .attr("from", "b@h/x")
            .attr("to", "h");
        for frame in [
            Frame::Outgoing(msg),
            Frame::Admin(op),
            Frame::IqAnswer(answer),
        ] {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
        for bad in [&b"S<x"[..], b"A{}", b"A{\"op\":\"shutdown\"}", b"Q<iq"] {
            assert!(Frame::decode(bad).is_err(), "{bad:?}");
        }
    }
}
