//! XEP-0045 Multi-User Chat, as a component module (`[[component]] module = "muc"`): rooms
//! live in the component's [`service::MucService`]; this file turns stanzas to the component
//! into its operations ([`handlers`], and `room_iq` for the admin, owner, vCard and archive
//! IQs, `hats` for the XEP-0317 hat commands). [`room`] holds the protocol rules, [`form`] the
//! room forms.
//!
//! A groupchat message is checked once, archived once (XEP-0313 at the room JID when the room
//! archives), stamped with the room's XEP-0359 stanza id and XEP-0421 occupant id, and copied to
//! each occupant session without re-running the router (local sessions get it in their queue,
//! others through [`crate::core::Core::route`]).
//!
//! In a cluster a room lives on one node, the holder of its lease (`crate::cluster::rooms`):
//! every handler of a room stanza first asks [`handlers::hosted_here`], which forwards the
//! stanza to the holder when that is another node, and [`service::MucService::room`] takes the
//! lease before a room becomes live here.

pub mod form;
pub mod handlers;
mod hats;
pub mod room;
mod room_iq;
pub mod service;

use std::sync::Arc;

use crate::core::Core;
use crate::core::events::{Flow, handler};
use crate::core::lifecycle::RESOURCE_UNBIND;
use crate::core::modules::{HostType, LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::{Jid, ns};
use service::{Creation, Limits, MucService};

/// The shared-state path under which a component's [`MucService`] is found.
const SERVICE_PATH: &str = "service";

/// Holds the component's service so the admin faces can reach it.
#[derive(Default)]
pub struct ServiceSlot(std::sync::OnceLock<Arc<MucService>>);

/// The MUC service of component `host`, if the `muc` module is loaded there.
pub fn service(core: &Core, host: &str) -> Option<Arc<MucService>> {
    let map = core.shared.lock().unwrap_or_else(|e| e.into_inner());
    let (value, _) = map.get(&format!("/{host}/muc/{SERVICE_PATH}"))?;
    value
        .clone()
        .downcast::<ServiceSlot>()
        .ok()
        .and_then(|slot| slot.0.get().cloned())
}

/// Every component host running the `muc` module.
pub fn services(core: &Core) -> Vec<Arc<MucService>> {
    let cfg = core.config.load();
    cfg.components()
        .iter()
        .filter_map(|c| service(core, &c.name))
        .collect()
}

/// Why a room could not be addressed: no MUC service there, or the name is not a room JID.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// No MUC service at the domain named (or none at all for a bare node).
    #[error("no group chat service on this host")]
    NoService,
    /// Not a valid room JID.
    #[error("invalid room JID")]
    Invalid,
}

/// The service and room node `room` names among `services`: `node@service`, or a bare node
/// on the first of them (every admin face addresses rooms this way).
pub fn locate(
    services: Vec<Arc<MucService>>,
    room: &str,
) -> Result<(Arc<MucService>, String), LocateError> {
    let (svc, jid) = match room.split_once('@') {
        Some((node, domain)) => {
            let jid = crate::xmpp::Jid::new(Some(node), domain, None)
                .map_err(|_| LocateError::Invalid)?;
            let svc = services
                .into_iter()
                .find(|s| s.host == jid.domain())
                .ok_or(LocateError::NoService)?;
            (svc, jid)
        }
        None => {
            let svc = services.into_iter().next().ok_or(LocateError::NoService)?;
            let jid = svc.room_jid(room).map_err(|_| LocateError::Invalid)?;
            (svc, jid)
        }
    };
    Ok((svc, jid.node().unwrap_or_default().to_string()))
}

/// The owner and configuration of a room an admin face creates, from a JSON object of
/// `owner` (a JID) and [`room::RoomConfig`] fields; `Err` says what is wrong.
pub fn creation_options(
    fields: serde_json::Value,
) -> Result<(Option<crate::xmpp::Jid>, room::RoomConfig), String> {
    let serde_json::Value::Object(mut fields) = fields else {
        return Err("room options must be a JSON object".into());
    };
    let owner = match fields.remove("owner") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(
            crate::xmpp::Jid::parse(&s)
                .map_err(|_| "`owner` must be a JID".to_string())?
                .bare(),
        ),
        Some(_) => return Err("`owner` must be a JID".into()),
    };
    let config = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| format!("invalid room option: {e}"))?;
    Ok((owner, config))
}

/// Creates the default room of shared-roster group `id` on user host `host` on the host's
/// first MUC component (`PUT /groups` with `create_default_muc`); returns the room's JID.
pub async fn create_group_room(
    core: &Core,
    host: &str,
    id: &str,
    name: &str,
) -> Result<crate::xmpp::Jid, service::MucError> {
    let svc = core
        .components_of(host)
        .iter()
        .find_map(|c| service(core, &c.name))
        .ok_or(service::MucError::NotFound)?;
    let room = svc.create_group_room(host, id, name).await?;
    if let Some(core) = svc.core()
        && let Ok(members) = core.groups.members(host, id).await
    {
        for m in members {
            if let Ok(j) = crate::xmpp::Jid::new(Some(&m), host, None) {
                bookmark(&core, &j, &room, name, true).await;
            }
        }
    }
    Ok(room)
}

/// Follows a change of shared-roster group `id` on `host`: `user` becomes (`on`) or stops being
/// a member of the group's room, and gets (or loses) an autojoin XEP-0402 bookmark for it.
/// Nothing happens for a group without a room.
pub async fn group_membership(
    core: &Arc<Core>,
    host: &str,
    id: &str,
    user: &crate::xmpp::Jid,
    on: bool,
) {
    let Some(svc) = core
        .components_of(host)
        .iter()
        .find_map(|c| service(core, &c.name))
    else {
        return;
    };
    let node = id.to_lowercase();
    let Ok(Some(room)) = svc.room(&node).await else {
        return;
    };
    let (linked, name, room_jid) = {
        let r = service::lock(&room);
        let linked = r
            .group
            .as_ref()
            .is_some_and(|g| g.host == host && g.id == id);
        (linked, r.config.name.clone(), r.jid.clone())
    };
    if !linked {
        return;
    }
    if let Err(e) = svc.sync_group_member(&node, user).await {
        tracing::warn!(error = %e, "cannot follow a group change in its room");
    }
    bookmark(core, user, &room_jid, &name, on).await;
}

/// Publishes (or retracts) `user`'s autojoin XEP-0402 bookmark of `room`, if PEP is served.
async fn bookmark(
    core: &Arc<Core>,
    user: &crate::xmpp::Jid,
    room: &crate::xmpp::Jid,
    name: &str,
    on: bool,
) {
    let Some(pep) = super::pep::service(core, user.domain()) else {
        return;
    };
    let owner = user.bare();
    let result = if on {
        let payload = crate::xmpp::Element::new("conference", ns::BOOKMARKS2)
            .attr("name", name)
            .attr("autojoin", "true")
            .child(
                crate::xmpp::Element::new("nick", ns::BOOKMARKS2)
                    .text(owner.node().unwrap_or_default()),
            );
        let req = super::pep::Publish {
            node: ns::BOOKMARKS2.to_string(),
            id: Some(room.to_string()),
            payload,
            options: Some(super::bookmarks::node_options()),
            preconditions: false,
            fire_event: false,
        };
        pep.publish(core, &owner, req).await.map(|_| ())
    } else {
        pep.retract(core, &owner, ns::BOOKMARKS2, room.as_str(), None)
            .await
    };
    if let Err(e) = result {
        tracing::warn!(%owner, error = %e, "cannot update a group room bookmark");
    }
}

/// The `muc` module.
pub struct Muc;

impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }

    fn options(&self) -> &'static [&'static str] {
        &[
            "muc_room_creation",
            "muc_max_rooms_per_creator",
            "muc_max_occupants",
            "muc_max_message_size",
            "muc_max_nick_length",
            "muc_max_history",
            "muc_rate_burst",
            "muc_rate_per_second",
            "muc_name",
        ]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        if ctx.host_type() != HostType::Component {
            return Err(LoadError::bad_option(
                "modules_enabled",
                "muc runs on a [[component]] host, not on a user host",
            ));
        }
        let creation = match ctx.option_string("muc_room_creation", "anyone").as_str() {
            "anyone" => Creation::Anyone,
            "local" => Creation::Local,
            "admin" => Creation::Admin,
            _ => {
                return Err(LoadError::bad_option(
                    "muc_room_creation",
                    "must be anyone, local or admin",
                ));
            }
        };
        let positive = |name: &str, default: i64| -> usize {
            usize::try_from(ctx.option_integer(name, default, 1, 1 << 40)).unwrap_or(1)
        };
        let rate = |name: &str, default: f64| ctx.option_number(name, default, 0.001, 1e9);
        let limits = Limits {
            creation,
            max_rooms_per_creator: positive("muc_max_rooms_per_creator", 100),
            max_occupants: positive("muc_max_occupants", 5000),
            max_message_size: positive("muc_max_message_size", 16384),
            max_nick_length: positive("muc_max_nick_length", 64),
            max_history: positive("muc_max_history", 50),
            rate_burst: rate("muc_rate_burst", 10.0),
            rate_per_second: rate("muc_rate_per_second", 2.0),
        };
        let svc = Arc::new(MucService::new(ctx.core(), ctx.host(), limits));
        let slot = ctx
            .shared::<ServiceSlot>(SERVICE_PATH)
            .ok_or_else(|| LoadError::Shared(SERVICE_PATH.into()))?;
        let _ = slot.0.set(svc.clone());
        let name = ctx.option_string("muc_name", "Chatrooms");
        ctx.add_identity("conference", "text", &name);
        ctx.add_feature(ns::MUC);
        ctx.add_feature(ns::DISCO_INFO);
        ctx.add_feature(ns::DISCO_ITEMS);
        let on = Arc::clone;
        let s = on(&svc);
        ctx.hook(
            "presence/full",
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    let Some(ev) = handlers::hosted_here(&s, ev).await else {
                        return Flow::Handled;
                    };
                    handlers::presence(&s, ev).await;
                    Flow::Handled
                }
            }),
        );
        ctx.hook(
            "presence/bare",
            priority::HANDLER,
            handler(|ev| async move {
                handlers::presence_without_nick(ev).await;
                Flow::Handled
            }),
        );
        let s = on(&svc);
        ctx.hook(
            "message/bare",
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    let Some(ev) = handlers::hosted_here(&s, ev).await else {
                        return Flow::Handled;
                    };
                    handlers::message_to_room(&s, ev).await;
                    Flow::Handled
                }
            }),
        );
        let s = on(&svc);
        ctx.hook(
            "message/full",
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    let Some(ev) = handlers::hosted_here(&s, ev).await else {
                        return Flow::Handled;
                    };
                    handlers::private_message(&s, ev).await;
                    Flow::Handled
                }
            }),
        );
        let s = on(&svc);
        ctx.hook(
            "iq/bare",
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    let Some(ev) = handlers::hosted_here(&s, ev).await else {
                        return Flow::Handled;
                    };
                    handlers::iq_to_room(&s, ev).await;
                    Flow::Handled
                }
            }),
        );
        let s = on(&svc);
        ctx.hook(
            "iq/full",
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    let Some(ev) = handlers::hosted_here(&s, ev).await else {
                        return Flow::Handled;
                    };
                    handlers::iq_to_occupant(&s, ev).await;
                    Flow::Handled
                }
            }),
        );
        // A session that ends without unavailable presence (it never sent initial presence, or
        // its connection dropped) leaves its rooms; the event comes on the global bus.
        let s = on(&svc);
        ctx.hook_global_event(
            RESOURCE_UNBIND,
            priority::HANDLER,
            Arc::new(move |data| {
                let full = data["jid"].as_str().and_then(|j| Jid::parse(j).ok());
                if let (Some(full), Some(core)) = (full, s.core()) {
                    let s = s.clone();
                    core.tasks
                        .spawn(async move { s.session_ended(&full).await });
                }
                None
            }),
        );
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_INFO),
            priority::HANDLER,
            handler(|ev| async move {
                handlers::service_info(ev).await;
                Flow::Handled
            }),
        );
        let s = on(&svc);
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_ITEMS),
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    handlers::service_items(&s, ev).await;
                    Flow::Handled
                }
            }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::core::Core;
    use crate::core::modules::ModuleError;
    use crate::storage::Store;

    #[tokio::test]
    async fn muc_runs_on_components_only_and_its_service_is_found() {
        let core = Core::new(Config::default(), Store::memory(), crate::modules::BUILTIN).unwrap();
        let svc = super::service(&core, "conference.localhost").unwrap();
        assert_eq!(svc.host, "conference.localhost");
        assert_eq!(super::services(&core).len(), 1);
        assert!(super::service(&core, "localhost").is_none());
        let find = |room: &str| super::locate(super::services(&core), room);
        let (s, node) = find("lounge@conference.localhost").unwrap();
        assert_eq!(
            (s.host.as_str(), node.as_str()),
            ("conference.localhost", "lounge")
        );
        let (s, node) = find("lounge").unwrap();
        assert_eq!(
            (s.host.as_str(), node.as_str()),
            ("conference.localhost", "lounge")
        );
        assert!(matches!(
            find("lounge@elsewhere.localhost"),
            Err(super::LocateError::NoService)
        ));
        assert!(matches!(
            find("a b@conference.localhost"),
            Err(super::LocateError::Invalid)
        ));
        assert!(matches!(
            super::locate(Vec::new(), "lounge"),
            Err(super::LocateError::NoService)
        ));
        let (owner, config) = super::creation_options(serde_json::json!({
            "owner": "alice@localhost/phone", "persistent": true, "name": "Lounge"
        }))
        .unwrap();
        assert_eq!(
            owner.map(|o| o.to_string()).as_deref(),
            Some("alice@localhost")
        );
        assert!(config.persistent && config.name == "Lounge");
        assert!(super::creation_options(serde_json::json!({ "owner": 3 })).is_err());
        assert!(super::creation_options(serde_json::json!({ "persistent": "yes" })).is_err());
        assert!(super::creation_options(serde_json::json!([])).is_err());
        let cfg = Config::parse("modules_enabled = [\"muc\"]\ncomponent = []\n").unwrap();
        let e = Core::new(cfg, Store::memory(), crate::modules::BUILTIN).err();
        assert!(
            matches!(e, Some(ModuleError::LoadFailed { ref module, .. }) if module == "muc"),
            "{:?}",
            e.map(|e| e.to_string())
        );
    }
}
