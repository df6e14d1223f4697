//! Lifecycle across managers, and the lifecycle events modules hook. Deleting an account removes
//! it everywhere — its sessions, roster, group memberships, and (through the `user-deleted`
//! event) every module's data.
//!
//! # Lifecycle events
//!
//! Data events (hook them with `ModuleHandle::hook_event`, or `hook_global_event` for the `*`
//! bus), named like Prosody's, each fired from one place. `username` is the account's node,
//! `host` its domain. A handler may change the data; returning `Some` halts the event, which
//! only `pre-resource-bind` gives a meaning to.
//!
//! | event | bus | fired by | data |
//! |---|---|---|---|
//! | `authentication-success` | host | c2s negotiation, SASL success | `username`, `host`, `mechanism`, `peer`, `secure` |
//! | `authentication-failure` | host | c2s negotiation, SASL failure | `host`, `mechanism`, `condition` (the SASL condition), `peer`, `secure` |
//! | `pre-resource-bind` | host | [`Core::bind_resource`] | `username`, `host`, `resource`, `peer`; a handler may rewrite `resource`, or return `Some` to refuse the bind (`<not-allowed/>`) |
//! | `resource-bind` | host | [`Core::bind_resource`] | `username`, `host`, `resource`, `jid`, `peer`, `session` (the session id) |
//! | `resource-unbind` | host, then `*` | [`Core::unbind_resource`], once per session (also on the global bus, so a component such as MUC sees its users' sessions end) | `username`, `host`, `resource`, `jid`, `session`, `error` (the condition of the stream error the session ended with, or null) |
//! | `user-registered` | host | [`Accounts::create`](super::accounts::Accounts::create) (in-band registration, admin API, CLI) | `username`, `host` |
//! | `user-password-changed` | host | [`Accounts::set_password`](super::accounts::Accounts::set_password) | `username`, `host` |
//! | `user-deleted` | host | [`Core::delete_account`], after every module cleanup (the host's and its components') | `username`, `host` |
//! | `s2s-authenticated` | host (the local domain) | the s2s listener, when a remote domain authenticated on an incoming stream | `local`, `remote`, `auth` (`external` or `dialback`), `tls`, `peer` |
//! | `s2sin-established` | host (the local domain) | the s2s listener, right after `s2s-authenticated` (the stream takes that domain's stanzas) | `local`, `remote`, `auth`, `tls`, `peer` |
//! | `s2sout-established` | host (the local domain) | the outgoing s2s stream, once our domain is authenticated and its queue drains | `local`, `remote`, `auth`, `tls`, `peer` (null) |
//! | `host-activated` | `*` | [`Core::activate`], at start, once per host; [`Core::activate_host`] at run time (`host:activate`) | `host` |
//! | `server-started` | `*` | [`Core::activate`], after every `host-activated` | `hosts` (the served domains) |
//! | `server-stopping` | `*` | [`Core::deactivate`], at shutdown before sessions close | `reason` (the admin's `server:shutdown` reason, else `shutdown`) |
//! | `host-deactivated` | `*` | [`Core::deactivate`], after `server-stopping`, once per active host; [`Core::deactivate_host`] at run time (`host:deactivate`), after its sessions were asked to close and its modules unloaded | `host` |
//!
//! `presence/initial` is a stanza event (hook it with `ModuleHandle::hook`), fired by
//! `Core::initial_presence` after a session's first available presence was broadcast, with the
//! session as the origin and the presence as the stanza. `presence/forwarded` is one too, fired
//! on the recipient's host by `Core::deliver_forwarded` with a presence another cluster node
//! forwarded here, before this node's sessions get it (PEP keeps it for its sender's caps);
//! its handlers observe: the presence is delivered whatever they return. Stream-level elements have their own
//! events, see [`super::module_api::tags`].

use std::sync::Arc;

use serde_json::{Value, json};

use super::Core;
use super::accounts::AccountError;
use super::sessions::{BindError, BoundSession, Connection, SessionHandle};
use crate::config::ResourceConflict;
use crate::xmpp::error::{StreamError, StreamErrorCondition};
use crate::xmpp::{Jid, jid};

/// The data event fired on the account's host after an account is deleted (and after every
/// store a module opened and every module cleanup was emptied or ran), with `{"username": …, "host": …}`.
pub const USER_DELETED: &str = "user-deleted";
/// Fired on the host when a client authenticated (see the table above for every event's data).
pub const AUTHENTICATION_SUCCESS: &str = "authentication-success";
/// Fired on the host when a client's SASL exchange failed.
pub const AUTHENTICATION_FAILURE: &str = "authentication-failure";
/// Fired on the host before a resource is bound; handlers may rename or refuse it.
pub const PRE_RESOURCE_BIND: &str = "pre-resource-bind";
/// Fired on the host after a resource was bound.
pub const RESOURCE_BIND: &str = "resource-bind";
/// Fired on the host, then on the global bus, when a bound session ends for good.
pub const RESOURCE_UNBIND: &str = "resource-unbind";
/// Fired on the host after an account was created.
pub const USER_REGISTERED: &str = "user-registered";
/// Fired on the host after an account's password was replaced.
pub const USER_PASSWORD_CHANGED: &str = "user-password-changed";
/// Fired on the local host when a remote domain authenticated on an incoming s2s stream.
pub const S2S_AUTHENTICATED: &str = "s2s-authenticated";
/// Fired on the local host when an incoming s2s stream carries a newly authenticated domain.
pub const S2SIN_ESTABLISHED: &str = "s2sin-established";
/// Fired on the local host when an outgoing s2s stream is authenticated and ready.
pub const S2SOUT_ESTABLISHED: &str = "s2sout-established";
/// Fired on the global bus for each host when the server starts.
pub const HOST_ACTIVATED: &str = "host-activated";
/// Fired on the global bus for each host when the server stops.
pub const HOST_DEACTIVATED: &str = "host-deactivated";
/// Fired on the global bus once every host is active and the listeners run.
pub const SERVER_STARTED: &str = "server-started";
/// Fired on the global bus when shutdown begins.
pub const SERVER_STOPPING: &str = "server-stopping";

impl Core {
    /// Announces an authenticated server-to-server stream between `local` (ours) and `remote`
    /// on `local`'s bus: `s2s-authenticated` then `s2sin-established` for an incoming stream
    /// (`peer` is its address), `s2sout-established` for an outgoing one.
    pub fn s2s_established(
        &self,
        incoming: bool,
        local: &str,
        remote: &str,
        auth: &str,
        tls: bool,
        peer: Option<String>,
    ) {
        let Some(host) = self.host(local) else {
            return;
        };
        let data =
            json!({ "local": local, "remote": remote, "auth": auth, "tls": tls, "peer": peer });
        let events: &[&str] = if incoming {
            &[S2S_AUTHENTICATED, S2SIN_ESTABLISHED]
        } else {
            &[S2SOUT_ESTABLISHED]
        };
        for event in events {
            host.data_events.fire(event, &mut data.clone());
        }
    }

    /// Deletes an account and everything kept for it; returns whether it existed.
    pub async fn delete_account(self: &Arc<Self>, jid: &Jid) -> Result<bool, AccountError> {
        if !self.accounts.delete(jid).await? {
            return Ok(false);
        }
        // Its sessions on every cluster node (none open is not an error here).
        let _ = self
            .close_sessions_everywhere(
                jid.as_str(),
                StreamErrorCondition::NotAuthorized,
                "the account was deleted",
            )
            .await;
        if let Err(e) = self.roster.delete_user(jid).await {
            tracing::warn!(%jid, error = %e, "could not delete the roster of a deleted account");
        }
        match self.groups.groups_of(jid).await {
            Ok(groups) => {
                for id in groups {
                    if let Err(e) = self.group_remove_member(jid.domain(), &id, jid).await {
                        tracing::warn!(%jid, group = %id, error = %e, "could not leave a group");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%jid, error = %e, "could not list the groups of a deleted account")
            }
        }
        if let Some(host) = self.host(jid.domain()).cloned() {
            self.run_user_cleanups(jid).await;
            let mut data =
                json!({ "username": jid.node().unwrap_or_default(), "host": jid.domain() });
            host.data_events.fire(USER_DELETED, &mut data);
        }
        tracing::info!(target: "audit", %jid, "account deleted");
        Ok(true)
    }

    /// Empties every store the modules of the account's host opened and runs their own
    /// cleanups, then those of the modules on the components the host is the parent of (an
    /// upload service's files, say), for the deleted account `jid`; each failure is logged,
    /// and their number returned.
    pub async fn run_user_cleanups(self: &Arc<Self>, jid: &Jid) -> usize {
        let Some(host) = self.host(jid.domain()).cloned() else {
            return 0;
        };
        let mut failed = 0;
        let components = self.components_of(jid.domain());
        let cleanups = std::iter::once(&host)
            .chain(components.iter())
            .flat_map(|h| h.user_cleanups());
        for cleanup in cleanups {
            if let Err(e) = cleanup.run(self.clone(), jid.clone()).await {
                failed += 1;
                tracing::warn!(
                    %jid,
                    module = cleanup.module(),
                    store = cleanup.what(),
                    error = %e,
                    "could not remove the data of a deleted account"
                );
            }
        }
        failed
    }
}

/// The data every account event carries.
fn account_data(jid: &Jid) -> Value {
    json!({ "username": jid.node().unwrap_or_default(), "host": jid.domain() })
}

impl Core {
    /// Fires the data event `event` on `host`'s bus (nothing if the host is not served); the
    /// first handler's `Some` is returned.
    pub fn fire_host_event(&self, host: &str, event: &str, data: Value) -> Option<Value> {
        self.fire_host_event_with(host, event, || data)
    }

    /// Like [`Core::fire_host_event`], but builds the data only when a handler is hooked
    /// (lifecycle events fire on every login; most servers hook few of them).
    pub fn fire_host_event_with(
        &self,
        host: &str,
        event: &str,
        data: impl FnOnce() -> Value,
    ) -> Option<Value> {
        let events = &self.host(host)?.data_events;
        if !events.has_handlers(event) {
            return None;
        }
        events.fire(event, &mut data())
    }

    /// Fires an account event (`username`, `host`) on the account's host.
    pub fn fire_account_event(&self, event: &str, jid: &Jid) {
        self.fire_host_event(jid.domain(), event, account_data(jid));
    }

    /// Binds `resource` for the authenticated account `bare`: `pre-resource-bind` may rename
    /// or refuse it, then [`Sessions::bind`](super::sessions::Sessions::bind) applies `policy`,
    /// then `resource-bind` is fired.
    pub fn bind_resource(
        &self,
        bare: &Jid,
        resource: &str,
        policy: ResourceConflict,
        queue: usize,
        conn: Connection,
    ) -> Result<BoundSession, BindError> {
        let peer = conn.peer.clone();
        let host = self.host(bare.domain()).cloned();
        let mut resource = resource.to_string();
        if let Some(h) = host
            .as_ref()
            .filter(|h| h.data_events.has_handlers(PRE_RESOURCE_BIND))
        {
            let mut data = account_data(bare);
            data["resource"] = json!(resource);
            data["peer"] = json!(peer);
            if h.data_events.fire(PRE_RESOURCE_BIND, &mut data).is_some() {
                return Err(BindError::NotAllowed);
            }
            if let Some(r) = data["resource"].as_str().filter(|r| *r != resource) {
                resource = jid::normalize_resource(r).map_err(|_| BindError::NotAllowed)?;
            }
        }
        // The same full JID bound on another node of the cluster is a conflict too.
        if let Some(taken) = self
            .remote_sessions(bare)
            .into_iter()
            .find(|r| r.jid.resource() == Some(resource.as_str()))
        {
            match policy {
                ResourceConflict::Refuse => return Err(BindError::Conflict),
                ResourceConflict::Random => resource = super::sessions::random_resource(),
                ResourceConflict::KickOld => {
                    if let Some(c) = self.cluster() {
                        c.kick(&taken.node, &taken.jid);
                    }
                }
            }
        }
        let bound = self.sessions.bind(bare, &resource, policy, queue, conn)?;
        self.sessions_changed(bare);
        if let Some(h) = host.filter(|h| h.data_events.has_handlers(RESOURCE_BIND)) {
            let mut data = session_data(&bound.handle);
            data["peer"] = json!(peer);
            h.data_events.fire(RESOURCE_BIND, &mut data);
        }
        Ok(bound)
    }

    /// Removes a session for good and fires `resource-unbind` (once, however often called),
    /// with the stream error that ended it, if any.
    pub fn unbind_resource(&self, handle: &SessionHandle, error: Option<&StreamError>) {
        if !self.sessions.unbind(handle) {
            return;
        }
        self.sessions_changed(&handle.jid);
        let data = || {
            let mut data = session_data(handle);
            data["error"] = match error {
                Some(e) => json!(e.condition.to_string()),
                None => Value::Null,
            };
            data
        };
        self.fire_host_event_with(handle.jid.domain(), RESOURCE_UNBIND, data);
        let global = &self.global_host().data_events;
        if global.has_handlers(RESOURCE_UNBIND) {
            global.fire(RESOURCE_UNBIND, &mut data());
        }
    }

    /// Announces a started server on the global bus: `host-activated` for each host, then
    /// `server-started`.
    pub fn activate(&self) {
        let global = self.global_host();
        let hosts: Vec<String> = self.hosts().iter().map(|h| h.name.clone()).collect();
        for host in &hosts {
            global
                .data_events
                .fire(HOST_ACTIVATED, &mut json!({ "host": host }));
        }
        global
            .data_events
            .fire(SERVER_STARTED, &mut json!({ "hosts": hosts }));
    }

    /// Announces shutdown on the global bus: `server-stopping`, then `host-deactivated` for
    /// each host.
    pub fn deactivate(&self, reason: &str) {
        let global = self.global_host();
        global
            .data_events
            .fire(SERVER_STOPPING, &mut json!({ "reason": reason }));
        for host in self.hosts() {
            global
                .data_events
                .fire(HOST_DEACTIVATED, &mut json!({ "host": host.name }));
        }
    }
}

/// The data of the session events.
fn session_data(handle: &SessionHandle) -> Value {
    let mut data = account_data(&handle.jid.bare());
    data["resource"] = json!(handle.jid.resource().unwrap_or_default());
    data["jid"] = json!(handle.jid.to_string());
    data["session"] = json!(handle.id);
    data
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Config;
    use crate::core::events::{Flow, handler};
    use crate::core::modules::{LoadError, Module, ModuleContext};
    use crate::storage::Store;
    use crate::xmpp::Element;

    /// The events a [`Recorder`] saw, with their data, in firing order.
    pub(crate) type Seen = Arc<Mutex<Vec<(String, Value)>>>;

    /// Hooks `events` (on the `*` bus when `global`) and records each firing with its data;
    /// refuses `pre-resource-bind` of the resource `refused` and renames `rename-me` to `renamed`.
    struct Recorder {
        events: &'static [&'static str],
        global: bool,
        seen: Seen,
    }

    impl Module for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
            for event in self.events {
                let seen = self.seen.clone();
                let name = event.to_string();
                let f = Arc::new(move |d: &mut Value| {
                    seen.lock().expect("seen").push((name.clone(), d.clone()));
                    match d["resource"].as_str() {
                        Some("refused") if name == PRE_RESOURCE_BIND => Some(json!(false)),
                        Some("rename-me") if name == PRE_RESOURCE_BIND => {
                            d["resource"] = json!("renamed");
                            None
                        }
                        _ => None,
                    }
                });
                if self.global {
                    ctx.hook_global_event(event, 0, f);
                } else {
                    ctx.hook_event(event, 0, f);
                }
            }
            Ok(())
        }
    }

    /// A server on a memory store with a [`Recorder`] of `events` loaded.
    pub(crate) fn recording(events: &'static [&'static str], global: bool) -> (Arc<Core>, Seen) {
        let core =
            Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).expect("core");
        let seen = Seen::default();
        let host = if global {
            core.global_host()
        } else {
            core.host("localhost").cloned().expect("host")
        };
        let recorder = Recorder {
            events,
            global,
            seen: seen.clone(),
        };
        host.load(Arc::downgrade(&core), &recorder).expect("load");
        (core, seen)
    }

    /// What was recorded since the last call.
    pub(crate) fn take(seen: &Seen) -> Vec<(String, Value)> {
        std::mem::take(&mut *seen.lock().expect("seen"))
    }

    #[tokio::test]
    async fn account_creation_and_password_change_are_announced() {
        let (core, seen) = recording(&[USER_REGISTERED, USER_PASSWORD_CHANGED], false);
        let jid = Jid::parse("ann@localhost").expect("jid");
        core.accounts.create(&jid, "pw1").await.expect("create");
        core.accounts.set_password(&jid, "pw2").await.expect("set");
        let expected = json!({ "username": "ann", "host": "localhost" });
        assert_eq!(
            take(&seen),
            vec![
                (USER_REGISTERED.to_string(), expected.clone()),
                (USER_PASSWORD_CHANGED.to_string(), expected),
            ]
        );
        // A refused creation announces nothing.
        assert!(core.accounts.create(&jid, "pw3").await.is_err());
        assert!(take(&seen).is_empty());
    }

    #[tokio::test]
    async fn unbinding_is_also_fired_on_the_global_bus_once() {
        let (core, seen) = recording(&[RESOURCE_BIND, RESOURCE_UNBIND], true);
        let bare = Jid::parse("bo@localhost").expect("jid");
        let bound = core
            .bind_resource(
                &bare,
                "r",
                ResourceConflict::KickOld,
                8,
                Connection::new("p", true),
            )
            .expect("bind");
        core.unbind_resource(&bound.handle, None);
        core.unbind_resource(&bound.handle, None);
        let events = take(&seen);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, RESOURCE_UNBIND);
        assert_eq!(events[0].1["jid"], json!("bo@localhost/r"));
    }

    #[tokio::test]
    async fn binding_fires_pre_bind_and_bind_and_unbinding_fires_once() {
        let (core, seen) = recording(&[PRE_RESOURCE_BIND, RESOURCE_BIND, RESOURCE_UNBIND], false);
        let bare = Jid::parse("bo@localhost").expect("jid");
        let bind = |r: &str| {
            core.bind_resource(
                &bare,
                r,
                ResourceConflict::KickOld,
                8,
                Connection::new("10.0.0.1:5", true),
            )
        };
        let bound = bind("phone").expect("bind");
        let id = bound.handle.id;
        let events = take(&seen);
        assert_eq!(
            events[0],
            (
                PRE_RESOURCE_BIND.to_string(),
                json!({ "username": "bo", "host": "localhost", "resource": "phone", "peer": "10.0.0.1:5" })
            )
        );
        assert_eq!(
            events[1],
            (
                RESOURCE_BIND.to_string(),
                json!({ "username": "bo", "host": "localhost", "resource": "phone",
                        "jid": "bo@localhost/phone", "session": id, "peer": "10.0.0.1:5" })
            )
        );
        let err = StreamError::new(StreamErrorCondition::Conflict);
        core.unbind_resource(&bound.handle, Some(&err));
        core.unbind_resource(&bound.handle, None);
        assert_eq!(
            take(&seen),
            vec![(
                RESOURCE_UNBIND.to_string(),
                json!({ "username": "bo", "host": "localhost", "resource": "phone",
                        "jid": "bo@localhost/phone", "session": id, "error": "conflict" })
            )]
        );
        // A pre-resource-bind handler renames or refuses.
        let renamed = bind("rename-me").expect("bind");
        assert_eq!(renamed.handle.jid.resource(), Some("renamed"));
        assert_eq!(bind("refused").err(), Some(BindError::NotAllowed));
        assert!(
            core.sessions
                .get(&bare.with_resource("refused").expect("jid"))
                .is_none()
        );
    }

    #[tokio::test]
    async fn start_and_shutdown_are_announced_on_the_global_bus() {
        let (core, seen) = recording(
            &[
                HOST_ACTIVATED,
                SERVER_STARTED,
                SERVER_STOPPING,
                HOST_DEACTIVATED,
            ],
            true,
        );
        core.activate();
        core.deactivate("shutdown");
        assert_eq!(
            take(&seen),
            vec![
                (HOST_ACTIVATED.to_string(), json!({ "host": "localhost" })),
                (
                    SERVER_STARTED.to_string(),
                    json!({ "hosts": ["localhost"] })
                ),
                (SERVER_STOPPING.to_string(), json!({ "reason": "shutdown" })),
                (HOST_DEACTIVATED.to_string(), json!({ "host": "localhost" })),
            ]
        );
    }

    #[tokio::test]
    async fn initial_presence_reaches_a_module_with_its_session() {
        let core =
            Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).expect("core");
        let seen = Arc::new(Mutex::new(Vec::new()));
        struct Initial(Arc<Mutex<Vec<String>>>);
        impl Module for Initial {
            fn name(&self) -> &'static str {
                "initial"
            }
            fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
                let seen = self.0.clone();
                ctx.hook(
                    "presence/initial",
                    0,
                    handler(move |ev| {
                        let seen = seen.clone();
                        async move {
                            let who = ev.origin.session().map(|s| s.jid.to_string());
                            seen.lock().expect("seen").push(format!(
                                "{} {} {}",
                                who.unwrap_or_default(),
                                ev.stanza.name(),
                                ev.to
                            ));
                            Flow::Continue(ev)
                        }
                    }),
                );
                Ok(())
            }
        }
        let host = core.host("localhost").cloned().expect("host");
        host.load(Arc::downgrade(&core), &Initial(seen.clone()))
            .expect("load");
        let bare = Jid::parse("cy@localhost").expect("jid");
        let bound = core
            .bind_resource(
                &bare,
                "r",
                ResourceConflict::KickOld,
                8,
                Connection::new("p", true),
            )
            .expect("bind");
        let presence = Element::new("presence", crate::xmpp::ns::CLIENT);
        core.initial_presence(&bound.handle, presence).await;
        assert_eq!(
            seen.lock().expect("seen").clone(),
            vec!["cy@localhost/r presence cy@localhost".to_string()]
        );
    }
}
