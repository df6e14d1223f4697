//! XEP-0077 in-band registration before authentication: the stream feature and the
//! `jabber:iq:register` get/set a client may send during negotiation.
//!
//! Enabled when the `register` module is loaded on the host and its option `allow_registration`
//! is true; only over TLS when `c2s.require_encryption` is set. Account creations are throttled
//! per IP address (`registration_throttle_max` per minute, default 5) by the server's own
//! throttle ([`Core::registrations`]). After authentication the
//! `register` module handles password changes and account removal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::core::Core;
use crate::core::accounts::AccountError;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::jid::{self, Jid};
use crate::xmpp::{Element, ns, stanza};

/// The module that switches registration on.
pub const MODULE: &str = "register";
/// Default of `registration_throttle_max`.
pub const DEFAULT_THROTTLE_MAX: i64 = 5;
/// Whether in-band registration of new accounts is on for `host`.
pub fn enabled(core: &Core, config: &Config, host: &str) -> bool {
    core.host(host).is_some_and(|h| h.is_loaded(MODULE))
        && matches!(
            config.option(host, "allow_registration"),
            Some(toml::Value::Boolean(true))
        )
}

/// The `<register/>` stream feature, when registration is possible on this stream.
pub fn stream_feature(core: &Core, config: &Config, host: &str, secure: bool) -> Option<Element> {
    (enabled(core, config, host) && (secure || !config.c2s.require_encryption))
        .then(|| Element::new("register", ns::REGISTER_FEATURE))
}

fn error(iq: &Element, condition: C, text: Option<&str>) -> Option<Element> {
    let err = match text {
        Some(t) => StanzaError::with_text(condition, t),
        None => StanzaError::new(condition),
    };
    stanza::error_reply(iq, &err)
}

/// The registration form (XEP-0077 §3.1).
fn form() -> Element {
    Element::new("query", ns::REGISTER)
        .child(
            Element::new("instructions", ns::REGISTER)
                .text("Choose a username and password to register with this server."),
        )
        .child(Element::new("username", ns::REGISTER))
        .child(Element::new("password", ns::REGISTER))
}

/// Answers a `jabber:iq:register` IQ received before authentication; `None` if `el` is not one.
pub async fn preauth(
    core: &Arc<Core>,
    config: &Config,
    host: &str,
    peer: &str,
    secure: bool,
    el: &Element,
) -> Option<Element> {
    if !el.is("iq", ns::CLIENT) {
        return None;
    }
    let query = el.get_child("query", ns::REGISTER)?;
    let ty = stanza::stanza_type(el, "");
    if ty != "get" && ty != "set" {
        return None;
    }
    if el.get_attr("id").is_none() || el.children().count() != 1 {
        return error(el, C::BadRequest, None);
    }
    if !enabled(core, config, host) {
        return error(el, C::ServiceUnavailable, None);
    }
    if config.c2s.require_encryption && !secure {
        return error(el, C::PolicyViolation, Some("encryption is required"));
    }
    if ty == "get" {
        return Some(stanza::iq_result(el, Some(form())));
    }
    if query.get_child("remove", ns::REGISTER).is_some() {
        return error(el, C::NotAuthorized, Some("log in to remove an account"));
    }
    let field = |name: &str| {
        query
            .get_child(name, ns::REGISTER)
            .map(|e| e.text_content())
    };
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return error(
            el,
            C::NotAcceptable,
            Some("username and password are required"),
        );
    };
    if password.is_empty() {
        return error(el, C::NotAcceptable, Some("the password is empty"));
    }
    let Some(account) = jid::normalize_node(username.trim())
        .ok()
        .and_then(|n| Jid::new(Some(&n), host, None).ok())
    else {
        return error(el, C::NotAcceptable, Some("invalid username"));
    };
    let max = match config.option(host, "registration_throttle_max") {
        Some(toml::Value::Integer(i)) if *i >= 0 => *i as usize,
        _ => DEFAULT_THROTTLE_MAX as usize,
    };
    let addr = peer
        .parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_string());
    if !core.registrations.allow(&addr, max, Instant::now()) {
        tracing::info!(peer, "registration throttled");
        return error(
            el,
            C::ResourceConstraint,
            Some("too many registrations from your address; try again later"),
        );
    }
    match core.accounts.create(&account, &password).await {
        Ok(()) => {
            tracing::info!(peer, jid = %account, "account registered in-band");
            Some(stanza::iq_result(el, None))
        }
        Err(AccountError::Exists(_)) => error(el, C::Conflict, None),
        Err(AccountError::Password(e)) => error(el, C::NotAcceptable, Some(&e.to_string())),
        Err(AccountError::InvalidJid(_)) => error(el, C::NotAcceptable, Some("invalid username")),
        Err(e) => {
            tracing::warn!(peer, error = %e, "in-band registration failed");
            error(el, C::InternalServerError, None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::Store;

    #[test]
    fn two_servers_throttle_separately() {
        let one = Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).unwrap();
        let two = Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).unwrap();
        let now = Instant::now();
        assert!(one.registrations.allow("1.2.3.4", 1, now));
        assert!(!one.registrations.allow("1.2.3.4", 1, now));
        assert!(two.registrations.allow("1.2.3.4", 1, now));
    }
}
