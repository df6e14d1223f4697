//! The c2s side of the brute-force defence: one SASL attempt asks the core's
//! [`crate::core::throttle::AuthGuard`] before verifying, and reports how it ended.

use std::time::{Duration, Instant};

use crate::auth::sasl::SaslError;
use crate::config::Config;
use crate::core::Core;
use crate::xmpp::Jid;

/// One SASL attempt on a connection: the account it named and whether the guard refused it.
#[derive(Debug, Default)]
pub struct Attempt {
    /// The account the client named, once its first message was read.
    pub account: Option<Jid>,
    /// The guard refused this attempt (answered with `<temporary-auth-failure/>`, then closed).
    pub refused: bool,
}

impl Attempt {
    /// Asks the guard whether the attempt (for `account`, once known) may be verified; false
    /// marks it refused.
    pub fn check(
        &mut self,
        core: &Core,
        config: &Config,
        peer: &str,
        account: Option<&Jid>,
    ) -> bool {
        if account.is_some() {
            self.account = account.cloned();
        }
        let ok =
            core.auth_guard
                .allows(&config.limits, peer, self.account.as_ref(), Instant::now());
        if !ok {
            tracing::info!(peer, account = ?self.account.as_ref().map(Jid::as_str), "authentication throttled");
            self.refused = true;
        }
        ok
    }

    /// Reports a failed attempt to the guard (a refused one is not counted again).
    pub fn failed(&self, core: &Core, peer: &str, error: &SaslError) {
        if !self.refused {
            core.auth_guard
                .finished(peer, self.account.as_ref(), Some(error), Instant::now());
        }
    }
}

/// The pause before a refused attempt is answered.
pub async fn refusal_delay(config: &Config) {
    tokio::time::sleep(Duration::from_millis(config.limits.auth_refusal_delay_ms)).await;
}
