//! A bound client session: the reader loop that stamps and routes stanzas, and the writer task
//! that drains the session's queue to the socket, coalescing writes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::core::Core;
use crate::core::events::Origin;
use crate::core::sessions::{BoundSession, Outbound, SessionHandle};
use crate::xmpp::error::{
    StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition as C,
};
use crate::xmpp::parser::{ParseError, StreamEvent, StreamParser};
use crate::xmpp::stanza::{self, Kind};
use crate::xmpp::{Element, Jid, ns};

/// Most queued stanzas gathered into one socket write.
const MAX_BATCH_STANZAS: usize = 256;

/// Runs a bound session until it ends, then unbinds it.
pub async fn run<R, W>(core: Arc<Core>, mut parser: StreamParser<R>, writer: W, bound: BoundSession)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let BoundSession { handle, rx } = bound;
    let writer_task = tokio::spawn(write_loop(writer, rx, core.core_metrics.stanzas.clone()));
    let idle = core.config.load().c2s.idle_timeout_secs;
    let end: Option<StreamError> = loop {
        let read = async {
            if idle == 0 {
                Ok(parser.next().await)
            } else {
                tokio::time::timeout(Duration::from_secs(idle), parser.next()).await
            }
        };
        tokio::select! {
            _ = handle.closed() => break handle.close_reason(),
            _ = core.shutdown.cancelled() => break Some(StreamError::new(C::SystemShutdown)),
            r = read => match r {
                Err(_) => break Some(StreamError::new(C::ConnectionTimeout)),
                Ok(Ok(StreamEvent::Stanza(el))) => {
                    if let Err(e) = handle_stanza(&core, &handle, el).await {
                        break Some(e);
                    }
                }
                Ok(Ok(StreamEvent::Close)) => break None,
                Ok(Ok(StreamEvent::Header(_))) => break Some(StreamError::new(C::BadFormat)),
                Ok(Err(ParseError::Stream(e))) => break Some(e),
                Ok(Err(_)) => {
                    // The connection is gone: nothing more can be written.
                    went_offline(&core, &handle).await;
                    core.sessions.unbind(&handle);
                    writer_task.abort();
                    tracing::info!(jid = %handle.jid, "connection lost");
                    return;
                }
            }
        }
    };
    went_offline(&core, &handle).await;
    core.sessions.unbind(&handle);
    if let Some(e) = &end {
        tracing::info!(jid = %handle.jid, error = %e, "closing session");
    } else {
        tracing::info!(jid = %handle.jid, "session closed by client");
    }
    if handle.finish(end).await {
        let _ = tokio::time::timeout(Duration::from_secs(10), writer_task).await;
    } else {
        writer_task.abort();
    }
}

/// On disconnect, an available session's unavailable presence is sent on its behalf (RFC 6121 §4.5.2).
async fn went_offline(core: &Arc<Core>, handle: &Arc<SessionHandle>) {
    if handle.is_available() {
        handle.set_presence(false, 0, None);
        let presence = Element::new("presence", ns::CLIENT)
            .attr("type", "unavailable")
            .attr("from", handle.jid.to_string());
        core.route(Origin::Client(handle.clone()), presence).await;
    }
}

/// Checks, stamps and routes one stanza from the client; an `Err` ends the stream.
async fn handle_stanza(
    core: &Arc<Core>,
    handle: &Arc<SessionHandle>,
    mut el: Element,
) -> Result<(), StreamError> {
    let Some(kind) = Kind::of(&el) else {
        core.core_metrics.stanzas.with(&["other", "in"]).inc();
        return Err(StreamError::with_text(
            C::UnsupportedStanzaType,
            format!("unexpected <{}/> in {}", el.name(), el.ns()),
        ));
    };
    if let Some(from) = el.get_attr("from") {
        let ok = Jid::parse(from).is_ok_and(|j| j == handle.jid || j == handle.jid.bare());
        if !ok {
            return Err(StreamError::new(C::InvalidFrom));
        }
    }
    core.core_metrics.stanzas.with(&[kind.as_str(), "in"]).inc();
    el.set_attr("from", Some(handle.jid.to_string()));
    let ty = stanza::stanza_type(&el, "").to_string();
    if kind == Kind::Iq {
        let valid = el.get_attr("id").is_some()
            && match ty.as_str() {
                "get" | "set" => el.children().count() == 1,
                "result" => el.children().count() <= 1,
                "error" => true,
                _ => false,
            };
        if !valid {
            reply_error(core, &el, StanzaErrorCondition::BadRequest).await;
            return Ok(());
        }
        // Legacy session establishment (RFC 3921 §3): a no-op that must succeed.
        if ty == "set"
            && el.get_child("session", ns::SESSION).is_some()
            && el.get_attr("to").is_none_or(|t| t == handle.jid.domain())
        {
            let mut reply = stanza::iq_result(&el, None);
            reply.set_attr("from", Some(handle.jid.domain().to_string()));
            reply.set_attr("to", Some(handle.jid.to_string()));
            handle.send(reply);
            return Ok(());
        }
    }
    let mut initial = None;
    if kind == Kind::Presence && el.get_attr("to").is_none() {
        // Broadcast presence updates this session's availability (RFC 6121 §4.2, §4.4).
        match ty.as_str() {
            "" => {
                let priority = el
                    .get_child("priority", ns::CLIENT)
                    .and_then(|p| p.text_content().trim().parse::<i8>().ok())
                    .unwrap_or(0);
                if handle.set_presence(true, priority, Some(el.clone())) {
                    initial = Some(el.clone());
                }
            }
            "unavailable" => {
                handle.set_presence(false, 0, None);
            }
            _ => {}
        }
    }
    core.route(Origin::Client(handle.clone()), el).await;
    if let Some(presence) = initial {
        // After initial presence is broadcast: probes, pending subscription requests, offline messages.
        core.initial_presence(handle, presence).await;
    }
    Ok(())
}

async fn reply_error(core: &Arc<Core>, el: &Element, cond: StanzaErrorCondition) {
    if let Some(mut reply) = stanza::error_reply(el, &StanzaError::new(cond)) {
        if reply.get_attr("from").is_none() {
            let host = el
                .get_attr("from")
                .and_then(|f| Jid::parse(f).ok())
                .map(|j| j.domain().to_string())
                .unwrap_or_default();
            reply.set_attr("from", Some(host));
        }
        core.send(reply).await;
    }
}

/// Drains the outbound queue to the socket, batching whatever is ready into one write.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Outbound>,
    stanzas: Arc<crate::core::metrics::Family>,
) {
    let out = |kind: &str| stanzas.with(&[kind, "out"]);
    let (messages, presences, iqs) = (out("message"), out("presence"), out("iq"));
    while let Some(first) = rx.recv().await {
        let mut buf = String::new();
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH_STANZAS {
            match rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        let mut closing = false;
        for m in pending {
            if let Outbound::Stanza(el) = &m {
                match el.name() {
                    "message" => messages.inc(),
                    "presence" => presences.inc(),
                    _ => iqs.inc(),
                }
            }
            closing = append(&mut buf, m);
            if closing {
                break;
            }
        }
        if w.write_all(buf.as_bytes()).await.is_err() || w.flush().await.is_err() {
            return;
        }
        if closing {
            let _ = w.shutdown().await;
            return;
        }
    }
}

/// Serialises one queue entry; returns true if it ends the stream.
fn append(buf: &mut String, m: Outbound) -> bool {
    match m {
        Outbound::Stanza(el) => {
            el.write_xml(buf, ns::CLIENT);
            false
        }
        Outbound::Close(err) => {
            if let Some(e) = err {
                e.to_element().write_xml(buf, ns::CLIENT);
            }
            buf.push_str("</stream:stream>");
            true
        }
    }
}
