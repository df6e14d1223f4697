//! A bound client session: the reader loop that stamps and routes stanzas, and beside it, in
//! the same task, the writer that drains the session's queue to the socket, coalescing writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};

use super::sm;

use crate::core::Core;
use crate::core::events::Origin;
use crate::core::metrics::StanzaCounters;
use crate::core::sessions::queue::Receiver;
use crate::core::sessions::{BoundSession, Hibernated, Outbound, SessionHandle};
use crate::xmpp::error::{
    StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition as C,
};
use crate::xmpp::parser::{ParseError, StreamEvent, StreamParser};
use crate::xmpp::stanza::{self, Kind};
use crate::xmpp::{Element, Jid, ns};

/// Most queued stanzas gathered into one socket write.
const MAX_BATCH_STANZAS: usize = 256;

/// How a connection stopped serving its session.
enum End {
    /// The stream ends (cleanly or with this error); the session ends with it.
    Close(Option<StreamError>),
    /// The connection is gone without a close.
    Lost,
    /// A resuming connection takes the session over.
    Detached,
}

/// Runs a newly bound session until it ends (or hibernates for a resumption).
pub async fn run<R, W>(core: Arc<Core>, parser: StreamParser<R>, writer: W, bound: BoundSession)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let BoundSession { handle, rx } = bound;
    attach(core, parser, writer, handle, rx, String::new()).await;
}

/// Resumes a hibernated session on a new connection (XEP-0198 §5): `<resumed/>`, then every
/// unacknowledged stanza again, then whatever queued up meanwhile.
pub async fn resume<R, W>(core: Arc<Core>, parser: StreamParser<R>, writer: W, hib: Hibernated)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    resume_after(core, parser, writer, hib, false).await;
}

/// [`resume`], where `announced` says `<resumed/>` was already sent (inside a SASL2
/// `<success/>`, XEP-0388 inline resumption), so only the retransmissions follow.
pub async fn resume_after<R, W>(
    core: Arc<Core>,
    parser: StreamParser<R>,
    writer: W,
    hib: Hibernated,
    announced: bool,
) where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Hibernated { handle, rx } = hib;
    handle.renew_detach();
    let mut preamble = String::new();
    {
        let sm = handle.sm();
        let id = sm.id.clone().unwrap_or_default();
        if !announced {
            preamble.push_str(&format!(
                "<resumed xmlns='{}' previd='{}' h='{}'/>",
                ns::SM,
                crate::xmpp::element::escape(&id, true),
                sm.h_in
            ));
        }
        for (_, el) in &sm.unacked {
            el.write_xml(&mut preamble, ns::CLIENT);
        }
        if !sm.unacked.is_empty() {
            preamble.push_str(&sm::ack_request());
        }
    }
    {
        let mut sm = handle.sm();
        sm.ack_pending = !sm.unacked.is_empty();
    }
    tracing::info!(jid = %handle.jid, "session resumed");
    attach(core, parser, writer, handle, rx, preamble).await;
}

/// Serves `handle` on one connection, in the connection's own task: the reader (read, stamp,
/// route) and the writer (drain the queue to the socket) run side by side in one future, so a
/// session costs one task and no writer task, join handle or stop token. Reads and routes until
/// the stream ends, the connection is lost (the session hibernates if resumable) or a
/// resumption takes it over.
async fn attach<R, W>(
    core: Arc<Core>,
    mut parser: StreamParser<R>,
    mut writer: W,
    handle: Arc<SessionHandle>,
    mut rx: Receiver<Outbound>,
    preamble: String,
) where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let counters = core.core_metrics.stanzas_of(handle.jid.domain());
    let flags = WriterFlags::default();
    let lost = {
        let write = write_loop(&mut writer, &mut rx, &counters, &handle, &flags, preamble);
        tokio::pin!(write);
        let mut done = false;
        let read = read_loop(&core, &mut parser, &handle, &counters);
        match beside(write.as_mut(), &mut done, read).await {
            End::Close(err) => {
                if let Some(e) = &err {
                    core.core_metrics.stream_error(&e.condition.to_string());
                }
                match &err {
                    Some(e) => tracing::info!(jid = %handle.jid, error = %e, "closing session"),
                    None => tracing::info!(jid = %handle.jid, "session closed by client"),
                }
                let offline = Box::pin(went_offline(&core, &handle));
                beside(write.as_mut(), &mut done, offline).await;
                core.unbind_resource(&handle, err.as_ref());
                if !done {
                    if beside(write.as_mut(), &mut done, Box::pin(handle.finish(err))).await {
                        // The writer ends once it has written the close.
                        let flushed = until_done(write.as_mut(), &mut done);
                        let _ = tokio::time::timeout(Duration::from_secs(10), flushed).await;
                    } else {
                        stop_writer(write.as_mut(), &mut done, &flags).await;
                    }
                }
                false
            }
            End::Lost | End::Detached => {
                stop_writer(write.as_mut(), &mut done, &flags).await;
                true
            }
        }
    };
    if !lost {
        Box::pin(finish_session(&core, &handle, Some(rx))).await;
        return;
    }
    let resumable = handle.sm().id.clone();
    match resumable {
        Some(id) => hibernate(core, handle, id, rx),
        None => {
            tracing::info!(jid = %handle.jid, "connection lost");
            Box::pin(went_offline(&core, &handle)).await;
            core.unbind_resource(&handle, None);
            Box::pin(finish_session(&core, &handle, Some(rx))).await;
        }
    }
}

/// Reads, stamps and routes the client's stanzas until the session should stop being served.
async fn read_loop<R: AsyncBufRead + Unpin>(
    core: &Arc<Core>,
    parser: &mut StreamParser<R>,
    handle: &Arc<SessionHandle>,
    inbound: &StanzaCounters,
) -> End {
    let detach = handle.detach_token();
    let idle = core.config.load().c2s.idle_timeout_secs;
    loop {
        let read = async {
            if idle == 0 {
                Ok(next_when_readable(parser).await)
            } else {
                let next = next_when_readable(parser);
                tokio::time::timeout(Duration::from_secs(idle), next).await
            }
        };
        tokio::select! {
            _ = handle.closed() => return End::Close(handle.close_reason()),
            _ = detach.cancelled() => return End::Detached,
            _ = core.shutdown.cancelled() => return End::Close(Some(core.shutdown_error())),
            r = read => match r {
                Err(_) => return End::Close(Some(StreamError::new(C::ConnectionTimeout))),
                Ok(Ok(StreamEvent::Stanza(el))) => {
                    handle.touch();
                    // Boxed: routing's deep future exists only while a stanza is handled, so an
                    // idle session's task does not carry its size.
                    if let Err(e) = Box::pin(handle_stanza(core, handle, inbound, el)).await {
                        return End::Close(Some(e));
                    }
                }
                Ok(Ok(StreamEvent::Close)) => return End::Close(None),
                Ok(Ok(StreamEvent::Header(_))) => return End::Close(Some(StreamError::new(C::BadFormat))),
                Ok(Err(ParseError::Stream(e))) => return End::Close(Some(e)),
                Ok(Err(_)) => return End::Lost,
            }
        }
    }
}

/// What the session tells its writer, and what the writer tells back, within the one task.
#[derive(Default)]
pub struct WriterFlags {
    /// Asked to stop: the writer returns before taking another batch.
    stop: AtomicBool,
    /// A batch is being written.
    busy: AtomicBool,
}

/// Runs `other` to its end while polling the writer beside it (until the writer ends, which
/// `done` records).
async fn beside<F, O>(mut write: Pin<&mut F>, done: &mut bool, other: O) -> O::Output
where
    F: Future<Output = ()>,
    O: Future,
{
    tokio::pin!(other);
    loop {
        tokio::select! {
            out = &mut other => return out,
            () = write.as_mut(), if !*done => *done = true,
        }
    }
}

/// Polls the writer until it ends.
async fn until_done<F: Future<Output = ()>>(write: Pin<&mut F>, done: &mut bool) {
    if !*done {
        write.await;
        *done = true;
    }
}

/// Stops the writer: at once while it waits for the queue, after the batch it is writing
/// otherwise (at most 10 s); what it has not taken stays queued.
async fn stop_writer<F: Future<Output = ()>>(
    write: Pin<&mut F>,
    done: &mut bool,
    flags: &WriterFlags,
) {
    flags.stop.store(true, Ordering::Relaxed);
    if !*done && flags.busy.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(Duration::from_secs(10), until_done(write, done)).await;
    }
}

/// The parser's next event, waiting for the client's bytes first: the idle wait holds only a
/// borrow of the reader, and the parse future (large: quick-xml's state) is boxed and lives only
/// while bytes are there to parse, so an idle session's task cell does not carry it.
async fn next_when_readable<R: AsyncBufRead + Unpin>(
    parser: &mut StreamParser<R>,
) -> Result<StreamEvent, ParseError> {
    let ready = std::future::poll_fn(|cx| {
        std::pin::Pin::new(parser.get_mut())
            .poll_fill_buf(cx)
            .map_ok(|_| ())
    })
    .await;
    if let Err(e) = ready {
        return Err(ParseError::Io(e));
    }
    Box::pin(parser.next()).await
}

/// Parks a session whose connection was lost until it is resumed or its window ends.
fn hibernate(core: Arc<Core>, handle: Arc<SessionHandle>, id: String, rx: Receiver<Outbound>) {
    let (epoch, max) = {
        let mut sm = handle.sm();
        sm.epoch += 1;
        sm.ack_pending = false;
        (sm.epoch, sm.max)
    };
    tracing::info!(jid = %handle.jid, secs = max.as_secs(), "connection lost; session hibernating");
    core.sessions.hibernate(&id, handle.clone(), rx);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(max) => {}
            _ = handle.closed() => {}
            _ = core.shutdown.cancelled() => {}
        }
        if handle.sm().epoch != epoch || !handle.is_hibernating() {
            return;
        }
        if let Some(hib) = core.sessions.take_hibernated(&id) {
            tracing::info!(jid = %hib.handle.jid, "hibernation ended without resumption");
            went_offline(&core, &hib.handle).await;
            core.unbind_resource(&hib.handle, None);
            finish_session(&core, &hib.handle, Some(hib.rx)).await;
        }
    });
}

/// Ends a session for good: stanzas it was given but the client never acknowledged, and those
/// still queued, go back to the router (another resource, offline storage, or an error to the
/// sender) — never silently lost.
async fn finish_session(
    core: &Arc<Core>,
    handle: &Arc<SessionHandle>,
    rx: Option<Receiver<Outbound>>,
) {
    let mut pending: Vec<Element> = {
        let mut sm = handle.sm();
        if let Some(id) = sm.id.take() {
            core.sessions.forget_resumable(&id);
        }
        sm.unacked.drain(..).map(|(_, el)| el).collect()
    };
    if let Some(mut rx) = rx {
        rx.close();
        while let Ok(m) = rx.try_recv() {
            match m {
                Outbound::Stanza(el) => pending.push(el.into_element()),
                Outbound::Shared(s) => pending.push(s.addressed(&handle.jid)),
                _ => {}
            }
        }
    }
    for el in pending {
        requeue(core, handle, el).await;
    }
}

/// Re-routes one undelivered stanza of an ended session.
async fn requeue(core: &Arc<Core>, handle: &SessionHandle, mut el: Element) {
    match el.name() {
        "message" => {
            let ty = stanza::stanza_type(&el, "normal");
            let has_body = el.get_child("body", ns::CLIENT).is_some();
            if matches!(ty, "normal" | "chat") && has_body {
                el.set_attr("to", Some(handle.jid.bare().to_string()));
                if el.get_attr("from").is_none() {
                    el.set_attr("from", Some(handle.jid.domain().to_string()));
                }
                core.route(Origin::Server, el).await;
            }
        }
        "iq" if matches!(stanza::stanza_type(&el, ""), "get" | "set")
            && el.get_attr("from").is_some() =>
        {
            let mut err = el.clone();
            err.set_attr("to", Some(handle.jid.to_string()));
            core.bounce(&err, StanzaErrorCondition::RecipientUnavailable)
                .await;
        }
        _ => {}
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
    inbound: &StanzaCounters,
    mut el: Element,
) -> Result<(), StreamError> {
    let Some(kind) = Kind::of(&el) else {
        // A nonza: the modules hooking its tag take it (stream management, CSI, ...).
        let result = core.fire_tag(handle, el).await;
        if let Err(e) = &result
            && e.condition == C::UnsupportedStanzaType
        {
            inbound.received_other();
        }
        return result;
    };
    if let Some(from) = el.get_attr("from") {
        let ok = Jid::parse(from).is_ok_and(|j| j == handle.jid || j == handle.jid.bare());
        if !ok {
            return Err(StreamError::new(C::InvalidFrom));
        }
    }
    inbound.received(kind);
    sm::count_inbound(handle);
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

/// The counter kind of a stanza named `name`.
fn kind_of(name: &str) -> Kind {
    match name {
        "message" => Kind::Message,
        "presence" => Kind::Presence,
        _ => Kind::Iq,
    }
}

/// Drains the outbound queue to the socket, batching whatever is ready into one write; ends
/// when asked to stop, when the socket fails, or after writing the stream close. While it waits
/// for the queue it holds only its borrows: a batch's buffers and write exist only while it is
/// written (boxed, so the idle session's future does not carry their size).
pub async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    rx: &mut Receiver<Outbound>,
    stanzas: &StanzaCounters,
    handle: &SessionHandle,
    flags: &WriterFlags,
    preamble: String,
) {
    if !preamble.is_empty() && !Box::pin(write_out(w, preamble, flags)).await {
        return;
    }
    loop {
        if flags.stop.load(Ordering::Relaxed) {
            return;
        }
        let write = match rx.recv().await {
            Some(first) => {
                Box::pin(Batch::gather(first, rx, stanzas, handle).write(w, handle, flags))
            }
            None => return,
        };
        if !write.await {
            return;
        }
    }
}

/// One socket write's worth of queued items, serialised.
struct Batch {
    xml: String,
    /// The batch ends with the stream's close.
    closing: bool,
    /// The client's acknowledgements fell too far behind (XEP-0198): close after the write.
    overflow: Option<StreamError>,
}

impl Batch {
    /// Takes `first` and whatever else is queued (at most [`MAX_BATCH_STANZAS`]), counting and
    /// serialising each.
    fn gather(
        first: Outbound,
        rx: &mut Receiver<Outbound>,
        stanzas: &StanzaCounters,
        handle: &SessionHandle,
    ) -> Batch {
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH_STANZAS {
            match rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        let mut buf = String::new();
        let mut closing = false;
        let mut overflow = None;
        for m in pending {
            match m {
                Outbound::Stanza(el) => {
                    stanzas.sent(kind_of(el.name()));
                    if let Err(e) = sm::count_outbound(handle, &el) {
                        overflow = Some(e);
                    }
                    el.write_xml(&mut buf, ns::CLIENT);
                }
                Outbound::Shared(s) => {
                    stanzas.sent(kind_of(s.element().name()));
                    // Only a session that counts (XEP-0198) needs its copy as an element.
                    if sm::counting(handle)
                        && let Err(e) = sm::count_outbound(handle, &s.addressed(&handle.jid))
                    {
                        overflow = Some(e);
                    }
                    s.write_for(&handle.jid, &mut buf);
                }
                Outbound::Nonza(x) => buf.push_str(&x),
                Outbound::SmEnabled(x) => {
                    buf.push_str(&x);
                    handle.sm().out_enabled = true;
                }
                Outbound::Close(err) => {
                    if let Some(e) = err {
                        e.to_element().write_xml(&mut buf, ns::CLIENT);
                    }
                    buf.push_str("</stream:stream>");
                    closing = true;
                    break;
                }
            }
        }
        if !closing && sm::want_ack(handle) {
            buf.push_str(&sm::ack_request());
        }
        Batch {
            xml: buf,
            closing,
            overflow,
        }
    }

    /// Writes the batch; false when the writer is done (the socket failed or the stream closed).
    async fn write<W: AsyncWrite + Unpin>(
        self,
        w: &mut W,
        handle: &SessionHandle,
        flags: &WriterFlags,
    ) -> bool {
        let Batch {
            xml,
            closing,
            overflow,
        } = self;
        if !write_out(w, xml, flags).await {
            return false;
        }
        handle.drained();
        if let Some(e) = overflow {
            handle.close(e);
        }
        if closing {
            let _ = w.shutdown().await;
            return false;
        }
        true
    }
}

/// Writes and flushes `buf` (freed when done), the writer marked busy meanwhile; false if the
/// socket failed.
async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, buf: String, flags: &WriterFlags) -> bool {
    flags.busy.store(true, Ordering::Relaxed);
    let ok = w.write_all(buf.as_bytes()).await.is_ok() && w.flush().await.is_ok();
    flags.busy.store(false, Ordering::Relaxed);
    ok
}
