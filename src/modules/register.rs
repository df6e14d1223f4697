//! XEP-0077 In-Band Registration, module `register` (off by default).
//!
//! Creating accounts happens before authentication, in stream negotiation
//! ([`crate::c2s::register`]), and needs option `allow_registration = true` as well; throttled by
//! `registration_throttle_max` per IP per minute. Once logged in, a user may fetch their
//! registration, change their password (`<username/>` + `<password/>`) or remove their account
//! (`<remove/>`: the account and this server's per-user data go, its sessions are closed).

use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::jid;
use crate::xmpp::{Element, ns, stanza};

/// The `register` module.
pub struct Register;

/// Whether the IQ is about the sender's own registration (sent to the host or to their bare JID).
fn own(ev: &StanzaEvent) -> bool {
    ev.from.node().is_some() && (ev.to.node().is_none() || ev.from.bare() == ev.to)
}

async fn get(ev: StanzaEvent) -> Flow {
    if !own(&ev) {
        return Flow::Continue(ev);
    }
    let q = Element::new("query", ns::REGISTER)
        .child(Element::new("registered", ns::REGISTER))
        .child(Element::new("username", ns::REGISTER).text(ev.from.node().unwrap_or_default()));
    ev.reply(stanza::iq_result(&ev.stanza, Some(q))).await;
    Flow::Handled
}

async fn set(ev: StanzaEvent) -> Flow {
    if !own(&ev) {
        return Flow::Continue(ev);
    }
    let user = ev.from.bare();
    let Some(query) = ev.stanza.get_child("query", ns::REGISTER).cloned() else {
        ev.reply_error(C::BadRequest.into()).await;
        return Flow::Handled;
    };
    if query.get_child("remove", ns::REGISTER).is_some() {
        match ev.core.delete_account(&user).await {
            Ok(_) => {
                tracing::info!(jid = %user, "account removed in-band");
                // The result goes out before the sessions close (queued first).
                ev.reply(stanza::iq_result(&ev.stanza, None)).await;
            }
            Err(e) => {
                tracing::warn!(jid = %user, error = %e, "cannot remove account");
                ev.reply_error(C::InternalServerError.into()).await;
            }
        }
        return Flow::Handled;
    }
    let field = |name: &str| {
        query
            .get_child(name, ns::REGISTER)
            .map(|e| e.text_content())
    };
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        ev.reply_error(C::BadRequest.into()).await;
        return Flow::Handled;
    };
    if jid::normalize_node(username.trim()).ok().as_deref() != user.node() {
        let err = StanzaError::with_text(C::Forbidden, "you can only change your own password");
        ev.reply_error(err).await;
        return Flow::Handled;
    }
    if password.is_empty() {
        ev.reply_error(C::NotAcceptable.into()).await;
        return Flow::Handled;
    }
    match ev.core.accounts.set_password(&user, &password).await {
        Ok(()) => {
            tracing::info!(jid = %user, "password changed in-band");
            ev.reply(stanza::iq_result(&ev.stanza, None)).await;
        }
        Err(crate::core::accounts::AccountError::Password(e)) => {
            let err = StanzaError::with_text(C::NotAcceptable, e.to_string());
            ev.reply_error(err).await;
        }
        Err(e) => {
            tracing::warn!(jid = %user, error = %e, "cannot change password");
            ev.reply_error(C::InternalServerError.into()).await;
        }
    }
    Flow::Handled
}

impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn options(&self) -> &'static [&'static str] {
        &["allow_registration", "registration_throttle_max"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(ns::REGISTER);
        for dest in ["host", "bare"] {
            ctx.hook(
                &format!("iq-get/{dest}/{}:query", ns::REGISTER),
                priority::HANDLER,
                handler(get),
            );
            ctx.hook(
                &format!("iq-set/{dest}/{}:query", ns::REGISTER),
                priority::HANDLER,
                handler(set),
            );
        }
        Ok(())
    }
}
