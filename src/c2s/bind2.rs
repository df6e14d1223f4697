//! XEP-0386 Bind 2, inline in SASL2: the resource is derived from the client's `<tag/>` (and,
//! for a client with an id, stable across its reconnections, so a reconnect replaces its old
//! session), and carbons (XEP-0280), stream management (XEP-0198 `<enable/>`) and CSI
//! (XEP-0352) are switched on in the same round trip, their answers inside `<bound/>`.

use sha2::{Digest, Sha256};

use super::negotiate::Negotiation;
use crate::core::modules::Host;
use crate::core::sessions::{BindError, BoundSession, ClientAgent, Connection, Outbound};
use crate::xmpp::jid::{self, Jid};
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, ns};

/// Longest tag kept in a generated resource.
const MAX_TAG: usize = 64;

/// The event the carbons module answers `<enable/>` on.
fn carbons_event() -> String {
    format!("iq-set/bare/{}:enable", ns::CARBONS)
}

/// The Bind2 `<bind/>` advertisement inside SASL2's `<inline/>`: the features this host can
/// enable inline.
pub fn feature(host: &Host) -> Element {
    let mut inline = Element::new("inline", ns::BIND2);
    let mut offer = |var: &str| inline.push(Element::new("feature", ns::BIND2).attr("var", var));
    if host.events.has_handlers(&carbons_event()) {
        offer(ns::CARBONS);
    }
    if host.handles_tag(ns::SM, "enable") {
        offer(ns::SM);
    }
    if host.handles_tag(ns::CSI, "inactive") {
        offer(ns::CSI);
    }
    Element::new("bind", ns::BIND2).child(inline)
}

/// The resource for a Bind2 request: `<tag>.<8 hex>`, the suffix derived from the account and
/// the client id when there is one (random otherwise).
pub fn resource(bare: &Jid, tag: Option<&str>, agent: Option<&ClientAgent>) -> String {
    let tag: String = tag
        .and_then(|t| jid::normalize_resource(t.trim()).ok())
        .map(|t| t.chars().filter(|c| *c != '/').take(MAX_TAG).collect())
        .filter(|t: &String| !t.is_empty())
        .unwrap_or_else(|| "oxp".into());
    let suffix = match agent {
        Some(a) => {
            let d = Sha256::digest(format!("{bare}\0{}", a.id).as_bytes());
            d[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        }
        None => format!("{:08x}", rand::random::<u32>()),
    };
    format!("{tag}.{suffix}")
}

impl Negotiation {
    /// Binds the session a Bind2 `<bind/>` asks for and runs its inline features; the session
    /// and the `<bound/>` element for `<success/>`.
    pub(super) async fn bind2(
        &self,
        jid: &Jid,
        bind: &Element,
        agent: Option<&ClientAgent>,
    ) -> Result<(BoundSession, Element), BindError> {
        let tag = bind.get_child("tag", ns::BIND2).map(|t| t.text_content());
        let resource = resource(jid, tag.as_deref(), agent);
        let c2s = &self.config.c2s;
        let mut session = self.core.bind_resource(
            jid,
            &resource,
            c2s.resource_conflict,
            c2s.send_queue,
            Connection {
                since: std::time::SystemTime::now(),
                ..self.conn.clone()
            },
        )?;
        tracing::info!(peer = %self.peer, jid = %session.handle.jid, "resource bound (bind2)");
        crate::modules::client_management::note_session(&self.core, &session.handle);
        let mut bound = Element::new("bound", ns::BIND2);
        let host = self.core.host(jid.domain()).cloned();
        for req in bind.children() {
            if req.is("enable", ns::CARBONS) {
                if host
                    .as_ref()
                    .is_some_and(|h| h.events.has_handlers(&carbons_event()))
                {
                    session.handle.set_carbons(true);
                }
            } else if req.is("enable", ns::SM)
                || req.is("inactive", ns::CSI)
                || req.is("active", ns::CSI)
            {
                // The modules answer through the session's queue; SM's answer belongs in <bound/>.
                let _ = self.core.fire_tag(&session.handle, req.clone()).await;
                self.collect_answers(&mut session, &mut bound);
            }
        }
        Ok((session, bound))
    }

    /// Moves the nonzas the inline features queued into `<bound/>`; stanzas that raced in stay
    /// queued (re-sent in order after them).
    fn collect_answers(&self, session: &mut BoundSession, bound: &mut Element) {
        let mut later = Vec::new();
        while let Ok(item) = session.rx.try_recv() {
            match item {
                Outbound::SmEnabled(x) => {
                    session.handle.sm().out_enabled = true;
                    if let Ok(el) = parse_element(&x) {
                        bound.push(el);
                    }
                }
                Outbound::Nonza(x) => match parse_element(&x) {
                    Ok(el) => bound.push(el),
                    Err(_) => later.push(Outbound::Nonza(x)),
                },
                other => later.push(other),
            }
        }
        for item in later {
            match item {
                Outbound::Stanza(el) => {
                    session.handle.send(el.into_element());
                }
                Outbound::Shared(s) => {
                    session.handle.send_shared(&s);
                }
                other => {
                    session.handle.send_nonza(other);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_come_from_the_tag_and_are_stable_per_client() {
        let alice = Jid::parse("alice@localhost").expect("jid");
        let agent = ClientAgent {
            id: "c1".into(),
            ..ClientAgent::default()
        };
        let a = resource(&alice, Some("Conversations"), Some(&agent));
        assert!(a.starts_with("Conversations."), "{a}");
        assert_eq!(a, resource(&alice, Some("Conversations"), Some(&agent)));
        let other = ClientAgent {
            id: "c2".into(),
            ..ClientAgent::default()
        };
        assert_ne!(a, resource(&alice, Some("Conversations"), Some(&other)));
        assert!(resource(&alice, None, None).starts_with("oxp."));
        assert!(resource(&alice, Some("\u{7}"), None).starts_with("oxp."));
        assert!(jid::normalize_resource(&resource(&alice, Some(&"x".repeat(2000)), None)).is_ok());
    }
}
