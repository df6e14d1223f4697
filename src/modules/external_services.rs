//! XEP-0215 External Service Discovery: the STUN and TURN servers configured in
//! `external_services`, listed for the host's own users, with time-limited TURN credentials in
//! the shared-secret scheme coturn (`use-auth-secret`) and eturnal use: the username is
//! `<expiry unix time>:<bare JID>`, the password base64(HMAC-SHA-1(`turn_secret`, username)).
//! No TURN server is built in.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha1::Sha1;

use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::error::StanzaErrorCondition as C;
use crate::xmpp::{Element, datetime, ns, stanza};

/// One configured service (an entry of `external_services`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `stun`, `stuns`, `turn` or `turns`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Host name or address.
    pub host: String,
    /// Port; unset = not announced.
    #[serde(default)]
    pub port: Option<u16>,
    /// `udp` or `tcp`; unset = not announced.
    #[serde(default)]
    pub transport: Option<String>,
    /// A name shown to users.
    #[serde(default)]
    pub name: Option<String>,
}

impl Service {
    /// Whether users get credentials for it from `turn_secret` (the TURN kinds).
    fn restricted(&self) -> bool {
        matches!(self.kind.as_str(), "turn" | "turns")
    }
}

/// The TURN username and password for `user` valid until `expires` (unix seconds).
pub fn turn_credentials(secret: &str, user: &str, expires: i64) -> (String, String) {
    let username = format!("{expires}:{user}");
    let password = match <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (username, password)
}

/// The services of one host and the secret their credentials are made with.
struct Catalog {
    services: Vec<Service>,
    secret: Option<String>,
    ttl: Duration,
}

impl Catalog {
    /// `<service/>` for `s`, with credentials for `user` when it is restricted.
    fn element(&self, s: &Service, user: &str) -> Element {
        let mut el = Element::new("service", ns::EXTDISCO)
            .attr("type", s.kind.clone())
            .attr("host", s.host.clone());
        if let Some(port) = s.port {
            el = el.attr("port", port.to_string());
        }
        if let Some(t) = &s.transport {
            el = el.attr("transport", t.clone());
        }
        if let Some(n) = &s.name {
            el = el.attr("name", n.clone());
        }
        if s.restricted()
            && let Some(secret) = &self.secret
        {
            let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
            let expires = crate::core::accounts::now().saturating_add(ttl);
            let (username, password) = turn_credentials(secret, user, expires);
            el = el
                .attr("restricted", "1")
                .attr("expires", datetime::format(expires))
                .attr("username", username)
                .attr("password", password);
        }
        el
    }

    /// Answers `<services/>` (optionally of one `type`) and `<credentials/>`.
    async fn answer(&self, ev: StanzaEvent) {
        let own_user = ev.from.node().is_some() && ev.from.domain() == ev.to.domain();
        if !own_user {
            ev.reply_error(C::Forbidden.into()).await;
            return;
        }
        let user = ev.from.bare().to_string();
        let Some(req) = ev.stanza.first_child() else {
            ev.reply_error(C::BadRequest.into()).await;
            return;
        };
        let query = if req.name() == "credentials" {
            let Some(want) = req.get_child("service", ns::EXTDISCO) else {
                ev.reply_error(C::BadRequest.into()).await;
                return;
            };
            let (host, kind) = (want.get_attr("host"), want.get_attr("type"));
            let port = want.get_attr("port").and_then(|p| p.parse::<u16>().ok());
            let found: Vec<&Service> = self
                .services
                .iter()
                .filter(|s| Some(s.host.as_str()) == host)
                .filter(|s| kind.is_none_or(|k| k == s.kind))
                .filter(|s| port.is_none() || port == s.port)
                .collect();
            if found.is_empty() {
                ev.reply_error(C::ItemNotFound.into()).await;
                return;
            }
            let mut q = Element::new("credentials", ns::EXTDISCO);
            for s in found {
                q.push(self.element(s, &user));
            }
            q
        } else {
            let kind = req.get_attr("type");
            let mut q = Element::new("services", ns::EXTDISCO);
            if let Some(k) = kind {
                q = q.attr("type", k);
            }
            for s in self
                .services
                .iter()
                .filter(|s| kind.is_none_or(|k| k == s.kind))
            {
                q.push(self.element(s, &user));
            }
            q
        };
        ev.reply(stanza::iq_result(&ev.stanza, Some(query))).await;
    }
}

/// The `external_services` module.
pub struct ExternalServices;

impl Module for ExternalServices {
    fn name(&self) -> &'static str {
        "external_services"
    }

    fn options(&self) -> &'static [&'static str] {
        &["external_services", "turn_secret", "turn_ttl"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let services: Vec<Service> = match ctx.option("external_services") {
            None => Vec::new(),
            Some(v) => v.try_into().map_err(|e| {
                LoadError::bad_option(
                    "external_services",
                    format!("is not a list of services: {e}"),
                )
            })?,
        };
        for s in &services {
            if !matches!(s.kind.as_str(), "stun" | "stuns" | "turn" | "turns") {
                return Err(LoadError::bad_option(
                    "external_services",
                    format!("type {} must be stun, stuns, turn or turns", s.kind),
                ));
            }
        }
        let secret = Some(ctx.option_string("turn_secret", "")).filter(|s| !s.is_empty());
        let ttl = ctx
            .option_period("turn_ttl", Some(Duration::from_secs(86400)))
            .unwrap_or(Duration::from_secs(86400));
        let catalog = Arc::new(Catalog {
            services,
            secret,
            ttl,
        });
        ctx.add_feature(ns::EXTDISCO);
        for name in ["services", "credentials"] {
            let c = catalog.clone();
            ctx.hook(
                &format!("iq-get/host/{}:{name}", ns::EXTDISCO),
                priority::HANDLER,
                handler(move |ev| {
                    let c = c.clone();
                    async move {
                        c.answer(ev).await;
                        Flow::Handled
                    }
                }),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_coturn_shared_secret_scheme() {
        // A value computed independently: printf '1700000000:alice@localhost' |
        //   openssl dgst -sha1 -hmac s3cret -binary | base64
        let (user, pass) = turn_credentials("s3cret", "alice@localhost", 1_700_000_000);
        assert_eq!(user, "1700000000:alice@localhost");
        assert_eq!(pass, "JmOvEuFTDA6w6K9QXNFPR8Za6bU=");
        assert_ne!(
            turn_credentials("other", "alice@localhost", 1_700_000_000).1,
            pass
        );
    }
}
