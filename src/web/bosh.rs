//! BOSH (XEP-0124) carrying XMPP (XEP-0206) at `/http-bind`: sessions with `sid`/`rid`,
//! `wait`/`hold`/`requests`/`inactivity`/`polling` (overactivity refused), requests processed in `rid` order within the
//! window, the last responses kept for a repeated `rid`, `terminate`, bounded buffers and an
//! inactivity timeout. Each session runs the c2s negotiation and session over a duplex.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use super::framing::{Frame, Frames, STREAM_CLOSE, stream_open};
use super::{Web, WebPeer};
use crate::c2s::duplex::{self, DUPLEX_BUFFER};
use crate::core::sessions::Transport;
use crate::xmpp::element::escape;
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, ns};

/// Payloads (request bodies' contents) queued for the stream before the session is refused.
const INPUT_QUEUE: usize = 16;
/// Bytes of a request body beyond `c2s.max_stanza_size` (the `<body>` wrapper and its attributes).
const BODY_OVERHEAD: usize = 4096;
/// The XEP-0124 version we speak.
const VERSION: &str = "1.11";

/// The live BOSH sessions of one server, by `sid`.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.lock().get(sid).cloned()
    }

    fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }
}

/// One BOSH session.
struct Session {
    sid: String,
    host: String,
    wait: Duration,
    hold: usize,
    /// How many requests the client may have outstanding (`hold + 1`); the `rid` window.
    requests: u64,
    inactivity: Duration,
    polling: u64,
    max_buffer: usize,
    state: Mutex<State>,
    /// Signalled when buffered output was handed to a request.
    drained: Notify,
}

/// A request that arrived ahead of its turn.
struct Early {
    payload: Payload,
    reply: oneshot::Sender<String>,
}

/// What a request asks of the stream.
struct Payload {
    xml: String,
    terminate: bool,
}

/// Why a session ended, for the responses that follow.
#[derive(Clone, Debug)]
enum Ended {
    /// The stream closed (the client's terminate, or the server's close).
    Closed,
    /// A terminal binding condition (XEP-0124 §17.2).
    Condition(&'static str),
}

struct State {
    /// The next `rid` to process.
    next_rid: u64,
    /// Requests received ahead of `next_rid`.
    early: BTreeMap<u64, Early>,
    /// Processed requests waiting for output, oldest first.
    held: VecDeque<(u64, oneshot::Sender<String>)>,
    /// Server output not yet handed to a request.
    out: String,
    /// The last responses by `rid`, for retransmission, and whether each carried no payload.
    sent: VecDeque<(u64, String, bool)>,
    /// The last processed request, when it was empty: its `rid` and when it arrived.
    last_empty: Option<(u64, Instant)>,
    /// The stream id (the session response's `authid`).
    authid: String,
    /// Whether the session creation response went out.
    created: bool,
    /// When the client was last heard from or last had a request answered.
    last_seen: Instant,
    /// Where request payloads go to the stream; `None` once input ended.
    input: Option<mpsc::Sender<String>>,
    ended: Option<Ended>,
    /// The connection slot, released when the session ends.
    slot: Option<OwnedSemaphorePermit>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `<body/>` with `content` (serialised elements), the creation attributes the first time,
    /// and `type='terminate'` once ended.
    fn body(&self, st: &mut State, content: &str) -> String {
        let mut b = format!(
            "<body xmlns='{}' xmlns:stream='{}'",
            ns::HTTPBIND,
            ns::STREAM
        );
        if !st.created {
            st.created = true;
            b.push_str(&format!(
                " xmlns:xmpp='{}' sid='{}' wait='{}' requests='{}' hold='{}' inactivity='{}' polling='{}' ver='{VERSION}' from='{}' authid='{}' xmpp:version='1.0' xmpp:restartlogic='true'",
                ns::XBOSH,
                escape(&self.sid, true),
                self.wait.as_secs(),
                self.requests,
                self.hold,
                self.inactivity.as_secs(),
                self.polling,
                escape(&self.host, true),
                escape(&st.authid, true),
            ));
        }
        match &st.ended {
            Some(Ended::Closed) => b.push_str(" type='terminate'"),
            Some(Ended::Condition(c)) => {
                b.push_str(&format!(" type='terminate' condition='{c}'"));
            }
            None => {}
        }
        if content.is_empty() {
            b.push_str("/>");
        } else {
            b.push('>');
            b.push_str(content);
            b.push_str("</body>");
        }
        b
    }

    /// Answers `rid` with everything buffered, remembering the response for a retransmission.
    fn answer(&self, st: &mut State, rid: u64) -> String {
        let content = std::mem::take(&mut st.out);
        let body = self.body(st, &content);
        st.sent.push_back((rid, body.clone(), content.is_empty()));
        while st.sent.len() as u64 > self.requests {
            st.sent.pop_front();
        }
        st.last_seen = Instant::now();
        body
    }

    /// Answers held requests: all of them once ended; the oldest when output is waiting; the
    /// oldest beyond `hold`. Returns the answers to send once the lock is released.
    fn flush(&self, st: &mut State) -> Vec<(oneshot::Sender<String>, String)> {
        let mut replies = Vec::new();
        if !st.created && st.out.is_empty() && st.ended.is_none() {
            // The creation response waits for the stream features (and so knows the `authid`).
            return replies;
        }
        loop {
            // Once the client asked to terminate, its requests wait for the stream's end.
            let terminating = st.input.is_none();
            let due = st.ended.is_some()
                || (!terminating && (!st.out.is_empty() || st.held.len() > self.hold));
            if !due {
                break;
            }
            let Some((rid, tx)) = st.held.pop_front() else {
                break;
            };
            let body = self.answer(st, rid);
            replies.push((tx, body));
        }
        if st.out.is_empty() {
            self.drained.notify_waiters();
        }
        replies
    }

    /// Ends the session with `why`: no more input, every held request answered.
    fn end(&self, st: &mut State, why: Ended) -> Vec<(oneshot::Sender<String>, String)> {
        if st.ended.is_none() {
            st.ended = Some(why);
        }
        st.input = None;
        st.early.clear();
        st.slot = None;
        self.drained.notify_waiters();
        self.flush(st)
    }
}

fn send_all(replies: Vec<(oneshot::Sender<String>, String)>) {
    for (tx, body) in replies {
        // A client that went away retransmits the rid and gets the remembered response.
        let _ = tx.send(body);
    }
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    resp
}

/// A terminal binding condition outside any session (XEP-0124 §17.2).
fn terminate(condition: &str) -> Response {
    xml_response(
        StatusCode::OK,
        format!(
            "<body xmlns='{}' type='terminate' condition='{condition}'/>",
            ns::HTTPBIND
        ),
    )
}

/// `GET /http-bind`: a short note for people who open the URL in a browser.
pub async fn info() -> Response {
    (
        StatusCode::OK,
        "This is a BOSH (XEP-0206) endpoint; POST <body/> requests to it.\n",
    )
        .into_response()
}

/// `POST /http-bind`: one BOSH request.
pub async fn request(Extension(web): Extension<Arc<Web>>, req: Request) -> Response {
    let cfg = web.core.config.load_full();
    if !cfg.web.bosh {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (parts, body) = req.into_parts();
    let limit = cfg.c2s.max_stanza_size.saturating_add(BODY_OVERHEAD);
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), limit).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let Some(body) = std::str::from_utf8(&bytes).ok().and_then(parse_body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(rid) = body
        .get_attr("rid")
        .and_then(|r| r.trim().parse::<u64>().ok())
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let origin = WebPeer::of(&web.core, &parts.extensions, &parts.headers);
    match body.get_attr("sid") {
        None => create(&web, origin, rid, &body).await,
        Some(sid) => match web.bosh.get(sid) {
            Some(session) => session_request(&web, session, rid, &body).await,
            None => terminate("item-not-found"),
        },
    }
}

/// The `<body/>` of a request; an XML declaration before it is allowed (public for the fuzz
/// target `bosh_body`).
pub fn parse_body(text: &str) -> Option<Element> {
    let mut t = text.trim_start();
    if t.starts_with("<?xml") {
        t = &t[t.find("?>")? + 2..];
    }
    parse_element(t.trim())
        .ok()
        .filter(|b| b.is("body", ns::HTTPBIND))
}

/// What the stream gets from a request body: its children, a restart, or the close.
fn payload(body: &Element, host: &str) -> Payload {
    let restart = body
        .get_attr("xmpp:restart")
        .is_some_and(|r| r == "true" || r == "1");
    let terminate = body.get_attr("type") == Some("terminate");
    let mut xml = String::new();
    if restart {
        xml.push_str(&stream_open(
            Some(host),
            Some("1.0"),
            body.get_attr("xml:lang"),
        ));
    } else {
        for child in body.children() {
            child.write_xml(&mut xml, ns::CLIENT);
        }
    }
    if terminate {
        xml.push_str(STREAM_CLOSE);
    }
    Payload { xml, terminate }
}

/// Session creation (XEP-0124 §7, XEP-0206 §3): opens the stream to `to` and answers with the
/// session attributes and the stream features.
async fn create(web: &Arc<Web>, origin: WebPeer, rid: u64, body: &Element) -> Response {
    let cfg = web.core.config.load_full();
    let Some(host) = body
        .get_attr("to")
        .and_then(|t| crate::xmpp::jid::normalize_domain(t).ok())
    else {
        return terminate("improper-addressing");
    };
    if web.core.user_host(&host).is_none() {
        return terminate("host-unknown");
    }
    let Some(slot) = web.slot() else {
        tracing::warn!(peer = %origin.client, "connection limit reached; refusing a BOSH session");
        return terminate("service-unavailable");
    };
    let secs = |name: &str| {
        body.get_attr(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let wait = secs("wait")
        .unwrap_or(cfg.web.bosh_max_wait_secs)
        .clamp(1, cfg.web.bosh_max_wait_secs);
    let hold = secs("hold")
        .unwrap_or(1)
        .min(u64::from(cfg.web.bosh_max_hold));
    let sid = new_sid();
    let (input_tx, mut input_rx) = mpsc::channel::<String>(INPUT_QUEUE);
    let session = Arc::new(Session {
        sid: sid.clone(),
        host: host.clone(),
        wait: Duration::from_secs(wait),
        hold: hold as usize,
        requests: hold + 1,
        inactivity: Duration::from_secs(cfg.web.bosh_inactivity_secs),
        polling: cfg.web.bosh_polling_secs,
        max_buffer: cfg.web.bosh_max_buffer_bytes,
        state: Mutex::new(State {
            next_rid: rid.saturating_add(1),
            early: BTreeMap::new(),
            held: VecDeque::new(),
            out: String::new(),
            sent: VecDeque::new(),
            last_empty: None,
            authid: String::new(),
            created: false,
            last_seen: Instant::now(),
            input: Some(input_tx.clone()),
            ended: None,
            slot: Some(slot),
        }),
        drained: Notify::new(),
    });
    web.bosh.lock().insert(sid.clone(), session.clone());

    let (server_io, web_io) = tokio::io::duplex(DUPLEX_BUFFER);
    let carrier = origin.carrier(Transport::Bosh);
    tokio::spawn(duplex::serve(web.core.clone(), carrier, server_io));
    let (from_server, mut to_server) = tokio::io::split(web_io);
    // Input: payloads in rid order into the stream; its end is the stream's end of input.
    tokio::spawn(async move {
        while let Some(xml) = input_rx.recv().await {
            if to_server.write_all(xml.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    });
    tokio::spawn(drain(
        web.clone(),
        session.clone(),
        Frames::new(BufReader::new(from_server)),
    ));
    tokio::spawn(watch_inactivity(web.clone(), session.clone()));

    let (tx, rx) = oneshot::channel();
    {
        let mut st = session.lock();
        st.held.push_back((rid, tx));
    }
    let header = stream_open(Some(&host), Some("1.0"), body.get_attr("xml:lang"));
    if input_tx.send(header).await.is_err() {
        return terminate("internal-server-error");
    }
    drop(input_tx);
    wait_for(&session, rid, rx).await
}

/// A request on an existing session: a repeated `rid` gets its response again; one ahead of its
/// turn waits for those before it; each is processed in order, then held until output is ready.
async fn session_request(
    web: &Arc<Web>,
    session: Arc<Session>,
    rid: u64,
    body: &Element,
) -> Response {
    let (tx, rx) = oneshot::channel();
    let replies = {
        let mut st = session.lock();
        st.last_seen = Instant::now();
        if st.ended.is_some() {
            let body = session.body(&mut st, "");
            return xml_response(StatusCode::OK, body);
        }
        if rid < st.next_rid {
            if let Some((_, resp, _)) = st.sent.iter().find(|(r, _, _)| *r == rid) {
                return xml_response(StatusCode::OK, resp.clone());
            }
            match st.held.iter_mut().find(|(r, _)| *r == rid) {
                // A repeated request still held: this one waits in its place.
                Some(slot) => slot.1 = tx,
                None => {
                    let replies = session.end(&mut st, Ended::Condition("item-not-found"));
                    drop(st);
                    send_all(replies);
                    web.bosh.remove(&session.sid);
                    return terminate("item-not-found");
                }
            }
            Vec::new()
        } else if rid >= st.next_rid.saturating_add(session.requests) {
            // Beyond the window (XEP-0124 §14.3).
            let replies = session.end(&mut st, Ended::Condition("item-not-found"));
            drop(st);
            send_all(replies);
            web.bosh.remove(&session.sid);
            return terminate("item-not-found");
        } else {
            let early = Early {
                payload: payload(body, &session.host),
                reply: tx,
            };
            st.early.insert(rid, early);
            match process(&session, &mut st) {
                Ok(replies) => replies,
                Err(condition) => {
                    let replies = session.end(&mut st, Ended::Condition(condition));
                    drop(st);
                    send_all(replies);
                    web.bosh.remove(&session.sid);
                    return terminate(condition);
                }
            }
        }
    };
    send_all(replies);
    wait_for(&session, rid, rx).await
}

/// Processes the requests now in turn: their payloads go to the stream in `rid` order and they
/// join the held requests. `Err` is a terminal condition.
fn process(
    session: &Session,
    st: &mut State,
) -> Result<Vec<(oneshot::Sender<String>, String)>, &'static str> {
    while let Some(early) = st.early.remove(&st.next_rid) {
        let rid = st.next_rid;
        st.next_rid = rid.saturating_add(1);
        let Early { payload, reply } = early;
        if payload.xml.is_empty() {
            // Overactivity (XEP-0124 §12): two consecutive empty requests within `polling`
            // seconds, the first answered without payload.
            let polling = Duration::from_secs(session.polling);
            let too_soon = st.last_empty.is_some_and(|(prev, at)| {
                prev.saturating_add(1) == rid
                    && at.elapsed() < polling
                    && st.sent.iter().any(|(r, _, empty)| *r == prev && *empty)
            });
            if too_soon {
                return Err("policy-violation");
            }
            st.last_empty = Some((rid, Instant::now()));
        } else {
            st.last_empty = None;
            let Some(input) = &st.input else {
                return Err("remote-connection-failed");
            };
            // The queue is bounded: a client outrunning its stream is refused, not buffered.
            if input.try_send(payload.xml).is_err() {
                return Err("policy-violation");
            }
        }
        if payload.terminate {
            st.input = None;
        }
        st.held.push_back((rid, reply));
    }
    Ok(session.flush(st))
}

/// Waits for the answer to `rid`, at most the session's `wait`; then answers it with whatever
/// is buffered (usually nothing).
async fn wait_for(session: &Session, rid: u64, mut rx: oneshot::Receiver<String>) -> Response {
    let body = match tokio::time::timeout(session.wait, &mut rx).await {
        Ok(Ok(body)) => body,
        // Replaced by a repeated request with the same rid.
        Ok(Err(_)) => format!("<body xmlns='{}'/>", ns::HTTPBIND),
        Err(_) => {
            let expired = {
                let mut st = session.lock();
                match st.held.iter().position(|(r, _)| *r == rid) {
                    Some(i) => {
                        st.held.remove(i);
                        Some(session.answer(&mut st, rid))
                    }
                    None => None,
                }
            };
            match expired {
                Some(body) => body,
                // Answered just as the wait ended.
                None => rx
                    .await
                    .unwrap_or_else(|_| format!("<body xmlns='{}'/>", ns::HTTPBIND)),
            }
        }
    };
    xml_response(StatusCode::OK, body)
}

/// Moves the server's output into the session's buffer and to held requests; stops reading
/// (so the session's own send queue backs up) while the buffer is full.
async fn drain<R>(web: Arc<Web>, session: Arc<Session>, mut frames: Frames<R>)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    loop {
        let frame = frames.next().await;
        let replies = {
            let mut st = session.lock();
            match frame {
                Some(Frame::Open { id, .. }) => {
                    if st.authid.is_empty() {
                        st.authid = id;
                    }
                    Vec::new()
                }
                Some(Frame::Element(el)) => {
                    let stream_error = el.is("error", ns::STREAM);
                    el.write_xml(&mut st.out, ns::HTTPBIND);
                    if stream_error {
                        session.end(&mut st, Ended::Condition("remote-stream-error"))
                    } else {
                        session.flush(&mut st)
                    }
                }
                Some(Frame::Close) | None => session.end(&mut st, Ended::Closed),
            }
        };
        send_all(replies);
        let ended = session.lock().ended.is_some();
        if ended {
            break;
        }
        loop {
            let wait = session.drained.notified();
            {
                let st = session.lock();
                if st.out.len() < session.max_buffer || st.ended.is_some() {
                    break;
                }
            }
            wait.await;
        }
    }
    // Keep the session for its remembered responses a little, then forget it.
    tokio::time::sleep(session.wait).await;
    web.bosh.remove(&session.sid);
}

/// Ends a session whose client has had no request held for `inactivity`; the stream sees its
/// input end, as when a TCP connection is lost (so XEP-0198 can resume it).
async fn watch_inactivity(web: Arc<Web>, session: Arc<Session>) {
    loop {
        let deadline = {
            let st = session.lock();
            if st.ended.is_some() {
                return;
            }
            if st.held.is_empty() {
                st.last_seen + session.inactivity
            } else {
                Instant::now() + session.inactivity
            }
        };
        tokio::time::sleep_until(deadline).await;
        let replies = {
            let mut st = session.lock();
            if st.ended.is_some() {
                return;
            }
            if !st.held.is_empty() || st.last_seen.elapsed() < session.inactivity {
                continue;
            }
            tracing::info!(sid = %session.sid, "BOSH session inactive; ending it");
            session.end(&mut st, Ended::Condition("item-not-found"))
        };
        send_all(replies);
        web.bosh.remove(&session.sid);
        return;
    }
}

/// A fresh random session id.
fn new_sid() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

/// Request bodies read as stream input.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_stream_input_restarts_and_closes() {
        let b = parse_body(
            "<?xml version='1.0'?><body xmlns='http://jabber.org/protocol/httpbind' rid='5' sid='s'>\
             <message xmlns='jabber:client' to='a@localhost'><body>hi</body></message></body>",
        )
        .expect("body");
        let p = payload(&b, "localhost");
        assert_eq!(
            p.xml,
            "<message to=\"a@localhost\"><body>hi</body></message>"
        );
        assert!(!p.terminate);
        let b = parse_body(
            "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' rid='6' sid='s' xmpp:restart='true'/>",
        )
        .expect("body");
        let p = payload(&b, "localhost");
        assert!(p.xml.starts_with("<stream:stream "), "{}", p.xml);
        assert!(p.xml.contains("to='localhost'"), "{}", p.xml);
        let b = parse_body(
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='7' sid='s' type='terminate'><presence xmlns='jabber:client' type='unavailable'/></body>",
        )
        .expect("body");
        let p = payload(&b, "localhost");
        assert!(p.terminate);
        assert_eq!(p.xml, "<presence type=\"unavailable\"/></stream:stream>");
        assert!(parse_body("<notbody/>").is_none());
        assert!(parse_body("<body xmlns='http://jabber.org/protocol/httpbind'>").is_none());
    }

    /// What the `bosh_body` fuzz target found: a namespace name written with a reference
    /// (`u&amp;v`) came back doubly escaped from the body's serialisation.
    #[test]
    fn a_namespace_with_a_reference_survives_serialisation() {
        let text = "<body xmlns='http://jabber.org/protocol/httpbind' rid='3'>\
                    <x xmlns='u&amp;v' xmlns:p=\"a'b\"><p:y/></x></body>";
        let body = parse_body(text).expect("body");
        let x = body.first_child().expect("child");
        assert_eq!(x.ns(), "u&v");
        let again = parse_body(&body.to_xml("")).expect("reparses");
        assert_eq!(again, body);
        let p = payload(&body, "localhost");
        assert_eq!(p.xml, "<x xmlns=\"u&amp;v\"><y xmlns=\"a&apos;b\"/></x>");
    }
}
