//! Timers, cron and module tasks (Prosody's `module:add_timer`, `cron`, `hourly`, `daily`,
//! `weekly`). Every task runs under the server's task tracker, so shutdown waits for it, and
//! stops when the module unloads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::ModuleHandle;

/// A cron period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Once an hour.
    Hourly,
    /// Once a day.
    Daily,
    /// Once a week.
    Weekly,
}

impl Period {
    /// The period in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Period::Hourly => 3600,
            Period::Daily => 86_400,
            Period::Weekly => 604_800,
        }
    }
}

/// A running timer; dropped timers keep running until stopped or the module unloads.
#[derive(Clone)]
pub struct Timer {
    cancel: CancellationToken,
    reschedule: Arc<tokio::sync::watch::Sender<Option<Duration>>>,
}

impl Timer {
    /// Cancels the timer.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Runs the timer `delay` from now instead of at its current deadline.
    pub fn reschedule(&self, delay: Duration) {
        let _ = self.reschedule.send(Some(delay));
    }
}

impl ModuleHandle {
    /// Runs `task` under the server's task tracker until it ends or the module unloads.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.track(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Spawns `task` on the server's tracker (nothing runs once the server is gone, nor when
    /// the module was loaded outside an async runtime, as a core built by a plain unit test is).
    fn track<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(module = self.name, host = %self.host.name, "no async runtime: a module timer or task is not started");
            return;
        }
        if let Some(core) = self.core.upgrade() {
            core.tasks.spawn(task);
        }
    }

    /// Calls `f` after `delay`; returning `Some(d)` repeats it after `d`. Removed on unload.
    pub fn add_timer<F, Fut>(&self, delay: Duration, f: F) -> Timer
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Duration>> + Send + 'static,
    {
        let cancel = self.cancel.child_token();
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        let timer = Timer {
            cancel: cancel.clone(),
            reschedule: Arc::new(tx),
        };
        self.track(async move {
            let mut delay = delay;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = rx.changed() => {
                        match changed {
                            Ok(()) => {
                                if let Some(d) = *rx.borrow_and_update() {
                                    delay = d;
                                }
                                continue;
                            }
                            // Every handle dropped: keep the schedule, no more reschedules.
                            Err(_) => {
                                tokio::select! {
                                    _ = cancel.cancelled() => return,
                                    _ = tokio::time::sleep(delay) => {}
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
                if cancel.is_cancelled() {
                    return;
                }
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = f() => next,
                };
                match next {
                    Some(next) => delay = next,
                    None => return,
                }
            }
        });
        timer
    }

    /// Runs `f` once per `period`, even across restarts (the last run is stored per host).
    pub fn cron<F, Fut>(&self, name: &str, period: Period, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let store = core.store.keyval(&self.host.name, "cron");
        let key = format!("{}/{}", self.name, name);
        let cancel = self.cancel.child_token();
        self.track(async move {
            loop {
                let last = store
                    .get(&key)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| v["last"].as_i64());
                let now = crate::core::accounts::now();
                let due = last.map(|l| l + period.seconds()).unwrap_or(now);
                if due > now {
                    let wait = Duration::from_secs((due - now) as u64);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = f(now) => {}
                }
                if let Err(e) = store.set(&key, Some(json!({ "last": now }))).await {
                    tracing::error!(task = %key, error = %e, "cannot record cron run");
                    return;
                }
            }
        });
    }

    /// Runs `f` once an hour.
    pub fn hourly<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(name, Period::Hourly, f);
    }

    /// Runs `f` once a day.
    pub fn daily<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(name, Period::Daily, f);
    }

    /// Runs `f` once a week.
    pub fn weekly<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(name, Period::Weekly, f);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::Config;
    use crate::core::module_api::probe::{core, core_with, load};
    use crate::storage::Store;

    #[tokio::test]
    async fn timers_repeat_stop_on_unload_and_are_tracked() {
        let core = core();
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        load(&core, move |ctx| {
            let t = t.clone();
            ctx.add_timer(Duration::from_millis(5), move || {
                let t = t.clone();
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                    Some(Duration::from_millis(5))
                }
            });
            ctx.spawn(std::future::pending());
            Ok(())
        })
        .unwrap();
        assert_eq!(core.tasks.len(), 2, "the timer and the task are tracked");
        while ticks.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        core.unload_module("localhost", "probe").unwrap();
        core.tasks.close();
        core.tasks.wait().await;
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), after, "stopped on unload");
    }

    #[tokio::test]
    async fn timers_stop_and_reschedule() {
        let core = core();
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = hits.clone();
        let timer = Arc::new(Mutex::new(None));
        let slot = timer.clone();
        load(&core, move |ctx| {
            let h2 = h2.clone();
            let t = ctx.add_timer(Duration::from_secs(3600), move || {
                let h2 = h2.clone();
                async move {
                    h2.fetch_add(1, Ordering::SeqCst);
                    None
                }
            });
            *slot.lock().unwrap() = Some(t);
            Ok(())
        })
        .unwrap();
        let t = timer.lock().unwrap().clone().unwrap();
        t.reschedule(Duration::from_millis(10));
        core.tasks.close();
        core.tasks.wait().await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "rescheduled to run soon, once (returned None)"
        );
        t.stop();
    }

    #[tokio::test]
    async fn a_stopped_timer_never_runs() {
        let core = core();
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = hits.clone();
        load(&core, move |ctx| {
            let h2 = h2.clone();
            let t = ctx.add_timer(Duration::from_millis(1), move || {
                let h2 = h2.clone();
                async move {
                    h2.fetch_add(1, Ordering::SeqCst);
                    None
                }
            });
            t.stop();
            Ok(())
        })
        .unwrap();
        core.tasks.close();
        core.tasks.wait().await;
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn cron_runs_once_per_period_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let store = Store::open_sled(dir.path(), 8 << 20).unwrap();
            let core = core_with(Config::parse("modules_enabled = []").unwrap(), store);
            let r = runs.clone();
            load(&core, move |ctx| {
                for (name, period) in [("h", Period::Hourly), ("w", Period::Weekly)] {
                    ctx.cron(name, period, |_now| async {});
                }
                ctx.hourly("h2", |_now| async {});
                ctx.weekly("w2", |_now| async {});
                let r = r.clone();
                ctx.daily("cleanup", move |_now| {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                });
                Ok(())
            })
            .unwrap();
            let cron = core.store.keyval("localhost", "cron");
            while cron.get("probe/cleanup").await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            core.unload_module("localhost", "probe").unwrap();
            core.tasks.close();
            core.tasks.wait().await;
            core.store.flush().await.unwrap();
            drop(core);
            // Let the store's flush thread let go of the directory before it is reopened.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the second start is within the same day"
        );
    }
}
