//! [`Allowlists`]: the admin API's address allowlist of each host, in memory.
//!
//! The configured list (`admin_rest_whitelist`) stays the base; what the API adds or removes is
//! a per-host delta, held in memory and written to the keyval store `admin_rest/whitelist` of
//! the host on every change, so it survives restarts and a later change of the configured list
//! still takes effect. Requests read the memory copy only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::storage::{StorageError, Store};

/// The keyval store of the admin API's own data.
pub const STORE: &str = "admin_rest";
/// The key of the allowlist delta in [`STORE`].
const KEY: &str = "whitelist";

/// Why an allowlist could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// The host is not served here.
    #[error("unknown host: {0}")]
    UnknownHost(String),
    /// The delta could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the API changed relative to the configured list, as stored (normalised CIDR strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Delta {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

impl Delta {
    fn nets(list: &[String]) -> Vec<IpNet> {
        list.iter().filter_map(|s| s.parse().ok()).collect()
    }

    fn effective(&self, configured: &[IpNet]) -> Vec<IpNet> {
        let removed = Self::nets(&self.removed);
        let mut out: Vec<IpNet> = Vec::new();
        for n in configured.iter().copied().chain(Self::nets(&self.added)) {
            let n = n.trunc();
            if !removed.contains(&n) && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// A host's delta, loaded once.
type DeltaCell = tokio::sync::OnceCell<Arc<RwLock<Delta>>>;

/// The allowlist deltas of every host, loaded once and persisted on change.
pub struct Allowlists {
    store: Store,
    /// Each host's delta, read from the store on first use; hosts activated at run time join.
    deltas: RwLock<HashMap<String, Arc<DeltaCell>>>,
    /// Serialises edits (compute, persist, then publish), so two edits never lose one another.
    edit: tokio::sync::Mutex<()>,
}

impl Allowlists {
    /// The allowlists of `hosts`, stored in `store` (nothing is read until first use or [`Self::load`]).
    pub fn new(store: Store, hosts: &[String]) -> Self {
        Allowlists {
            store,
            deltas: RwLock::new(hosts.iter().map(|h| (h.clone(), Arc::default())).collect()),
            edit: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds `host` (activated at run time); its delta is read on first use. A no-op for a known host.
    pub fn add_host(&self, host: &str) {
        let mut deltas = self.deltas.write().unwrap_or_else(|e| e.into_inner());
        deltas.entry(host.to_string()).or_default();
    }

    fn cells(&self) -> Vec<(String, Arc<DeltaCell>)> {
        let deltas = self.deltas.read().unwrap_or_else(|e| e.into_inner());
        deltas.iter().map(|(h, c)| (h.clone(), c.clone())).collect()
    }

    /// Reads every host's delta now (at start), so no request waits for the store.
    pub async fn load(&self) -> Result<(), StorageError> {
        for (host, _) in self.cells() {
            if let Err(AllowlistError::Storage(e)) = self.delta(&host).await {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn delta(&self, host: &str) -> Result<Arc<RwLock<Delta>>, AllowlistError> {
        let cell = self
            .deltas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
            .ok_or_else(|| AllowlistError::UnknownHost(host.to_string()))?;
        cell.get_or_try_init(|| async {
            let v = self.store.keyval(host, STORE).get(KEY).await?;
            let delta = v
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            Ok(Arc::new(RwLock::new(delta)))
        })
        .await
        .cloned()
    }

    fn read(lock: &RwLock<Delta>) -> Delta {
        lock.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The effective allowlist of `host`: `configured` plus the entries added over the API,
    /// minus those removed over the API, without duplicates.
    pub async fn effective(
        &self,
        host: &str,
        configured: &[IpNet],
    ) -> Result<Vec<IpNet>, AllowlistError> {
        Ok(Self::read(&*self.delta(host).await?).effective(configured))
    }

    /// Whether `ip` is on the effective allowlist of `host`.
    pub async fn allows(
        &self,
        host: &str,
        configured: &[IpNet],
        ip: IpAddr,
    ) -> Result<bool, AllowlistError> {
        let ip = ip.to_canonical();
        Ok(self
            .effective(host, configured)
            .await?
            .iter()
            .any(|n| n.contains(&ip)))
    }

    /// Adds `net` to the allowlist of `host` (a no-op when it is already on it).
    pub async fn add(
        &self,
        host: &str,
        configured: &[IpNet],
        net: IpNet,
    ) -> Result<(), AllowlistError> {
        let net = net.trunc();
        let key = net.to_string();
        self.change(host, |delta| {
            delta.removed.retain(|r| *r != key);
            if !configured.contains(&net) && !delta.added.contains(&key) {
                delta.added.push(key.clone());
            }
            true
        })
        .await
        .map(|_| ())
    }

    /// Removes `net` from the allowlist of `host`; `false` when it was not on it.
    pub async fn remove(
        &self,
        host: &str,
        configured: &[IpNet],
        net: IpNet,
    ) -> Result<bool, AllowlistError> {
        let net = net.trunc();
        let key = net.to_string();
        self.change(host, |delta| {
            if !delta.effective(configured).contains(&net) {
                return false;
            }
            delta.added.retain(|a| *a != key);
            if configured.contains(&net) && !delta.removed.contains(&key) {
                delta.removed.push(key.clone());
            }
            true
        })
        .await
    }

    /// Forgets every edit held in memory, for after the store was wiped: the configured lists
    /// apply again.
    pub async fn reset(&self) {
        let _edit = self.edit.lock().await;
        for (_, cell) in self.cells() {
            let Some(lock) = cell.get() else { continue };
            *lock.write().unwrap_or_else(|e| e.into_inner()) = Delta::default();
        }
    }

    /// Applies `f` to a copy of the delta; if it says so, persists the copy and then publishes it.
    async fn change(
        &self,
        host: &str,
        f: impl FnOnce(&mut Delta) -> bool,
    ) -> Result<bool, AllowlistError> {
        let lock = self.delta(host).await?;
        let _edit = self.edit.lock().await;
        let mut delta = Self::read(&lock);
        if !f(&mut delta) {
            return Ok(false);
        }
        let value = serde_json::to_value(&delta)
            .map_err(|e| StorageError::Corrupt(format!("allowlist delta: {e}")))?;
        self.store.keyval(host, STORE).set(KEY, Some(value)).await?;
        *lock.write().unwrap_or_else(|e| e.into_inner()) = delta;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn edits_are_kept_in_memory_and_persisted() {
        let store = Store::memory();
        let hosts = vec!["h".to_string()];
        let configured = [net("127.0.0.1/32"), net("10.0.0.0/8")];
        let lists = Allowlists::new(store.clone(), &hosts);
        lists.load().await.unwrap();
        assert_eq!(lists.effective("h", &configured).await.unwrap(), configured);

        lists
            .add("h", &configured, net("192.0.2.9/32"))
            .await
            .unwrap();
        // Adding a configured or already added entry changes nothing.
        lists
            .add("h", &configured, net("10.0.0.0/8"))
            .await
            .unwrap();
        lists
            .add("h", &configured, net("192.0.2.9/32"))
            .await
            .unwrap();
        assert!(
            lists
                .remove("h", &configured, net("10.0.0.0/8"))
                .await
                .unwrap()
        );
        assert!(
            !lists
                .remove("h", &configured, net("10.0.0.0/8"))
                .await
                .unwrap()
        );
        assert!(
            !lists
                .remove("h", &configured, net("203.0.113.0/24"))
                .await
                .unwrap()
        );
        let want = vec![net("127.0.0.1/32"), net("192.0.2.9/32")];
        assert_eq!(lists.effective("h", &configured).await.unwrap(), want);
        assert!(
            lists
                .allows("h", &configured, "192.0.2.9".parse().unwrap())
                .await
                .unwrap()
        );
        assert!(
            !lists
                .allows("h", &configured, "10.1.2.3".parse().unwrap())
                .await
                .unwrap()
        );
        // IPv4-mapped IPv6 clients are checked as IPv4.
        assert!(
            lists
                .allows("h", &configured, "::ffff:127.0.0.1".parse().unwrap())
                .await
                .unwrap()
        );

        // What was stored is what a fresh manager (a restart) starts from.
        let again = Allowlists::new(store.clone(), &hosts);
        assert_eq!(again.effective("h", &configured).await.unwrap(), want);
        // Re-adding a removed configured entry takes it off the removed list.
        again
            .add("h", &configured, net("10.0.0.0/8"))
            .await
            .unwrap();
        assert_eq!(
            again.effective("h", &configured).await.unwrap(),
            vec![net("127.0.0.1/32"), net("10.0.0.0/8"), net("192.0.2.9/32")]
        );
        // The memory copy is what requests read: a change made behind its back is not seen.
        store.keyval("h", STORE).set(KEY, None).await.unwrap();
        assert_eq!(again.effective("h", &configured).await.unwrap().len(), 3);
        again.reset().await;
        assert_eq!(again.effective("h", &configured).await.unwrap(), configured);
        assert!(matches!(
            again.effective("other", &configured).await,
            Err(AllowlistError::UnknownHost(_))
        ));
    }
}
