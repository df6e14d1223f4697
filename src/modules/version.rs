//! XEP-0092 Software Version: the server's name, version and (optionally) operating system.
//!
//! Options: `version_name` (default "Oxpecker"), `version_hide` (answer with the name only),
//! `version_show_os` (include the OS; default false).

use crate::core::events::{Flow, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::{Element, ns, stanza};

/// The `version` module.
pub struct Version;

/// Builds the `jabber:iq:version` answer.
pub fn version_query(name: &str, version: Option<&str>, os: Option<&str>) -> Element {
    let mut q =
        Element::new("query", ns::VERSION).child(Element::new("name", ns::VERSION).text(name));
    if let Some(v) = version {
        q.push(Element::new("version", ns::VERSION).text(v));
    }
    if let Some(o) = os {
        q.push(Element::new("os", ns::VERSION).text(o));
    }
    q
}

impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn options(&self) -> &'static [&'static str] {
        &["version_name", "version_hide", "version_show_os"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let name = ctx.option_string("version_name", "Oxpecker");
        let hide = ctx.option_bool("version_hide", false);
        let show_os = ctx.option_bool("version_show_os", false);
        let version = (!hide).then(|| env!("CARGO_PKG_VERSION").to_string());
        let os = (!hide && show_os).then(|| std::env::consts::OS.to_string());
        let query = version_query(&name, version.as_deref(), os.as_deref());
        ctx.add_feature(ns::VERSION);
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::VERSION),
            priority::HANDLER,
            handler(move |ev| {
                let query = query.clone();
                async move {
                    ev.reply(stanza::iq_result(&ev.stanza, Some(query))).await;
                    Flow::Handled
                }
            }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_fields_are_left_out() {
        let q = version_query("X", None, None);
        assert_eq!(q.children().count(), 1);
        let q = version_query("X", Some("1"), Some("linux"));
        assert_eq!(
            q.get_child("os", ns::VERSION).map(|e| e.text_content()),
            Some("linux".into())
        );
    }
}
