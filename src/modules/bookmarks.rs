//! XEP-0411 bookmarks conversion: XEP-0049 private storage of `storage:bookmarks` (XEP-0048)
//! is served from, and mirrored to, the XEP-0402 PEP node `urn:xmpp:bookmarks:1`.
//!
//! The coupling with the `private` module is one hook on each of its events, at a higher
//! priority ([`priority::INTERCEPT`](crate::core::priority::INTERCEPT)): a get of `<storage xmlns='storage:bookmarks'/>` is answered here from
//! the PEP node (one `<conference/>` per item, plus the `<url/>` entries the private copy kept); a
//! set publishes every new or changed conference (keeping XEP-0402 `<extensions/>`), retracts the
//! conferences no longer listed, then passes the IQ on so the `private` module stores its copy
//! and answers (or answers itself when `private` is not loaded). A publish to the XEP-0402 node
//! therefore shows in the next private get. Nothing happens when `pep` is not loaded.
//! Advertises `urn:xmpp:bookmarks:1#compat` on accounts.

use std::collections::BTreeMap;

use serde_json::json;

use super::pep::{self, Publish, form::Form};
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, Jid, ns, stanza};

/// The `bookmarks` module.
pub struct Bookmarks;

/// The node configuration XEP-0402 §3 asks for, as publish-options.
pub fn node_options() -> Form {
    Form::submit(
        super::pep::form::PUBLISH_OPTIONS,
        &[
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
            ("pubsub#access_model", "whitelist"),
        ],
    )
}

/// A XEP-0402 `<conference/>` payload as a XEP-0048 `<conference jid=…/>`.
pub fn to_legacy(jid: &str, c: &Element) -> Element {
    let mut out = Element::new("conference", ns::BOOKMARKS).attr("jid", jid);
    if let Some(n) = c.get_attr("name") {
        out.set_attr("name", Some(n.to_string()));
    }
    let autojoin = matches!(c.get_attr("autojoin"), Some("true" | "1"));
    out.set_attr("autojoin", Some(autojoin.to_string()));
    for tag in ["nick", "password"] {
        if let Some(t) = c.get_child(tag, ns::BOOKMARKS2) {
            out.push(Element::new(tag, ns::BOOKMARKS).text(t.text_content()));
        }
    }
    out
}

/// A XEP-0048 `<conference/>` as its room JID and XEP-0402 payload (keeping `extensions` of the
/// payload it replaces); `None` without a valid `jid`.
pub fn from_legacy(c: &Element, previous: Option<&Element>) -> Option<(String, Element)> {
    let jid = Jid::parse(c.get_attr("jid")?).ok()?.bare();
    let mut out = Element::new("conference", ns::BOOKMARKS2);
    if let Some(n) = c.get_attr("name") {
        out.set_attr("name", Some(n.to_string()));
    }
    let autojoin = matches!(c.get_attr("autojoin"), Some("true" | "1"));
    out.set_attr("autojoin", Some(autojoin.to_string()));
    for tag in ["nick", "password"] {
        if let Some(t) = c.get_child(tag, ns::BOOKMARKS) {
            out.push(Element::new(tag, ns::BOOKMARKS2).text(t.text_content()));
        }
    }
    if let Some(ext) = previous.and_then(|p| p.get_child("extensions", ns::BOOKMARKS2)) {
        out.push(ext.clone());
    }
    Some((jid.to_string(), out))
}

/// The bookmarks child of a private-storage query, if that is what it is about.
fn bookmarks_request(ev: &StanzaEvent) -> Option<Element> {
    if ev.from.bare() != ev.to {
        return None;
    }
    let q = ev.stanza.get_child("query", ns::PRIVATE)?;
    q.get_child("storage", ns::BOOKMARKS).cloned()
}

/// The `<url/>` entries of the private copy (XEP-0402 has no place for them).
async fn stored_urls(ev: &StanzaEvent) -> Vec<Element> {
    let node = ev.to.node().unwrap_or_default();
    let store = ev.core.store.map(ev.to.domain(), super::private::STORE);
    let Ok(Some(v)) = store.get(node, ns::BOOKMARKS).await else {
        return Vec::new();
    };
    v["xml"]
        .as_str()
        .and_then(|x| parse_element(x).ok())
        .map(|s| {
            s.children()
                .filter(|c| c.is("url", ns::BOOKMARKS))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

async fn get(ev: StanzaEvent) -> Flow {
    let (Some(_), Some(svc)) = (
        bookmarks_request(&ev),
        pep::service(&ev.core, ev.to.domain()),
    ) else {
        return Flow::Continue(ev);
    };
    let q = ev.stanza.get_child("query", ns::PRIVATE);
    if q.is_some_and(|q| q.children().count() != 1) {
        return Flow::Continue(ev);
    }
    let items = match svc.items(&ev.core, &ev.to, ns::BOOKMARKS2).await {
        Ok((_, items)) => items,
        Err(pep::PepError::NodeNotFound) => Vec::new(),
        Err(e) => {
            tracing::warn!(jid = %ev.to, error = %e, "cannot read bookmarks");
            ev.reply_error(C::InternalServerError.into()).await;
            return Flow::Handled;
        }
    };
    let mut storage = Element::new("storage", ns::BOOKMARKS);
    for (id, item) in items {
        if let Some(c) = item
            .payload()
            .filter(|p| p.is("conference", ns::BOOKMARKS2))
        {
            storage.push(to_legacy(&id, &c));
        }
    }
    for url in stored_urls(&ev).await {
        storage.push(url);
    }
    let reply = Element::new("query", ns::PRIVATE).child(storage);
    ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
    Flow::Handled
}

async fn set(ev: StanzaEvent) -> Flow {
    let (Some(storage), Some(svc)) = (
        bookmarks_request(&ev),
        pep::service(&ev.core, ev.to.domain()),
    ) else {
        return Flow::Continue(ev);
    };
    let owner = ev.to.clone();
    let existing: BTreeMap<String, Element> =
        match svc.items(&ev.core, &owner, ns::BOOKMARKS2).await {
            Ok((_, items)) => items
                .into_iter()
                .filter_map(|(id, i)| Some((id, i.payload()?)))
                .collect(),
            Err(pep::PepError::NodeNotFound) => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(jid = %owner, error = %e, "cannot read bookmarks");
                ev.reply_error(C::InternalServerError.into()).await;
                return Flow::Handled;
            }
        };
    let max = svc.limits().max_items as usize;
    let mut wanted: BTreeMap<String, Element> = BTreeMap::new();
    for c in storage
        .children()
        .filter(|c| c.is("conference", ns::BOOKMARKS))
    {
        let previous = c
            .get_attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .and_then(|j| existing.get(j.bare().as_str()));
        if let Some((jid, payload)) = from_legacy(c, previous) {
            wanted.insert(jid, payload);
        }
        if wanted.len() > max {
            ev.reply_error(C::NotAcceptable.into()).await;
            return Flow::Handled;
        }
    }
    for (jid, payload) in &wanted {
        if existing.get(jid) == Some(payload) {
            continue;
        }
        let req = Publish {
            node: ns::BOOKMARKS2.to_string(),
            id: Some(jid.clone()),
            payload: payload.clone(),
            options: Some(node_options()),
            preconditions: false,
            fire_event: false,
        };
        if let Err(e) = svc.publish(&ev.core, &owner, req).await {
            tracing::warn!(jid = %owner, error = %e, "cannot convert a bookmark");
            ev.reply_error(C::InternalServerError.into()).await;
            return Flow::Handled;
        }
    }
    for jid in existing.keys().filter(|j| !wanted.contains_key(*j)) {
        match svc
            .retract(&ev.core, &owner, ns::BOOKMARKS2, jid, Some(true))
            .await
        {
            Ok(()) | Err(pep::PepError::ItemNotFound) => {}
            Err(e) => tracing::warn!(jid = %owner, error = %e, "cannot retract a bookmark"),
        }
    }
    // The private module keeps its copy (with <url/> entries) and answers.
    let private_loaded = ev
        .core
        .host(ev.to.domain())
        .is_some_and(|h| h.is_loaded("private"));
    if private_loaded {
        return Flow::Continue(ev);
    }
    ev.reply(stanza::iq_result(&ev.stanza, None)).await;
    Flow::Handled
}

impl Module for Bookmarks {
    fn name(&self) -> &'static str {
        "bookmarks"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_item(super::disco::ACCOUNT_FEATURE, json!(ns::BOOKMARKS_COMPAT));
        ctx.hook(
            &format!("iq-get/bare/{}:query", ns::PRIVATE),
            priority::INTERCEPT,
            handler(get),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:query", ns::PRIVATE),
            priority::INTERCEPT,
            handler(set),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conferences_convert_both_ways() {
        let legacy = parse_element(
            "<conference xmlns='storage:bookmarks' jid='Room@muc.example' name='R' autojoin='1'>\
               <nick>me</nick><password>pw</password></conference>",
        )
        .unwrap();
        let prev = parse_element(
            "<conference xmlns='urn:xmpp:bookmarks:1'><extensions><x xmlns='urn:a'/></extensions></conference>",
        )
        .unwrap();
        let (jid, modern) = from_legacy(&legacy, Some(&prev)).unwrap();
        assert_eq!(jid, "room@muc.example");
        assert_eq!(modern.get_attr("autojoin"), Some("true"));
        assert!(modern.get_child("extensions", ns::BOOKMARKS2).is_some());
        let back = to_legacy(&jid, &modern);
        assert_eq!(back.get_attr("jid"), Some("room@muc.example"));
        assert_eq!(back.get_attr("name"), Some("R"));
        assert_eq!(
            back.get_child("nick", ns::BOOKMARKS)
                .map(|n| n.text_content()),
            Some("me".to_string())
        );
        let no_jid = parse_element("<conference xmlns='storage:bookmarks'/>").unwrap();
        assert!(from_legacy(&no_jid, None).is_none());
    }
}
