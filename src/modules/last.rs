//! XEP-0012 Last Activity (`jabber:iq:last`), module `last`.
//!
//! - To the server: seconds since this server started ([`crate::core::Core::started`], its uptime).
//! - To a user's bare JID: `0` while the user has an available resource, else seconds since their
//!   last logout with its status text. Only the user may ask (until rosters exist, which will
//!   extend it to contacts subscribed to the user's presence); others get `forbidden`.
//!
//! Logouts are recorded from broadcast unavailable presence (`presence/bare` with `to` = the
//! sender's own bare JID), including the one the server routes when a client disconnects.

use serde_json::json;

use crate::core::Core;
use crate::core::accounts::now;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext, StoreKind};
use crate::core::priority;
use crate::storage::StorageError;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::{Element, Jid, ns, stanza};

/// The keyval store holding `{"time": unix seconds, "status": text}` per user.
pub const STORE: &str = "last";

/// Longest status text kept with a logout.
const MAX_STATUS_CHARS: usize = 1024;

/// The `last` module.
pub struct Last;

/// A user's recorded last logout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastActivity {
    /// Seconds since the logout.
    pub seconds: u64,
    /// The status text of the unavailable presence (may be empty).
    pub status: String,
}

/// The last logout recorded for `user` (a bare JID), if any.
pub async fn last_activity(core: &Core, user: &Jid) -> Result<Option<LastActivity>, StorageError> {
    let Some(node) = user.node() else {
        return Ok(None);
    };
    let v = core.store.keyval(user.domain(), STORE).get(node).await?;
    Ok(v.map(|v| LastActivity {
        seconds: v["time"]
            .as_i64()
            .map(|t| now().saturating_sub(t).max(0) as u64)
            .unwrap_or(0),
        status: v["status"].as_str().unwrap_or_default().to_string(),
    }))
}

/// Records a broadcast unavailable presence (to the sender's own bare JID) as the user's logout.
async fn record_logout(ev: &StanzaEvent) {
    if stanza::stanza_type(&ev.stanza, "") != "unavailable" || ev.from.bare() != ev.to {
        return;
    }
    let Some(node) = ev.from.node() else {
        return;
    };
    let status: String = ev
        .stanza
        .get_child("status", ns::CLIENT)
        .map(|s| s.text_content().chars().take(MAX_STATUS_CHARS).collect())
        .unwrap_or_default();
    let value = json!({ "time": now(), "status": status });
    if let Err(e) = ev
        .core
        .store
        .keyval(ev.from.domain(), STORE)
        .set(node, Some(value))
        .await
    {
        tracing::warn!(jid = %ev.from, error = %e, "cannot record last activity");
    }
}

fn query(seconds: u64, status: &str) -> Element {
    let mut q = Element::new("query", ns::LAST).attr("seconds", seconds.to_string());
    if !status.is_empty() {
        q.push_text(status);
    }
    q
}

impl Module for Last {
    fn name(&self) -> &'static str {
        "last"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // Opened through the API: what it holds for an account goes with the account.
        ctx.open_store(STORE, StoreKind::KeyVal);
        ctx.add_feature(ns::LAST);
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::LAST),
            priority::HANDLER,
            handler(|ev| async move {
                let q = query(ev.core.started.elapsed().as_secs(), "");
                ev.reply(stanza::iq_result(&ev.stanza, Some(q))).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-get/bare/{}:query", ns::LAST),
            priority::HANDLER,
            handler(|ev| async move {
                if ev.from.bare() != ev.to {
                    ev.reply_error(C::Forbidden.into()).await;
                    return Flow::Handled;
                }
                let online = ev
                    .core
                    .sessions
                    .resources(&ev.to)
                    .iter()
                    .any(|s| s.is_available());
                let reply = if online {
                    Ok(Some(LastActivity {
                        seconds: 0,
                        status: String::new(),
                    }))
                } else {
                    last_activity(&ev.core, &ev.to).await
                };
                match reply {
                    Ok(Some(la)) => {
                        let q = query(la.seconds, &la.status);
                        ev.reply(stanza::iq_result(&ev.stanza, Some(q))).await;
                    }
                    Ok(None) => ev.reply_error(C::ItemNotFound.into()).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "last activity lookup failed");
                        ev.reply_error(C::InternalServerError.into()).await;
                    }
                }
                Flow::Handled
            }),
        );
        // Broadcast presence from the user's clients passes `pre-presence/bare` (where the
        // presence module consumes it); the server's own on-behalf unavailable passes `presence/bare`.
        ctx.hook(
            "pre-presence/bare",
            priority::OBSERVE,
            handler(|ev| async move {
                record_logout(&ev).await;
                Flow::Continue(ev)
            }),
        );
        ctx.hook(
            "presence/bare",
            priority::OBSERVE,
            handler(|ev| async move {
                if ev.origin.session().is_none() {
                    record_logout(&ev).await;
                }
                Flow::Continue(ev)
            }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_carries_seconds_and_status() {
        let q = query(42, "gone fishing");
        assert_eq!(q.get_attr("seconds"), Some("42"));
        assert_eq!(q.text_content(), "gone fishing");
        assert!(query(0, "").nodes().is_empty());
    }
}
