//! XEP-0357 push notifications (server side): clients register an app server; each new
//! message that waits for its user — the delivery decision ([`crate::core::delivery`]) sends it
//! only to hibernated sessions or to offline storage — triggers a summary notification to the app server — without the body unless
//! `push_notification_with_body` is set.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::core::Core;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::iq::IqError;
use crate::core::modules::{LoadError, Module, ModuleContext, StoreKind};
use crate::core::priority;
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, ns, stanza};

const STORE: &str = "push";

/// The `push` module.
pub struct Push;

#[derive(Clone, Copy)]
struct Settings {
    with_body: bool,
    with_sender: bool,
    max_registrations: usize,
}

impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn options(&self) -> &'static [&'static str] {
        &[
            "push_notification_with_body",
            "push_notification_with_sender",
            "push_max_registrations",
        ]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // Opened through the API: what it holds for an account goes with the account.
        ctx.open_store(STORE, StoreKind::Map);
        let settings = Settings {
            with_body: ctx.option_bool("push_notification_with_body", false),
            with_sender: ctx.option_bool("push_notification_with_sender", false),
            max_registrations: ctx.option_integer("push_max_registrations", 10, 1, 100) as usize,
        };
        ctx.add_item(super::disco::ACCOUNT_FEATURE, json!(ns::PUSH));
        ctx.hook(
            &format!("iq-set/bare/{}:enable", ns::PUSH),
            priority::HANDLER,
            handler(move |ev| async move {
                enable(&ev, settings).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:disable", ns::PUSH),
            priority::HANDLER,
            handler(|ev| async move {
                disable(&ev).await;
                Flow::Handled
            }),
        );
        for event in ["message/bare", "message/full"] {
            ctx.hook(
                event,
                priority::PUSH,
                handler(move |ev| async move {
                    maybe_notify(&ev, settings).await;
                    Flow::Continue(ev)
                }),
            );
        }
        Ok(())
    }
}

fn key(app: &str, node: &str) -> String {
    format!("{app}\n{node}")
}

async fn enable(ev: &StanzaEvent, settings: Settings) {
    if ev.to != ev.from.bare() {
        return ev.reply_error(C::Forbidden.into()).await;
    }
    let Some(req) = ev.stanza.first_child() else {
        return ev.reply_error(C::BadRequest.into()).await;
    };
    let (Some(app), Some(node)) = (
        req.get_attr("jid").and_then(|j| Jid::parse(j).ok()),
        req.get_attr("node")
            .filter(|n| !n.is_empty() && n.len() <= 1024),
    ) else {
        return ev
            .reply_error(StanzaError::with_text(
                C::BadRequest,
                "enable needs a valid jid and a node",
            ))
            .await;
    };
    // Publish options the app server wants (e.g. a secret), passed back on every notification.
    let mut options = serde_json::Map::new();
    if let Some(form) = req.get_child("x", ns::DATA) {
        for field in form.children().filter(|f| f.name() == "field") {
            if let Some(var) = field.get_attr("var").filter(|v| *v != "FORM_TYPE") {
                let value = field
                    .get_child("value", ns::DATA)
                    .map(|v| v.text_content())
                    .unwrap_or_default();
                options.insert(var.to_string(), Value::from(value));
            }
        }
    }
    let store = ev.core.store.map(ev.to.domain(), STORE);
    let user = ev.to.node().unwrap_or_default();
    let existing = store.get_all(user).await.unwrap_or_default();
    let k = key(app.as_str(), node);
    if !existing.contains_key(&k) && existing.len() >= settings.max_registrations {
        return ev
            .reply_error(StanzaError::with_text(
                C::ResourceConstraint,
                "too many push registrations",
            ))
            .await;
    }
    let value = json!({ "jid": app.to_string(), "node": node, "options": options });
    match store.set(user, &k, Some(value)).await {
        Ok(()) => ev.reply(stanza::iq_result(&ev.stanza, None)).await,
        Err(_) => ev.reply_error(C::InternalServerError.into()).await,
    }
}

async fn disable(ev: &StanzaEvent) {
    if ev.to != ev.from.bare() {
        return ev.reply_error(C::Forbidden.into()).await;
    }
    let Some(req) = ev.stanza.first_child() else {
        return ev.reply_error(C::BadRequest.into()).await;
    };
    let Some(app) = req.get_attr("jid").and_then(|j| Jid::parse(j).ok()) else {
        return ev.reply_error(C::BadRequest.into()).await;
    };
    let node = req.get_attr("node");
    let store = ev.core.store.map(ev.to.domain(), STORE);
    let user = ev.to.node().unwrap_or_default();
    let all = store.get_all(user).await.unwrap_or_default();
    let gone: Vec<(String, Option<Value>)> = all
        .iter()
        .filter(|(_, v)| {
            v["jid"].as_str() == Some(app.as_str())
                && node.is_none_or(|n| v["node"].as_str() == Some(n))
        })
        .map(|(k, _)| (k.clone(), None))
        .collect();
    match store.set_many(user, gone).await {
        Ok(()) => ev.reply(stanza::iq_result(&ev.stanza, None)).await,
        Err(_) => ev.reply_error(C::InternalServerError.into()).await,
    }
}

/// Whether a message is worth waking a phone for.
fn is_notable(msg: &Element) -> bool {
    let ty = stanza::stanza_type(msg, "normal");
    matches!(ty, "normal" | "chat" | "groupchat")
        && (msg.get_child("body", ns::CLIENT).is_some()
            || msg.children().any(|c| c.name() == "encrypted"))
}

async fn maybe_notify(ev: &StanzaEvent, settings: Settings) {
    if !is_notable(&ev.stanza) {
        return;
    }
    // Someone can take it now (or nobody ever will): no push.
    if !ev.core.delivery(&ev.from, &ev.to, &ev.stanza).await.waits() {
        return;
    }
    let user = ev.to.bare();
    let Ok(regs) = ev
        .core
        .store
        .map(user.domain(), STORE)
        .get_all(user.node().unwrap_or_default())
        .await
    else {
        return;
    };
    for (k, reg) in regs {
        let Some(app) = reg["jid"].as_str().and_then(|j| Jid::parse(j).ok()) else {
            continue;
        };
        let node = reg["node"].as_str().unwrap_or_default().to_string();
        let iq = notification(
            &user,
            &app,
            &node,
            &reg["options"],
            &ev.stanza,
            &ev.from,
            settings,
        );
        let core: Arc<Core> = ev.core.clone();
        let user = user.clone();
        // Tracked, so shutdown waits for it; it stops waiting for the answer at shutdown.
        ev.core.tasks.spawn(async move {
            let answer = tokio::select! {
                _ = core.shutdown.cancelled() => return,
                answer = core.send_iq(iq, Some(Duration::from_secs(30))) => answer,
            };
            match answer {
                Ok(_) | Err(IqError::Timeout) => {}
                Err(IqError::ErrorResponse(e)) => {
                    // The app server no longer knows this device: drop the registration.
                    let cancel = e
                        .get_child("error", ns::CLIENT)
                        .and_then(|e| e.get_attr("type"))
                        == Some("cancel");
                    if cancel {
                        let _ = core
                            .store
                            .map(user.domain(), STORE)
                            .set(user.node().unwrap_or_default(), &k, None)
                            .await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "push notification not sent"),
            }
        });
    }
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", ns::DATA)
        .attr("var", var)
        .child(Element::new("value", ns::DATA).text(value))
}

fn notification(
    user: &Jid,
    app: &Jid,
    node: &str,
    options: &Value,
    msg: &Element,
    sender: &Jid,
    settings: Settings,
) -> Element {
    let mut form = Element::new("x", ns::DATA)
        .attr("type", "form")
        .child(field("FORM_TYPE", "urn:xmpp:push:summary"))
        .child(field("message-count", "1"));
    if settings.with_sender {
        form.push(field("last-message-sender", &sender.bare().to_string()));
    }
    if settings.with_body
        && let Some(body) = msg.get_child("body", ns::CLIENT)
    {
        form.push(field("last-message-body", &body.text_content()));
    }
    let mut pubsub = Element::new("pubsub", ns::PUBSUB).child(
        Element::new("publish", ns::PUBSUB)
            .attr("node", node)
            .child(
                Element::new("item", ns::PUBSUB)
                    .child(Element::new("notification", ns::PUSH).child(form)),
            ),
    );
    if let Some(opts) = options.as_object().filter(|o| !o.is_empty()) {
        let mut x = Element::new("x", ns::DATA)
            .attr("type", "submit")
            .child(field(
                "FORM_TYPE",
                "http://jabber.org/protocol/pubsub#publish-options",
            ));
        for (k, v) in opts {
            x.push(field(k, v.as_str().unwrap_or_default()));
        }
        pubsub.push(Element::new("publish-options", ns::PUBSUB).child(x));
    }
    use rand::Rng;
    let id: u64 = rand::rng().random();
    Element::new("iq", ns::CLIENT)
        .attr("type", "set")
        .attr("id", format!("push{id:x}"))
        .attr("from", user.to_string())
        .attr("to", app.to_string())
        .child(pubsub)
}
