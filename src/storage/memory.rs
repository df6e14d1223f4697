//! In-memory [`Backend`] for tests: ordered maps under a mutex.

use super::{Backend, FlushFuture, Result};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// Volatile backend keeping every tree in a `BTreeMap`.
#[derive(Default)]
pub struct MemoryBackend {
    trees: Mutex<HashMap<String, Tree>>,
    next_id: AtomicU64,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tree>> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().get(tree).and_then(|t| t.get(key).cloned()))
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let trees = self.lock();
        let Some(t) = trees.get(tree) else {
            return Ok(Vec::new());
        };
        Ok(
            t.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    fn scan_range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let trees = self.lock();
        let Some(t) = trees.get(tree) else {
            return Ok(Vec::new());
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let range = t.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
        let limit = limit.unwrap_or(usize::MAX);
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse {
            range.rev().take(limit).map(clone).collect()
        } else {
            range.take(limit).map(clone).collect()
        })
    }

    fn count_prefix(&self, tree: &str, prefix: &[u8]) -> Result<usize> {
        let trees = self.lock();
        Ok(trees.get(tree).map_or(0, |t| {
            t.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .count()
        }))
    }

    fn apply(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut trees = self.lock();
        let t = trees.entry(tree.to_owned()).or_default();
        for (k, v) in ops {
            match v {
                Some(v) => t.insert(k, v),
                None => t.remove(&k),
            };
        }
        Ok(())
    }

    fn clear(&self, tree: &str) -> Result<usize> {
        Ok(self.lock().remove(tree).map_or(0, |t| t.len()))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_async(&self) -> FlushFuture {
        Box::pin(async { Ok(()) })
    }

    fn next_id(&self) -> Result<u64> {
        Ok(self.next_id.fetch_add(1, Ordering::SeqCst))
    }
}
