//! RFC 6121 §2 roster management over XMPP: get (with XEP-0237 versioning), set and remove,
//! with roster pushes to every interested resource.

use std::sync::Arc;

use crate::core::Core;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::faults;
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::core::roster::{RosterError, RosterItem};
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, ns, stanza};

/// The `roster` module.
pub struct Roster;

impl Module for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn options(&self) -> &'static [&'static str] {
        &["roster_max_items"]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        let max = ctx.option_integer("roster_max_items", 1000, 1, 1_000_000) as usize;
        ctx.add_stream_feature(Element::new("ver", ns::ROSTER_VER));
        ctx.hook(
            &format!("iq-get/bare/{}:query", ns::ROSTER),
            priority::HANDLER,
            handler(|ev| async move {
                get(ev).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:query", ns::ROSTER),
            priority::HANDLER,
            handler(move |ev| async move {
                set(ev, max).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}

async fn fail(ev: &StanzaEvent, cond: C, text: Option<&str>) {
    let err = match text {
        Some(t) => StanzaError::with_text(cond, t),
        None => StanzaError::new(cond),
    };
    ev.reply_error(err).await;
}

/// Replies with the error for a roster operation that failed (a failed write says `wait`).
async fn failed(ev: &StanzaEvent, e: RosterError) {
    let err = match e {
        RosterError::Storage(e) => faults::stanza_error(&e, "roster"),
        e => {
            tracing::error!(error = %e, "roster operation failed");
            StanzaError::new(C::InternalServerError)
        }
    };
    ev.reply_error(err).await;
}

async fn get(ev: StanzaEvent) {
    let core = ev.core.clone();
    if ev.to != ev.from.bare() {
        return fail(&ev, C::Forbidden, Some("only your own roster")).await;
    }
    if let Some(s) = ev.origin.session()
        && !s.roster_requested()
    {
        s.set_roster_requested();
        // Other cluster nodes learn it from the directory, and forward pushes here.
        core.sessions_changed(&s.jid);
    }
    let (items, ver) = match (
        core.roster_items(&ev.to).await,
        core.roster_version(&ev.to).await,
    ) {
        (Ok(i), Ok(v)) => (i, v),
        (Err(e), _) | (_, Err(e)) => return failed(&ev, e).await,
    };
    let asked = ev.stanza.first_child().and_then(|q| q.get_attr("ver"));
    let reply = if asked == Some(ver.as_str()) {
        // XEP-0237: unchanged, so an empty result; pushes follow for later changes.
        stanza::iq_result(&ev.stanza, None)
    } else {
        let mut query = Element::new("query", ns::ROSTER).attr("ver", ver);
        for i in items {
            query.push(i.to_element());
        }
        stanza::iq_result(&ev.stanza, Some(query))
    };
    ev.reply(reply).await;
}

async fn set(ev: StanzaEvent, max: usize) {
    let core: Arc<Core> = ev.core.clone();
    if ev.to != ev.from.bare() {
        return fail(&ev, C::Forbidden, Some("only your own roster")).await;
    }
    let Some(query) = ev.stanza.first_child() else {
        return fail(&ev, C::BadRequest, None).await;
    };
    let items: Vec<&Element> = query
        .children()
        .filter(|c| c.is("item", ns::ROSTER))
        .collect();
    if items.len() != 1 {
        return fail(&ev, C::BadRequest, Some("exactly one item")).await;
    }
    let item = items[0];
    let contact = match item.get_attr("jid").map(Jid::parse) {
        Some(Ok(j)) if j.is_bare() => j,
        _ => return fail(&ev, C::BadRequest, Some("the item needs a bare jid")).await,
    };
    let user = ev.to.clone();
    if item.get_attr("subscription") == Some("remove") {
        match core.roster_remove(&user, &contact).await {
            Ok(true) => ev.reply(stanza::iq_result(&ev.stanza, None)).await,
            Ok(false) => fail(&ev, C::ItemNotFound, None).await,
            Err(e) => failed(&ev, e).await,
        }
        return;
    }
    if contact == user {
        return fail(&ev, C::NotAllowed, Some("you cannot add yourself")).await;
    }
    let name = item
        .get_attr("name")
        .map(str::to_string)
        .filter(|n| !n.is_empty());
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let g = g.text_content();
        if g.is_empty() || g.len() > 1024 {
            return fail(&ev, C::NotAcceptable, Some("empty or overlong group name")).await;
        }
        if groups.contains(&g) {
            return fail(&ev, C::BadRequest, Some("duplicate group")).await;
        }
        groups.push(g);
    }
    if name.as_ref().is_some_and(|n| n.len() > 1024) {
        return fail(&ev, C::NotAcceptable, Some("name too long")).await;
    }
    let existing = match core.roster.item(&user, &contact).await {
        Ok(e) => e,
        Err(e) => return failed(&ev, e).await,
    };
    if existing.is_none() {
        let count = core
            .roster
            .personal(&user)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if count >= max {
            return fail(
                &ev,
                C::ResourceConstraint,
                Some(&format!("the roster is full ({max} items)")),
            )
            .await;
        }
    }
    // Clients may not change subscription state through a roster set (RFC 6121 §2.1.5).
    let mut updated = existing.unwrap_or_else(|| RosterItem::new(&contact));
    updated.name = name;
    updated.groups = groups;
    if let Err(e) = core.roster.put(&user, &contact, Some(&updated)).await {
        return failed(&ev, e).await;
    }
    // The push goes out before the result (RFC 6121 §2.3.2).
    let _ = core.push_current(&user, &contact).await;
    ev.reply(stanza::iq_result(&ev.stanza, None)).await;
}
