//! XEP-0160 offline messages: a message for an account with no available resource is stored
//! (durably, bounded per user) with a XEP-0203 `<delay/>`, and delivered at the next initial presence.

use serde_json::json;

use crate::core::accounts::now;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext, StoreKind};
use crate::core::priority;
use crate::storage::ArchiveQuery;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, Jid, ns};

/// The archive store holding offline messages.
pub const STORE: &str = "offline";

/// The `offline` module.
pub struct Offline;

impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn options(&self) -> &'static [&'static str] {
        &["offline_max_messages"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // Opened through the API: what it holds for an account goes with the account.
        ctx.open_store(STORE, StoreKind::Archive);
        let max = ctx.option_integer("offline_max_messages", 1000, 1, 1_000_000) as usize;
        ctx.add_feature(ns::OFFLINE);
        ctx.hook(
            "message/offline",
            priority::HANDLER,
            handler(move |ev| async move { store(ev, max).await }),
        );
        // Runs after the presence module broadcast and probed.
        ctx.hook(
            "presence/initial",
            priority::AFTER_HANDLERS,
            handler(|ev| async move {
                flush(&ev).await;
                Flow::Continue(ev)
            }),
        );
        Ok(())
    }
}

/// Stores one message; acknowledged (nothing bounced) only once it is on disk.
async fn store(ev: StanzaEvent, max: usize) -> Flow {
    let user = ev.to.bare();
    let archive = ev.core.store.archive(user.domain(), STORE);
    let node = user.node().unwrap_or_default().to_string();
    match archive.count(&node).await {
        Ok(n) if n >= max => {
            ev.reply_error(StanzaError::with_text(
                C::ServiceUnavailable,
                "the recipient's offline storage is full",
            ))
            .await;
            return Flow::Handled;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "offline store failed");
            ev.reply_error(C::InternalServerError.into()).await;
            return Flow::Handled;
        }
    }
    let when = now();
    let mut stanza = ev.stanza.clone();
    stanza.remove_children("delay", ns::DELAY);
    stanza.push(
        Element::new("delay", ns::DELAY)
            .attr("from", user.domain())
            .attr("stamp", crate::xmpp::datetime::format(when)),
    );
    let value = json!({ "xml": stanza.to_xml(ns::CLIENT) });
    if let Err(e) = archive
        .append(&node, None, when, ev.from.bare().as_str(), value)
        .await
    {
        tracing::error!(error = %e, "offline store failed");
        ev.reply_error(C::InternalServerError.into()).await;
    }
    Flow::Handled
}

/// Delivers and then deletes the stored messages of the session's account.
async fn flush(ev: &StanzaEvent) {
    let Some(session) = ev.origin.session() else {
        return;
    };
    let user = session.jid.bare();
    let node = user.node().unwrap_or_default().to_string();
    let archive = ev.core.store.archive(user.domain(), STORE);
    let page = match archive.find(&node, &ArchiveQuery::default()).await {
        Ok(p) if !p.items.is_empty() => p,
        _ => return,
    };
    let mut delivered = Vec::new();
    for item in &page.items {
        if let Some(mut el) = item.value["xml"]
            .as_str()
            .and_then(|x| parse_element(x).ok())
        {
            el.set_attr("to", Some(session.jid.to_string()));
            if !session.send(el) {
                break;
            }
        }
        delivered.push(item.id.clone());
    }
    let q = ArchiveQuery {
        ids: Some(delivered),
        ..ArchiveQuery::default()
    };
    if let Err(e) = archive.delete(&node, &q).await {
        tracing::error!(error = %e, "could not delete delivered offline messages");
    }
}

/// Number of messages waiting for `user` (for the admin API and tests).
pub async fn count(core: &crate::core::Core, user: &Jid) -> usize {
    core.store
        .archive(user.domain(), STORE)
        .count(user.node().unwrap_or_default())
        .await
        .unwrap_or(0)
}
