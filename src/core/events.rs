//! Per-host event bus: named events, prioritised async handlers, lock-free dispatch.
//!
//! Handlers run highest priority first; each either consumes the event ([`Flow::Handled`]) or
//! passes it on ([`Flow::Continue`]). Hooks are kept in a copy-on-write map behind `ArcSwap`, so
//! firing an event on the stanza path takes no lock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::Core;
use super::sessions::SessionHandle;
use crate::xmpp::{Element, Jid};

/// Where a stanza entered the server.
#[derive(Clone)]
pub enum Origin {
    /// A bound client session.
    Client(Arc<SessionHandle>),
    /// The server itself (modules, the admin API).
    Server,
}

impl Origin {
    /// The client session, if the stanza came from one.
    pub fn session(&self) -> Option<&Arc<SessionHandle>> {
        match self {
            Origin::Client(s) => Some(s),
            Origin::Server => None,
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

/// Identifies a registered hook, for [`Events::unhook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookId(u64);

#[derive(Clone)]
struct Hook {
    id: HookId,
    priority: i32,
    handler: Handler,
}

type HookMap = HashMap<String, Arc<Vec<Hook>>>;

/// A named-event bus.
#[derive(Default)]
pub struct Events {
    hooks: ArcSwap<HookMap>,
    writer: Mutex<()>,
    next: AtomicU64,
}

impl Events {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` for `event` at `priority` (higher runs first; equal priorities run in hook order).
    pub fn hook(&self, event: &str, priority: i32, handler: Handler) -> HookId {
        let id = HookId(self.next.fetch_add(1, Ordering::Relaxed));
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut map: HookMap = (**self.hooks.load()).clone();
        let mut list: Vec<Hook> = map.get(event).map(|l| (**l).clone()).unwrap_or_default();
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

    /// Removes a hook; unknown ids are ignored.
    pub fn unhook(&self, id: HookId) {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut map: HookMap = (**self.hooks.load()).clone();
        map.retain(|_, list| {
            if list.iter().any(|h| h.id == id) {
                let kept: Vec<Hook> = list.iter().filter(|h| h.id != id).cloned().collect();
                *list = Arc::new(kept);
            }
            !list.is_empty()
        });
        self.hooks.store(Arc::new(map));
    }

    /// Whether any handler is hooked to `event`.
    pub fn has_handlers(&self, event: &str) -> bool {
        self.hooks.load().contains_key(event)
    }

    /// Number of hooks across all events (for tests and status).
    pub fn hook_count(&self) -> usize {
        self.hooks.load().values().map(|l| l.len()).sum()
    }

    /// Runs the handlers of `event` in priority order until one handles it.
    pub async fn fire(&self, event: &str, mut ev: StanzaEvent) -> Flow {
        let list = match self.hooks.load().get(event) {
            Some(l) => l.clone(),
            None => return Flow::Continue(ev),
        };
        for hook in list.iter() {
            match (hook.handler)(ev).await {
                Flow::Handled => return Flow::Handled,
                Flow::Continue(e) => ev = e,
            }
        }
        Flow::Continue(ev)
    }
}

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(StanzaEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Flow> + Send + 'static,
{
    Arc::new(move |ev| Box::pin(f(ev)))
}
