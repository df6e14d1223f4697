//! XEP-0133 service administration over XEP-0050 ad-hoc commands, for admins only (others get
//! `forbidden`): add, delete and re-password users, online users count and list, registered
//! users count, end user sessions, announce to online users, set, edit and delete the message
//! of the day (sent to each user at login), shut down, reload the configuration (Prosody's
//! node). Each command calls the same [`crate::core::admin`]
//! operations as the shell and the REST API, and is audited on the `audit` target.
//!
//! A command without a submitted form answers with the form to fill (`status="executing"`);
//! the submitted form runs it (`status="completed"` with a note, or a result form).

use std::sync::Arc;

use crate::core::Core;
use serde_json::json;

use crate::core::events::{Flow, Origin, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition, StreamErrorCondition};
use crate::xmpp::{Element, ns, stanza};

/// The `admin_adhoc` module.
pub struct AdminAdhoc;

const COMMANDS: &str = ns::COMMANDS;
const ADMIN: &str = ns::ADMIN;
/// The host store holding the message of the day (under the empty user).
const MOTD_STORE: &str = "motd";

/// The host's message of the day, if set.
async fn motd(core: &Core, host: &str) -> Option<String> {
    let v = core.store.keyval(host, MOTD_STORE).get("").await.ok()??;
    v.as_str().map(str::to_string).filter(|m| !m.is_empty())
}
/// Prosody's node for reloading the configuration.
const RELOAD_NODE: &str = "http://prosody.im/protocol/config#reload";

/// The commands offered: node suffix (after `ADMIN#`, or a full node) and name.
const NODES: &[(&str, &str)] = &[
    ("add-user", "Add User"),
    ("delete-user", "Delete User"),
    ("change-user-password", "Change User Password"),
    ("get-online-users-num", "Get Number of Online Users"),
    ("get-online-users-list", "Get List of Online Users"),
    ("get-registered-users-num", "Get Number of Registered Users"),
    ("end-user-session", "End User Session"),
    ("announce", "Send Announcement to Online Users"),
    ("set-motd", "Set Message of the Day"),
    ("edit-motd", "Edit Message of the Day"),
    ("delete-motd", "Delete Message of the Day"),
    ("shutdown", "Shut Down Service"),
    (RELOAD_NODE, "Reload configuration"),
];

fn node_of(suffix: &str) -> String {
    if suffix.contains(':') {
        suffix.to_string()
    } else {
        format!("{ADMIN}#{suffix}")
    }
}

impl Module for AdminAdhoc {
    fn name(&self) -> &'static str {
        "admin_adhoc"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        ctx.add_feature(COMMANDS);
        // The command list is disco#items on the commands node (before the plain items answer).
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_ITEMS),
            priority::INTERCEPT,
            handler(|ev| async move {
                let node = ev.stanza.first_child().and_then(|q| q.get_attr("node"));
                if node != Some(COMMANDS) {
                    return Flow::Continue(ev);
                }
                let mut query = Element::new("query", ns::DISCO_ITEMS).attr("node", COMMANDS);
                if ev.core.is_admin(&ev.from).await {
                    for (suffix, name) in NODES {
                        query.push(
                            Element::new("item", ns::DISCO_ITEMS)
                                .attr("jid", ev.to.to_string())
                                .attr("node", node_of(suffix))
                                .attr("name", *name),
                        );
                    }
                }
                ev.reply(stanza::iq_result(&ev.stanza, Some(query))).await;
                Flow::Handled
            }),
        );
        // The message of the day goes to each session at its initial presence.
        ctx.hook(
            "presence/initial",
            priority::AFTER_HANDLERS,
            handler(|ev| async move {
                if let Some(s) = ev.origin.session()
                    && let Some(text) = motd(&ev.core, s.jid.domain()).await
                {
                    let msg = Element::new("message", ns::CLIENT)
                        .attr("from", s.jid.domain().to_string())
                        .attr("to", s.jid.to_string())
                        .attr("type", "headline")
                        .child(Element::new("body", ns::CLIENT).text(text));
                    ev.core.route(Origin::Server, msg).await;
                }
                Flow::Continue(ev)
            }),
        );
        ctx.hook(
            &format!("iq-set/host/{COMMANDS}:command"),
            priority::HANDLER,
            handler(|ev| async move {
                execute(&ev).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}

/// A field of the submitted form: its values.
fn values(x: Option<&Element>, var: &str) -> Vec<String> {
    x.into_iter()
        .flat_map(|x| x.children())
        .filter(|f| f.is("field", ns::DATA) && f.get_attr("var") == Some(var))
        .flat_map(|f| f.children().filter(|v| v.is("value", ns::DATA)))
        .map(|v| v.text_content())
        .collect()
}

fn value(x: Option<&Element>, var: &str) -> String {
    values(x, var).join("\n")
}

fn field(var: &str, kind: &str, label: &str, vals: &[String]) -> Element {
    let mut f = Element::new("field", ns::DATA)
        .attr("var", var)
        .attr("type", kind);
    if !label.is_empty() {
        f.set_attr("label", Some(label.to_string()));
    }
    for v in vals {
        f.push(Element::new("value", ns::DATA).text(v.clone()));
    }
    f
}

fn form(kind: &str, title: &str, fields: Vec<Element>) -> Element {
    let mut x = Element::new("x", ns::DATA)
        .attr("type", kind)
        .child(Element::new("title", ns::DATA).text(title.to_string()))
        .child(field("FORM_TYPE", "hidden", "", &[ADMIN.to_string()]));
    for f in fields {
        x.push(f);
    }
    x
}

/// The form a command asks for (`None`: it runs without input).
async fn input_form(core: &Core, host: &str, suffix: &str) -> Option<Element> {
    let none: &[String] = &[];
    let fields = match suffix {
        "set-motd" => vec![field("motd", "text-multi", "Message of the day", none)],
        "edit-motd" => {
            let current: Vec<String> = motd(core, host).await.into_iter().collect();
            vec![field("motd", "text-multi", "Message of the day", &current)]
        }
        "add-user" => vec![
            field(
                "accountjid",
                "jid-single",
                "The Jabber ID for the account to be added",
                none,
            ),
            field(
                "password",
                "text-private",
                "The password for this account",
                none,
            ),
            field("password-verify", "text-private", "Retype password", none),
        ],
        "delete-user" | "end-user-session" => {
            vec![field("accountjids", "jid-multi", "The Jabber ID(s)", none)]
        }
        "change-user-password" => vec![
            field(
                "accountjid",
                "jid-single",
                "The Jabber ID for this account",
                none,
            ),
            field(
                "password",
                "text-private",
                "The password for this account",
                none,
            ),
        ],
        "announce" => vec![
            field("subject", "text-single", "Subject", none),
            field("announcement", "text-multi", "Announcement", none),
        ],
        "shutdown" => vec![field("announcement", "text-multi", "Announcement", none)],
        _ => return None,
    };
    let title = NODES
        .iter()
        .find(|(s, _)| *s == suffix)
        .map_or("", |(_, n)| n);
    Some(form("form", title, fields))
}

fn command_el(node: &str, session: &str, status: &str) -> Element {
    Element::new("command", COMMANDS)
        .attr("node", node)
        .attr("sessionid", session)
        .attr("status", status)
}

fn note(mut cmd: Element, kind: &str, text: &str) -> Element {
    cmd.push(
        Element::new("note", COMMANDS)
            .attr("type", kind)
            .text(text.to_string()),
    );
    cmd
}

async fn execute(ev: &StanzaEvent) {
    let Some(cmd) = ev.stanza.get_child("command", COMMANDS) else {
        ev.reply_error(StanzaErrorCondition::BadRequest.into())
            .await;
        return;
    };
    let node = cmd.get_attr("node").unwrap_or_default().to_string();
    let Some(suffix) = NODES.iter().map(|(s, _)| *s).find(|s| node_of(s) == node) else {
        ev.reply_error(StanzaErrorCondition::ItemNotFound.into())
            .await;
        return;
    };
    let who = ev.from.to_string();
    // Where from: the client connection's address.
    let peer = ev
        .origin
        .session()
        .map(|s| s.peer.clone())
        .unwrap_or_default();
    if !ev.core.is_admin(&ev.from).await {
        tracing::warn!(target: "audit", who = %who, from = "xmpp ad-hoc", %peer, what = %node, outcome = "refused", "ad-hoc command");
        ev.reply_error(StanzaError::new(StanzaErrorCondition::Forbidden))
            .await;
        return;
    }
    let session = cmd
        .get_attr("sessionid")
        .map(str::to_string)
        .unwrap_or_else(crate::core::sessions::random_resource);
    if cmd.get_attr("action") == Some("cancel") {
        let reply = command_el(&node, &session, "canceled");
        ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
        return;
    }
    let submitted = cmd
        .get_child("x", ns::DATA)
        .filter(|x| x.get_attr("type") == Some("submit"));
    if submitted.is_none()
        && let Some(f) = input_form(&ev.core, ev.to.domain(), suffix).await
    {
        let reply = command_el(&node, &session, "executing")
            .child(
                Element::new("actions", COMMANDS)
                    .attr("execute", "complete")
                    .child(Element::new("complete", COMMANDS)),
            )
            .child(f);
        ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
        return;
    }
    let done = command_el(&node, &session, "completed");
    let result = run(&ev.core, ev.to.domain(), suffix, submitted).await;
    tracing::info!(
        target: "audit",
        who = %who,
        from = "xmpp ad-hoc",
        %peer,
        what = %node,
        outcome = if result.is_ok() { "ok" } else { "failed" },
        error = result.as_ref().err().map(String::as_str).unwrap_or(""),
        "ad-hoc command"
    );
    let reply = match result {
        Ok(Outcome::Note(text)) => note(done, "info", &text),
        Ok(Outcome::Form(x)) => done.child(x),
        Err(text) => note(done, "error", &text),
    };
    ev.reply(stanza::iq_result(&ev.stanza, Some(reply))).await;
}

/// What a completed command answers.
enum Outcome {
    /// A note for the admin.
    Note(String),
    /// A result form.
    Form(Element),
}

async fn run(
    core: &Arc<Core>,
    host: &str,
    suffix: &str,
    x: Option<&Element>,
) -> Result<Outcome, String> {
    match suffix {
        "add-user" => {
            let (jid, pw) = (value(x, "accountjid"), value(x, "password"));
            if pw != value(x, "password-verify") {
                return Err("The passwords do not match".into());
            }
            let j = core
                .user_create(&jid, &pw, None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Outcome::Note(format!("Account {j} created")))
        }
        "delete-user" => {
            let mut deleted = Vec::new();
            for jid in values(x, "accountjids") {
                let j = core.accounts.account_jid(&jid).map_err(|e| e.to_string())?;
                match core.delete_account(&j).await {
                    Ok(true) => deleted.push(j.to_string()),
                    Ok(false) => return Err(format!("No account {j}")),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(Outcome::Note(format!("Deleted: {}", deleted.join(", "))))
        }
        "change-user-password" => {
            let j = core
                .accounts
                .account_jid(&value(x, "accountjid"))
                .map_err(|e| e.to_string())?;
            core.accounts
                .set_password(&j, &value(x, "password"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Outcome::Note(format!("Password changed for {j}")))
        }
        "get-online-users-num" => {
            let n = online_users(core, host).len();
            Ok(Outcome::Form(form(
                "result",
                "Number of Online Users",
                vec![field("onlineusersnum", "text-single", "", &[n.to_string()])],
            )))
        }
        "get-online-users-list" => Ok(Outcome::Form(form(
            "result",
            "List of Online Users",
            vec![field(
                "onlineuserjids",
                "jid-multi",
                "",
                &online_users(core, host),
            )],
        ))),
        "get-registered-users-num" => {
            let n = core
                .accounts
                .list(host)
                .await
                .map_err(|e| e.to_string())?
                .len();
            Ok(Outcome::Form(form(
                "result",
                "Number of Registered Users",
                vec![field(
                    "registeredusersnum",
                    "text-single",
                    "",
                    &[n.to_string()],
                )],
            )))
        }
        "end-user-session" => {
            let mut closed = Vec::new();
            for jid in values(x, "accountjids") {
                closed.extend(
                    core.close_sessions_everywhere(
                        &jid,
                        StreamErrorCondition::PolicyViolation,
                        "session ended by an administrator",
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                );
            }
            Ok(Outcome::Note(format!("Ended: {}", closed.join(", "))))
        }
        "announce" => {
            let body = value(x, "announcement");
            if body.is_empty() {
                return Err("The announcement is empty".into());
            }
            let subject = value(x, "subject");
            let n = core.announce(host, Some(&subject), &body).await;
            Ok(Outcome::Note(format!("Announcement sent to {n} users")))
        }
        "set-motd" | "edit-motd" => {
            let text = value(x, "motd");
            core.store
                .keyval(host, MOTD_STORE)
                .set("", Some(json!(text)))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Outcome::Note("Message of the day set".into()))
        }
        "delete-motd" => {
            core.store
                .keyval(host, MOTD_STORE)
                .set("", None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Outcome::Note("Message of the day deleted".into()))
        }
        "shutdown" => {
            core.request_shutdown(&value(x, "announcement"));
            Ok(Outcome::Note("Server is shutting down".into()))
        }
        RELOAD_NODE => {
            let c = core.clone();
            let report = tokio::task::spawn_blocking(move || c.reload_config())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(Outcome::Note(format!(
                "Configuration reloaded ({} loaded, {} unloaded, {} failed)",
                report.loaded.len(),
                report.unloaded.len(),
                report.failed.len()
            )))
        }
        other => Err(format!("unknown command {other}")),
    }
}

/// Bare JIDs with a session on `host` (on any cluster node), sorted.
fn online_users(core: &Core, host: &str) -> Vec<String> {
    core.online_users_everywhere(Some(host))
        .iter()
        .map(|j| j.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_with_input_has_a_form_and_nodes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (s, _) in NODES {
            assert!(seen.insert(node_of(s)));
        }
        assert_eq!(node_of(RELOAD_NODE), RELOAD_NODE);
        assert_eq!(node_of("announce"), format!("{ADMIN}#announce"));
    }

    #[test]
    fn submitted_values_are_read_by_var() {
        let x = Element::new("x", ns::DATA)
            .attr("type", "submit")
            .child(field(
                "accountjids",
                "jid-multi",
                "",
                &["a@h".into(), "b@h".into()],
            ))
            .child(field("password", "text-private", "", &["pw".into()]));
        assert_eq!(values(Some(&x), "accountjids"), ["a@h", "b@h"]);
        assert_eq!(value(Some(&x), "password"), "pw");
        assert_eq!(value(Some(&x), "nope"), "");
        assert_eq!(value(None, "password"), "");
    }
}
