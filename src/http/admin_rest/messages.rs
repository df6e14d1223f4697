//! Messages from the host to users: one user, many (multicast), every online user (broadcast).
//!
//! Each builds the stanza a client would get — `<message from=HOST to=USER@HOST><body>PREFIX+text`
//! — and hands it to the router, so delivery, offline storage and every module hook apply as for
//! any other message. A message the router refuses (an offline store that cannot write, a full
//! offline store) is not reported as sent: the answer is a 503 (or 500) that says why.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::Params;
use super::{ApiError, Ctx, body_object, ok, parse_body, reply, string_field, user_jid};
use crate::core::Core;
use crate::core::delivery;
use crate::core::events::Origin;
use crate::core::router::Routed;
use crate::modules::admin_rest::AdminRestOptions;
use crate::xmpp::error::{ErrorType, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, StanzaError, ns};

/// Most recipients in one multicast.
const MAX_RECIPIENTS: usize = 10_000;

/// What happens to a message for a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// An available session gets it now.
    Delivered,
    /// Offline storage keeps it for the next login.
    Stored,
    /// Offline and nothing stores it.
    Dropped,
}

/// What the router will do with `msg` for `jid`, as the one delivery decision says.
async fn fate(core: &Core, jid: &Jid, msg: &Element) -> Fate {
    let Ok(host) = Jid::parse(jid.domain()) else {
        return Fate::Dropped;
    };
    match core.delivery(&host, jid, msg).await.fate {
        delivery::Fate::Delivered => Fate::Delivered,
        delivery::Fate::Offline => Fate::Stored,
        delivery::Fate::Bounce(_) | delivery::Fate::Dropped => Fate::Dropped,
    }
}

/// The message stanza from the user's host.
fn stanza(to: &Jid, text: String) -> Element {
    Element::new("message", ns::CLIENT)
        .attr("from", to.domain().to_string())
        .attr("to", to.to_string())
        .child(Element::new("body", ns::CLIENT).text(text))
}

/// The answer for a message the router refused: a `wait` internal-server-error (a failed
/// write, see [`crate::core::faults`]) is the 503 a client may retry, any other
/// internal-server-error a 500, and any other refusal (e.g. a full offline store) a 503
/// `message_refused` with the error's text.
fn refused(e: &StanzaError) -> ApiError {
    let text = e.text.clone().unwrap_or_else(|| e.condition.to_string());
    match (e.condition, e.kind) {
        (C::InternalServerError, ErrorType::Wait) => ApiError::StorageUnavailable(text),
        (C::InternalServerError, _) => ApiError::Internal(text),
        _ => ApiError::other(StatusCode::SERVICE_UNAVAILABLE, "message_refused", text),
    }
}

/// An existing local user, or `None` (malformed, other host not served, or no such account).
async fn recipient(core: &Core, host: &str, name: &str) -> Result<Option<Jid>, ApiError> {
    let Ok(jid) = user_jid(core, host, name) else {
        return Ok(None);
    };
    Ok(core.accounts.exists(&jid).await?.then_some(jid))
}

/// `POST /message/{name}` `{"message"}`: 200 delivered, 202 stored offline, 404 no such user,
/// 501 offline with no offline storage, 503 (or 500) refused (see [`refused`]).
pub async fn send_message(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(jid) = recipient(&core, &ctx.host, &name).await? else {
        return Err(ApiError::InvalidUser);
    };
    let body = body_object(&headers, &body)?;
    let text = string_field(&body, "message")?;
    let opts = AdminRestOptions::for_host(&core.config.load(), &ctx.host);
    let msg = stanza(&jid, format!("{}{text}", opts.message_prefix));
    let fate = fate(&core, &jid, &msg).await;
    if fate == Fate::Dropped {
        return Err(ApiError::MessageDropped);
    }
    if let Routed::Refused(e) = core.route_with_outcome(Origin::Server, msg).await {
        return Err(refused(&e));
    }
    Ok(match fate {
        Fate::Delivered => ok(format!("Message sent to user: {jid}")),
        _ => reply(
            StatusCode::ACCEPTED,
            format!("Message sent to offline queue: {jid}"),
        ),
    })
}

/// `POST /message` with `[{"to", "message"}, …]` or `{"recipients": [...]}`:
/// `"Message multicasted to users: sent/delayed"` (refused messages count in neither), or 404
/// when nobody could be reached (the first refusal's answer when one was refused).
pub async fn multicast(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let list = match parse_body(&headers, &body)? {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("recipients") {
            Some(Value::Array(a)) => a,
            _ => return Err(ApiError::InvalidBody),
        },
        _ => return Err(ApiError::InvalidBody),
    };
    if list.len() > MAX_RECIPIENTS {
        return Err(ApiError::other(
            StatusCode::BAD_REQUEST,
            "too_many_recipients",
            format!("At most {MAX_RECIPIENTS} recipients per request"),
        ));
    }
    let opts = AdminRestOptions::for_host(&core.config.load(), &ctx.host);
    let (mut sent, mut delayed) = (0usize, 0usize);
    let mut first_refusal = None;
    for r in &list {
        let (Some(to), Some(text)) = (
            r.get("to").and_then(Value::as_str),
            r.get("message").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Some(jid) = recipient(&core, &ctx.host, to).await? else {
            continue;
        };
        let msg = stanza(&jid, format!("{}{text}", opts.multicast_prefix));
        let fate = fate(&core, &jid, &msg).await;
        if fate == Fate::Dropped {
            continue;
        }
        match core.route_with_outcome(Origin::Server, msg).await {
            Routed::Refused(e) => {
                first_refusal.get_or_insert(e);
            }
            Routed::Taken if fate == Fate::Delivered => sent += 1,
            Routed::Taken => delayed += 1,
        }
    }
    if sent + delayed == 0 {
        if let Some(e) = first_refusal {
            return Err(refused(&e));
        }
        return Err(ApiError::other(
            StatusCode::NOT_FOUND,
            "no_recipients",
            "No multicast recipients",
        ));
    }
    Ok(ok(format!(
        "Message multicasted to users: {sent}/{delayed}"
    )))
}

/// `POST /broadcast` `{"message"}`: to every available user of the host; `{"count": n}` users.
pub async fn broadcast(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = body_object(&headers, &body)?;
    let text = string_field(&body, "message")?;
    let opts = AdminRestOptions::for_host(&core.config.load(), &ctx.host);
    let text = format!("{}{text}", opts.broadcast_prefix);
    let count = core.announce(&ctx.host, None, &text).await;
    Ok(ok(json!({ "count": count })))
}
