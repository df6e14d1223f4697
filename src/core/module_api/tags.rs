//! Stream-level elements (nonzas) through the host's event bus — Prosody's `module:hook_tag`.
//!
//! A bound session hands every top-level element that is not a stanza (`<enable/>`, `<r/>`,
//! `<a/>` of XEP-0198, `<active/>`/`<inactive/>` of XEP-0352, later SASL2 and Bind2) to
//! [`Core::fire_tag`], which fires it on the session's host as the stanza event
//! `stanza/<xmlns>:<name>` (Prosody's event name). A module takes such an element with
//! [`ModuleHandle::hook_tag`]; its handler gets a [`StanzaEvent`] whose `origin` is the session,
//! whose `stanza` is the element, `from` the session's full JID and `to` the host, and returns
//! [`Flow::Handled`]. A handler ends the stream by calling [`SessionHandle::close`] with the
//! stream error. Nothing handled it → the protocol's default: `<failed/>` with
//! `<feature-not-implemented/>` for a XEP-0198 `<enable/>`, else the stream error
//! `<unsupported-stanza-type/>`.
//!
//! The lifecycle events (authentication, resource binding, registration, start and stop) are
//! data events, listed with their data in [`crate::core::lifecycle`].

use std::sync::Arc;

use super::ModuleHandle;
use crate::core::Core;
use crate::core::events::{Flow, Handler, HookId, Origin, StanzaEvent};
use crate::core::modules::Host;
use crate::core::sessions::{Outbound, SessionHandle};
use crate::xmpp::error::{StreamError, StreamErrorCondition};
use crate::xmpp::{Element, Jid, ns};

/// The event a nonza `<name xmlns='xmlns'/>` is fired under (Prosody's `stanza/<xmlns>:<name>`).
pub fn tag_event(xmlns: &str, name: &str) -> String {
    format!("stanza/{xmlns}:{name}")
}

impl ModuleHandle {
    /// Hooks the stream-level element `<name xmlns='xmlns'/>` of bound sessions on this host at
    /// `priority` (Prosody's `module:hook_tag(xmlns, name, handler, priority)`); see
    /// [`tag_event`] for the event and the [module docs](self) for what the handler gets.
    pub fn hook_tag(&self, xmlns: &str, name: &str, priority: i32, handler: Handler) -> HookId {
        self.hook(&tag_event(xmlns, name), priority, handler)
    }
}

impl Host {
    /// Whether a module on this host handles the stream-level element `<name xmlns='xmlns'/>`.
    pub fn handles_tag(&self, xmlns: &str, name: &str) -> bool {
        self.events.has_handlers(&tag_event(xmlns, name))
    }
}

impl Core {
    /// Fires a nonza of a bound session on its host's bus; `Err` is the stream error that ends
    /// the stream (none handled it, or a handler closed the session).
    pub async fn fire_tag(
        self: &Arc<Self>,
        session: &Arc<SessionHandle>,
        el: Element,
    ) -> Result<(), StreamError> {
        let host = self.host(session.jid.domain()).cloned();
        let event = tag_event(el.ns(), el.name());
        let to = Jid::parse(session.jid.domain());
        let unhandled = match (host, to) {
            (Some(host), Ok(to)) if host.events.has_handlers(&event) => {
                let ev = StanzaEvent {
                    core: self.clone(),
                    origin: Origin::Client(session.clone()),
                    stanza: el,
                    from: session.jid.clone(),
                    to,
                    refusal: Default::default(),
                };
                match host.events.fire(&event, ev).await {
                    Flow::Handled => None,
                    Flow::Continue(ev) => Some(ev.stanza),
                }
            }
            _ => Some(el),
        };
        if let Some(reason) = session.close_reason() {
            return Err(reason);
        }
        match unhandled {
            None => Ok(()),
            Some(el) if el.is("enable", ns::SM) => {
                // XEP-0198 §3: stream management is not offered here.
                let failed = Element::new("failed", ns::SM)
                    .child(Element::new("feature-not-implemented", ns::STANZAS));
                session.send_nonza(Outbound::Nonza(failed.to_xml(ns::CLIENT)));
                Ok(())
            }
            Some(el) => Err(StreamError::with_text(
                StreamErrorCondition::UnsupportedStanzaType,
                format!("unexpected <{}/> in {}", el.name(), el.ns()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::{Config, ResourceConflict};
    use crate::core::events::handler;
    use crate::core::modules::{LoadError, Module, ModuleContext};
    use crate::storage::Store;

    /// Hooks `<ping xmlns='urn:example:tag'/>` and records what its handler saw.
    struct TagProbe(Arc<Mutex<Vec<(String, String, String)>>>);

    impl Module for TagProbe {
        fn name(&self) -> &'static str {
            "tag_probe"
        }
        fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
            let seen = self.0.clone();
            ctx.hook_tag(
                "urn:example:tag",
                "ping",
                0,
                handler(move |ev| {
                    let seen = seen.clone();
                    async move {
                        let session = ev.origin.session().map(|s| s.jid.to_string());
                        seen.lock().expect("seen").push((
                            session.unwrap_or_default(),
                            ev.from.to_string(),
                            format!("{} {}", ev.to, ev.stanza.name()),
                        ));
                        if ev.stanza.get_attr("bad").is_some()
                            && let Some(s) = ev.origin.session()
                        {
                            s.close(StreamError::new(StreamErrorCondition::PolicyViolation));
                        }
                        Flow::Handled
                    }
                }),
            );
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_hooked_tag_reaches_its_handler_and_an_unhooked_one_is_unsupported() {
        let core =
            Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).expect("core");
        let host = core.host("localhost").cloned().expect("host");
        let seen = Arc::new(Mutex::new(Vec::new()));
        host.load(Arc::downgrade(&core), &TagProbe(seen.clone()))
            .expect("load");
        assert!(host.handles_tag("urn:example:tag", "ping"));
        let bare = Jid::parse("a@localhost").expect("jid");
        let mut bound = core
            .sessions
            .bind(
                &bare,
                "r",
                ResourceConflict::KickOld,
                8,
                crate::core::sessions::Connection::new("t", true),
            )
            .expect("bind");
        let session = bound.handle.clone();

        let ping = Element::new("ping", "urn:example:tag");
        assert!(core.fire_tag(&session, ping.clone()).await.is_ok());
        assert_eq!(
            seen.lock().expect("seen").clone(),
            vec![(
                "a@localhost/r".to_string(),
                "a@localhost/r".to_string(),
                "localhost ping".to_string()
            )]
        );

        let other = Element::new("pong", "urn:example:tag");
        let err = core.fire_tag(&session, other).await.expect_err("unhooked");
        assert_eq!(err.condition, StreamErrorCondition::UnsupportedStanzaType);

        // The smacks module (loaded by default) takes <enable/> through its tag hook...
        let enable = Element::new("enable", ns::SM);
        assert!(core.fire_tag(&session, enable.clone()).await.is_ok());
        assert!(matches!(bound.rx.try_recv(), Ok(Outbound::SmEnabled(_))));
        // ...and without it, <enable/> gets <failed/>, not a stream error.
        core.unload_module("localhost", "smacks")
            .expect("unload smacks");
        assert!(core.fire_tag(&session, enable).await.is_ok());
        match bound.rx.try_recv() {
            Ok(Outbound::Nonza(x)) => assert!(x.contains("feature-not-implemented"), "{x}"),
            other => panic!("expected <failed/>, got {other:?}"),
        }

        // A handler ends the stream by closing the session.
        let bad = ping.attr("bad", "1");
        let err = core.fire_tag(&session, bad).await.expect_err("closed");
        assert_eq!(err.condition, StreamErrorCondition::PolicyViolation);

        host.unload("tag_probe").expect("unload");
        assert!(!host.handles_tag("urn:example:tag", "ping"));
    }
}
