//! Client management (Prosody's `mod_client_management`, `xmpp:prosody.im/protocol/manage-clients`):
//! a user lists every client with access to the account and revokes one without changing the
//! password. While loaded on a host, every bound session is recorded in the grant store
//! ([`crate::core::grants`]: first/last seen, user agent, password or FAST); the listing and the
//! revocation are [`Core::list_clients`] and [`Core::revoke_client`], which REST and the shell
//! call too.

use std::sync::Arc;

use crate::core::Core;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::grants::{ClientInfo, RevokeError};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::core::sessions::SessionHandle;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, ns, stanza};

/// The `client_management` module.
pub struct ClientManagement;

/// The module's name, as listed in `modules_enabled`.
pub const NAME: &str = "client_management";

impl Module for ClientManagement {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(ns::CLIENT_MANAGEMENT);
        ctx.hook(
            &format!("iq-get/bare/{}:list", ns::CLIENT_MANAGEMENT),
            priority::HANDLER,
            handler(|ev| async move {
                list(&ev).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:revoke", ns::CLIENT_MANAGEMENT),
            priority::HANDLER,
            handler(|ev| async move {
                revoke(&ev).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}

/// Records a newly bound session in the grant store, when this module runs on its host
/// (called by c2s after every bind; the write happens off the login path).
pub fn note_session(core: &Arc<Core>, handle: &Arc<SessionHandle>) {
    let loaded = core
        .host(handle.jid.domain())
        .is_some_and(|h| h.is_loaded(NAME));
    if !loaded {
        return;
    }
    let core = core.clone();
    let handle = handle.clone();
    tokio::spawn(async move {
        let method = match handle.conn.mechanism.as_deref() {
            Some(m) if m.starts_with("HT-") => "fast",
            _ => "password",
        };
        let resource = handle.jid.resource().unwrap_or_default().to_string();
        let bare = handle.jid.bare();
        if let Err(e) = core
            .accounts
            .note_client(&bare, handle.conn.client.as_ref(), &resource, method)
            .await
        {
            tracing::warn!(jid = %handle.jid, error = %e, "could not record the client");
        }
    });
}

/// The `<clients/>` element listing `clients`.
pub fn clients_element(clients: &[ClientInfo]) -> Element {
    let mut out = Element::new("clients", ns::CLIENT_MANAGEMENT);
    for c in clients {
        let mut el = Element::new("client", ns::CLIENT_MANAGEMENT)
            .attr("id", c.id.as_str())
            .attr("type", c.kind.as_str())
            .attr("connected", if c.connected { "true" } else { "false" });
        el.push(
            Element::new("first-seen", ns::CLIENT_MANAGEMENT)
                .text(crate::c2s::sasl2::rfc3339(c.first_seen)),
        );
        el.push(
            Element::new("last-seen", ns::CLIENT_MANAGEMENT)
                .text(crate::c2s::sasl2::rfc3339(c.last_seen)),
        );
        let mut auth = Element::new("auth", ns::CLIENT_MANAGEMENT);
        for a in &c.auth {
            auth.push(Element::new(a.as_str(), ns::CLIENT_MANAGEMENT));
        }
        el.push(auth);
        let mut agent = Element::new("user-agent", ns::CLIENT_MANAGEMENT);
        if let Some(s) = &c.software {
            agent.push(Element::new("software", ns::CLIENT_MANAGEMENT).text(s.as_str()));
        }
        if let Some(d) = &c.device {
            agent.push(Element::new("device", ns::CLIENT_MANAGEMENT).text(d.as_str()));
        }
        el.push(agent);
        if c.legacy {
            el.push(Element::new("legacy", ns::CLIENT_MANAGEMENT));
        }
        out.push(el);
    }
    out
}

/// Only the account itself manages its clients.
fn own_account(ev: &StanzaEvent) -> bool {
    ev.origin
        .session()
        .is_some_and(|s| s.jid.bare() == ev.to.bare())
}

async fn list(ev: &StanzaEvent) {
    if !own_account(ev) {
        ev.reply_error(C::Forbidden.into()).await;
        return;
    }
    match ev.core.list_clients(&ev.to.bare()).await {
        Ok(clients) => {
            let reply = stanza::iq_result(&ev.stanza, Some(clients_element(&clients)));
            ev.reply(reply).await;
        }
        Err(_) => ev.reply_error(C::InternalServerError.into()).await,
    }
}

async fn revoke(ev: &StanzaEvent) {
    if !own_account(ev) {
        ev.reply_error(C::Forbidden.into()).await;
        return;
    }
    let id = ev
        .stanza
        .get_child("revoke", ns::CLIENT_MANAGEMENT)
        .and_then(|r| r.get_attr("id"))
        .map(str::to_string);
    let Some(id) = id.filter(|i| !i.is_empty() && i.len() <= 128) else {
        ev.reply_error(C::BadRequest.into()).await;
        return;
    };
    match ev.core.revoke_client(&ev.to.bare(), &id).await {
        Ok(_) => ev.reply(stanza::iq_result(&ev.stanza, None)).await,
        Err(RevokeError::NotFound) => ev.reply_error(C::ItemNotFound.into()).await,
        Err(RevokeError::PasswordResetRequired) => {
            let err = StanzaError::new(C::ServiceUnavailable);
            if let Some(mut reply) = stanza::error_reply(&ev.stanza, &err) {
                if let Some(e) = reply.get_child_mut("error", ns::CLIENT) {
                    e.push(Element::new(
                        "password-reset-required",
                        ns::CLIENT_MANAGEMENT,
                    ));
                }
                ev.reply(reply).await;
            }
        }
        Err(RevokeError::Account(_)) => ev.reply_error(C::InternalServerError.into()).await,
    }
}
