//! XEP-0198 stream management and XEP-0352 client state indication on the wire: the nonzas a
//! bound session handles (`<enable/>`, `<r/>`, `<a/>`, `<active/>`, `<inactive/>`) and
//! resumption after a lost connection (`<resume/>`).

use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;
use crate::core::sessions::{Outbound, SessionHandle};
use crate::xmpp::error::{StreamError, StreamErrorCondition as C};
use crate::xmpp::{Element, ns};

/// XEP-0198 namespace.
pub const NS_SM: &str = ns::SM;
/// XEP-0352 namespace.
pub const NS_CSI: &str = ns::CSI;
/// The module providing stream management.
pub const SM_MODULE: &str = "smacks";
/// The module providing client state indication.
pub const CSI_MODULE: &str = "csi";
/// Unacknowledged stanzas tolerated before a session is closed (the client never acks).
pub const MAX_UNACKED: usize = 10_000;

/// Settings of the `smacks` module for a host.
#[derive(Clone, Copy, Debug)]
pub struct SmSettings {
    /// Longest resumption window offered.
    pub max_hibernation: Duration,
}

/// The `smacks` settings of `host`, if the module is loaded there.
pub fn settings(core: &Core, host: &str) -> Option<SmSettings> {
    let module = core.host(host)?.module(SM_MODULE)?;
    let secs = module.option_integer("smacks_hibernation_time", 300, 0, 86_400);
    Some(SmSettings {
        max_hibernation: Duration::from_secs(secs as u64),
    })
}

fn failed(condition: &str) -> Outbound {
    Outbound::Nonza(
        Element::new("failed", NS_SM)
            .child(Element::new(condition, ns::STANZAS))
            .to_xml(ns::CLIENT),
    )
}

fn random_id() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

/// Handles a stream-level element of a bound session; `Ok(false)` if it is not one of ours.
pub fn handle_nonza(
    core: &Arc<Core>,
    handle: &Arc<SessionHandle>,
    el: &Element,
) -> Result<bool, StreamError> {
    let host = handle.jid.domain();
    if el.ns() == NS_CSI {
        let loaded = core.host(host).is_some_and(|h| h.is_loaded(CSI_MODULE));
        match el.name() {
            "active" if loaded => handle.set_inactive(false),
            "inactive" if loaded => handle.set_inactive(true),
            _ => return Ok(false),
        }
        return Ok(true);
    }
    if el.ns() != NS_SM {
        return Ok(false);
    }
    match el.name() {
        "enable" => {
            let Some(cfg) = settings(core, host) else {
                handle.send_nonza(failed("feature-not-implemented"));
                return Ok(true);
            };
            let mut sm = handle.sm();
            if sm.enabled {
                drop(sm);
                handle.send_nonza(failed("unexpected-request"));
                return Ok(true);
            }
            sm.enabled = true;
            sm.h_in = 0;
            let wants_resume = matches!(el.get_attr("resume"), Some("true" | "1"));
            let mut enabled = Element::new("enabled", NS_SM);
            if wants_resume && !cfg.max_hibernation.is_zero() {
                let asked = el
                    .get_attr("max")
                    .and_then(|m| m.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(cfg.max_hibernation);
                let max = asked.min(cfg.max_hibernation).max(Duration::from_secs(1));
                let id = random_id();
                sm.id = Some(id.clone());
                sm.max = max;
                drop(sm);
                core.sessions.register_resumable(&id, handle.clone());
                enabled.set_attr("id", Some(id));
                enabled.set_attr("resume", Some("true".into()));
                enabled.set_attr("max", Some(max.as_secs().to_string()));
            } else {
                drop(sm);
            }
            handle.send_nonza(Outbound::SmEnabled(enabled.to_xml(ns::CLIENT)));
        }
        "r" => {
            let sm = handle.sm();
            if sm.enabled {
                let a = format!("<a xmlns='{NS_SM}' h='{}'/>", sm.h_in);
                drop(sm);
                handle.send_nonza(Outbound::Nonza(a));
            }
        }
        "a" => {
            let Some(h) = el.get_attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                return Err(StreamError::with_text(
                    C::BadFormat,
                    "<a/> needs a numeric h",
                ));
            };
            let mut sm = handle.sm();
            sm.ack_pending = false;
            if let Err(e) = sm.ack(h) {
                return Err(StreamError::with_text(C::UndefinedCondition, e.to_string()));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Counts a stanza received from the client.
pub fn count_inbound(handle: &SessionHandle) {
    let mut sm = handle.sm();
    if sm.enabled {
        sm.h_in = sm.h_in.wrapping_add(1);
    }
}

/// Records a stanza being written (when counting) and returns whether to request an ack.
pub fn count_outbound(handle: &SessionHandle, stanza: &Element) -> Result<(), StreamError> {
    let mut sm = handle.sm();
    if sm.out_enabled {
        sm.h_out = sm.h_out.wrapping_add(1);
        let seq = sm.h_out;
        sm.unacked.push_back((seq, stanza.clone()));
        if sm.unacked.len() > MAX_UNACKED {
            return Err(StreamError::with_text(
                C::ResourceConstraint,
                "too many unacknowledged stanzas",
            ));
        }
    }
    Ok(())
}

/// Whether to append an `<r/>` after a batch (one outstanding request at a time).
pub fn want_ack(handle: &SessionHandle) -> bool {
    let mut sm = handle.sm();
    if sm.out_enabled && !sm.ack_pending && !sm.unacked.is_empty() {
        sm.ack_pending = true;
        return true;
    }
    false
}

/// The `<r/>` nonza.
pub fn ack_request() -> String {
    format!("<r xmlns='{NS_SM}'/>")
}
