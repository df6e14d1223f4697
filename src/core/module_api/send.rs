//! Sending stanzas (Prosody's `module:send` and `module:send_iq`).

use std::time::Duration;

use super::ModuleHandle;
use crate::core::events::Origin;
use crate::core::iq::IqError;
use crate::xmpp::Element;

impl ModuleHandle {
    /// Routes a stanza (it needs valid `from` and `to`) as if it came from `origin`: a client
    /// session, or `None` for this module's host (the server).
    pub async fn send(&self, stanza: Element, origin: Option<Origin>) {
        if let Some(core) = self.core.upgrade() {
            core.route(origin.unwrap_or(Origin::Server), stanza).await;
        }
    }

    /// Sends an IQ and waits for its response (at most 256 in flight; default timeout 120 s).
    pub async fn send_iq(
        &self,
        stanza: Element,
        timeout: Option<Duration>,
    ) -> Result<Element, IqError> {
        let core = self.core.upgrade().ok_or(IqError::Shutdown)?;
        core.send_iq(stanza, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::config::ResourceConflict;
    use crate::core::events::{Flow, Origin, handler};
    use crate::core::iq::IqError;
    use crate::core::module_api::probe::{core, load};
    use crate::xmpp::{Element, Jid, ns};

    #[tokio::test]
    async fn send_routes_with_the_given_origin() {
        let core = core();
        let from_client = Arc::new(AtomicBool::new(false));
        let seen = from_client.clone();
        load(&core, move |ctx| {
            let seen = seen.clone();
            ctx.hook(
                "message/host",
                0,
                handler(move |ev| {
                    let seen = seen.clone();
                    async move {
                        seen.store(ev.origin.session().is_some(), Ordering::SeqCst);
                        Flow::Handled
                    }
                }),
            );
            Ok(())
        })
        .unwrap();
        let h = core.host("localhost").unwrap().module("probe").unwrap();
        let msg = || {
            Element::new("message", ns::CLIENT)
                .attr("from", "a@localhost/r")
                .attr("to", "localhost")
        };
        let bound = core
            .sessions
            .bind(
                &Jid::parse("a@localhost").unwrap(),
                "r",
                ResourceConflict::KickOld,
                8,
                crate::core::sessions::Connection::new("test", true),
            )
            .unwrap();
        h.send(msg(), Some(Origin::Client(bound.handle.clone())))
            .await;
        assert!(from_client.load(Ordering::SeqCst), "as the session");
        h.send(msg(), None).await;
        assert!(!from_client.load(Ordering::SeqCst), "as the host");
    }

    #[tokio::test]
    async fn send_iq_resolves_with_the_response_or_an_error() {
        let core = core();
        load(&core, |ctx| {
            ctx.hook(
                "iq-get/host/urn:xmpp:ping:ping",
                0,
                handler(|ev| async move {
                    ev.reply(crate::xmpp::stanza::iq_result(&ev.stanza, None))
                        .await;
                    Flow::Handled
                }),
            );
            Ok(())
        })
        .unwrap();
        let h = core.host("localhost").unwrap().module("probe").unwrap();
        let ping = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", "p1")
            .attr("from", "localhost")
            .attr("to", "localhost")
            .child(Element::new("ping", ns::PING));
        let r = h.send_iq(ping, None).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"));
        let unknown = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", "p2")
            .attr("from", "localhost")
            .attr("to", "localhost")
            .child(Element::new("query", "urn:example:none"));
        assert!(matches!(
            h.send_iq(unknown, None).await,
            Err(IqError::ErrorResponse(_))
        ));
        let bad = Element::new("iq", ns::CLIENT).attr("type", "result");
        assert_eq!(h.send_iq(bad, None).await, Err(IqError::Invalid));
        assert_eq!(core.iq.in_flight(), 0);
    }
}
