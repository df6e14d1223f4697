//! XEP-0160 offline messages: a message for an account with no available resource is stored
//! (durably, bounded per user) with a XEP-0203 `<delay/>`, and delivered at the next initial
//! presence: streamed page by page within the session's send queue
//! ([`crate::core::sessions::SessionHandle::send_paced`]), so a backlog larger than the queue
//! reaches a client that reads instead of disconnecting it, each page deleted once queued.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::core::accounts::now;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::faults;
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

/// Messages read from the store per page while a backlog streams.
const PAGE: usize = 100;

/// Accounts whose backlog is streaming now (one delivery per account at a time).
type Flushing = Arc<Mutex<HashSet<String>>>;

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
        let flushing = Flushing::default();
        ctx.hook(
            "presence/initial",
            priority::AFTER_HANDLERS,
            handler(move |ev| {
                let flushing = flushing.clone();
                async move {
                    start_flush(&ev, flushing);
                    Flow::Continue(ev)
                }
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
            ev.reply_error(faults::stanza_error(&e, "offline store"))
                .await;
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
        // Bounced to the sender (`wait`): the message is neither stored nor delivered.
        ev.reply_error(faults::stanza_error(&e, "offline store"))
            .await;
    }
    Flow::Handled
}

/// Starts streaming the account's backlog to the session in a task of its own (the client's
/// reader goes on meanwhile); does nothing if a delivery to that account is under way.
fn start_flush(ev: &StanzaEvent, flushing: Flushing) {
    let Some(session) = ev.origin.session().cloned() else {
        return;
    };
    let account = session.jid.bare().to_string();
    if !flushing
        .lock()
        .map(|mut f| f.insert(account.clone()))
        .unwrap_or(false)
    {
        return;
    }
    let core = ev.core.clone();
    ev.core.tasks.spawn(async move {
        flush(&core, &session).await;
        if let Ok(mut f) = flushing.lock() {
            f.remove(&account);
        }
    });
}

/// Delivers the stored messages of the session's account, oldest first, one page at a time:
/// each stanza waits for room in the session's queue; what was queued is then deleted. Stops
/// (keeping the rest stored) when the session ends or stops reading.
async fn flush(core: &crate::core::Core, session: &Arc<crate::core::sessions::SessionHandle>) {
    let user = session.jid.bare();
    let node = user.node().unwrap_or_default().to_string();
    let archive = core.store.archive(user.domain(), STORE);
    let mut previous_first = None;
    loop {
        let query = ArchiveQuery {
            limit: Some(PAGE),
            ..ArchiveQuery::default()
        };
        let page = match archive.find(&node, &query).await {
            Ok(p) if !p.items.is_empty() => p,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, "could not read offline messages");
                return;
            }
        };
        // A page that did not go away (its deletion failed silently) is not sent twice.
        let first = page.items.first().map(|i| i.id.clone());
        if first == previous_first {
            return;
        }
        previous_first = first;
        let mut delivered = Vec::new();
        let mut complete = true;
        for item in &page.items {
            if let Some(mut el) = item.value["xml"]
                .as_str()
                .and_then(|x| parse_element(x).ok())
            {
                el.set_attr("to", Some(session.jid.to_string()));
                let queued = tokio::select! {
                    q = session.send_paced(el) => q,
                    _ = core.shutdown.cancelled() => false,
                };
                if !queued {
                    complete = false;
                    break;
                }
            }
            delivered.push(item.id.clone());
        }
        if !delivered.is_empty() {
            let q = ArchiveQuery {
                ids: Some(delivered),
                ..ArchiveQuery::default()
            };
            if let Err(e) = archive.delete(&node, &q).await {
                tracing::error!(error = %e, "could not delete delivered offline messages");
                return;
            }
        }
        if !complete {
            return;
        }
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
