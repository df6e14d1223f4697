//! The router: turns a stanza into a host event, and delivers what no module handled as
//! [`super::delivery`] decides (RFC 6120/6121 default rules).

use std::sync::Arc;

use super::Core;
use super::delivery::{Delivery, Fate, OFFLINE_EVENT, Scope};
use super::events::{Flow, Origin, Refusal, StanzaEvent};
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::stanza::{self, Kind};
use crate::xmpp::{Element, Jid};

/// Which kind of address a stanza is for, as used in event names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The server itself (a domain JID).
    Host,
    /// An account's bare JID.
    Bare,
    /// A client's full JID.
    Full,
}

impl Dest {
    /// The event-name segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Dest::Host => "host",
            Dest::Bare => "bare",
            Dest::Full => "full",
        }
    }

    /// The destination class of `to`.
    pub fn of(to: &Jid) -> Dest {
        match (to.node(), to.resource()) {
            (None, _) => Dest::Host,
            (Some(_), None) => Dest::Bare,
            (Some(_), Some(_)) => Dest::Full,
        }
    }
}

/// What became of a routed stanza, for a caller that answers for it (the admin API's messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Taken: delivered, stored, handled, sent to another domain, or dropped as the rules say.
    Taken,
    /// Refused with this error, which the sender was also sent (a bounce, or a module's
    /// refusal such as an offline store that failed to write).
    Refused(StanzaError),
}

/// Fired on the recipient's host, for modules to observe, with a presence another cluster
/// node forwarded here before it is delivered (its sender's session lives on that node).
pub const PRESENCE_FORWARDED: &str = "presence/forwarded";

/// The event fired for a stanza: `iq-get/host/urn:xmpp:ping:ping`, `iq-result/full`, `message/bare`, …
pub fn event_name(kind: Kind, dest: Dest, stanza: &Element) -> String {
    match kind {
        Kind::Iq => {
            let ty = stanza::stanza_type(stanza, "");
            match (ty, stanza::iq_payload_key(stanza)) {
                ("get" | "set", Some(key)) => format!("iq-{ty}/{}/{key}", dest.as_str()),
                _ => format!("iq-{ty}/{}", dest.as_str()),
            }
        }
        _ => format!("{}/{}", kind.as_str(), dest.as_str()),
    }
}

impl Core {
    /// Routes a stanza whose `from` is set and trusted.
    pub async fn route(self: &Arc<Self>, origin: Origin, stanza: Element) {
        self.route_recording(origin, stanza, Refusal::default())
            .await;
    }

    /// Routes like [`Core::route`] and says whether the stanza was refused (bounced by the
    /// router or answered with an error by a module), for a caller that must answer for it.
    pub async fn route_with_outcome(self: &Arc<Self>, origin: Origin, stanza: Element) -> Routed {
        self.route_recording(origin, stanza, Refusal::recording())
            .await
    }

    /// The route, with `refusal` handed to every handler of the stanza's events.
    async fn route_recording(
        self: &Arc<Self>,
        origin: Origin,
        stanza: Element,
        refusal: Refusal,
    ) -> Routed {
        let Some(kind) = Kind::of(&stanza) else {
            return Routed::Taken;
        };
        let from = match stanza.get_attr("from").map(Jid::parse) {
            Some(Ok(j)) => j,
            _ => {
                tracing::debug!("dropping stanza without a valid from");
                return Routed::Taken;
            }
        };
        let to = match stanza.get_attr("to") {
            None => from.bare(),
            Some(s) => match Jid::parse(s) {
                Ok(j) => j,
                Err(_) => return self.refuse(&stanza, C::JidMalformed).await,
            },
        };
        // Answers to IQs the server sent (send_iq) resolve their waiter, here or on the node
        // that sent them, and stop here.
        if kind == Kind::Iq
            && to.resource().is_none()
            && matches!(stanza::stanza_type(&stanza, ""), "result" | "error")
            && (self.iq.resolve(&stanza) || self.forward_iq_answer(&to, &stanza))
        {
            return Routed::Taken;
        }
        // A client's broadcast presence changed its availability: the cluster republishes it.
        if kind == Kind::Presence
            && stanza.get_attr("to").is_none()
            && let Some(session) = origin.session()
        {
            self.sessions_changed(&session.jid);
        }
        let host = self.host(to.domain()).cloned();
        if host.is_none() && self.host(from.domain()).is_none() {
            // Neither end is ours: never relay between two other domains.
            return self.refuse(&stanza, C::RemoteServerNotFound).await;
        }
        let dest = Dest::of(&to);
        let name = event_name(kind, dest, &stanza);
        let mut ev = StanzaEvent {
            core: self.clone(),
            origin,
            stanza,
            from,
            to,
            refusal: refusal.clone(),
        };
        // Stanzas from local clients first pass the sender's host (`pre-message/bare`, …): the
        // place for outbound policy such as blocking.
        if ev.origin.session().is_some()
            && let Some(origin_host) = self.host(ev.from.domain()).cloned()
        {
            let pre = format!("pre-{}/{}", kind.as_str(), dest.as_str());
            ev = match origin_host
                .events
                .fire_with_global(&self.global.events, &pre, ev)
                .await
            {
                Flow::Handled => return refused(&refusal),
                Flow::Continue(ev) => ev,
            };
        }
        let Some(host) = host else {
            // Another domain: out through the s2s manager, which bounces what it cannot deliver.
            return match self.federation.get() {
                Some(f) => {
                    self.send_remote(f, ev.from, ev.to, ev.stanza);
                    Routed::Taken
                }
                None => self.refuse(&ev.stanza, C::RemoteServerNotFound).await,
            };
        };
        // IQs fire the generic `iq/<dest>` first (Prosody's order), then the specific
        // `iq-<type>/<dest>/<ns>:<name>`: policy modules hook the former, features the latter.
        let ev = if kind == Kind::Iq {
            match host
                .events
                .fire_with_global(&self.global.events, &format!("iq/{}", dest.as_str()), ev)
                .await
            {
                Flow::Handled => return refused(&refusal),
                Flow::Continue(ev) => ev,
            }
        } else {
            ev
        };
        let ev = match host
            .events
            .fire_with_global(&self.global.events, &name, ev)
            .await
        {
            Flow::Handled => return refused(&refusal),
            Flow::Continue(ev) => ev,
        };
        self.default_route(ev).await
    }

    /// Bounces `stanza` with `condition`: the outcome of a stanza the router refused.
    async fn refuse(self: &Arc<Self>, stanza: &Element, condition: C) -> Routed {
        self.bounce(stanza, condition).await;
        Routed::Refused(StanzaError::new(condition))
    }

    /// Answers `stanza` with an error from the server (never for errors).
    pub async fn bounce(self: &Arc<Self>, stanza: &Element, condition: C) {
        self.bounce_with(stanza, StanzaError::new(condition)).await;
    }

    /// Answers `stanza` with a specific error (never for errors).
    pub async fn bounce_with(self: &Arc<Self>, stanza: &Element, error: StanzaError) {
        if let Some(reply) = stanza::error_reply(stanza, &error) {
            // The reply's `from` is the original recipient; make sure it parses, else use the sender's host.
            let mut reply = reply;
            if reply
                .get_attr("from")
                .and_then(|f| Jid::parse(f).ok())
                .is_none()
            {
                let host = reply
                    .get_attr("to")
                    .and_then(|t| Jid::parse(t).ok())
                    .map(|j| j.domain().to_string())
                    .unwrap_or_default();
                reply.set_attr("from", Some(host));
            }
            Box::pin(self.route(Origin::Server, reply)).await;
        }
    }

    /// Fires `presence/initial` on the session's host once a session became available.
    pub async fn initial_presence(
        self: &Arc<Self>,
        session: &Arc<super::sessions::SessionHandle>,
        presence: Element,
    ) {
        let Some(host) = self.host(session.jid.domain()).cloned() else {
            return;
        };
        let ev = StanzaEvent {
            core: self.clone(),
            origin: Origin::Client(session.clone()),
            stanza: presence,
            from: session.jid.clone(),
            to: session.jid.bare(),
            refusal: Refusal::default(),
        };
        let _ = host.events.fire("presence/initial", ev).await;
    }

    /// Sends a stanza from the server to a local recipient (used for replies built by modules).
    pub async fn send(self: &Arc<Self>, stanza: Element) {
        self.route(Origin::Server, stanza).await;
    }

    /// Hands an unhandled stanza to the sessions [`Core::delivery`] chose, offline storage or an error.
    async fn default_route(self: &Arc<Self>, ev: StanzaEvent) -> Routed {
        let d = self.delivery(&ev.from, &ev.to, &ev.stanza).await;
        self.deliver(ev, d).await
    }

    /// Delivers a stanza another cluster node forwarded here (its `from` was verified there) to
    /// this node's sessions only, as [`Core::delivery_in`] with [`Scope::Local`] decides: never
    /// forwarded again, so two nodes cannot bounce a stanza between them.
    pub async fn deliver_forwarded(self: &Arc<Self>, stanza: Element) {
        let from = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok());
        let to = stanza.get_attr("to").and_then(|t| Jid::parse(t).ok());
        let (Some(from), Some(to)) = (from, to) else {
            tracing::debug!("dropping a forwarded stanza without a valid from and to");
            return;
        };
        if stanza.name() == "presence"
            && let Some(host) = self.host(to.domain())
            && host.events.has_handlers(PRESENCE_FORWARDED)
        {
            let ev = StanzaEvent {
                core: self.clone(),
                origin: Origin::Server,
                stanza: stanza.clone(),
                from: from.clone(),
                to: to.clone(),
                refusal: Refusal::default(),
            };
            let _ = host.events.fire(PRESENCE_FORWARDED, ev).await;
        }
        let d = self.delivery_in(Scope::Local, &from, &to, &stanza).await;
        let ev = StanzaEvent {
            core: self.clone(),
            origin: Origin::Server,
            stanza,
            from,
            to,
            refusal: Refusal::default(),
        };
        let _ = self.deliver(ev, d).await;
    }

    /// Carries out a delivery decision: local sessions get the stanza, other nodes get it
    /// forwarded once each, else offline storage or an error.
    async fn deliver(self: &Arc<Self>, mut ev: StanzaEvent, d: Delivery) -> Routed {
        match d.fate {
            Fate::Delivered => {
                if !d.remote.is_empty() {
                    let forwarded = self.forward(&ev.stanza, &d.remote);
                    if !forwarded && d.recipients.is_empty() {
                        // Bounded and never silent: the cluster could not take it now.
                        return self.refuse(&ev.stanza, C::RemoteServerTimeout).await;
                    }
                }
                let mut recipients = d.recipients.into_iter().peekable();
                while let Some(s) = recipients.next() {
                    if recipients.peek().is_some() {
                        s.send(ev.stanza.clone());
                    } else {
                        s.send(ev.stanza);
                        break;
                    }
                }
                Routed::Taken
            }
            Fate::Offline => {
                // A message for an offline resource is stored as addressed to the account.
                ev.to = ev.to.bare();
                let Some(host) = self.host(ev.to.domain()).cloned() else {
                    return Routed::Taken;
                };
                let refusal = ev.refusal.clone();
                match host.events.fire(OFFLINE_EVENT, ev).await {
                    Flow::Continue(ev) => self.refuse(&ev.stanza, C::ServiceUnavailable).await,
                    Flow::Handled => refused(&refusal),
                }
            }
            Fate::Bounce(condition) => self.refuse(&ev.stanza, condition).await,
            Fate::Dropped => Routed::Taken,
        }
    }

    /// Forwards `stanza` (its `from` and `to` set) once to each node serving one of `remote`,
    /// sessions the delivery decision chose; whether any node took it.
    pub fn forward(&self, stanza: &Element, remote: &[super::cluster::RemoteSession]) -> bool {
        let Some(cluster) = self.cluster() else {
            return false;
        };
        let mut nodes: Vec<&str> = remote.iter().map(|r| &*r.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        cluster.forward(&nodes, stanza)
    }
}

/// The outcome of a stanza a handler took: refused if it answered with an error.
fn refused(refusal: &Refusal) -> Routed {
    refusal.get().map_or(Routed::Taken, Routed::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::ns;

    #[test]
    fn event_names_follow_prosody() {
        let ping = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .child(Element::new("ping", ns::PING));
        assert_eq!(
            event_name(Kind::Iq, Dest::Host, &ping),
            "iq-get/host/urn:xmpp:ping:ping"
        );
        let res = Element::new("iq", ns::CLIENT).attr("type", "result");
        assert_eq!(event_name(Kind::Iq, Dest::Full, &res), "iq-result/full");
        let m = Element::new("message", ns::CLIENT);
        assert_eq!(event_name(Kind::Message, Dest::Bare, &m), "message/bare");
    }
}
