//! XEP-0198 stream management: acks, counters and resumption within a configurable window.
//! The protocol lives in the c2s session (`crate::c2s::sm`); this module switches it on for a
//! host, offers the stream feature and holds the settings.

use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::xmpp::{Element, ns};

/// The `smacks` module.
pub struct Smacks;

impl Module for Smacks {
    fn name(&self) -> &'static str {
        "smacks"
    }

    fn options(&self) -> &'static [&'static str] {
        &["smacks_hibernation_time"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_stream_feature(Element::new("sm", ns::SM));
        Ok(())
    }
}
