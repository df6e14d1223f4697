//! XEP-0054 vcard-temp: users get their own or another user's vCard (bare JID) and set their own.
//!
//! vCards are kept in keyval store `vcard` as `{"xml": "<vCard xmlns='vcard-temp'>…</vCard>"}`;
//! [`get_vcard`] and [`set_vcard`] are the one way in, shared with the admin API.
//! Option `vcard_max_size` (bytes, default 64 KiB) bounds a stored vCard.

use serde_json::json;

use crate::core::Core;
use crate::core::events::{Flow, handler};
use crate::core::modules::{LoadError, Module, ModuleContext, StoreKind};
use crate::core::priority;
use crate::storage::StorageError;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, Jid, ns, stanza};

/// The keyval store holding vCards.
pub const STORE: &str = "vcard";
/// Default of `vcard_max_size`.
pub const DEFAULT_MAX_SIZE: i64 = 64 * 1024;

/// Why reading or writing a vCard failed.
#[derive(Debug, thiserror::Error)]
pub enum VcardError {
    /// The JID has no user part.
    #[error("not a user JID: {0}")]
    NotAUser(String),
    /// The element is not `<vCard xmlns='vcard-temp'/>`.
    #[error("not a vcard-temp vCard element")]
    NotAVcard,
    /// The stored vCard could not be parsed back.
    #[error("stored vCard of {0} is corrupt")]
    Corrupt(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// The `vcard` module.
pub struct Vcard;

/// The stored vCard of `user` (its bare JID is used), if any.
pub async fn get_vcard(core: &Core, user: &Jid) -> Result<Option<Element>, VcardError> {
    let node = user
        .node()
        .ok_or_else(|| VcardError::NotAUser(user.to_string()))?;
    let Some(v) = core.store.keyval(user.domain(), STORE).get(node).await? else {
        return Ok(None);
    };
    let xml = v["xml"]
        .as_str()
        .ok_or_else(|| VcardError::Corrupt(user.bare().to_string()))?;
    let el = parse_element(xml).map_err(|_| VcardError::Corrupt(user.bare().to_string()))?;
    Ok(Some(el))
}

/// Stores (or with `None` deletes) the vCard of `user`; durable on return.
pub async fn set_vcard(core: &Core, user: &Jid, vcard: Option<Element>) -> Result<(), VcardError> {
    let node = user
        .node()
        .ok_or_else(|| VcardError::NotAUser(user.to_string()))?;
    let value = match vcard {
        Some(el) if !el.is("vCard", ns::VCARD) => return Err(VcardError::NotAVcard),
        Some(el) => Some(json!({ "xml": el.to_xml("") })),
        None => None,
    };
    core.store
        .keyval(user.domain(), STORE)
        .set(node, value)
        .await?;
    Ok(())
}

fn empty_vcard() -> Element {
    Element::new("vCard", ns::VCARD)
}

impl Module for Vcard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn options(&self) -> &'static [&'static str] {
        &["vcard_max_size"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // Opened through the API: what it holds for an account goes with the account.
        ctx.open_store(STORE, StoreKind::KeyVal);
        let max_size =
            ctx.option_integer("vcard_max_size", DEFAULT_MAX_SIZE, 256, 16 << 20) as usize;
        ctx.add_feature(ns::VCARD);
        ctx.hook(
            &format!("iq-get/bare/{}:vCard", ns::VCARD),
            priority::HANDLER,
            handler(|ev| async move {
                if ev.from.bare() != ev.to
                    && !ev.core.accounts.exists(&ev.to).await.unwrap_or(false)
                {
                    ev.reply_error(C::ServiceUnavailable.into()).await;
                    return Flow::Handled;
                }
                match get_vcard(&ev.core, &ev.to).await {
                    Ok(v) => {
                        let payload = v.unwrap_or_else(empty_vcard);
                        ev.reply(stanza::iq_result(&ev.stanza, Some(payload))).await;
                    }
                    Err(e) => {
                        tracing::warn!(jid = %ev.to, error = %e, "cannot read vCard");
                        ev.reply_error(C::InternalServerError.into()).await;
                    }
                }
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:vCard", ns::VCARD),
            priority::HANDLER,
            handler(move |ev| async move {
                if ev.from.bare() != ev.to {
                    ev.reply_error(C::Forbidden.into()).await;
                    return Flow::Handled;
                }
                let Some(vcard) = ev.stanza.get_child("vCard", ns::VCARD).cloned() else {
                    ev.reply_error(C::BadRequest.into()).await;
                    return Flow::Handled;
                };
                let size = vcard.to_xml("").len();
                if size > max_size {
                    let err = StanzaError::with_text(
                        C::NotAcceptable,
                        format!("the vCard is {size} bytes; at most {max_size} are stored"),
                    );
                    ev.reply_error(err).await;
                    return Flow::Handled;
                }
                let empty = vcard.nodes().iter().all(|n| match n {
                    crate::xmpp::element::Node::Text(t) => t.trim().is_empty(),
                    crate::xmpp::element::Node::Element(_) => false,
                });
                let value = (!empty).then_some(vcard);
                match set_vcard(&ev.core, &ev.to, value).await {
                    Ok(()) => ev.reply(stanza::iq_result(&ev.stanza, None)).await,
                    Err(VcardError::Storage(e)) => {
                        ev.reply_error(crate::core::faults::stanza_error(&e, "vCard store"))
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(jid = %ev.to, error = %e, "cannot store vCard");
                        ev.reply_error(C::InternalServerError.into()).await;
                    }
                }
                Flow::Handled
            }),
        );
        Ok(())
    }
}
