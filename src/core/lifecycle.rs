//! Account lifecycle across managers: deleting an account removes it everywhere — its sessions,
//! roster, group memberships, and (through the `user-deleted` event) every module's data.

use std::sync::Arc;

use serde_json::json;

use super::Core;
use super::accounts::AccountError;
use crate::xmpp::Jid;
use crate::xmpp::error::{StreamError, StreamErrorCondition};

/// The data event fired on the account's host after an account is deleted (and after every
/// module cleanup registered with `on_user_deleted` ran), with `{"username": …, "host": …}`.
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
            for cleanup in host.user_cleanups() {
                cleanup(self.clone(), jid.clone()).await;
            }
            let mut data =
                json!({ "username": jid.node().unwrap_or_default(), "host": jid.domain() });
            host.data_events.fire(USER_DELETED, &mut data);
        }
        tracing::info!(target: "audit", %jid, "account deleted");
        Ok(true)
    }
}
