//! XEP-0198 counting on the wire, the transport's half of stream management: stanzas read and
//! written are counted, written ones kept until acknowledged, and `<r/>` requested after a
//! batch. The nonzas (`<enable/>`, `<r/>`, `<a/>`) are the `smacks` module's tag hooks.

use crate::core::sessions::SessionHandle;
use crate::xmpp::error::{StreamError, StreamErrorCondition as C};
use crate::xmpp::{Element, ns};

/// Unacknowledged stanzas tolerated before a session is closed (the client never acks).
pub const MAX_UNACKED: usize = 10_000;

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

/// Whether outbound stanzas are counted (the session enabled XEP-0198 with us).
pub fn counting(handle: &SessionHandle) -> bool {
    handle.sm().out_enabled
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
    format!("<r xmlns='{}'/>", ns::SM)
}
