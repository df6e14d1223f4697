//! Account lifecycle across managers: deleting an account removes it everywhere — its sessions,
//! roster, group memberships, and (through the `user-deleted` event) every module's data.

use std::sync::Arc;

use serde_json::json;

use super::Core;
use super::accounts::AccountError;
use crate::xmpp::Jid;
use crate::xmpp::error::{StreamError, StreamErrorCondition};

/// The data event fired on the account's host after an account is deleted (and after every
/// store a module opened and every module cleanup was emptied or ran), with `{"username": …, "host": …}`.
pub const USER_DELETED: &str = "user-deleted";

impl Core {
    /// Deletes an account and everything kept for it; returns whether it existed.
    pub async fn delete_account(self: &Arc<Self>, jid: &Jid) -> Result<bool, AccountError> {
        if !self.accounts.delete(jid).await? {
            return Ok(false);
        }
        for s in self.sessions.resources(jid) {
            s.close(StreamError::with_text(
                StreamErrorCondition::NotAuthorized,
                "the account was deleted",
            ));
        }
        if let Err(e) = self.roster.delete_user(jid).await {
            tracing::warn!(%jid, error = %e, "could not delete the roster of a deleted account");
        }
        match self.groups.groups_of(jid).await {
            Ok(groups) => {
                for id in groups {
                    if let Err(e) = self.group_remove_member(jid.domain(), &id, jid).await {
                        tracing::warn!(%jid, group = %id, error = %e, "could not leave a group");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%jid, error = %e, "could not list the groups of a deleted account")
            }
        }
        if let Some(host) = self.host(jid.domain()).cloned() {
            self.run_user_cleanups(jid).await;
            let mut data =
                json!({ "username": jid.node().unwrap_or_default(), "host": jid.domain() });
            host.data_events.fire(USER_DELETED, &mut data);
        }
        tracing::info!(target: "audit", %jid, "account deleted");
        Ok(true)
    }

    /// Empties every store the modules of the account's host opened and runs their own
    /// cleanups for the deleted account `jid`; each failure is logged, and their number returned.
    pub async fn run_user_cleanups(self: &Arc<Self>, jid: &Jid) -> usize {
        let Some(host) = self.host(jid.domain()).cloned() else {
            return 0;
        };
        let mut failed = 0;
        for cleanup in host.user_cleanups() {
            if let Err(e) = cleanup.run(self.clone(), jid.clone()).await {
                failed += 1;
                tracing::warn!(
                    %jid,
                    module = cleanup.module(),
                    store = cleanup.what(),
                    error = %e,
                    "could not remove the data of a deleted account"
                );
            }
        }
        failed
    }
}
