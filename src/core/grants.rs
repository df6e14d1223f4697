//! The grant store: every client that has access to an account, and the long-lived credentials
//! it holds (XEP-0484 FAST tokens), in one place for login, listing and revocation.
//!
//! Per host, the map store `clients` keeps, per user, one [`ClientRecord`] under its public id
//! (`client/<12 base64url chars of SHA-256 of the SASL2 client id>`, or of `legacy:<resource>`
//! for clients without an id). A FAST token is kept only as its SHA-256 (see
//! [`crate::auth::fast`]: that hash is the HMAC key the mechanism needs), expires, is bound to its
//! client id and mechanism, and carries a fingerprint of the account's credentials, so any
//! password change invalidates it. A client holds at most two tokens (current and rotated-in);
//! using the newer one drops the older. The admin API bearer tokens (`oxpecker token`,
//! [`crate::core::tokens`]) are the other kind of grant: listed per owner as `grant/<id>`
//! (type `access`) and revoked through the same [`Accounts::revoke_client`].

use std::collections::BTreeSet;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Core;
use super::accounts::{AccountError, Accounts, now};
use super::sessions::{ClientAgent, SessionHandle};
use crate::auth::ScramHash;
use crate::auth::fast;
use crate::xmpp::Jid;
use crate::xmpp::error::{StreamError, StreamErrorCondition};

/// The map store holding the client records.
pub const CLIENTS_STORE: &str = "clients";
/// Tokens a client may hold at once (the current one and the one rotated in).
const MAX_TOKENS_PER_CLIENT: usize = 2;
/// Prefix of client ids.
pub const CLIENT_PREFIX: &str = "client/";
/// Prefix of admin-token grant ids.
pub const GRANT_PREFIX: &str = "grant/";

/// One stored FAST token (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FastToken {
    /// SHA-256 of the token, hex.
    pub key: String,
    /// The mechanism the token is bound to.
    pub mechanism: String,
    /// Expiry, unix seconds.
    pub expires: i64,
    /// Fingerprint of the account's credentials when the token was issued.
    pub fingerprint: String,
    /// Highest XEP-0484 `count` seen with this token (replay protection).
    #[serde(default)]
    pub count: u64,
}

/// A client that has (had) access to an account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ClientRecord {
    /// Record format version.
    pub v: u32,
    /// Public id (`client/…`).
    pub id: String,
    /// First login, unix seconds.
    pub first_seen: i64,
    /// Latest login, unix seconds.
    pub last_seen: i64,
    /// The software name the client gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// The device name the client gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Authentication methods used: `password`, `fast`.
    #[serde(default)]
    pub auth: BTreeSet<String>,
    /// Whether this is a client without a SASL2 id, tracked by resource.
    #[serde(default)]
    pub legacy: bool,
    /// The resource it last bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Its FAST tokens, oldest first.
    #[serde(default)]
    pub tokens: Vec<FastToken>,
}

/// A freshly issued FAST token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The clear token, for the client only.
    pub token: String,
    /// Expiry, unix seconds.
    pub expires: i64,
}

/// Why a revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No such client for this account.
    #[error("no such client")]
    NotFound,
    /// The client only ever used the password: only a password change revokes it.
    #[error("the client used the password; change the password to revoke it")]
    PasswordResetRequired,
    /// Storage failed.
    #[error(transparent)]
    Account(#[from] AccountError),
}

/// The public id of the client with SASL2 client id `client_id`.
pub fn client_key(client_id: &str) -> String {
    short_hash(client_id)
}

/// A client id as an admin types it: `client/…`, `grant/…`, or just the part after `client/`.
pub fn full_id(id: &str) -> String {
    if id.contains('/') {
        id.to_string()
    } else {
        format!("{CLIENT_PREFIX}{id}")
    }
}

/// The public id of a legacy client bound as `resource`.
pub fn legacy_key(resource: &str) -> String {
    short_hash(&format!("legacy:{resource}"))
}

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..9]);
    format!("{CLIENT_PREFIX}{enc}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Accounts {
    /// A fingerprint of `jid`'s current credentials (changes with every password change).
    async fn credential_fingerprint(&self, jid: &Jid) -> Result<Option<String>, AccountError> {
        Ok(self.get(jid).await?.map(|rec| {
            let keys = rec.credentials.scram(ScramHash::Sha256);
            let mut h = Sha256::new();
            h.update(&keys.salt);
            h.update(&keys.stored_key);
            hex(&h.finalize()[..8])
        }))
    }

    async fn client(&self, jid: &Jid, id: &str) -> Result<Option<ClientRecord>, AccountError> {
        let v = self
            .store()
            .map(jid.domain(), CLIENTS_STORE)
            .get(jid.node().unwrap_or_default(), id)
            .await?;
        Ok(v.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn put_client(&self, jid: &Jid, rec: &ClientRecord) -> Result<(), AccountError> {
        let value =
            serde_json::to_value(rec).map_err(|_| AccountError::Corrupt(jid.to_string()))?;
        self.store()
            .map(jid.domain(), CLIENTS_STORE)
            .set(jid.node().unwrap_or_default(), &rec.id, Some(value))
            .await?;
        Ok(())
    }

    /// Records a login of `jid`: by the SASL2 client `agent`, or (without one) by the legacy
    /// client bound as `resource`; `method` is `password` or `fast`. Durable on return.
    pub async fn note_client(
        &self,
        jid: &Jid,
        agent: Option<&ClientAgent>,
        resource: &str,
        method: &str,
    ) -> Result<(), AccountError> {
        let id = match agent {
            Some(a) => client_key(&a.id),
            None => legacy_key(resource),
        };
        let t = now();
        let mut rec = self.client(jid, &id).await?.unwrap_or(ClientRecord {
            v: 1,
            id,
            first_seen: t,
            legacy: agent.is_none(),
            ..ClientRecord::default()
        });
        rec.last_seen = t;
        rec.resource = Some(resource.to_string());
        if let Some(a) = agent {
            rec.software = a.software.clone().or(rec.software);
            rec.device = a.device.clone().or(rec.device);
        }
        rec.auth.insert(method.to_string());
        self.put_client(jid, &rec).await
    }

    /// Issues a FAST token for `jid`'s client `agent`, bound to `mechanism`, valid `ttl_secs`.
    pub async fn issue_fast_token(
        &self,
        jid: &Jid,
        agent: &ClientAgent,
        mechanism: &str,
        ttl_secs: u64,
    ) -> Result<IssuedToken, AccountError> {
        let fingerprint = self
            .credential_fingerprint(jid)
            .await?
            .ok_or_else(|| AccountError::NotFound(jid.to_string()))?;
        let id = client_key(&agent.id);
        let t = now();
        let mut rec = self.client(jid, &id).await?.unwrap_or(ClientRecord {
            v: 1,
            id,
            first_seen: t,
            last_seen: t,
            software: agent.software.clone(),
            device: agent.device.clone(),
            ..ClientRecord::default()
        });
        let token = fast::new_token();
        let expires = t.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
        rec.tokens
            .retain(|k| k.expires > t && k.fingerprint == fingerprint);
        rec.tokens.push(FastToken {
            key: hex(&fast::token_key(&token)),
            mechanism: mechanism.to_string(),
            expires,
            fingerprint,
            count: 0,
        });
        let excess = rec.tokens.len().saturating_sub(MAX_TOKENS_PER_CLIENT);
        rec.tokens.drain(..excess);
        self.put_client(jid, &rec).await?;
        Ok(IssuedToken { token, expires })
    }

    /// Checks a FAST `proof` from `jid`'s client `client_id` with `mechanism` over a connection
    /// whose binding of the mechanism's channel-binding type is `cb_data` (empty for
    /// `HT-SHA-256-NONE`); on success the
    /// stored key of the token used (for the server's answer). A newer token's first use retires
    /// the older; a `count` must grow; expired tokens and tokens from before a password change
    /// never match.
    pub async fn verify_fast_token(
        &self,
        jid: &Jid,
        client_id: &str,
        mechanism: &str,
        cb_data: &[u8],
        proof: &[u8],
        count: Option<u64>,
    ) -> Result<Option<[u8; 32]>, AccountError> {
        let Some(mut rec) = self.client(jid, &client_key(client_id)).await? else {
            return Ok(None);
        };
        let Some(fingerprint) = self.credential_fingerprint(jid).await? else {
            return Ok(None);
        };
        let t = now();
        let found = rec.tokens.iter().enumerate().rev().find_map(|(i, k)| {
            let mut key = [0u8; 32];
            let ok = k.mechanism == mechanism
                && k.expires > t
                && k.fingerprint == fingerprint
                && decode_hex(&k.key, &mut key)
                && fast::verify_initiator(&key, cb_data, proof);
            ok.then_some((i, key))
        });
        let Some((i, key)) = found else {
            return Ok(None);
        };
        if let Some(c) = count {
            if c <= rec.tokens[i].count {
                return Ok(None);
            }
            rec.tokens[i].count = c;
        }
        rec.tokens.drain(..i);
        rec.last_seen = t;
        rec.auth.insert("fast".into());
        self.put_client(jid, &rec).await?;
        Ok(Some(key))
    }

    /// Every client record of `jid`, oldest first.
    pub async fn list_clients(&self, jid: &Jid) -> Result<Vec<ClientRecord>, AccountError> {
        let all = self
            .store()
            .map(jid.domain(), CLIENTS_STORE)
            .get_all(jid.node().unwrap_or_default())
            .await?;
        let mut out: Vec<ClientRecord> = all
            .into_values()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let fingerprint = self.credential_fingerprint(jid).await?.unwrap_or_default();
        let t = now();
        for rec in &mut out {
            rec.tokens
                .retain(|k| k.expires > t && k.fingerprint == fingerprint);
        }
        out.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
        Ok(out)
    }

    /// Revokes `jid`'s client `id`: its FAST tokens (`client/…`) or the admin token (`grant/…`).
    /// A client that never held a token only goes away with a password change. Live sessions
    /// are the caller's to close. Durable on return.
    pub async fn revoke_client(&self, jid: &Jid, id: &str) -> Result<(), RevokeError> {
        if let Some(token_id) = id.strip_prefix(GRANT_PREFIX) {
            let owned = self
                .list_tokens(jid.domain())
                .await?
                .into_iter()
                .any(|t| t.id == token_id && t.owner == jid.as_str());
            if !owned {
                return Err(RevokeError::NotFound);
            }
            self.revoke_token(token_id).await?;
            return Ok(());
        }
        let rec = self.client(jid, id).await?.ok_or(RevokeError::NotFound)?;
        if rec.tokens.is_empty() && !rec.auth.contains("fast") {
            return Err(RevokeError::PasswordResetRequired);
        }
        self.store()
            .map(jid.domain(), CLIENTS_STORE)
            .set(jid.node().unwrap_or_default(), id, None)
            .await
            .map_err(AccountError::from)?;
        Ok(())
    }
}

/// One entry of a client listing, as every admin face shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ClientInfo {
    /// `client/…` or `grant/…`.
    pub id: String,
    /// `session` (a client that logs in) or `access` (an admin API token).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether a session of this client is connected now.
    pub connected: bool,
    /// First seen, unix seconds.
    pub first_seen: i64,
    /// Last seen, unix seconds (the creation time for a token never used).
    pub last_seen: i64,
    /// The software the client named (an admin token's label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// The device the client named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Authentication methods used: `password`, `fast`, `grant`.
    pub auth: Vec<String>,
    /// Whether it is a client without a SASL2 id, known by its resource only.
    pub legacy: bool,
}

/// Whether a live session belongs to the client with public id `id`.
fn session_is(handle: &SessionHandle, id: &str) -> bool {
    match &handle.conn.client {
        Some(a) => client_key(&a.id) == id,
        None => handle.jid.resource().is_some_and(|r| legacy_key(r) == id),
    }
}

impl Core {
    /// Every client with access to `jid` (bare): SASL2 and legacy clients, and admin tokens.
    pub async fn list_clients(&self, jid: &Jid) -> Result<Vec<ClientInfo>, AccountError> {
        let live = self.sessions.resources(jid);
        let mut out: Vec<ClientInfo> = self
            .accounts
            .list_clients(jid)
            .await?
            .into_iter()
            .map(|c| ClientInfo {
                connected: live.iter().any(|s| session_is(s, &c.id)),
                kind: "session".into(),
                first_seen: c.first_seen,
                last_seen: c.last_seen,
                software: c.software,
                device: c.device,
                auth: c.auth.into_iter().collect(),
                legacy: c.legacy,
                id: c.id,
            })
            .collect();
        for t in self.accounts.list_tokens(jid.domain()).await? {
            if t.owner == jid.as_str() {
                out.push(ClientInfo {
                    id: format!("{GRANT_PREFIX}{}", t.id),
                    kind: "access".into(),
                    connected: false,
                    first_seen: t.created,
                    last_seen: t.created,
                    software: t.label,
                    device: None,
                    auth: vec!["grant".into()],
                    legacy: false,
                });
            }
        }
        Ok(out)
    }

    /// Revokes `jid`'s client `id` ([`Accounts::revoke_client`]) and closes its live sessions.
    pub async fn revoke_client(&self, jid: &Jid, id: &str) -> Result<usize, RevokeError> {
        self.accounts.revoke_client(jid, id).await?;
        let mut closed = 0;
        for s in self.sessions.resources(jid) {
            if session_is(&s, id) {
                s.close(StreamError::with_text(
                    StreamErrorCondition::NotAuthorized,
                    "this client's access was revoked",
                ));
                closed += 1;
            }
        }
        Ok(closed)
    }
}

fn decode_hex(s: &str, out: &mut [u8; 32]) -> bool {
    if s.len() != 64 {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match s
            .get(i * 2..i * 2 + 2)
            .and_then(|b| u8::from_str_radix(b, 16).ok())
        {
            Some(b) => *o = b,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, KeyInit, Mac};

    use super::*;
    use crate::storage::Store;

    fn proof(token: &str) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()).expect("key");
        m.update(b"Initiator");
        m.finalize().into_bytes().to_vec()
    }

    fn agent(id: &str) -> ClientAgent {
        ClientAgent {
            id: id.into(),
            software: Some("app".into()),
            device: Some("phone".into()),
        }
    }

    async fn accounts() -> (Accounts, Jid) {
        let accounts = Accounts::new(Store::memory(), vec!["localhost".into()], 4096);
        let alice = accounts.account_jid("alice@localhost").expect("jid");
        accounts.create(&alice, "pw").await.expect("create");
        (accounts, alice)
    }

    #[tokio::test]
    async fn a_token_works_for_its_client_only_and_is_stored_hashed() {
        let (accounts, alice) = accounts().await;
        let t = accounts
            .issue_fast_token(&alice, &agent("c1"), fast::HT_SHA_256_NONE, 3600)
            .await
            .expect("issue");
        let ok = |client: &'static str, mech: &'static str, count| {
            let accounts = &accounts;
            let alice = &alice;
            let p = proof(&t.token);
            async move {
                accounts
                    .verify_fast_token(alice, client, mech, b"", &p, count)
                    .await
                    .expect("verify")
                    .is_some()
            }
        };
        assert!(ok("c1", fast::HT_SHA_256_NONE, None).await);
        assert!(
            !ok("c2", fast::HT_SHA_256_NONE, None).await,
            "another client id"
        );
        assert!(
            !ok("c1", "HT-SHA-256-ENDP", None).await,
            "another mechanism"
        );
        assert!(ok("c1", fast::HT_SHA_256_NONE, Some(1)).await);
        assert!(
            !ok("c1", fast::HT_SHA_256_NONE, Some(1)).await,
            "replayed count"
        );
        let mut dump = Vec::new();
        crate::storage::export(&accounts.store().clone(), &mut dump).expect("export");
        assert!(!String::from_utf8_lossy(&dump).contains(&t.token));
        // A password change invalidates it.
        accounts.set_password(&alice, "new").await.expect("pw");
        assert!(
            !ok("c1", fast::HT_SHA_256_NONE, None).await,
            "after password change"
        );
    }

    #[tokio::test]
    async fn rotation_retires_the_old_token_on_first_use_of_the_new() {
        let (accounts, alice) = accounts().await;
        let a = agent("c1");
        let mech = fast::HT_SHA_256_NONE;
        let old = accounts
            .issue_fast_token(&alice, &a, mech, 3600)
            .await
            .expect("old");
        let new = accounts
            .issue_fast_token(&alice, &a, mech, 3600)
            .await
            .expect("new");
        let verify = |t: &IssuedToken| {
            let p = proof(&t.token);
            let (accounts, alice) = (&accounts, &alice);
            async move {
                accounts
                    .verify_fast_token(alice, "c1", mech, b"", &p, None)
                    .await
                    .expect("v")
            }
        };
        assert!(
            verify(&old).await.is_some(),
            "old still valid before the new is used"
        );
        assert!(verify(&new).await.is_some());
        assert!(verify(&old).await.is_none(), "old retired");
        let expired = accounts
            .issue_fast_token(&alice, &a, mech, 0)
            .await
            .expect("exp");
        assert!(verify(&expired).await.is_none(), "expired");
    }

    #[tokio::test]
    async fn listing_and_revoking_clients() {
        let (accounts, alice) = accounts().await;
        accounts
            .note_client(&alice, None, "laptop", "password")
            .await
            .expect("legacy");
        accounts
            .note_client(&alice, Some(&agent("c1")), "app.1", "password")
            .await
            .expect("c1");
        let t = accounts
            .issue_fast_token(&alice, &agent("c1"), fast::HT_SHA_256_NONE, 3600)
            .await
            .expect("issue");
        let list = accounts.list_clients(&alice).await.expect("list");
        assert_eq!(list.len(), 2, "{list:?}");
        let legacy = list.iter().find(|c| c.legacy).expect("legacy");
        assert_eq!(legacy.resource.as_deref(), Some("laptop"));
        assert!(matches!(
            accounts.revoke_client(&alice, &legacy.id).await,
            Err(RevokeError::PasswordResetRequired)
        ));
        let c1 = client_key("c1");
        assert!(matches!(
            accounts.revoke_client(&alice, "client/nope").await,
            Err(RevokeError::NotFound)
        ));
        accounts.revoke_client(&alice, &c1).await.expect("revoke");
        let p = proof(&t.token);
        assert!(
            accounts
                .verify_fast_token(&alice, "c1", fast::HT_SHA_256_NONE, b"", &p, None)
                .await
                .expect("verify")
                .is_none()
        );
        // Admin tokens are grants of the same account, revoked the same way.
        let admin = accounts
            .create_token(&alice, Some("ci"))
            .await
            .expect("token");
        let gid = format!("{GRANT_PREFIX}{}", admin.record.id);
        let bob = accounts.account_jid("bob@localhost").expect("bob");
        assert!(matches!(
            accounts.revoke_client(&bob, &gid).await,
            Err(RevokeError::NotFound)
        ));
        accounts
            .revoke_client(&alice, &gid)
            .await
            .expect("revoke grant");
        assert!(
            accounts
                .verify_token(&admin.token)
                .await
                .expect("v")
                .is_none()
        );
    }
}
