//! Hooks on the host's and the global (`*`) event buses (Prosody's `module:hook`,
//! `hook_global`, `unhook`, `fire_event`).
//!
//! Stanza events (`message/bare`, `iq-get/host/<ns>:<name>`, …) are fired by the router on the
//! recipient's host and on the global bus together, in one priority order, so a global hook
//! sees every host's stanzas. Data events are fired on one bus only: the host's, or the global
//! one for a global module.
//!
//! Prosody's `module:hook_object_event` (hooking an emitter other than a host) has no
//! counterpart yet: hosts are the only objects with their own bus. Rooms get one with group
//! chat, and this module will then offer the hook for a room's bus.

use std::sync::Arc;

use serde_json::Value;

use super::{ModuleHandle, Registrations};
use crate::core::events::{DataHandler, Handler, HookId};

impl ModuleHandle {
    /// Hooks a stanza `handler` to `event` on this host at `priority` (higher runs first).
    pub fn hook(&self, event: &str, priority: i32, handler: Handler) -> HookId {
        let id = self.host.events.hook(event, priority, handler);
        self.reg().hooks.push((false, id));
        id
    }

    /// Hooks a stanza handler on the global (`*`) bus: it sees `event` on every host, in
    /// priority order with that host's own hooks.
    pub fn hook_global(&self, event: &str, priority: i32, handler: Handler) -> Option<HookId> {
        let g = self.global_host()?;
        let id = g.events.hook(event, priority, handler);
        self.reg().hooks.push((true, id));
        Some(id)
    }

    /// Hooks a data-event handler on this host (returning `Some` halts the event).
    pub fn hook_event(&self, event: &str, priority: i32, handler: DataHandler) -> HookId {
        let id = self.host.data_events.hook(event, priority, handler);
        self.reg().data_hooks.push((false, id));
        id
    }

    /// Hooks a data-event handler on the global bus.
    pub fn hook_global_event(
        &self,
        event: &str,
        priority: i32,
        handler: DataHandler,
    ) -> Option<HookId> {
        let g = self.global_host()?;
        let id = g.data_events.hook(event, priority, handler);
        self.reg().data_hooks.push((true, id));
        Some(id)
    }

    /// Removes a hook this module added.
    pub fn unhook(&self, id: HookId) {
        let mut reg = self.reg();
        let hooks = take_where(&mut reg.hooks, id);
        let data_hooks = take_where(&mut reg.data_hooks, id);
        drop(reg);
        self.remove_hooks(&Registrations {
            hooks,
            data_hooks,
            ..Registrations::default()
        });
    }

    /// Fires a data event on this host; the first handler returning a value halts it.
    pub fn fire_event(&self, event: &str, data: &mut Value) -> Option<Value> {
        self.host.data_events.fire(event, data)
    }

    /// Unhooks every hook listed in `reg` from the bus it was added to.
    pub(super) fn remove_hooks(&self, reg: &Registrations) {
        let global = self.global_host();
        let bus = |g: bool| match (g, &global) {
            (true, Some(gh)) => gh.clone(),
            _ => Arc::clone(&self.host),
        };
        for (g, id) in &reg.hooks {
            bus(*g).events.unhook(*id);
        }
        for (g, id) in &reg.data_hooks {
            bus(*g).data_events.unhook(*id);
        }
    }
}

fn take_where(list: &mut Vec<(bool, HookId)>, id: HookId) -> Vec<(bool, HookId)> {
    let (hit, keep) = list.drain(..).partition(|(_, h)| *h == id);
    *list = keep;
    hit
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::core::events::{Flow, handler};
    use crate::core::module_api::probe::{core, load, load_on};
    use crate::xmpp::Element;

    fn counting(seen: &Arc<AtomicUsize>) -> Handler {
        let seen = seen.clone();
        handler(move |ev| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                Flow::Continue(ev)
            }
        })
    }

    fn chat() -> Element {
        Element::new("message", crate::xmpp::ns::CLIENT)
            .attr("type", "chat")
            .attr("from", "localhost")
            .attr("to", "nobody@localhost")
    }

    #[tokio::test]
    async fn a_global_hook_sees_stanza_events_of_a_host_until_unloaded() {
        let core = core();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        load_on(&core, "*", move |ctx| {
            assert!(ctx.is_global());
            ctx.hook_global("message/bare", 10, counting(&s)).unwrap();
            Ok(())
        })
        .unwrap();
        core.route(crate::core::events::Origin::Server, chat())
            .await;
        assert_eq!(seen.load(Ordering::SeqCst), 1, "message/bare on localhost");
        core.unload_module("*", "probe").unwrap();
        core.route(crate::core::events::Origin::Server, chat())
            .await;
        assert_eq!(seen.load(Ordering::SeqCst), 1, "unhooked on unload");
    }

    #[tokio::test]
    async fn host_and_global_hooks_run_in_one_priority_order() {
        let core = core();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mark = |o: &Arc<std::sync::Mutex<Vec<&'static str>>>, name: &'static str, stop| {
            let o = o.clone();
            handler(move |ev| {
                let o = o.clone();
                async move {
                    o.lock().unwrap().push(name);
                    if stop {
                        Flow::Handled
                    } else {
                        Flow::Continue(ev)
                    }
                }
            })
        };
        let (a, b, c) = (
            mark(&order, "global-high", false),
            mark(&order, "host-mid", false),
            mark(&order, "global-low", true),
        );
        load_on(&core, "*", move |ctx| {
            ctx.hook_global("message/bare", 100, a.clone());
            ctx.hook_global("message/bare", -5, c.clone());
            Ok(())
        })
        .unwrap();
        load(&core, move |ctx| {
            ctx.hook("message/bare", 0, b.clone());
            Ok(())
        })
        .unwrap();
        core.route(crate::core::events::Origin::Server, chat())
            .await;
        assert_eq!(
            *order.lock().unwrap(),
            vec!["global-high", "host-mid", "global-low"]
        );
    }

    #[tokio::test]
    async fn data_hooks_fire_unhook_and_halt() {
        let core = core();
        load(&core, |ctx| {
            let id = ctx.hook_event("custom", 0, Arc::new(|_: &mut Value| Some(json!(1))));
            assert_eq!(ctx.fire_event("custom", &mut json!({})), Some(json!(1)));
            ctx.unhook(id);
            assert_eq!(ctx.fire_event("custom", &mut json!({})), None);
            let g = ctx
                .hook_global_event("g", 0, Arc::new(|_: &mut Value| Some(json!(2))))
                .unwrap();
            let global = ctx.context("*").unwrap();
            assert_eq!(global.data_events.fire("g", &mut json!({})), Some(json!(2)));
            ctx.unhook(g);
            assert_eq!(global.data_events.hook_count(), 0);
            Ok(())
        })
        .unwrap();
    }
}
