//! XEP-0030 Service Discovery: the server's identity and the features of the modules loaded on the host.

use crate::core::events::{Flow, handler};
use crate::core::modules::{Host, LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::error::StanzaErrorCondition;
use crate::xmpp::{Element, ns, stanza};

/// Host item key (`ctx.add_item`) under which modules list account-level disco#info features
/// (string values), answered for a user's bare JID.
pub const ACCOUNT_FEATURE: &str = "account-feature";

/// Host item key under which modules list account-level disco#info identities
/// (`{"category", "type", "name"}` objects; e.g. `pubsub/pep` from the `pep` module).
pub const ACCOUNT_IDENTITY: &str = "account-identity";

/// The XEP-0115 node naming this software in the server's entity capabilities.
pub const CAPS_NODE: &str = "urn:oxpecker:caps";

/// The server's disco#info `<query/>` for `host`: identities, features and extended info of
/// the loaded modules.
pub fn server_info(host: &Host) -> Element {
    let mut query = Element::new("query", ns::DISCO_INFO).child(
        Element::new("identity", ns::DISCO_INFO)
            .attr("category", "server")
            .attr("type", "im")
            .attr("name", "Oxpecker"),
    );
    for (category, kind, name) in host.identities() {
        query.push(
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", category)
                .attr("type", kind)
                .attr("name", name),
        );
    }
    for f in host.features() {
        query.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
    }
    for form in host.extensions() {
        query.push(form);
    }
    query
}

/// The disco#info `<query/>` of component `host`: the identities, features and extended info
/// of its modules (no server identity).
pub fn component_info(host: &Host) -> Element {
    let mut query = Element::new("query", ns::DISCO_INFO);
    for (category, kind, name) in host.identities() {
        query.push(
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", category)
                .attr("type", kind)
                .attr("name", name),
        );
    }
    for f in host.features() {
        query.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
    }
    for form in host.extensions() {
        query.push(form);
    }
    query
}

/// The server's XEP-0115 `<c/>` (offered as a stream feature), if `disco` is loaded on `host`;
/// computed once per change of the host's disco#info and cached on the host.
pub fn server_caps(host: &Host) -> Option<Element> {
    host.caps(compute_server_caps)
}

/// [`server_caps`] computed afresh from the host's current disco#info.
fn compute_server_caps(host: &Host) -> Option<Element> {
    if !host.is_loaded("disco") {
        return None;
    }
    let ver = super::pep::caps::compute_ver(&server_info(host), "sha-1")?;
    Some(
        Element::new("c", ns::CAPS)
            .attr("hash", "sha-1")
            .attr("node", CAPS_NODE)
            .attr("ver", ver),
    )
}

/// The `disco` module.
pub struct Disco;

impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(ns::DISCO_INFO);
        ctx.add_feature(ns::DISCO_ITEMS);
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_INFO),
            priority::HANDLER,
            handler(|ev| async move {
                let Some(host) = ev.core.host(ev.to.domain()).cloned() else {
                    return Flow::Continue(ev);
                };
                let mut query = server_info(&host);
                if let Some(node) = ev.stanza.first_child().and_then(|q| q.get_attr("node")) {
                    // Only the XEP-0115 caps node of the current feature set is known.
                    let caps_node = server_caps(&host)
                        .and_then(|c| c.get_attr("ver").map(|v| format!("{CAPS_NODE}#{v}")));
                    if caps_node.as_deref() != Some(node) {
                        ev.reply_error(StanzaErrorCondition::ItemNotFound.into())
                            .await;
                        return Flow::Handled;
                    }
                    query.set_attr("node", Some(node.to_string()));
                }
                ev.reply(stanza::iq_result(&ev.stanza, Some(query))).await;
                Flow::Handled
            }),
        );
        // Account disco#info (XEP-0030 on a user's bare JID), answered by the server for the
        // account owner and contacts subscribed to its presence; modules list account-level
        // features as host items `ACCOUNT_FEATURE` (strings).
        ctx.hook(
            &format!("iq-get/bare/{}:query", ns::DISCO_INFO),
            priority::HANDLER,
            handler(|ev| async move {
                let Some(host) = ev.core.host(ev.to.domain()).cloned() else {
                    return Flow::Continue(ev);
                };
                let requester = ev.from.bare();
                let allowed = requester == ev.to
                    || matches!(
                        ev.core.roster_item(&ev.to, &requester).await,
                        Ok(Some(item)) if item.subscription.has_from()
                    );
                if !allowed || !ev.core.accounts.exists(&ev.to).await.unwrap_or(false) {
                    return Flow::Continue(ev);
                }
                if ev
                    .stanza
                    .first_child()
                    .and_then(|q| q.get_attr("node"))
                    .is_some()
                {
                    ev.reply_error(StanzaErrorCondition::ItemNotFound.into())
                        .await;
                    return Flow::Handled;
                }
                let mut query = Element::new("query", ns::DISCO_INFO).child(
                    Element::new("identity", ns::DISCO_INFO)
                        .attr("category", "account")
                        .attr("type", "registered"),
                );
                for id in host.items(ACCOUNT_IDENTITY) {
                    if let (Some(c), Some(t)) = (id["category"].as_str(), id["type"].as_str()) {
                        let mut el = Element::new("identity", ns::DISCO_INFO)
                            .attr("category", c)
                            .attr("type", t);
                        if let Some(n) = id["name"].as_str().filter(|n| !n.is_empty()) {
                            el.set_attr("name", Some(n.to_string()));
                        }
                        query.push(el);
                    }
                }
                let mut features: Vec<String> = host
                    .items(ACCOUNT_FEATURE)
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .chain([ns::DISCO_INFO.to_string()])
                    .collect();
                features.sort();
                features.dedup();
                for f in features {
                    query.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
                }
                ev.reply(stanza::iq_result(&ev.stanza, Some(query))).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_ITEMS),
            priority::HANDLER,
            handler(|ev| async move {
                // The components this host is the parent of, each named by its identity.
                let mut query = Element::new("query", ns::DISCO_ITEMS);
                for c in ev.core.components_of(ev.to.domain()) {
                    let mut item =
                        Element::new("item", ns::DISCO_ITEMS).attr("jid", c.name.clone());
                    if let Some((_, _, name)) = c.identities().into_iter().find(|i| !i.2.is_empty())
                    {
                        item.set_attr("name", Some(name));
                    }
                    query.push(item);
                }
                ev.reply(stanza::iq_result(&ev.stanza, Some(query))).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::core::Core;
    use crate::storage::Store;

    /// A server core with `disco` on `localhost`.
    fn core() -> Arc<Core> {
        let mut cfg = Config::parse("modules_enabled = [\"disco\"]").unwrap();
        cfg.components.get_or_insert_with(Vec::new);
        Core::new(cfg, Store::memory(), crate::modules::BUILTIN).unwrap()
    }

    /// The cached caps, checked against a fresh computation from the host's disco#info.
    fn caps(host: &Host) -> Option<Element> {
        let cached = server_caps(host);
        assert_eq!(cached, compute_server_caps(host), "stale caps served");
        assert_eq!(server_caps(host), cached, "a second call answers the same");
        cached
    }

    fn ver(c: &Option<Element>) -> String {
        c.as_ref().unwrap().get_attr("ver").unwrap().to_string()
    }

    #[tokio::test]
    async fn cached_caps_follow_module_load_unload_and_added_features() {
        let core = core();
        let host = core.host("localhost").cloned().unwrap();
        let base = caps(&host);
        assert!(base.is_some());

        core.load_module("localhost", "ping").unwrap();
        let with_ping = caps(&host);
        assert_ne!(
            ver(&with_ping),
            ver(&base),
            "a new feature changes the hash"
        );

        // A feature added after load (through the module API) is seen at once.
        host.module("ping").unwrap().add_feature("urn:example:late");
        let late = caps(&host);
        assert_ne!(ver(&late), ver(&with_ping));
        host.module("ping")
            .unwrap()
            .add_identity("automation", "probe", "Probe");
        let identity = caps(&host);
        assert_ne!(ver(&identity), ver(&late));

        core.unload_module("localhost", "ping").unwrap();
        assert_eq!(caps(&host), base, "back to the feature set before the load");

        core.unload_module("localhost", "disco").unwrap();
        assert_eq!(caps(&host), None, "no caps without disco");
        core.load_module("localhost", "disco").unwrap();
        assert_eq!(caps(&host), base);
    }
}
