//! XEP-0352 client state indication: while a client says it is inactive, presence updates for
//! it are held back (the latest per contact) and delivered before its next other stanza or when
//! it becomes active again. The holding is done by the session queue (`SessionHandle::send`).

use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::xmpp::Element;

/// The `csi` module.
pub struct Csi;

impl Module for Csi {
    fn name(&self) -> &'static str {
        "csi"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_stream_feature(Element::new("csi", crate::xmpp::ns::CSI));
        Ok(())
    }
}
