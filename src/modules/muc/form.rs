//! The `muc#roomconfig` form (XEP-0045 §10.2) and the `muc#roominfo` disco extension (§15.5.4).

use super::room::{Role, RoomConfig};
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, ns};

fn field(var: &str, ty: &str, label: &str, values: &[String]) -> Element {
    let mut f = Element::new("field", ns::DATA)
        .attr("var", var)
        .attr("type", ty);
    if !label.is_empty() {
        f.set_attr("label", Some(label.to_string()));
    }
    for v in values {
        f.push(Element::new("value", ns::DATA).text(v.clone()));
    }
    f
}

fn option(f: Element, values: &[&str]) -> Element {
    values.iter().fold(f, |f, v| {
        f.child(
            Element::new("option", ns::DATA)
                .attr("label", *v)
                .child(Element::new("value", ns::DATA).text(*v)),
        )
    })
}

fn b(v: bool) -> Vec<String> {
    vec![if v { "1" } else { "0" }.to_string()]
}

fn s(v: &str) -> Vec<String> {
    vec![v.to_string()]
}

/// The room configuration form with the current values.
pub fn config_form(c: &RoomConfig) -> Element {
    let roles: Vec<String> = c
        .presence_broadcast
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    Element::new("x", ns::DATA)
        .attr("type", "form")
        .child(field("FORM_TYPE", "hidden", "", &s(ns::MUC_ROOMCONFIG)))
        .child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Name",
            &s(&c.name),
        ))
        .child(field(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            &s(&c.description),
        ))
        .child(field(
            "muc#roomconfig_lang",
            "text-single",
            "Language",
            &s(&c.language),
        ))
        .child(field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent",
            &b(c.persistent),
        ))
        .child(field(
            "muc#roomconfig_publicroom",
            "boolean",
            "Public",
            &b(c.public),
        ))
        .child(field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only",
            &b(c.members_only),
        ))
        .child(field(
            "muc#roomconfig_moderatedroom",
            "boolean",
            "Moderated",
            &b(c.moderated),
        ))
        .child(field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password protected",
            &b(!c.password.is_empty()),
        ))
        .child(field(
            "muc#roomconfig_roomsecret",
            "text-private",
            "Password",
            &s(&c.password),
        ))
        .child(option(
            field(
                "muc#roomconfig_maxusers",
                "list-single",
                "Most occupants (0 = no room limit)",
                &s(&c.max_occupants.to_string()),
            ),
            &["0", "10", "20", "50", "100", "1000"],
        ))
        .child(option(
            field(
                "muc#roomconfig_whois",
                "list-single",
                "Who may see real JIDs",
                &s(if c.whois_anyone {
                    "anyone"
                } else {
                    "moderators"
                }),
            ),
            &["moderators", "anyone"],
        ))
        .child(field(
            "muc#roomconfig_historylength",
            "text-single",
            "History length",
            &s(&c.history_length.to_string()),
        ))
        .child(field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite",
            &b(c.allow_invites),
        ))
        .child(field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Occupants may change the subject",
            &b(c.change_subject),
        ))
        .child(option(
            field(
                "muc#roomconfig_allowpm",
                "list-single",
                "Who may send private messages",
                &s(&c.allow_pm),
            ),
            &["anyone", "participants", "moderators", "none"],
        ))
        .child(option(
            field(
                "muc#roomconfig_presencebroadcast",
                "list-multi",
                "Roles whose presence is broadcast",
                &roles,
            ),
            &["visitor", "participant", "moderator"],
        ))
        .child(field(
            "muc#roomconfig_enablearchiving",
            "boolean",
            "Archive messages",
            &b(c.enable_archiving),
        ))
}

fn values(f: &Element) -> Vec<String> {
    f.children()
        .filter(|v| v.is("value", ns::DATA))
        .map(Element::text_content)
        .collect()
}

fn bad(var: &str) -> StanzaError {
    StanzaError::with_text(C::NotAcceptable, format!("bad value for {var}"))
}

fn parse_bool(var: &str, v: &str) -> Result<bool, StanzaError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(bad(var)),
    }
}

/// Applies a submitted form to `config` (fields left out keep their value); `max_history`
/// caps the history length. An unknown value is `not-acceptable`.
pub fn apply(x: &Element, config: &mut RoomConfig, max_history: usize) -> Result<(), StanzaError> {
    let mut c = config.clone();
    let mut password_protected = None;
    for f in x.children().filter(|f| f.is("field", ns::DATA)) {
        let Some(var) = f.get_attr("var") else {
            continue;
        };
        let vals = values(f);
        let one = vals.first().cloned().unwrap_or_default();
        match var {
            "FORM_TYPE" if one != ns::MUC_ROOMCONFIG => return Err(bad(var)),
            "muc#roomconfig_roomname" => c.name = one,
            "muc#roomconfig_roomdesc" => c.description = one,
            "muc#roomconfig_lang" => c.language = one,
            "muc#roomconfig_persistentroom" => c.persistent = parse_bool(var, &one)?,
            "muc#roomconfig_publicroom" => c.public = parse_bool(var, &one)?,
            "muc#roomconfig_membersonly" => c.members_only = parse_bool(var, &one)?,
            "muc#roomconfig_moderatedroom" => c.moderated = parse_bool(var, &one)?,
            "muc#roomconfig_passwordprotectedroom" => {
                password_protected = Some(parse_bool(var, &one)?)
            }
            "muc#roomconfig_roomsecret" => c.password = one,
            "muc#roomconfig_maxusers" => {
                c.max_occupants = match one.as_str() {
                    "" | "none" => 0,
                    n => n.parse().map_err(|_| bad(var))?,
                }
            }
            "muc#roomconfig_whois" => {
                c.whois_anyone = match one.as_str() {
                    "anyone" => true,
                    "moderators" => false,
                    _ => return Err(bad(var)),
                }
            }
            "muc#roomconfig_historylength" | "muc#maxhistoryfetch" => {
                let n: usize = one.parse().map_err(|_| bad(var))?;
                c.history_length = n.min(max_history);
            }
            "muc#roomconfig_allowinvites" => c.allow_invites = parse_bool(var, &one)?,
            "muc#roomconfig_changesubject" => c.change_subject = parse_bool(var, &one)?,
            "muc#roomconfig_allowpm" => {
                if !["anyone", "participants", "moderators", "none"].contains(&one.as_str()) {
                    return Err(bad(var));
                }
                c.allow_pm = one;
            }
            "muc#roomconfig_presencebroadcast" => {
                c.presence_broadcast = vals
                    .iter()
                    .map(|v| {
                        Role::parse(v)
                            .filter(|r| *r != Role::None)
                            .ok_or_else(|| bad(var))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "muc#roomconfig_enablearchiving" => c.enable_archiving = parse_bool(var, &one)?,
            // Fields of other servers' forms are ignored, as XEP-0004 allows.
            _ => {}
        }
    }
    if password_protected == Some(false) {
        c.password.clear();
    }
    *config = c;
    Ok(())
}

/// The `muc#roominfo` form for disco#info on the room.
pub fn room_info(c: &RoomConfig, occupants: usize, subject: &str) -> Element {
    Element::new("x", ns::DATA)
        .attr("type", "result")
        .child(field("FORM_TYPE", "hidden", "", &s(ns::MUC_ROOMINFO)))
        .child(field(
            "muc#roominfo_description",
            "text-single",
            "Description",
            &s(&c.description),
        ))
        .child(field(
            "muc#roominfo_occupants",
            "text-single",
            "Occupants",
            &s(&occupants.to_string()),
        ))
        .child(field(
            "muc#roominfo_subject",
            "text-single",
            "Subject",
            &s(subject),
        ))
        .child(field(
            "muc#roominfo_lang",
            "text-single",
            "Language",
            &s(&c.language),
        ))
        .child(field(
            "muc#roominfo_changesubject",
            "boolean",
            "Occupants may change the subject",
            &b(c.change_subject),
        ))
        .child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Name",
            &s(&c.name),
        ))
        .child(field(
            "muc#maxhistoryfetch",
            "text-single",
            "History length",
            &s(&c.history_length.to_string()),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_round_trips_and_bad_values_are_refused() {
        let mut c = RoomConfig {
            name: "Lounge".into(),
            persistent: true,
            members_only: true,
            password: "pw".into(),
            whois_anyone: true,
            history_length: 7,
            presence_broadcast: vec![Role::Moderator],
            ..RoomConfig::default()
        };
        let mut form = config_form(&c);
        form.set_attr("type", Some("submit".into()));
        let mut back = RoomConfig::default();
        apply(&form, &mut back, 50).unwrap();
        assert_eq!(back, c);
        let bad_form = Element::new("x", ns::DATA).child(
            Element::new("field", ns::DATA)
                .attr("var", "muc#roomconfig_whois")
                .child(Element::new("value", ns::DATA).text("everyone")),
        );
        assert!(apply(&bad_form, &mut c, 50).is_err());
        assert_eq!(c.name, "Lounge");
    }
}
