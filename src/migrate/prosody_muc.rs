//! Prosody's persistent MUC rooms (`Component "conference…" "muc"`): the component host's
//! host-wide `persistent` store lists the rooms (room JID → `true`), and its `config` store keeps
//! one table per room node — affiliations as `["jid"] = "owner"`, the settings in `_data`
//! (`name`, `description`, `persistent`, `hidden`, `members_only`, `moderated`, `password`,
//! `history_length`, `whois`, `allow_member_invites`, `changesubject`, `language`, `subject`,
//! `subject_from`, …). Each becomes the stored room of the MUC service ([`ROOMS_STORE`]).

use super::lua::{Lua, Table};
use super::model::Record;
use super::prosody::{FileError, Stores};
use crate::modules::muc::room::{Affiliation, Role, RoomConfig, Stored};
use crate::modules::muc::service::ROOMS_STORE;
use crate::xmpp::Jid;

/// The rooms of component `host` as stored-room records; `None` when it lists no rooms.
pub fn read_rooms(src: &dyn Stores, host: &str) -> Result<Option<Vec<Record>>, FileError> {
    let Some(persistent) = src.host_keyval("persistent")? else {
        return Ok(None);
    };
    let mut rooms: Vec<String> = persistent
        .string_keys()
        .filter(|(_, v)| v.is_true())
        .filter_map(|(jid, _)| {
            let j = Jid::parse(&jid).ok()?;
            (j.domain() == host).then(|| j.node().map(str::to_string))?
        })
        .collect();
    rooms.sort();
    rooms.dedup();
    let mut out = Vec::with_capacity(rooms.len());
    for node in rooms {
        let Some(t) = src.keyval("config", &node)? else {
            continue; // listed, but its config is gone: nothing to restore
        };
        let stored = room(&t);
        let value = serde_json::to_value(&stored)
            .map_err(|e| FileError(format!("{}: {e}", src.position("config", &node))))?;
        out.push(Record::keyval(host, ROOMS_STORE, &node, value));
    }
    Ok(Some(out))
}

/// One room's table as the room Oxpecker stores; settings it does not have are left out.
fn room(t: &Table) -> Stored {
    let mut stored = Stored::default();
    let mut affiliated = |table: &Table| {
        for (jid, v) in table.string_keys() {
            let (Ok(j), Some(a)) = (Jid::parse(&jid), v.as_str().and_then(Affiliation::parse))
            else {
                continue;
            };
            if a != Affiliation::None {
                stored.affiliations.insert(j.bare().to_string(), a);
            }
        }
    };
    // Prosody 0.11+ keeps affiliations at the top level; older files in `_affiliations`.
    affiliated(t);
    if let Some(old) = t.get("_affiliations").and_then(Lua::as_table) {
        affiliated(old);
    }
    let data = t.get("_data").and_then(Lua::as_table);
    let text = |k: &str| data.and_then(|d| d.get(k)).and_then(Lua::as_str);
    let flag = |k: &str| data.and_then(|d| d.get(k)).map(Lua::is_true);
    let number = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Lua::as_i64)
            .and_then(|n| usize::try_from(n).ok())
    };
    let c: &mut RoomConfig = &mut stored.config;
    c.persistent = true;
    if let Some(v) = text("name") {
        c.name = v.to_string();
    }
    if let Some(v) = text("description") {
        c.description = v.to_string();
    }
    if let Some(v) = text("language") {
        c.language = v.to_string();
    }
    if let Some(v) = text("password") {
        c.password = v.to_string();
    }
    if let Some(hidden) = flag("hidden") {
        c.public = !hidden;
    }
    if let Some(v) = flag("members_only") {
        c.members_only = v;
    }
    if let Some(v) = flag("moderated") {
        c.moderated = v;
    }
    if let Some(v) = flag("allow_member_invites") {
        c.allow_invites = v;
    }
    if let Some(v) = flag("changesubject") {
        c.change_subject = v;
    }
    if let Some(v) = flag("archiving") {
        c.enable_archiving = v;
    }
    if let Some(v) = text("whois") {
        c.whois_anyone = v == "anyone";
    }
    if let Some(v) = number("history_length") {
        c.history_length = v;
    }
    if let Some(v) = number("max_occupants") {
        c.max_occupants = v;
    }
    if let Some(p) = data
        .and_then(|d| d.get("presence_broadcast"))
        .and_then(Lua::as_table)
    {
        let mut roles: Vec<Role> = p
            .string_keys()
            .filter(|(_, v)| v.is_true())
            .filter_map(|(r, _)| Role::parse(&r))
            .filter(|r| *r != Role::None)
            .collect();
        roles.sort();
        c.presence_broadcast = roles;
    }
    if let Some(subject) = text("subject").filter(|s| !s.is_empty()) {
        // `subject_from` is the occupant JID (room@service/nick) that set it.
        let by = text("subject_from")
            .and_then(|j| Jid::parse(j).ok())
            .and_then(|j| j.resource().map(str::to_string))
            .unwrap_or_default();
        stored.subject = Some((by, subject.to_string()));
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::lua;

    #[test]
    fn a_prosody_room_table_becomes_a_stored_room() {
        // As Prosody 0.12 wrote it (scripts/migrate-test's room), plus a subject and roles.
        let v = lua::parse_return(
            br#"return {
	["_jid"] = "lounge@conference.localhost";
	["bob@localhost"] = "member";
	["_affiliation_data"] = {};
	["alice@localhost"] = "owner";
	["eve@localhost"] = "outcast";
	["x@localhost"] = "sideways";
	["_data"] = {
		["persistent"] = true;
		["hidden"] = true;
		["name"] = "The Lounge";
		["language"] = "en";
		["whois"] = "anyone";
		["history_length"] = 5;
		["subject"] = "Tea";
		["subject_from"] = "lounge@conference.localhost/Ally";
		["presence_broadcast"] = { ["moderator"] = true; ["participant"] = true; ["visitor"] = false };
	};
};"#,
        )
        .unwrap();
        let s = room(v.as_table().unwrap());
        assert_eq!(s.config.name, "The Lounge");
        assert!(s.config.persistent && !s.config.public && s.config.whois_anyone);
        assert_eq!(s.config.history_length, 5);
        assert_eq!(s.config.language, "en");
        assert_eq!(
            s.config.presence_broadcast,
            vec![Role::Participant, Role::Moderator]
        );
        assert_eq!(s.subject, Some(("Ally".into(), "Tea".into())));
        let affs: Vec<(&str, Affiliation)> = s
            .affiliations
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            affs,
            vec![
                ("alice@localhost", Affiliation::Owner),
                ("bob@localhost", Affiliation::Member),
                ("eve@localhost", Affiliation::Outcast),
            ]
        );
    }
}
