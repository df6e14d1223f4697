//! XEP-0049 Private XML Storage (`jabber:iq:private`): a user stores and fetches XML fragments
//! by namespace on their own account, in map store `private` (key = namespace).

use serde_json::json;

use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::faults;
use crate::core::modules::{LoadError, Module, ModuleContext, StoreKind};
use crate::core::priority;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, ns, stanza};

/// The map store holding private XML (user → namespace → `{"xml": …}`).
pub const STORE: &str = "private";
/// Most namespaces stored per user.
pub const MAX_NAMESPACES: usize = 256;

/// The `private` module.
pub struct Private;

/// Whether XEP-0049 forbids storing data in `namespace` (§3: the protocol's own namespaces).
pub fn is_reserved(namespace: &str) -> bool {
    [ns::CLIENT, ns::SERVER, ns::PRIVATE, ""].contains(&namespace)
}

/// The `<query/>` of a private-storage IQ, after checking the requester may use it; bounces otherwise.
async fn checked_query(ev: &StanzaEvent) -> Option<Element> {
    if ev.from.bare() != ev.to {
        ev.reply_error(C::Forbidden.into()).await;
        return None;
    }
    let Some(q) = ev.stanza.get_child("query", ns::PRIVATE) else {
        ev.reply_error(C::BadRequest.into()).await;
        return None;
    };
    if q.children().next().is_none() {
        ev.reply_error(C::BadRequest.into()).await;
        return None;
    }
    if q.children().any(|c| is_reserved(c.ns())) {
        ev.reply_error(C::NotAcceptable.into()).await;
        return None;
    }
    Some(q.clone())
}

async fn get(ev: StanzaEvent) -> Flow {
    let Some(q) = checked_query(&ev).await else {
        return Flow::Handled;
    };
    let mut children = q.children();
    let (Some(want), None) = (children.next(), children.next()) else {
        ev.reply_error(C::NotAcceptable.into()).await;
        return Flow::Handled;
    };
    let node = ev.to.node().unwrap_or_default();
    let store = ev.core.store.map(ev.to.domain(), STORE);
    let stored = match store.get(node, want.ns()).await {
        Ok(v) => v.and_then(|v| v["xml"].as_str().and_then(|x| parse_element(x).ok())),
        Err(e) => {
            ev.reply_error(faults::stanza_error(&e, "private storage read"))
                .await;
            return Flow::Handled;
        }
    };
    let item = stored.unwrap_or_else(|| Element::new(want.name(), want.ns()));
    let reply = Element::new("query", ns::PRIVATE).child(item);
    ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
    Flow::Handled
}

async fn set(ev: StanzaEvent) -> Flow {
    let Some(q) = checked_query(&ev).await else {
        return Flow::Handled;
    };
    let node = ev.to.node().unwrap_or_default();
    let store = ev.core.store.map(ev.to.domain(), STORE);
    let existing = match store.get_all(node).await {
        Ok(m) => m,
        Err(e) => {
            ev.reply_error(faults::stanza_error(&e, "private storage read"))
                .await;
            return Flow::Handled;
        }
    };
    let items: Vec<(String, Option<serde_json::Value>)> = q
        .children()
        .map(|c| (c.ns().to_string(), Some(json!({ "xml": c.to_xml("") }))))
        .collect();
    let added = items
        .iter()
        .filter(|(k, _)| !existing.contains_key(k))
        .map(|(k, _)| k)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if existing.len() + added > MAX_NAMESPACES {
        let err = StanzaError::with_text(
            C::PolicyViolation,
            format!("at most {MAX_NAMESPACES} namespaces are stored per account"),
        );
        ev.reply_error(err).await;
        return Flow::Handled;
    }
    match store.set_many(node, items).await {
        Ok(()) => ev.reply(stanza::iq_result(&ev.stanza, None)).await,
        Err(e) => {
            ev.reply_error(faults::stanza_error(&e, "private storage write"))
                .await;
        }
    }
    Flow::Handled
}

impl Module for Private {
    fn name(&self) -> &'static str {
        "private"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // Opened through the API: what it holds for an account goes with the account.
        ctx.open_store(STORE, StoreKind::Map);
        ctx.add_feature(ns::PRIVATE);
        ctx.hook(
            &format!("iq-get/bare/{}:query", ns::PRIVATE),
            priority::HANDLER,
            handler(get),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:query", ns::PRIVATE),
            priority::HANDLER,
            handler(set),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_namespaces() {
        assert!(is_reserved("jabber:client"));
        assert!(is_reserved("jabber:server"));
        assert!(is_reserved("jabber:iq:private"));
        assert!(!is_reserved("storage:bookmarks"));
    }
}
