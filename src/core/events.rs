//! Per-host event bus: named events, prioritised async handlers, lock-free dispatch.
//!
//! Handlers run highest priority first; each either consumes the event ([`Flow::Handled`]) or
//! passes it on ([`Flow::Continue`]). Hooks are kept in a copy-on-write map behind `ArcSwap`, so
//! firing an event on the stanza path takes no lock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use super::Core;
use super::sessions::SessionHandle;
use crate::xmpp::{Element, Jid, StanzaError};

/// Where a stanza entered the server.
#[derive(Clone)]
pub enum Origin {
    /// A bound client session.
    Client(Arc<SessionHandle>),
    /// The server itself (modules, the admin API).
    Server,
    /// An authenticated server-to-server stream; the remote domain it verified.
    Remote(String),
}

impl Origin {
    /// The client session, if the stanza came from one.
    pub fn session(&self) -> Option<&Arc<SessionHandle>> {
        match self {
            Origin::Client(s) => Some(s),
            Origin::Server | Origin::Remote(_) => None,
        }
    }
}

/// A stanza travelling through the event bus, with its parsed addresses.
pub struct StanzaEvent {
    /// The server, for handlers to reach every manager.
    pub core: Arc<Core>,
    /// Where the stanza came from.
    pub origin: Origin,
    /// The stanza (with `from` already stamped).
    pub stanza: Element,
    /// The parsed sender.
    pub from: Jid,
    /// The parsed recipient.
    pub to: Jid,
    /// Where [`StanzaEvent::reply_error`] records a refusal for the stanza's router.
    pub refusal: Refusal,
}

/// The first error a handler refused a stanza with, kept for the caller of
/// [`Core::route_with_outcome`]; the default slot (every other route) records nothing.
#[derive(Clone, Default)]
pub struct Refusal(Option<Arc<OnceLock<StanzaError>>>);

impl Refusal {
    /// A slot that records the first refusal.
    pub fn recording() -> Self {
        Refusal(Some(Arc::default()))
    }

    /// Records `error` unless a refusal is recorded already (or the slot records nothing).
    pub fn record(&self, error: &StanzaError) {
        if let Some(slot) = &self.0 {
            let _ = slot.set(error.clone());
        }
    }

    /// The recorded refusal, if any.
    pub fn get(&self) -> Option<StanzaError> {
        self.0.as_ref().and_then(|slot| slot.get().cloned())
    }
}

impl StanzaEvent {
    /// Answers the stanza: straight to the requesting session when it came from one (like
    /// Prosody's `origin.send`), else through the router.
    pub async fn reply(&self, reply: Element) {
        if let Origin::Client(s) = &self.origin
            && reply.get_attr("to") == Some(s.jid.as_str())
        {
            s.send(reply);
            return;
        }
        self.core.send(reply).await;
    }

    /// Answers with an error (never for an error stanza), recorded as the stanza's refusal.
    pub async fn reply_error(&self, error: crate::xmpp::StanzaError) {
        self.refusal.record(&error);
        if let Origin::Client(s) = &self.origin
            && self.stanza.get_attr("from") == Some(s.jid.as_str())
        {
            if let Some(r) = crate::xmpp::stanza::error_reply(&self.stanza, &error) {
                s.send(r);
            }
            return;
        }
        self.core.bounce_with(&self.stanza, error).await;
    }
}

/// What a handler did with an event.
pub enum Flow {
    /// Not handled here: the next handler (or the default behaviour) gets it.
    Continue(StanzaEvent),
    /// Handled; stop.
    Handled,
}

/// A boxed handler future.
pub type HookFuture = Pin<Box<dyn Future<Output = Flow> + Send>>;
/// A hook handler.
pub type Handler = Arc<dyn Fn(StanzaEvent) -> HookFuture + Send + Sync>;

/// Identifies a registered hook, for [`Events::unhook`] (unique across all buses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookId(u64);

static NEXT_HOOK: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
struct Hook<H> {
    id: HookId,
    priority: i32,
    handler: H,
}

/// Named lists of prioritised handlers, copy-on-write behind `ArcSwap` so readers take no lock.
struct HookTable<H> {
    hooks: ArcSwap<HashMap<String, Arc<Vec<Hook<H>>>>>,
    writer: Mutex<()>,
}

impl<H> Default for HookTable<H> {
    fn default() -> Self {
        HookTable {
            hooks: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
        }
    }
}

impl<H: Clone> HookTable<H> {
    fn hook(&self, event: &str, priority: i32, handler: H) -> HookId {
        let id = HookId(NEXT_HOOK.fetch_add(1, Ordering::Relaxed));
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = (**self.hooks.load()).clone();
        let mut list: Vec<Hook<H>> = map.get(event).map(|l| (**l).clone()).unwrap_or_default();
        let pos = list
            .iter()
            .position(|h| h.priority < priority)
            .unwrap_or(list.len());
        list.insert(
            pos,
            Hook {
                id,
                priority,
                handler,
            },
        );
        map.insert(event.to_string(), Arc::new(list));
        self.hooks.store(Arc::new(map));
        id
    }

    fn unhook(&self, id: HookId) {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = (**self.hooks.load()).clone();
        map.retain(|_, list| {
            if list.iter().any(|h| h.id == id) {
                *list = Arc::new(list.iter().filter(|h| h.id != id).cloned().collect());
            }
            !list.is_empty()
        });
        self.hooks.store(Arc::new(map));
    }

    fn get(&self, event: &str) -> Option<Arc<Vec<Hook<H>>>> {
        self.hooks.load().get(event).cloned()
    }

    fn contains(&self, event: &str) -> bool {
        self.hooks.load().contains_key(event)
    }

    fn count(&self) -> usize {
        self.hooks.load().values().map(|l| l.len()).sum()
    }
}

/// A named-event bus.
#[derive(Default)]
pub struct Events {
    table: HookTable<Handler>,
}

impl Events {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` for `event` at `priority` (higher runs first; equal priorities run in hook order).
    pub fn hook(&self, event: &str, priority: i32, handler: Handler) -> HookId {
        self.table.hook(event, priority, handler)
    }

    /// Removes a hook; unknown ids are ignored.
    pub fn unhook(&self, id: HookId) {
        self.table.unhook(id);
    }

    /// Whether any handler is hooked to `event`.
    pub fn has_handlers(&self, event: &str) -> bool {
        self.table.contains(event)
    }

    /// Number of hooks across all events (for tests and status).
    pub fn hook_count(&self) -> usize {
        self.table.count()
    }

    /// Runs the handlers of `event` in priority order until one handles it.
    pub async fn fire(&self, event: &str, ev: StanzaEvent) -> Flow {
        match self.table.get(event) {
            Some(list) => run(list.iter(), ev).await,
            None => Flow::Continue(ev),
        }
    }

    /// Runs the handlers of `event` on this bus and on `global` (the `*` bus) as one list in
    /// priority order (this bus first among equals) until one handles it.
    pub async fn fire_with_global(&self, global: &Events, event: &str, ev: StanzaEvent) -> Flow {
        match (self.table.get(event), global.table.get(event)) {
            (None, None) => Flow::Continue(ev),
            (Some(list), None) | (None, Some(list)) => run(list.iter(), ev).await,
            (Some(own), Some(all)) => {
                let mut merged: Vec<&Hook<Handler>> = Vec::with_capacity(own.len() + all.len());
                let (mut a, mut b) = (own.iter().peekable(), all.iter().peekable());
                loop {
                    let next = match (a.peek(), b.peek()) {
                        (Some(x), Some(y)) if x.priority >= y.priority => a.next(),
                        (Some(_), Some(_)) => b.next(),
                        (Some(_), None) => a.next(),
                        (None, _) => b.next(),
                    };
                    match next {
                        Some(h) => merged.push(h),
                        None => break,
                    }
                }
                run(merged.into_iter(), ev).await
            }
        }
    }
}

async fn run<'a>(hooks: impl Iterator<Item = &'a Hook<Handler>>, mut ev: StanzaEvent) -> Flow {
    for hook in hooks {
        match (hook.handler)(ev).await {
            Flow::Handled => return Flow::Handled,
            Flow::Continue(e) => ev = e,
        }
    }
    Flow::Continue(ev)
}

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(StanzaEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Flow> + Send + 'static,
{
    Arc::new(move |ev| Box::pin(f(ev)))
}

/// A data-event handler (Prosody's `module:hook` for non-stanza events): it may change the data,
/// and returning `Some` halts the event with that value.
pub type DataHandler =
    Arc<dyn Fn(&mut serde_json::Value) -> Option<serde_json::Value> + Send + Sync>;

/// A bus of named data events (`module-status/updated`, `item-added/<key>`, module-defined ones).
#[derive(Default)]
pub struct DataEvents {
    table: HookTable<DataHandler>,
}

impl DataEvents {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler at `priority` (higher first).
    pub fn hook(&self, event: &str, priority: i32, handler: DataHandler) -> HookId {
        self.table.hook(event, priority, handler)
    }

    /// Removes a handler; unknown ids are ignored.
    pub fn unhook(&self, id: HookId) {
        self.table.unhook(id);
    }

    /// Whether any handler is hooked to `event` (so callers build its data only when needed).
    pub fn has_handlers(&self, event: &str) -> bool {
        self.table.contains(event)
    }

    /// Runs the handlers in priority order; the first `Some` halts and is returned.
    pub fn fire(&self, event: &str, data: &mut serde_json::Value) -> Option<serde_json::Value> {
        let list = self.table.get(event)?;
        list.iter().find_map(|h| (h.handler)(data))
    }

    /// Number of handlers (for tests and status).
    pub fn hook_count(&self) -> usize {
        self.table.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::StanzaErrorCondition as C;
    use serde_json::json;

    #[test]
    fn a_recording_refusal_keeps_the_first_error_and_the_default_keeps_none() {
        let slot = Refusal::recording();
        let seen_by_handler = slot.clone();
        assert_eq!(slot.get(), None);
        seen_by_handler.record(&StanzaError::new(C::InternalServerError));
        seen_by_handler.record(&StanzaError::new(C::ServiceUnavailable));
        assert_eq!(slot.get(), Some(StanzaError::new(C::InternalServerError)));
        let none = Refusal::default();
        none.record(&StanzaError::new(C::InternalServerError));
        assert_eq!(none.get(), None);
    }

    #[test]
    fn data_events_run_by_priority_and_halt_on_a_value() {
        let bus = DataEvents::new();
        let low = bus.hook(
            "e",
            -1,
            Arc::new(|d: &mut serde_json::Value| {
                d["seen"] = json!(d["seen"].as_i64().unwrap_or(0) * 10 + 2);
                Some(json!("low"))
            }),
        );
        bus.hook(
            "e",
            5,
            Arc::new(|d: &mut serde_json::Value| {
                d["seen"] = json!(1);
                None
            }),
        );
        let mut data = json!({});
        assert_eq!(bus.fire("e", &mut data), Some(json!("low")));
        assert_eq!(data["seen"], json!(12), "high priority ran first");
        bus.unhook(low);
        let mut data = json!({});
        assert_eq!(bus.fire("e", &mut data), None);
        assert_eq!(bus.fire("unknown", &mut data), None);
        assert_eq!(bus.hook_count(), 1);
    }
}
