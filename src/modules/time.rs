//! XEP-0202 Entity Time: the server answers `urn:xmpp:time` requests addressed to it with its
//! clock in UTC (XEP-0082 format).

use crate::core::accounts::now;
use crate::core::events::{Flow, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::{Element, datetime, ns, stanza};

/// The `time` module.
pub struct Time;

impl Module for Time {
    fn name(&self) -> &'static str {
        "time"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(ns::TIME);
        ctx.hook(
            &format!("iq-get/host/{}:time", ns::TIME),
            priority::HANDLER,
            handler(|ev| async move {
                let payload = Element::new("time", ns::TIME)
                    .child(Element::new("tzo", ns::TIME).text("+00:00"))
                    .child(Element::new("utc", ns::TIME).text(datetime::format(now())));
                ev.reply(stanza::iq_result(&ev.stanza, Some(payload))).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}
