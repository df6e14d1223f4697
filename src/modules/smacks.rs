//! XEP-0198 stream management: acks, counters and resumption within a configurable window.
//! The module offers the stream feature and takes `<enable/>`, `<r/>` and `<a/>` through tag
//! hooks; the session's counters live behind `crate::core::stream_management`, the counting of
//! written stanzas and `<resume/>` (which swaps the connection under a session) in the transport.

use std::sync::Arc;
use std::time::Duration;

use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext, ModuleHandle};
use crate::core::sessions::Outbound;
use crate::xmpp::error::{StreamError, StreamErrorCondition as C};
use crate::xmpp::{Element, ns};

/// The `smacks` module.
pub struct Smacks;

impl Module for Smacks {
    fn name(&self) -> &'static str {
        "smacks"
    }

    fn options(&self) -> &'static [&'static str] {
        &["smacks_hibernation_time"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_stream_feature(Element::new("sm", ns::SM));
        let module = ctx.handle();
        ctx.hook_tag(
            ns::SM,
            "enable",
            0,
            handler(move |ev| {
                let module = module.clone();
                async move {
                    enable(&module, &ev);
                    Flow::Handled
                }
            }),
        );
        ctx.hook_tag(
            ns::SM,
            "r",
            0,
            handler(|ev| async move { ack_request(&ev) }),
        );
        ctx.hook_tag(ns::SM, "a", 0, handler(|ev| async move { ack(&ev) }));
        Ok(())
    }
}

fn failed(condition: &str) -> Outbound {
    Outbound::Nonza(
        Element::new("failed", ns::SM)
            .child(Element::new(condition, ns::STANZAS))
            .to_xml(ns::CLIENT),
    )
}

fn random_id() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

/// `<enable/>`: counting starts; with `resume='true'` the session becomes resumable.
fn enable(module: &Arc<ModuleHandle>, ev: &StanzaEvent) {
    let Some(session) = ev.origin.session() else {
        return;
    };
    let secs = module.option_integer("smacks_hibernation_time", 300, 0, 86_400);
    let window = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let wants_resume = matches!(ev.stanza.get_attr("resume"), Some("true" | "1"));
    let resume = (wants_resume && !window.is_zero()).then(|| {
        let asked = ev
            .stanza
            .get_attr("max")
            .and_then(|m| m.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(window);
        (random_id(), asked.min(window).max(Duration::from_secs(1)))
    });
    if !session.sm_enable(resume.clone()) {
        session.send_nonza(failed("unexpected-request"));
        return;
    }
    let mut enabled = Element::new("enabled", ns::SM);
    if let Some((id, max)) = resume {
        ev.core.sessions.register_resumable(&id, session.clone());
        enabled.set_attr("id", Some(id));
        enabled.set_attr("resume", Some("true".into()));
        enabled.set_attr("max", Some(max.as_secs().to_string()));
    }
    session.send_nonza(Outbound::SmEnabled(enabled.to_xml(ns::CLIENT)));
}

/// `<r/>`: answers with the handled count (ignored before `<enable/>`).
fn ack_request(ev: &StanzaEvent) -> Flow {
    if let Some(session) = ev.origin.session()
        && let Some(h) = session.sm_handled()
    {
        session.send_nonza(Outbound::Nonza(format!("<a xmlns='{}' h='{h}'/>", ns::SM)));
    }
    Flow::Handled
}

/// `<a/>`: drops what the client acknowledged; a bad or too high `h` ends the stream.
fn ack(ev: &StanzaEvent) -> Flow {
    let Some(session) = ev.origin.session() else {
        return Flow::Handled;
    };
    match ev.stanza.get_attr("h").and_then(|h| h.parse::<u32>().ok()) {
        None => session.close(StreamError::with_text(
            C::BadFormat,
            "<a/> needs a numeric h",
        )),
        Some(h) => {
            if let Err(e) = session.sm_acknowledge(h) {
                session.close(StreamError::with_text(C::UndefinedCondition, e.to_string()));
            }
        }
    }
    Flow::Handled
}
