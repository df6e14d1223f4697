//! Sliding-window rate limits held by the server (no process-wide state: each [`super::Core`]
//! has its own), e.g. in-band registrations per client address.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked before stale ones are swept.
const SWEEP_AT: usize = 10_000;

/// Counts attempts per key (an O(1) lookup) within a sliding window.
pub struct Throttle {
    window: Duration,
    seen: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    /// A throttle over `window`.
    pub fn new(window: Duration) -> Self {
        Throttle {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records an attempt for `key` at `now` unless `max` attempts happened within the window; true if allowed.
    pub fn allow(&self, key: &str, max: usize, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < window;
        if seen.len() >= SWEEP_AT {
            seen.retain(|_, q| q.iter().any(fresh));
        }
        let q = seen.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| !fresh(t)) {
            q.pop_front();
        }
        if q.len() >= max {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_in_a_window() {
        let window = Duration::from_secs(60);
        let t = Throttle::new(window);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.allow("1.2.3.4", 3, start));
        }
        assert!(!t.allow("1.2.3.4", 3, start + Duration::from_secs(30)));
        assert!(t.allow("5.6.7.8", 3, start));
        assert!(t.allow("1.2.3.4", 3, start + window + Duration::from_secs(1)));
        assert!(!Throttle::new(window).allow("x", 0, start));
    }
}
