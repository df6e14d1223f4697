//! XEP-0199 XMPP Ping: the server answers pings addressed to it.

use crate::core::events::{Flow, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::{ns, stanza};

/// The `ping` module.
pub struct Ping;

impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(ns::PING);
        ctx.hook(
            &format!("iq-get/host/{}:ping", ns::PING),
            priority::HANDLER,
            handler(|ev| async move {
                let reply = stanza::iq_result(&ev.stanza, None);
                ev.reply(reply).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}
