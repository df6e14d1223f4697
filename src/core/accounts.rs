//! The account manager: create, re-key, delete and look up local accounts and their credentials.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::credentials::{CredentialError, Credentials, HashPool};
use crate::storage::{StorageError, Store};
use crate::xmpp::Jid;

/// The store holding one record per account.
pub const ACCOUNTS_STORE: &str = "accounts";

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The JID is not a local bare account JID.
    #[error("invalid account JID: {0}")]
    InvalidJid(String),
    /// The host is not served here.
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// The account already exists.
    #[error("account {0} already exists")]
    Exists(String),
    /// The account does not exist.
    #[error("account {0} does not exist")]
    NotFound(String),
    /// The password is unacceptable.
    #[error("{0}")]
    Password(#[from] CredentialError),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A stored record could not be decoded.
    #[error("corrupt account record for {0}")]
    Corrupt(String),
}

/// The stored account record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Record format version.
    pub v: u32,
    /// Password-derived credentials (never the clear password).
    pub credentials: Credentials,
    /// Creation time, unix seconds.
    pub created: i64,
    /// The account's role; `None` means the default, [`Role::Registered`] (old records load as that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// An account's role. Prosody's `prosody:*` names are accepted as aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Full control of the server (config `admins` are operators).
    #[serde(alias = "prosody:operator")]
    Operator,
    /// Administers the host, including the admin API.
    #[serde(alias = "prosody:admin")]
    Admin,
    /// A trusted member of the host.
    #[serde(alias = "prosody:member")]
    Member,
    /// An ordinary registered account (the default).
    #[serde(alias = "prosody:registered", alias = "prosody:user")]
    Registered,
    /// A restricted account.
    #[serde(alias = "prosody:guest")]
    Guest,
}

impl Role {
    /// Every role, most privileged first.
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::Admin,
        Role::Member,
        Role::Registered,
        Role::Guest,
    ];

    /// Parses an Oxpecker role name or its Prosody alias (`admin`, `prosody:admin`, …).
    pub fn parse(s: &str) -> Option<Role> {
        serde_json::from_value(Value::String(s.trim().to_ascii_lowercase())).ok()
    }

    /// The Oxpecker name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Registered => "registered",
            Role::Guest => "guest",
        }
    }

    /// The Prosody name (`prosody:admin`, …).
    pub fn prosody_name(self) -> &'static str {
        match self {
            Role::Operator => "prosody:operator",
            Role::Admin => "prosody:admin",
            Role::Member => "prosody:member",
            Role::Registered => "prosody:registered",
            Role::Guest => "prosody:guest",
        }
    }

    /// The priority Prosody gives the role (higher is more privileged).
    pub fn prosody_priority(self) -> u32 {
        match self {
            Role::Operator => 75,
            Role::Admin => 50,
            Role::Member => 35,
            Role::Registered => 25,
            Role::Guest => 15,
        }
    }

    /// Whether the role has admin rights (may use the admin API).
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }
}

/// The account manager.
pub struct Accounts {
    store: Store,
    iterations: u32,
    /// The hosts served (grows when `host:activate` adds one at run time).
    hosts: std::sync::RwLock<Vec<String>>,
    core: std::sync::Weak<super::Core>,
    /// Argon2 and SCRAM derivations, one per core at a time.
    hashing: HashPool,
}

impl Accounts {
    /// A manager over `store` serving `hosts`, deriving SCRAM keys with `iterations`.
    pub fn new(store: Store, hosts: Vec<String>, iterations: u32) -> Self {
        Accounts {
            store,
            iterations,
            hosts: std::sync::RwLock::new(hosts),
            core: std::sync::Weak::new(),
            hashing: HashPool::default(),
        }
    }

    /// The same manager, firing `user-registered` and `user-password-changed` on `core`'s hosts.
    pub fn with_events(self, core: std::sync::Weak<super::Core>) -> Self {
        Accounts { core, ..self }
    }

    fn fire(&self, event: &str, jid: &Jid) {
        if let Some(core) = self.core.upgrade() {
            core.fire_account_event(event, jid);
        }
    }

    /// Parses and checks an account JID (bare, local host, with a node).
    pub fn account_jid(&self, s: &str) -> Result<Jid, AccountError> {
        let jid = Jid::parse(s).map_err(|e| AccountError::InvalidJid(format!("{s}: {e}")))?;
        self.check(&jid)?;
        Ok(jid)
    }

    fn check(&self, jid: &Jid) -> Result<(), AccountError> {
        if jid.node().is_none() || jid.resource().is_some() {
            return Err(AccountError::InvalidJid(format!(
                "{jid}: an account JID looks like user@host"
            )));
        }
        if !self.serves(jid.domain()) {
            return Err(AccountError::UnknownHost(jid.domain().to_string()));
        }
        Ok(())
    }

    async fn derive(&self, password: &str) -> Result<Credentials, AccountError> {
        let password = password.to_string();
        let iterations = self.iterations;
        self.hashing
            .run(move || Credentials::new(&password, iterations))
            .await
            .map_err(|e| AccountError::Corrupt(e.to_string()))?
            .map_err(AccountError::from)
    }

    async fn put(
        &self,
        jid: &Jid,
        credentials: Credentials,
        created: i64,
        role: Option<Role>,
    ) -> Result<(), AccountError> {
        let rec = AccountRecord {
            v: 1,
            credentials,
            created,
            role,
        };
        let value =
            serde_json::to_value(&rec).map_err(|_| AccountError::Corrupt(jid.to_string()))?;
        self.store
            .keyval(jid.domain(), ACCOUNTS_STORE)
            .set(jid.node().unwrap_or_default(), Some(value))
            .await?;
        Ok(())
    }

    /// Reads an account's record.
    pub async fn get(&self, jid: &Jid) -> Result<Option<AccountRecord>, AccountError> {
        self.check(jid)?;
        let v: Option<Value> = self
            .store
            .keyval(jid.domain(), ACCOUNTS_STORE)
            .get(jid.node().unwrap_or_default())
            .await?;
        match v {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|_| AccountError::Corrupt(jid.to_string())),
        }
    }

    /// Whether the account exists.
    pub async fn exists(&self, jid: &Jid) -> Result<bool, AccountError> {
        self.check(jid)?;
        // Asked for every archived message: a key lookup, without decoding the record.
        Ok(self
            .store
            .keyval(jid.domain(), ACCOUNTS_STORE)
            .contains(jid.node().unwrap_or_default())
            .await?)
    }

    /// Creates an account; fails if it exists. Durable on return.
    pub async fn create(&self, jid: &Jid, password: &str) -> Result<(), AccountError> {
        self.check(jid)?;
        if self.exists(jid).await? {
            return Err(AccountError::Exists(jid.to_string()));
        }
        let creds = self.derive(password).await?;
        self.put(jid, creds, now(), None).await?;
        self.fire(super::lifecycle::USER_REGISTERED, jid);
        Ok(())
    }

    /// Replaces an existing account's password. Durable on return.
    pub async fn set_password(&self, jid: &Jid, password: &str) -> Result<(), AccountError> {
        let rec = self
            .get(jid)
            .await?
            .ok_or_else(|| AccountError::NotFound(jid.to_string()))?;
        let creds = self.derive(password).await?;
        self.put(jid, creds, rec.created, rec.role).await?;
        self.fire(super::lifecycle::USER_PASSWORD_CHANGED, jid);
        Ok(())
    }

    /// Sets (or with `None` resets to the default) an existing account's role. Durable on return.
    pub async fn set_role(&self, jid: &Jid, role: Option<Role>) -> Result<(), AccountError> {
        let rec = self
            .get(jid)
            .await?
            .ok_or_else(|| AccountError::NotFound(jid.to_string()))?;
        self.put(jid, rec.credentials, rec.created, role).await
    }

    /// The store this manager persists through (for the API-token records in [`super::tokens`]).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The pool every password derivation of this server runs on (for other clear-password checks).
    pub fn hashing(&self) -> &HashPool {
        &self.hashing
    }

    /// The hosts whose accounts this manager holds.
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this manager holds the accounts of `host`.
    fn serves(&self, host: &str) -> bool {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        hosts.iter().any(|h| h == host)
    }

    /// Adds `host` (activated at run time) to the hosts served; a no-op for a known host.
    pub fn add_host(&self, host: &str) {
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
    }

    /// Deletes an account; returns whether it existed. Durable on return.
    pub async fn delete(&self, jid: &Jid) -> Result<bool, AccountError> {
        let existed = self.exists(jid).await?;
        if existed {
            self.store
                .keyval(jid.domain(), ACCOUNTS_STORE)
                .set(jid.node().unwrap_or_default(), None)
                .await?;
            // A re-created account must not inherit the old one's API tokens.
            self.revoke_tokens_of(jid).await?;
            // ...nor its clients and their FAST tokens.
            self.store
                .map(jid.domain(), super::grants::CLIENTS_STORE)
                .delete_user(jid.node().unwrap_or_default())
                .await?;
        }
        Ok(existed)
    }

    /// Account usernames of `host`, sorted.
    pub async fn list(&self, host: &str) -> Result<Vec<String>, AccountError> {
        if !self.serves(host) {
            return Err(AccountError::UnknownHost(host.to_string()));
        }
        let mut users = self.store.keyval(host, ACCOUNTS_STORE).users().await?;
        users.sort();
        Ok(users)
    }

    /// Checks a clear password (for PLAIN); false for unknown accounts. An imported account
    /// missing some verifiers (no Argon2 hash, SCRAM-SHA-1 only) gains them all on success.
    pub async fn verify_password(&self, jid: &Jid, password: &str) -> Result<bool, AccountError> {
        let Some(rec) = self.get(jid).await? else {
            return Ok(false);
        };
        let creds = rec.credentials.clone();
        let pw = password.to_string();
        let ok = self
            .hashing
            .run(move || creds.verify_scram(&pw))
            .await
            .map_err(|e| AccountError::Corrupt(e.to_string()))?;
        if ok && !rec.credentials.is_complete() {
            let creds = self.derive(password).await?;
            self.put(jid, creds, rec.created, rec.role).await?;
        }
        Ok(ok)
    }
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
