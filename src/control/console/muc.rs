//! The `muc:*` runner: rooms through each component's [`MucService`], found and addressed as
//! the REST `/muc` finds them ([`muc_module::locate`]).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Output, arg, opt};
use crate::core::Core;
use crate::modules::muc::room::Affiliation;
use crate::modules::muc::service::{MucService, lock};
use crate::modules::muc::{self as muc_module};
use crate::xmpp::Jid;

/// The methods of `muc:room(jid)`, as `help` and tab completion list them.
pub const ROOM_METHODS: &[&str] = &[
    "get_affiliation",
    "set_affiliation",
    "get_role",
    "destroy",
    "save",
];

/// The service and node of room `room` among every MUC component.
fn room_of(core: &Core, room: &str) -> Result<(Arc<MucService>, String), String> {
    muc_module::locate(muc_module::services(core), room).map_err(|e| format!("{room}: {e}"))
}

/// `muc:create` options: JSON objects (`{"persistent":true}`) and `key=value` words, merged.
fn options(args: &[String]) -> Result<Value, String> {
    let mut fields = Map::new();
    for a in args.iter().filter(|a| !a.is_empty()) {
        if a.trim_start().starts_with('{') {
            match serde_json::from_str(a) {
                Ok(Value::Object(o)) => fields.extend(o),
                _ => return Err(format!("room options {a}: not a JSON object")),
            }
        } else {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("room option {a}: use key=value or a JSON object"))?;
            let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
            fields.insert(k.trim().to_string(), v);
        }
    }
    Ok(Value::Object(fields))
}

fn summaries_output(rooms: Vec<crate::modules::muc::service::RoomSummary>) -> Output {
    let rows = rooms
        .iter()
        .map(|r| {
            vec![
                r.jid.clone(),
                r.name.clone(),
                r.occupants.to_string(),
                r.persistent.to_string(),
                r.public.to_string(),
                r.node.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let data = json!(rooms);
    Output::table(
        &["ROOM", "NAME", "OCCUPANTS", "PERSISTENT", "PUBLIC", "NODE"],
        rows,
        data,
    )
}

pub(super) async fn muc_cmd(
    core: Arc<Core>,
    name: String,
    args: Vec<String>,
) -> Result<Output, String> {
    let e = |e: crate::modules::muc::service::MucError| e.to_string();
    match name.as_str() {
        "list" => {
            let services = match opt(&args, 0) {
                Some(h) => vec![
                    muc_module::service(&core, &h)
                        .ok_or_else(|| format!("no group chat service on {h}"))?,
                ],
                None => muc_module::services(&core),
            };
            let mut rooms = Vec::new();
            for svc in services {
                rooms.extend(svc.list().await.map_err(e)?);
            }
            Ok(summaries_output(rooms))
        }
        "create" => {
            let room = arg(&args, 0, "jid")?;
            let (svc, node) = room_of(&core, &room)?;
            let (owner, config) = muc_module::creation_options(options(&args[1..])?)?;
            let r = svc
                .create(&node, owner.as_ref(), config, false)
                .await
                .map_err(e)?;
            let jid = lock(&r).jid.to_string();
            Ok(Output::text(format!("created {jid}"), json!(jid)))
        }
        "room" => {
            let room = arg(&args, 0, "jid")?;
            let (svc, node) = room_of(&core, &room)?;
            let v = svc.describe(&node).await.map_err(e)?;
            let rows = v["occupants"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    ["nick", "jid", "role", "affiliation"]
                        .map(|k| o[k].as_str().unwrap_or_default().to_string())
                        .to_vec()
                })
                .collect();
            let mut out = Output::table(&["NICK", "JID", "ROLE", "AFFILIATION"], rows, v);
            out.text = Some(format!("{node}@{}", svc.host));
            Ok(out)
        }
        chained => {
            let method = chained
                .strip_prefix("room:")
                .ok_or_else(|| format!("unknown command muc:{name}"))?;
            let room = arg(&args, 0, "jid")?;
            let (svc, node) = room_of(&core, &room)?;
            let room = format!("{node}@{}", svc.host);
            room_method(&svc, &node, &room, method, &args[1..]).await
        }
    }
}

/// `muc:room(room):METHOD(args)`.
async fn room_method(
    svc: &MucService,
    node: &str,
    room: &str,
    method: &str,
    args: &[String],
) -> Result<Output, String> {
    let e = |e: crate::modules::muc::service::MucError| format!("{room}: {e}");
    let jid_arg = |i: usize, what: &str| -> Result<Jid, String> {
        let s = arg(args, i, what)?;
        Jid::parse(&s).map_err(|_| format!("{s} is not a JID"))
    };
    match method {
        "get_affiliation" => {
            let jid = jid_arg(0, "jid")?;
            let a = svc.get_affiliation(node, &jid).await.map_err(e)?;
            Ok(Output::text(
                a.as_str(),
                json!({ "room": room, "jid": jid.bare().to_string(), "affiliation": a.as_str() }),
            ))
        }
        "set_affiliation" => {
            // `true` acts as the server; a JID acts as that user, under the room's rules.
            let actor = arg(args, 0, "actor")?;
            let actor = match actor.as_str() {
                "true" => None,
                j => Some(
                    Jid::parse(j)
                        .map_err(|_| format!("actor {j}: use true (the server) or a user's JID"))?,
                ),
            };
            let jid = jid_arg(1, "jid")?;
            let given = arg(args, 2, "affiliation")?;
            let a = Affiliation::parse(&given).ok_or_else(|| {
                format!("affiliation {given}: use owner, admin, member, outcast or none")
            })?;
            svc.set_affiliation_as(node, actor.as_ref(), &jid, a, opt(args, 3).as_deref())
                .await
                .map_err(e)?;
            Ok(Output::text(
                format!("{} is now {} of {room}", jid.bare(), a.as_str()),
                json!({ "room": room, "jid": jid.bare().to_string(), "affiliation": a.as_str() }),
            ))
        }
        "get_role" => {
            let nick = arg(args, 0, "nick")?;
            let r = svc.get_role(node, &nick).await.map_err(e)?;
            Ok(Output::text(
                r.as_str(),
                json!({ "room": room, "nick": nick, "role": r.as_str() }),
            ))
        }
        "destroy" => {
            let reason = opt(args, 0);
            svc.destroy(node, reason.as_deref(), None)
                .await
                .map_err(e)?;
            Ok(Output::text(
                format!("destroyed {room}"),
                json!({ "room": room, "reason": reason }),
            ))
        }
        "save" => {
            // Our save already drops a room that is no longer persistent from storage, so
            // `force` changes nothing; the room must exist.
            svc.room(node)
                .await
                .map_err(e)?
                .ok_or_else(|| format!("{room}: no such room"))?;
            svc.save(node).await.map_err(e)?;
            Ok(Output::text(
                format!("saved {room}"),
                json!({ "room": room }),
            ))
        }
        other => Err(format!(
            "unknown room method {other} (use {})",
            ROOM_METHODS.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_options_merge_json_and_words() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            options(&a(&[
                "{\"persistent\":true}",
                "name=Lounge",
                "public=false",
                ""
            ])),
            Ok(json!({ "persistent": true, "name": "Lounge", "public": false }))
        );
        assert_eq!(options(&[]), Ok(json!({})));
        assert!(options(&a(&["persistent"])).is_err());
        assert!(options(&a(&["{nope"])).is_err());
        assert!(options(&a(&["[1]"])).is_err());
    }
}
