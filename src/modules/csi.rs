//! XEP-0352 client state indication: while a client says it is inactive, presence updates for
//! it are held back (the latest per contact) and delivered before its next other stanza or when
//! it becomes active again. The module takes `<active/>` and `<inactive/>` through tag hooks;
//! the holding is done by the session queue (`SessionHandle::send`).

use crate::core::events::{Flow, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::xmpp::{Element, ns};

/// The `csi` module.
pub struct Csi;

impl Module for Csi {
    fn name(&self) -> &'static str {
        "csi"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_stream_feature(Element::new("csi", ns::CSI));
        for (tag, inactive) in [("active", false), ("inactive", true)] {
            ctx.hook_tag(
                ns::CSI,
                tag,
                0,
                handler(move |ev| async move {
                    if let Some(session) = ev.origin.session() {
                        session.set_inactive(inactive);
                    }
                    Flow::Handled
                }),
            );
        }
        Ok(())
    }
}
