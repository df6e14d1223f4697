//! Archive totals kept in memory: how many items one user's archive holds, in all and per
//! conversation partner, counted once and then kept current by the archive writer, so the
//! total of a MAM page (RSM `<count/>`) costs a lookup instead of a scan of the whole archive.
//!
//! Every change of a cached total happens under the archive lock ([`super::appender::Writer`]'s
//! `lock`), as do the first count and its insertion, so a total never misses a batch.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most totals kept; past it the cache starts over (each total is recounted on its next use).
const MAX_TOTALS: usize = 100_000;

/// The known totals of one user's archive.
#[derive(Default)]
struct UserTotals {
    /// All items, if counted.
    all: Option<usize>,
    /// Items per conversation partner (bare JID), for the partners counted.
    with: HashMap<String, usize>,
}

/// Cached archive totals keyed by the user's key prefix (`host\0store\0user\0`).
#[derive(Default)]
pub(super) struct Totals {
    users: Mutex<(HashMap<Vec<u8>, UserTotals>, usize)>,
}

impl Totals {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<Vec<u8>, UserTotals>, usize)> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached total of `prefix`'s items (with partner `with`, if given).
    pub(super) fn get(&self, prefix: &[u8], with: Option<&str>) -> Option<usize> {
        let users = self.lock();
        let user = users.0.get(prefix)?;
        match with {
            None => user.all,
            Some(w) => user.with.get(w).copied(),
        }
    }

    /// Remembers a counted total (call under the archive lock).
    pub(super) fn insert(&self, prefix: &[u8], with: Option<&str>, n: usize) {
        let mut guard = self.lock();
        let (users, len) = &mut *guard;
        if *len >= MAX_TOTALS {
            users.clear();
            *len = 0;
        }
        let user = users.entry(prefix.to_vec()).or_default();
        let fresh = match with {
            None => user.all.replace(n).is_none(),
            Some(w) => user.with.insert(w.to_string(), n).is_none(),
        };
        if fresh {
            *len = len.saturating_add(1);
        }
    }

    /// Counts new items, `(prefix, with)` each, into the totals known (under the archive lock).
    pub(super) fn added<'a>(&self, items: impl Iterator<Item = (&'a [u8], &'a str)>) {
        let mut guard = self.lock();
        let users = &mut guard.0;
        if users.is_empty() {
            return;
        }
        for (prefix, with) in items {
            if let Some(user) = users.get_mut(prefix) {
                if let Some(all) = &mut user.all {
                    *all = all.saturating_add(1);
                }
                if let Some(n) = user.with.get_mut(with) {
                    *n = n.saturating_add(1);
                }
            }
        }
    }

    /// Forgets the totals of one user (after items were removed or replaced).
    pub(super) fn forget(&self, prefix: &[u8]) {
        let mut guard = self.lock();
        let (users, len) = &mut *guard;
        if let Some(user) = users.remove(prefix) {
            let n = user
                .with
                .len()
                .saturating_add(usize::from(user.all.is_some()));
            *len = len.saturating_sub(n);
        }
    }

    /// Forgets every total.
    pub(super) fn clear(&self) {
        *self.lock() = Default::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_totals_follow_additions_and_forgetting() {
        let t = Totals::default();
        t.added([(&b"u\0"[..], "a")].into_iter());
        assert_eq!(t.get(b"u\0", None), None, "nothing counted yet");
        t.insert(b"u\0", None, 2);
        t.insert(b"u\0", Some("a"), 1);
        t.added([(&b"u\0"[..], "a"), (&b"u\0"[..], "b"), (&b"v\0"[..], "a")].into_iter());
        assert_eq!(t.get(b"u\0", None), Some(4));
        assert_eq!(t.get(b"u\0", Some("a")), Some(2));
        assert_eq!(t.get(b"u\0", Some("b")), None, "b was never counted");
        assert_eq!(t.get(b"v\0", None), None);
        t.forget(b"u\0");
        assert_eq!(t.get(b"u\0", None), None);
        t.insert(b"v\0", None, 7);
        t.clear();
        assert_eq!(t.get(b"v\0", None), None);
    }
}
