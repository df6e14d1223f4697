//! The hosts a server knows, by domain: read on every stanza without taking a lock, added to at
//! run time (`host:activate` of a host the reloaded configuration names), switched off and on.
//!
//! A host never leaves the map: deactivating one only clears its flag (its data and its
//! [`Host`] stay), so a `&Arc<Host>` handed out lives as long as the map. The hosts sit in an
//! append-only table of doubling segments (each slot a [`OnceLock`], filled once); the domain →
//! slot index is an [`ArcSwap`] snapshot, replaced whole when a host is added (rare) and read
//! with no lock and no contention on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use super::modules::Host;

/// Segments of the append-only table: segment `k` holds `2^k` slots, so 32 of them hold more
/// hosts than any server will have.
const SEGMENTS: usize = 32;

/// One known host and whether it is served now.
struct Entry {
    host: Arc<Host>,
    active: AtomicBool,
}

/// Why a host could not be added.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostMapError {
    /// The domain is already in the map.
    #[error("host {0} is already known")]
    Exists(String),
    /// The table is full (more than 2^32 − 1 hosts).
    #[error("too many hosts")]
    Full,
}

/// Every host of a server (user hosts and components), active or switched off.
pub struct HostMap {
    index: ArcSwap<HashMap<String, usize>>,
    segments: [OnceLock<Box<[OnceLock<Entry>]>>; SEGMENTS],
    /// Serialises additions (the next slot and the index swap).
    adding: Mutex<usize>,
}

/// The segment and the offset in it of slot `i`.
fn locate(i: usize) -> Option<(usize, usize)> {
    let n = i.checked_add(1)?;
    let segment = n.ilog2() as usize;
    (segment < SEGMENTS).then(|| (segment, n - (1usize << segment)))
}

impl HostMap {
    /// A map of `hosts`, all active.
    pub fn new(hosts: impl IntoIterator<Item = Arc<Host>>) -> Self {
        let map = HostMap {
            index: ArcSwap::from_pointee(HashMap::new()),
            segments: std::array::from_fn(|_| OnceLock::new()),
            adding: Mutex::new(0),
        };
        for h in hosts {
            if let Err(e) = map.add(h) {
                tracing::warn!(error = %e, "host not added");
            }
        }
        map
    }

    fn entry(&self, domain: &str) -> Option<&Entry> {
        let i = *self.index.load().get(domain)?;
        let (segment, offset) = locate(i)?;
        self.segments[segment].get()?.get(offset)?.get()
    }

    /// The active host `domain`.
    pub fn get(&self, domain: &str) -> Option<&Arc<Host>> {
        self.entry(domain)
            .filter(|e| e.active.load(Ordering::Acquire))
            .map(|e| &e.host)
    }

    /// Host `domain`, active or not.
    pub fn get_any(&self, domain: &str) -> Option<&Arc<Host>> {
        self.entry(domain).map(|e| &e.host)
    }

    /// Whether `domain` is in the map (active or not).
    pub fn contains(&self, domain: &str) -> bool {
        self.index.load().contains_key(domain)
    }

    /// Whether `domain` is in the map and served.
    pub fn is_active(&self, domain: &str) -> bool {
        self.get(domain).is_some()
    }

    /// Switches `domain` on or off; `false` when it is unknown or already in that state.
    pub fn set_active(&self, domain: &str, active: bool) -> bool {
        self.entry(domain)
            .is_some_and(|e| e.active.swap(active, Ordering::AcqRel) != active)
    }

    /// Adds `host`, active. Fails when its domain is already known.
    pub fn add(&self, host: Arc<Host>) -> Result<&Arc<Host>, HostMapError> {
        let mut next = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let index = self.index.load_full();
        if index.contains_key(&host.name) {
            return Err(HostMapError::Exists(host.name.clone()));
        }
        let i = *next;
        let (segment, offset) = locate(i).ok_or(HostMapError::Full)?;
        let slots = self.segments[segment]
            .get_or_init(|| (0..1usize << segment).map(|_| OnceLock::new()).collect());
        let name = host.name.clone();
        let entry = Entry {
            host,
            active: AtomicBool::new(true),
        };
        let slot = slots.get(offset).ok_or(HostMapError::Full)?;
        if slot.set(entry).is_err() {
            return Err(HostMapError::Full);
        }
        *next = i + 1;
        let mut grown = (*index).clone();
        grown.insert(name.clone(), i);
        self.index.store(Arc::new(grown));
        self.get_any(&name).ok_or(HostMapError::Full)
    }

    /// Every known host (active or not), in the order they were added.
    pub fn all(&self) -> Vec<Arc<Host>> {
        let mut list: Vec<(usize, &Arc<Host>)> = self
            .index
            .load()
            .iter()
            .filter_map(|(name, i)| Some((*i, self.get_any(name)?)))
            .collect();
        list.sort_by_key(|(i, _)| *i);
        list.into_iter().map(|(_, h)| h.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_doubling_segments_in_order() {
        assert_eq!(locate(0), Some((0, 0)));
        assert_eq!(locate(1), Some((1, 0)));
        assert_eq!(locate(2), Some((1, 1)));
        assert_eq!(locate(3), Some((2, 0)));
        assert_eq!(locate(6), Some((2, 3)));
        assert_eq!(locate(7), Some((3, 0)));
        assert_eq!(locate(usize::MAX), None);
    }

    #[test]
    fn hosts_are_added_switched_off_and_on_and_never_lost() {
        let map = HostMap::new([Arc::new(Host::new("a.example"))]);
        let first = map.get("a.example").expect("a").clone();
        for i in 0..40 {
            map.add(Arc::new(Host::new(&format!("h{i}.example"))))
                .expect("added");
        }
        assert_eq!(
            map.add(Arc::new(Host::new("h3.example"))).err(),
            Some(HostMapError::Exists("h3.example".into()))
        );
        assert!(Arc::ptr_eq(map.get("a.example").expect("a"), &first));
        assert_eq!(
            map.get("h39.example").map(|h| h.name.as_str()),
            Some("h39.example")
        );
        let names: Vec<String> = map.all().iter().map(|h| h.name.clone()).collect();
        assert_eq!(names.len(), 41);
        assert_eq!(
            (names[0].as_str(), names[40].as_str()),
            ("a.example", "h39.example")
        );

        assert!(map.set_active("h5.example", false));
        assert!(!map.set_active("h5.example", false), "already off");
        assert!(map.get("h5.example").is_none() && map.get_any("h5.example").is_some());
        assert!(map.contains("h5.example") && !map.is_active("h5.example"));
        assert!(map.set_active("h5.example", true));
        assert!(map.is_active("h5.example"));
        assert!(!map.set_active("nowhere.example", true));
        assert!(map.get("nowhere.example").is_none());
    }
}
