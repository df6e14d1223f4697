//! Admin API tokens: random bearer secrets owned by an account, stored only as their SHA-256.
//!
//! A token is `oxp_` followed by 32 random bytes in unpadded base64url. The store keeps, per
//! host of the owner, `api_tokens/<sha256 hex>` → [`TokenRecord`]; the clear token is shown once
//! at creation and never stored. A token grants what its owner may do *now*: the admin API
//! checks on every use that the owner still exists and still has admin rights, and deleting the
//! account revokes its tokens.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::accounts::{AccountError, Accounts, now};
use crate::xmpp::Jid;

/// The keyval store holding one record per token, keyed by the token's SHA-256 (hex).
pub const TOKENS_STORE: &str = "api_tokens";
/// Prefix of every token, so secret scanners and people recognise them.
pub const TOKEN_PREFIX: &str = "oxp_";
/// Longest accepted label.
const MAX_LABEL: usize = 200;

/// A stored token (never the secret itself).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Record format version.
    pub v: u32,
    /// Public identifier: the first 16 hex digits of the token's SHA-256.
    pub id: String,
    /// The owning account (bare JID).
    pub owner: String,
    /// What the token may do; `admin` (the admin API) is the only scope so far.
    pub scope: String,
    /// A free-form note (what or who uses the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Creation time, unix seconds.
    pub created: i64,
}

/// A freshly created token: the secret is only ever available here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewToken {
    /// The stored record.
    #[serde(flatten)]
    pub record: TokenRecord,
    /// The bearer secret to hand to the client.
    pub token: String,
}

/// SHA-256 of a token, lowercase hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Accounts {
    /// Creates an admin-scoped token for an existing account. Durable on return.
    pub async fn create_token(
        &self,
        owner: &Jid,
        label: Option<&str>,
    ) -> Result<NewToken, AccountError> {
        if !self.exists(owner).await? {
            return Err(AccountError::NotFound(owner.to_string()));
        }
        let bytes: [u8; 32] = rand::random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let hash = token_hash(&token);
        let record = TokenRecord {
            v: 1,
            id: hash[..16].to_string(),
            owner: owner.to_string(),
            scope: "admin".into(),
            label: label
                .map(|l| l.chars().take(MAX_LABEL).collect())
                .filter(|l: &String| !l.is_empty()),
            created: now(),
        };
        let value =
            serde_json::to_value(&record).map_err(|_| AccountError::Corrupt(owner.to_string()))?;
        self.store()
            .keyval(owner.domain(), TOKENS_STORE)
            .set(&hash, Some(value))
            .await?;
        Ok(NewToken { record, token })
    }

    /// Every token record of `host` (sorted by owner, then creation).
    pub async fn list_tokens(&self, host: &str) -> Result<Vec<TokenRecord>, AccountError> {
        if !self.hosts().iter().any(|h| h == host) {
            return Err(AccountError::UnknownHost(host.to_string()));
        }
        let kv = self.store().keyval(host, TOKENS_STORE);
        let mut out = Vec::new();
        for hash in kv.users().await? {
            if let Some(v) = kv.get(&hash).await?
                && let Ok(rec) = serde_json::from_value::<TokenRecord>(v)
            {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| (&a.owner, a.created, &a.id).cmp(&(&b.owner, b.created, &b.id)));
        Ok(out)
    }

    /// Revokes a token by its id (or by the full secret); returns the revoked record, if any.
    pub async fn revoke_token(
        &self,
        id_or_token: &str,
    ) -> Result<Option<TokenRecord>, AccountError> {
        let wanted = if id_or_token.starts_with(TOKEN_PREFIX) {
            token_hash(id_or_token)[..16].to_string()
        } else {
            id_or_token.trim().to_ascii_lowercase()
        };
        if wanted.len() != 16 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        for host in self.hosts() {
            let kv = self.store().keyval(&host, TOKENS_STORE);
            for hash in kv.users().await? {
                if hash.starts_with(&wanted) {
                    let rec = kv
                        .get(&hash)
                        .await?
                        .and_then(|v| serde_json::from_value::<TokenRecord>(v).ok());
                    kv.set(&hash, None).await?;
                    return Ok(rec);
                }
            }
        }
        Ok(None)
    }

    /// The record of a presented token, if it is one we issued and have not revoked.
    pub async fn verify_token(&self, token: &str) -> Result<Option<TokenRecord>, AccountError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let hash = token_hash(token);
        for host in self.hosts() {
            if let Some(v) = self.store().keyval(&host, TOKENS_STORE).get(&hash).await? {
                return Ok(serde_json::from_value(v).ok());
            }
        }
        Ok(None)
    }

    /// Revokes every token owned by `owner` (on account deletion).
    pub(crate) async fn revoke_tokens_of(&self, owner: &Jid) -> Result<usize, AccountError> {
        let kv = self.store().keyval(owner.domain(), TOKENS_STORE);
        let mut n = 0;
        for hash in kv.users().await? {
            let rec = kv
                .get(&hash)
                .await?
                .and_then(|v| serde_json::from_value::<TokenRecord>(v).ok());
            if rec.is_some_and(|r| r.owner == owner.as_str()) {
                kv.set(&hash, None).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    #[tokio::test]
    async fn create_verify_list_revoke() {
        let accounts = Accounts::new(Store::memory(), vec!["localhost".into()], 4096);
        let admin = accounts.account_jid("admin@localhost").unwrap();
        assert!(matches!(
            accounts.create_token(&admin, None).await,
            Err(AccountError::NotFound(_))
        ));
        accounts.create(&admin, "pw").await.unwrap();
        let t = accounts.create_token(&admin, Some("ci")).await.unwrap();
        assert!(t.token.starts_with(TOKEN_PREFIX));
        assert_eq!(t.record.id.len(), 16);
        let got = accounts.verify_token(&t.token).await.unwrap().unwrap();
        assert_eq!(got, t.record);
        assert!(accounts.verify_token("oxp_nope").await.unwrap().is_none());
        assert!(accounts.verify_token(&t.record.id).await.unwrap().is_none());
        // Only the hash is stored.
        let mut dump = Vec::new();
        crate::storage::export(&accounts.store().clone(), &mut dump).unwrap();
        assert!(!String::from_utf8_lossy(&dump).contains(&t.token));
        let list = accounts.list_tokens("localhost").await.unwrap();
        assert_eq!(list, vec![t.record.clone()]);
        assert_eq!(
            accounts.revoke_token(&t.record.id).await.unwrap(),
            Some(t.record.clone())
        );
        assert!(accounts.verify_token(&t.token).await.unwrap().is_none());
        assert_eq!(accounts.revoke_token(&t.record.id).await.unwrap(), None);
        // Deleting the account revokes its tokens.
        let t2 = accounts.create_token(&admin, None).await.unwrap();
        accounts.delete(&admin).await.unwrap();
        accounts.create(&admin, "pw").await.unwrap();
        assert!(accounts.verify_token(&t2.token).await.unwrap().is_none());
    }
}
