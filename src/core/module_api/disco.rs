//! Service discovery on the module's host (Prosody's `module:add_feature`, `add_identity`,
//! `add_extension`), and the stream features offered after authentication.

use super::ModuleHandle;
use crate::xmpp::Element;

impl ModuleHandle {
    /// Advertises a disco#info feature on this host.
    pub fn add_feature(&self, feature: &str) {
        self.reg().features.push(feature.to_string());
        self.host.disco_changed();
    }

    /// Adds a stream feature offered after authentication.
    pub fn add_stream_feature(&self, feature: Element) {
        self.reg().stream_features.push(feature);
    }

    /// Adds a disco#info identity.
    pub fn add_identity(&self, category: &str, kind: &str, name: &str) {
        self.reg()
            .identities
            .push((category.into(), kind.into(), name.into()));
        self.host.disco_changed();
    }

    /// Adds a XEP-0128 extended-info data form (`<x xmlns='jabber:x:data' type='result'>`).
    pub fn add_extension(&self, form: Element) {
        self.reg().extensions.push(form);
        self.host.disco_changed();
    }

    pub(in crate::core) fn features(&self) -> Vec<String> {
        self.reg().features.clone()
    }

    pub(in crate::core) fn stream_features(&self) -> Vec<Element> {
        self.reg().stream_features.clone()
    }

    pub(in crate::core) fn identities(&self) -> Vec<(String, String, String)> {
        self.reg().identities.clone()
    }

    pub(in crate::core) fn extensions(&self) -> Vec<Element> {
        self.reg().extensions.clone()
    }
}

#[cfg(test)]
mod tests {
    use crate::core::module_api::probe::{core, load};
    use crate::xmpp::Element;

    #[tokio::test]
    async fn features_identities_extensions_and_stream_features_reach_the_host_until_unload() {
        let core = core();
        load(&core, |ctx| {
            ctx.add_feature("urn:example:f");
            ctx.add_identity("automation", "probe", "Probe");
            ctx.add_extension(Element::new("x", "jabber:x:data").attr("type", "result"));
            ctx.add_stream_feature(Element::new("sf", "urn:example:sf"));
            Ok(())
        })
        .unwrap();
        let host = core.host("localhost").cloned().unwrap();
        assert_eq!(host.features(), vec!["urn:example:f".to_string()]);
        assert_eq!(
            host.identities(),
            vec![("automation".into(), "probe".into(), "Probe".into())]
        );
        assert_eq!(host.extensions().len(), 1);
        assert_eq!(host.stream_features()[0].name(), "sf");
        core.unload_module("localhost", "probe").unwrap();
        assert!(host.features().is_empty() && host.identities().is_empty());
        assert!(host.extensions().is_empty() && host.stream_features().is_empty());
    }
}
