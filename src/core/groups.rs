//! Shared-roster groups (what Prosody's mod_groups_internal offers): members of a group see each
//! other in their rosters with a `both` subscription and the group's name as roster group.
//!
//! Membership is stored as two small indexes (group → members, member → groups), so adding the
//! 1,000th member writes the same two keys as adding the 10th; rosters merge group members in when
//! read (see [`super::Core::roster_items`]), and only online members get pushes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Core;
use super::roster::RosterError;
use crate::storage::{StorageError, Store};
use crate::xmpp::Jid;

const GROUPS: &str = "groups";
const MEMBERS: &str = "group_members";
const USER_GROUPS: &str = "user_groups";
const META: &str = "groups_meta";

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A group with this id exists.
    #[error("group {0} already exists")]
    Exists(String),
    /// No such group.
    #[error("group {0} not found")]
    NotFound(String),
    /// The id or name is unusable.
    #[error("invalid group: {0}")]
    Invalid(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A roster update failed.
    #[error("roster: {0}")]
    Roster(#[from] RosterError),
}

/// A group's public description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group id.
    pub id: String,
    /// The display name (used as the roster group).
    pub name: String,
}

/// The group manager.
pub struct GroupManager {
    store: Store,
}

fn new_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl GroupManager {
    /// A manager over `store`.
    pub fn new(store: Store) -> Self {
        GroupManager { store }
    }

    async fn bump(&self, host: &str) -> Result<(), GroupError> {
        let kv = self.store.keyval(host, META);
        let v = kv.get("").await?.and_then(|v| v.as_u64()).unwrap_or(0);
        kv.set("", Some(Value::from(v + 1))).await?;
        Ok(())
    }

    /// The host's group version counter (part of every roster version).
    pub async fn version(&self, host: &str) -> Result<u64, GroupError> {
        Ok(self
            .store
            .keyval(host, META)
            .get("")
            .await?
            .and_then(|v| v.as_u64())
            .unwrap_or(0))
    }

    /// Creates a group; a missing id is generated (12 characters). Returns the id.
    pub async fn create(
        &self,
        host: &str,
        id: Option<&str>,
        name: &str,
    ) -> Result<String, GroupError> {
        let id = match id {
            Some(i) if i.is_empty() || i.len() > 256 || i.contains('\0') => {
                return Err(GroupError::Invalid(format!("bad group id {i:?}")));
            }
            Some(i) => i.to_string(),
            None => new_id(),
        };
        if name.is_empty() || name.len() > 1024 {
            return Err(GroupError::Invalid(
                "a group needs a name of 1 to 1024 bytes".into(),
            ));
        }
        let groups = self.store.map(host, GROUPS);
        if groups.get("", &id).await?.is_some() {
            return Err(GroupError::Exists(id));
        }
        groups.set("", &id, Some(json!({"name": name}))).await?;
        Ok(id)
    }

    /// A group's description.
    pub async fn get(&self, host: &str, id: &str) -> Result<Option<GroupInfo>, GroupError> {
        let v = self.store.map(host, GROUPS).get("", id).await?;
        Ok(v.map(|v| GroupInfo {
            id: id.to_string(),
            name: v["name"].as_str().unwrap_or(id).to_string(),
        }))
    }

    /// Every group of a host.
    pub async fn list(&self, host: &str) -> Result<Vec<GroupInfo>, GroupError> {
        let all = self.store.map(host, GROUPS).get_all("").await?;
        Ok(all
            .into_iter()
            .map(|(id, v)| GroupInfo {
                name: v["name"].as_str().unwrap_or(&id).to_string(),
                id,
            })
            .collect())
    }

    /// Member usernames of a group.
    pub async fn members(&self, host: &str, id: &str) -> Result<Vec<String>, GroupError> {
        if self.get(host, id).await?.is_none() {
            return Err(GroupError::NotFound(id.to_string()));
        }
        Ok(self
            .store
            .map(host, MEMBERS)
            .get_all(id)
            .await?
            .into_keys()
            .collect())
    }

    /// Group ids `user` belongs to.
    pub async fn groups_of(&self, user: &Jid) -> Result<Vec<String>, GroupError> {
        Ok(self
            .store
            .map(user.domain(), USER_GROUPS)
            .get_all(user.node().unwrap_or_default())
            .await?
            .into_keys()
            .collect())
    }

    /// For each group of `user`: its name and the other members' JIDs.
    pub async fn shared_contacts(
        &self,
        user: &Jid,
    ) -> Result<Vec<(String, Vec<Jid>)>, RosterError> {
        let host = user.domain();
        let me = user.node().unwrap_or_default();
        let mut out = Vec::new();
        let ids = self.groups_of(user).await.map_err(to_roster)?;
        for id in ids {
            let Some(info) = self.get(host, &id).await.map_err(to_roster)? else {
                continue;
            };
            let members = self.store.map(host, MEMBERS).get_all(&id).await?;
            let jids = members
                .into_keys()
                .filter(|m| m != me)
                .filter_map(|m| Jid::new(Some(&m), host, None).ok())
                .collect();
            out.push((info.name, jids));
        }
        Ok(out)
    }

    /// Names of the groups `user` and `contact` share.
    pub async fn common_groups(
        &self,
        user: &Jid,
        contact: &Jid,
    ) -> Result<Vec<String>, RosterError> {
        if user.domain() != contact.domain() || contact.node().is_none() {
            return Ok(Vec::new());
        }
        let mine = self.groups_of(user).await.map_err(to_roster)?;
        let theirs = self.groups_of(contact).await.map_err(to_roster)?;
        let mut out = Vec::new();
        for id in mine.iter().filter(|g| theirs.contains(g)) {
            if let Some(info) = self.get(user.domain(), id).await.map_err(to_roster)? {
                out.push(info.name);
            }
        }
        Ok(out)
    }

    async fn set_membership(
        &self,
        host: &str,
        id: &str,
        member: &str,
        on: bool,
    ) -> Result<(), GroupError> {
        let v = on.then(|| json!({}));
        self.store
            .map(host, MEMBERS)
            .set(id, member, v.clone())
            .await?;
        self.store.map(host, USER_GROUPS).set(member, id, v).await?;
        Ok(())
    }
}

fn to_roster(e: GroupError) -> RosterError {
    match e {
        GroupError::Storage(s) => RosterError::Storage(s),
        GroupError::Roster(r) => r,
        other => RosterError::Groups(other.to_string()),
    }
}

impl Core {
    /// Adds `user` to group `id`; members see each other at once (pushes and presence to online members).
    pub async fn group_add_member(
        self: &Arc<Self>,
        host: &str,
        id: &str,
        user: &Jid,
    ) -> Result<bool, GroupError> {
        self.change_membership(host, id, user, true).await
    }

    /// Removes `user` from group `id`; returns whether they were a member.
    pub async fn group_remove_member(
        self: &Arc<Self>,
        host: &str,
        id: &str,
        user: &Jid,
    ) -> Result<bool, GroupError> {
        self.change_membership(host, id, user, false).await
    }

    /// Sets `user`'s membership of `id` to `on`; returns whether it changed.
    async fn change_membership(
        self: &Arc<Self>,
        host: &str,
        id: &str,
        user: &Jid,
        on: bool,
    ) -> Result<bool, GroupError> {
        if self.groups.get(host, id).await?.is_none() {
            return Err(GroupError::NotFound(id.to_string()));
        }
        let Some(member) = user.node().filter(|_| user.domain() == host) else {
            // Someone who is not an account here can be no member: an error only when adding.
            return if on {
                Err(GroupError::Invalid(format!(
                    "{user} is not an account of {host}"
                )))
            } else {
                Ok(false)
            };
        };
        let is_member = self
            .store
            .map(host, MEMBERS)
            .get(id, member)
            .await?
            .is_some();
        if is_member == on {
            return Ok(false);
        }
        self.groups.set_membership(host, id, member, on).await?;
        self.groups.bump(host).await?;
        self.announce_membership(host, id, user).await?;
        Ok(true)
    }

    /// Deletes a group and its memberships; returns whether it existed.
    pub async fn group_delete(self: &Arc<Self>, host: &str, id: &str) -> Result<bool, GroupError> {
        if self.groups.get(host, id).await?.is_none() {
            return Ok(false);
        }
        let members = self.groups.members(host, id).await?;
        for m in &members {
            self.groups.set_membership(host, id, m, false).await?;
        }
        self.store.map(host, GROUPS).set("", id, None).await?;
        self.groups.bump(host).await?;
        // Online members lose the shared items.
        let jids: Vec<Jid> = members
            .iter()
            .filter_map(|m| Jid::new(Some(m), host, None).ok())
            .collect();
        for a in jids.iter().filter(|j| self.sessions.is_online(j)) {
            for b in jids.iter().filter(|b| *b != a) {
                self.push_current(a, b).await?;
            }
        }
        Ok(true)
    }

    /// Re-sends the group's shared items to every online member (Prosody's `groups/ID/sync`).
    pub async fn group_sync(self: &Arc<Self>, host: &str, id: &str) -> Result<(), GroupError> {
        let members = self.groups.members(host, id).await?;
        let jids: Vec<Jid> = members
            .iter()
            .filter_map(|m| Jid::new(Some(m), host, None).ok())
            .collect();
        for a in jids.iter().filter(|j| self.sessions.is_online(j)) {
            for b in jids.iter().filter(|b| *b != a) {
                self.push_current(a, b).await?;
                self.send_current_presence(b, a).await;
            }
        }
        Ok(())
    }

    /// Pushes the changed membership of `user` to online members (and them to `user`), with presence.
    async fn announce_membership(
        self: &Arc<Self>,
        host: &str,
        id: &str,
        user: &Jid,
    ) -> Result<(), GroupError> {
        let members = self.groups.members(host, id).await?;
        let user_online = self.sessions.is_online(user);
        let in_group = user.node().is_some_and(|n| members.iter().any(|m| m == n));
        for m in &members {
            let Ok(other) = Jid::new(Some(m), host, None) else {
                continue;
            };
            if &other == user {
                continue;
            }
            if self.sessions.is_online(&other) {
                self.push_current(&other, user).await?;
                if in_group {
                    self.send_current_presence(user, &other).await;
                }
            }
            if user_online {
                self.push_current(user, &other).await?;
                if in_group {
                    self.send_current_presence(&other, user).await;
                }
            }
        }
        Ok(())
    }
}
