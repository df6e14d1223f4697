//! The global budget for bytes queued to peers (issue #18, "Memory").
//!
//! Every stanza put in a client session's send queue (TCP, WebSocket and BOSH sessions share
//! that queue) is charged here by its approximate serialised size and released when the
//! writer takes it out or the queue is dropped. The per-session queue bound
//! (`c2s.send_queue`) caps one slow reader; this budget caps all of them together. Past
//! `limits.queue_budget_bytes` the defined outcome is: the session holding the largest queue
//! is shed (closed with `<policy-violation/>`; what it had queued goes back to the router as
//! for any ended session), and the stanza that found the budget spent is still queued for an
//! innocent recipient while the shed queue drains, up to a quarter of the budget more. Beyond
//! that headroom the recipient itself is shed and the stanza refused, so queued bytes never
//! grow without bound. Outgoing server-to-server queues ask [`QueueBudget::is_spent`] and
//! bounce with `<resource-constraint/>` while the budget is spent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dashmap::DashMap;

use super::metrics::{Metrics, Series};
use crate::xmpp::Element;
use crate::xmpp::element::Node;

/// The default budget (`limits.queue_budget_bytes`): 512 MiB of queued stanzas across the server.
pub const DEFAULT_QUEUE_BUDGET: usize = crate::config::limits::DEFAULT_QUEUE_BUDGET_BYTES;

/// A queue drawing from the budget that can be shed (its owner closed) when the budget is spent.
pub trait Sheddable: Send + Sync {
    /// Bytes this queue holds now.
    fn queued_bytes(&self) -> usize;
    /// Closes the queue's owner (a c2s session: `<policy-violation/>`).
    fn shed(&self);
}

/// The server-wide count of queued bytes and the queues drawing from it.
pub struct QueueBudget {
    limit: usize,
    used: AtomicUsize,
    /// The highest total charged while over the limit (0 while never over).
    high_water: AtomicUsize,
    shed: AtomicU64,
    queues: DashMap<u64, Weak<dyn Sheddable>>,
    /// The queue shed last, while it still holds bytes: no other is shed before it drains.
    draining: Mutex<Option<Weak<dyn Sheddable>>>,
    used_gauge: Option<Arc<Series>>,
    shed_counter: Option<Arc<Series>>,
}

/// What [`QueueBudget::charge`] decided for one stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it.
    Charged(usize),
    /// Do not queue it: the budget is spent and this queue was shed.
    Refused,
}

impl Default for QueueBudget {
    fn default() -> Self {
        QueueBudget::new(DEFAULT_QUEUE_BUDGET)
    }
}

impl QueueBudget {
    /// A budget of `limit` bytes (at least one), without metrics.
    pub fn new(limit: usize) -> Self {
        QueueBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            queues: DashMap::new(),
            draining: Mutex::new(None),
            used_gauge: None,
            shed_counter: None,
        }
    }

    /// A budget of `limit` bytes shown in `metrics` (`oxpecker_queue_budget_bytes`,
    /// `oxpecker_queued_bytes`, `oxpecker_queue_budget_shed_total`).
    pub fn with_metrics(limit: usize, metrics: &Metrics) -> Self {
        let mut b = QueueBudget::new(limit);
        metrics
            .gauge(
                "oxpecker_queue_budget_bytes",
                "The global budget for bytes queued to sessions (limits.queue_budget_bytes)",
                &[],
            )
            .with(&[])
            .set(b.limit as f64);
        b.used_gauge = Some(
            metrics
                .gauge(
                    "oxpecker_queued_bytes",
                    "Bytes of stanzas queued to client sessions, counted against the budget",
                    &[],
                )
                .with(&[]),
        );
        b.shed_counter = Some(
            metrics
                .counter(
                    "oxpecker_queue_budget_shed",
                    "Sessions closed with policy-violation because the queue budget was spent",
                    &[],
                )
                .with(&[]),
        );
        b
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The highest total of queued bytes seen over the limit (0 if the budget was never spent).
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Queues shed so far.
    pub fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Whether the budget is spent (for queues that bounce instead of shedding, like s2s).
    pub fn is_spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// Lets queue `id` be shed when the budget is spent.
    pub fn register(&self, id: u64, queue: Weak<dyn Sheddable>) {
        self.queues.insert(id, queue);
    }

    /// Forgets queue `id` (its owner is gone).
    pub fn forget(&self, id: u64) {
        self.queues.remove(&id);
    }

    /// Charges `bytes` for queue `me`, shedding the largest queue when the budget is spent.
    pub fn charge(&self, me: &dyn Sheddable, bytes: usize) -> Verdict {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        let after = before.saturating_add(bytes);
        if after > self.limit {
            let headroom = self.limit.saturating_add(self.limit / 4);
            let shed_me = self.relieve(me) || after > headroom;
            if !shed_me {
                self.high_water.fetch_max(after, Ordering::Relaxed);
            }
            if shed_me {
                self.used.fetch_sub(bytes, Ordering::Relaxed);
                if after > headroom {
                    self.count_shed();
                    me.shed();
                }
                return Verdict::Refused;
            }
        }
        if let Some(g) = &self.used_gauge {
            g.inc_by(bytes as f64);
        }
        Verdict::Charged(bytes)
    }

    /// Gives back bytes charged earlier.
    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(g) = &self.used_gauge {
            g.inc_by(-(bytes as f64));
        }
    }

    /// Sheds the largest queue unless one shed earlier still drains; true if `me` is (or
    /// already was) the one shed.
    fn relieve(&self, me: &dyn Sheddable) -> bool {
        let is_me =
            |q: &Arc<dyn Sheddable>| std::ptr::addr_eq(Arc::as_ptr(q), me as *const dyn Sheddable);
        let Ok(mut draining) = self.draining.lock() else {
            return false;
        };
        if let Some(q) = draining.as_ref().and_then(Weak::upgrade)
            && q.queued_bytes() > 0
        {
            return is_me(&q);
        }
        let mut largest: Option<(usize, Arc<dyn Sheddable>)> = None;
        self.queues.retain(|_, w| {
            let Some(q) = w.upgrade() else {
                return false;
            };
            let n = q.queued_bytes();
            if largest.as_ref().is_none_or(|(m, _)| n > *m) {
                largest = Some((n, q));
            }
            true
        });
        let Some((_, victim)) = largest else {
            return false;
        };
        *draining = Some(Arc::downgrade(&victim));
        drop(draining);
        self.count_shed();
        victim.shed();
        is_me(&victim)
    }

    fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.shed_counter {
            c.inc();
        }
    }
}

/// One queue's share of the budget: the bytes it holds now.
pub struct Meter {
    budget: Arc<QueueBudget>,
    bytes: AtomicUsize,
}

impl Meter {
    /// A queue drawing from `budget`, holding nothing yet.
    pub fn new(budget: Arc<QueueBudget>) -> Arc<Meter> {
        Arc::new(Meter {
            budget,
            bytes: AtomicUsize::new(0),
        })
    }

    /// Bytes this queue holds now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The budget this queue draws from.
    pub fn budget(&self) -> &Arc<QueueBudget> {
        &self.budget
    }

    /// Charges `bytes` for one item of `owner`'s queue; `None` when refused (see [`QueueBudget::charge`]).
    pub fn charge(self: &Arc<Self>, owner: &dyn Sheddable, bytes: usize) -> Option<Charge> {
        match self.budget.charge(owner, bytes) {
            Verdict::Charged(n) => {
                self.bytes.fetch_add(n, Ordering::Relaxed);
                Some(Charge {
                    meter: self.clone(),
                    bytes: n,
                })
            }
            Verdict::Refused => None,
        }
    }
}

/// Bytes one queued item holds against its queue and the budget, given back when dropped
/// (taken by the writer, drained at the end of a session, or dropped with the queue).
pub struct Charge {
    meter: Arc<Meter>,
    bytes: usize,
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({})", self.bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.meter.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.meter.budget.release(self.bytes);
    }
}

/// About how many bytes `el` takes once serialised (names, attributes, text, markup), without
/// serialising it; deep trees are walked without recursion.
pub fn approx_size(el: &Element) -> usize {
    let mut total: usize = 0;
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        // `<name` `>` `</name>`
        total = total.saturating_add(e.name().len().saturating_mul(2).saturating_add(5));
        for (k, v) in e.attrs() {
            total = total.saturating_add(k.len() + v.len() + 4);
        }
        for n in e.nodes() {
            match n {
                Node::Element(c) => stack.push(c),
                Node::Text(t) => total = total.saturating_add(t.len()),
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Queue {
        bytes: AtomicUsize,
        shed: AtomicBool,
    }

    impl Sheddable for Queue {
        fn queued_bytes(&self) -> usize {
            self.bytes.load(Ordering::Relaxed)
        }
        fn shed(&self) {
            self.shed.store(true, Ordering::Relaxed);
        }
    }

    fn queue(budget: &QueueBudget, id: u64) -> Arc<Queue> {
        let q = Arc::new(Queue {
            bytes: AtomicUsize::new(0),
            shed: AtomicBool::new(false),
        });
        let w: Weak<dyn Sheddable> = Arc::downgrade(&(q.clone() as Arc<dyn Sheddable>));
        budget.register(id, w);
        q
    }

    fn put(budget: &QueueBudget, q: &Queue, n: usize) -> Verdict {
        let v = budget.charge(q, n);
        if v == Verdict::Charged(n) {
            q.bytes.fetch_add(n, Ordering::Relaxed);
        }
        v
    }

    #[test]
    fn past_the_budget_the_largest_queue_is_shed_and_others_keep_queuing() {
        let metrics = Metrics::new();
        let budget = QueueBudget::with_metrics(1000, &metrics);
        let (slow, ok) = (queue(&budget, 1), queue(&budget, 2));
        assert_eq!(put(&budget, &slow, 900), Verdict::Charged(900));
        assert_eq!(put(&budget, &ok, 50), Verdict::Charged(50));
        assert!(!budget.is_spent());
        // `ok` pushes the total past the budget: the slow reader's queue is shed, not `ok`'s.
        assert_eq!(put(&budget, &ok, 100), Verdict::Charged(100));
        assert!(slow.shed.load(Ordering::Relaxed) && !ok.shed.load(Ordering::Relaxed));
        assert_eq!(budget.shed_count(), 1);
        // The shed queue refuses more while it drains; no second queue is shed meanwhile.
        assert_eq!(put(&budget, &slow, 10), Verdict::Refused);
        assert_eq!(put(&budget, &ok, 10), Verdict::Charged(10));
        assert_eq!(budget.shed_count(), 1);
        assert_eq!(budget.used(), 1060);
        assert_eq!(budget.high_water(), 1060);
        let text = metrics.render();
        assert!(text.contains("oxpecker_queued_bytes 1060"), "{text}");
        assert!(text.contains("oxpecker_queue_budget_bytes 1000"), "{text}");
        assert!(
            text.contains("oxpecker_queue_budget_shed_total 1"),
            "{text}"
        );
        budget.release(900);
        slow.bytes.store(0, Ordering::Relaxed);
        assert_eq!(budget.used(), 160);
    }

    #[test]
    fn beyond_the_headroom_the_charging_queue_is_shed_too() {
        let budget = QueueBudget::new(1000);
        let (slow, ok) = (queue(&budget, 1), queue(&budget, 2));
        assert_eq!(put(&budget, &slow, 1000), Verdict::Charged(1000));
        assert_eq!(put(&budget, &ok, 200), Verdict::Charged(200));
        assert!(slow.shed.load(Ordering::Relaxed));
        // The slow queue has not drained and the headroom (a quarter) is used up.
        assert_eq!(put(&budget, &ok, 100), Verdict::Refused);
        assert!(ok.shed.load(Ordering::Relaxed));
        assert_eq!(budget.used(), 1200, "a refused stanza is not counted");
        assert_eq!(budget.shed_count(), 2);
    }

    #[test]
    fn gone_queues_are_never_picked() {
        let budget = QueueBudget::new(10);
        let gone = queue(&budget, 1);
        gone.bytes.store(1_000, Ordering::Relaxed);
        drop(gone);
        let me = queue(&budget, 2);
        assert_eq!(
            put(&budget, &me, 11),
            Verdict::Refused,
            "the only live queue is shed"
        );
        assert!(me.shed.load(Ordering::Relaxed));
        assert!(budget.queues.get(&1).is_none());
        budget.forget(2);
        assert!(budget.queues.is_empty());
    }

    #[test]
    fn a_charge_is_given_back_when_its_item_is_dropped() {
        let budget = Arc::new(QueueBudget::new(100));
        let q = queue(&budget, 1);
        let meter = Meter::new(budget.clone());
        let a = meter.charge(&*q, 60).expect("fits");
        assert_eq!((a.bytes(), meter.bytes(), budget.used()), (60, 60, 60));
        let b = meter.charge(&*q, 30).expect("fits");
        drop(a);
        assert_eq!((meter.bytes(), budget.used()), (30, 30));
        drop(b);
        assert_eq!((meter.bytes(), budget.used()), (0, 0));
    }

    #[test]
    fn approx_size_is_close_to_the_serialised_size() {
        let body = "x".repeat(1000);
        let el = Element::new("message", "jabber:client")
            .attr("to", "alice@localhost/r")
            .attr("type", "chat")
            .child(Element::new("body", "jabber:client").text(body));
        let real = el.to_xml("jabber:client").len();
        let est = approx_size(&el);
        assert!(
            est >= real * 9 / 10 && est <= real * 11 / 10,
            "{est} vs {real}"
        );
        let mut deep = Element::new("a", "x");
        for _ in 0..10_000 {
            deep = Element::new("a", "x").child(deep);
        }
        assert!(approx_size(&deep) > 10_000 * 7);
    }
}
