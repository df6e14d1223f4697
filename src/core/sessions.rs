//! The session manager: which resources of which accounts are online, and their outbound queues.
//!
//! A sharded concurrent map from bare JID to that account's sessions; no global lock on the
//! stanza path. Each session owns a bounded queue ([`queue`]) drained by its connection.

pub mod queue;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI8, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::budget::{Charge, Meter, QueueBudget, Sheddable};
use crate::config::ResourceConflict;
use crate::xmpp::error::{StreamError, StreamErrorCondition};
use crate::xmpp::{Element, Jid};

/// How long [`SessionHandle::send_paced`] waits for the writer to make room before giving up.
pub const PACED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// What a session's writer is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Send a stanza (boxed: queue slots stay small, which matters for idle sessions).
    Stanza(Queued),
    /// Write the closing stream error (if any) and `</stream:stream>`, then close (boxed, like
    /// a stanza: every slot of every queue is as wide as the widest variant).
    Close(Option<Box<StreamError>>),
    /// Write a stream-level element (not a stanza: never counted or retransmitted).
    Nonza(String),
    /// Write XEP-0198 `<enabled/>` and start counting outbound stanzas from here on.
    SmEnabled(String),
    /// Send a stanza serialised once for many sessions, addressed to this session's JID.
    Shared(Arc<SharedStanza>),
}

/// A stanza serialised once for many recipients (group chat fan-out): each copy is the same
/// XML with the recipient's `to` spliced into the root's start tag, byte for byte what
/// serialising the stanza with that `to` would give.
#[derive(Debug)]
pub struct SharedStanza {
    element: Element,
    xml: String,
    splice: usize,
}

impl SharedStanza {
    /// Serialises `element` once (its `to` is dropped: each recipient gets its own).
    pub fn new(mut element: Element) -> Arc<SharedStanza> {
        element.set_attr("to", None);
        let xml = element.to_xml(crate::xmpp::ns::CLIENT);
        // Attribute values are escaped, so the first `>` ends the root's start tag.
        let end = xml.find('>').unwrap_or(xml.len());
        let splice = match xml.get(..end) {
            Some(head) if head.ends_with('/') => end.saturating_sub(1),
            _ => end,
        };
        Arc::new(SharedStanza {
            element,
            xml,
            splice,
        })
    }

    /// The stanza, without `to`.
    pub fn element(&self) -> &Element {
        &self.element
    }

    /// The copy for `to` as an element (XEP-0198 retransmission, CSI holds, re-routing).
    pub fn addressed(&self, to: &Jid) -> Element {
        let mut el = self.element.clone();
        el.set_attr("to", Some(to.to_string()));
        el
    }

    /// Appends the serialised copy for `to` to `out`.
    pub fn write_for(&self, to: &Jid, out: &mut String) {
        let (head, tail) = self
            .xml
            .split_at_checked(self.splice)
            .unwrap_or((&self.xml, ""));
        out.push_str(head);
        out.push_str(" to=\"");
        crate::xmpp::element::escape_into(out, to.as_str(), true);
        out.push('"');
        out.push_str(tail);
    }
}

/// A stanza in a send queue with its charge against the global queue budget, given back
/// when the item is dropped (boxed, so a queue slot stays one pointer wide).
#[derive(Debug)]
pub struct Queued(Box<(Element, Option<Charge>)>);

impl Queued {
    /// A stanza not counted against any budget.
    pub fn new(stanza: Element) -> Self {
        Queued(Box::new((stanza, None)))
    }

    /// The stanza, its charge given back.
    pub fn into_element(self) -> Element {
        self.0.0
    }
}

impl std::ops::Deref for Queued {
    type Target = Element;
    fn deref(&self) -> &Element {
        &self.0.0
    }
}

/// A client acknowledged more stanzas than were sent (XEP-0198 `handled-count-too-high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("handled-count-too-high: h={h}, sent {sent}")]
pub struct AckTooHigh {
    /// The `h` the client sent.
    pub h: u32,
    /// Stanzas actually sent.
    pub sent: u32,
}

/// XEP-0198 stream management state of a session, kept across connections while resumable.
#[derive(Debug, Default)]
pub struct SmState {
    /// Inbound counting is on (the client sent `<enable/>`).
    pub enabled: bool,
    /// Outbound counting is on (`<enabled/>` was written).
    pub out_enabled: bool,
    /// An `<r/>` was sent and not yet answered.
    pub ack_pending: bool,
    /// Incremented at each hibernation, so a stale watchdog never ends a later one.
    pub epoch: u64,
    /// The resumption id, when resumable.
    pub id: Option<String>,
    /// How long the session may wait for a resumption.
    pub max: std::time::Duration,
    /// Stanzas received from the client (the `h` we report).
    pub h_in: u32,
    /// Stanzas sent to the client.
    pub h_out: u32,
    /// Sent stanzas not yet acknowledged, with their sequence numbers.
    pub unacked: std::collections::VecDeque<(u32, Element)>,
}

impl SmState {
    /// Drops stanzas acknowledged by `h`; `Err` if `h` acknowledges more than was sent.
    pub fn ack(&mut self, h: u32) -> Result<(), AckTooHigh> {
        // Sequence numbers wrap at 2^32 (XEP-0198 §5).
        if h.wrapping_sub(self.h_out) as i32 > 0 {
            return Err(AckTooHigh {
                h,
                sent: self.h_out,
            });
        }
        while let Some((seq, _)) = self.unacked.front() {
            if h.wrapping_sub(*seq) as i32 >= 0 {
                self.unacked.pop_front();
            } else {
                break;
            }
        }
        Ok(())
    }
}

/// Which transport carries a client session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A TCP stream (RFC 6120), with STARTTLS or direct TLS.
    #[default]
    Tcp,
    /// XMPP over WebSocket (RFC 7395) on an HTTP listener.
    WebSocket,
    /// BOSH (XEP-0124/0206) on an HTTP listener.
    Bosh,
}

impl Transport {
    /// The name the admin faces and metrics show.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
            Transport::Bosh => "bosh",
        }
    }
}

/// The negotiated TLS parameters of a connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsInfo {
    /// The protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

impl TlsInfo {
    /// The version and cipher suite a finished rustls handshake negotiated (client or server side).
    pub fn of(tls: &rustls::CommonState) -> Option<TlsInfo> {
        let version = tls.protocol_version()?;
        let suite = tls.negotiated_cipher_suite()?;
        Some(TlsInfo {
            version: version.as_str().unwrap_or("TLS").to_string(),
            cipher: suite.suite().as_str().unwrap_or("unknown").to_string(),
        })
    }
}

/// What a client said about itself (SASL2 `<user-agent/>`), when it did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ClientAgent {
    /// The client's stable id (`<user-agent id=…>`).
    pub id: String,
    /// The software name, if given.
    pub software: Option<String>,
    /// The device name, if given.
    pub device: Option<String>,
}

/// How a session is connected: fixed when it binds, shown by the admin faces.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The remote address.
    pub peer: String,
    /// Whether the connection is encrypted.
    pub secure: bool,
    /// The transport.
    pub transport: Transport,
    /// TLS parameters, when encrypted by us.
    pub tls: Option<TlsInfo>,
    /// The SASL mechanism the client authenticated with.
    pub mechanism: Option<String>,
    /// The client's self-description, if it gave one.
    pub client: Option<ClientAgent>,
    /// When the session was bound.
    pub since: std::time::SystemTime,
}

impl Connection {
    /// A TCP connection from `peer` bound now, with nothing else known yet.
    pub fn new(peer: impl Into<String>, secure: bool) -> Self {
        Connection {
            peer: peer.into(),
            secure,
            transport: Transport::Tcp,
            tls: None,
            mechanism: None,
            client: None,
            since: std::time::SystemTime::now(),
        }
    }
}

/// A live, bound client session as the rest of the server sees it.
pub struct SessionHandle {
    /// Unique id for this server run.
    pub id: u64,
    /// The full JID bound.
    pub jid: Jid,
    /// The remote address.
    pub peer: String,
    /// Whether the connection is encrypted.
    pub secure: bool,
    /// How the session is connected (transport, TLS, authentication, client), for the admin faces.
    pub conn: Connection,
    tx: queue::Sender<Outbound>,
    closer: CancellationToken,
    close_reason: Mutex<Option<StreamError>>,
    available: AtomicBool,
    priority: AtomicI8,
    roster_requested: AtomicBool,
    last_presence: Mutex<Option<Element>>,
    directed: Mutex<std::collections::HashSet<Jid>>,
    carbons: AtomicBool,
    sm: Mutex<SmState>,
    detach: Mutex<CancellationToken>,
    hibernating: AtomicBool,
    csi_inactive: AtomicBool,
    held: Mutex<Vec<Element>>,
    /// When the client last sent something, in seconds since the Unix epoch (the reader stamps it).
    last_active: AtomicU64,
    /// The manager's count of sessions dropped for a full queue.
    queue_drops: Arc<AtomicU64>,
    /// Woken by the writer after each write, for [`SessionHandle::send_paced`].
    drained: tokio::sync::Notify,
    /// Bytes this session's queue holds against the global budget.
    meter: Arc<Meter>,
}

impl Sheddable for SessionHandle {
    fn queued_bytes(&self) -> usize {
        self.meter.bytes()
    }

    fn shed(&self) {
        tracing::warn!(jid = %self.jid, bytes = self.meter.bytes(), "queue budget spent; disconnecting the largest queue");
        self.close(StreamError::with_text(
            StreamErrorCondition::PolicyViolation,
            "too much data queued for this session (server queue budget)",
        ));
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.meter.budget().forget(self.id);
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl SessionHandle {
    /// Notes that the client sent something now (one relaxed atomic store, no lock).
    pub fn touch(&self) {
        self.last_active.store(unix_now(), Ordering::Relaxed);
    }

    /// Seconds since the client last sent something (since it bound, if it sent nothing since).
    pub fn idle_secs(&self) -> u64 {
        unix_now().saturating_sub(self.last_active.load(Ordering::Relaxed))
    }

    /// Queues a stanza; a session whose queue is full is disconnected (slow consumer). Returns false if not queued.
    /// While the client is inactive (XEP-0352), presence updates are held back (the latest per
    /// sender) and flushed before the next other stanza.
    pub fn send(&self, stanza: Element) -> bool {
        if self.csi_inactive.load(Ordering::Relaxed) {
            let held_back = stanza.name() == "presence"
                && matches!(stanza.get_attr("type"), None | Some("unavailable"));
            if let Ok(mut held) = self.held.lock() {
                if held_back {
                    let from = stanza.get_attr("from").map(str::to_string);
                    held.retain(|p| p.get_attr("from").map(str::to_string) != from);
                    // Bounded: beyond this, hold no more and deliver as usual.
                    if held.len() < 1000 {
                        held.push(stanza);
                        return true;
                    }
                    let flushed: Vec<Element> = std::mem::take(&mut *held);
                    drop(held);
                    for p in flushed {
                        self.enqueue(p);
                    }
                    return self.enqueue(stanza);
                }
                let flushed: Vec<Element> = std::mem::take(&mut *held);
                drop(held);
                for p in flushed {
                    self.enqueue(p);
                }
            }
        }
        self.enqueue(stanza)
    }

    /// Marks the client active or inactive (XEP-0352); becoming active flushes held presence.
    pub fn set_inactive(&self, inactive: bool) {
        self.csi_inactive.store(inactive, Ordering::Relaxed);
        if !inactive {
            let flushed: Vec<Element> = self
                .held
                .lock()
                .map(|mut h| std::mem::take(&mut *h))
                .unwrap_or_default();
            for p in flushed {
                self.enqueue(p);
            }
        }
    }

    /// Whether the client said it is inactive (XEP-0352).
    pub fn is_inactive(&self) -> bool {
        self.csi_inactive.load(Ordering::Relaxed)
    }

    /// Stanzas waiting in the outbound queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity().saturating_sub(self.tx.capacity())
    }

    /// Queues a stanza of a burst the server makes itself (the offline backlog, a catch-up):
    /// waits until half the queue is free, so the burst streams as the client reads instead
    /// of overflowing the queue. False if the session ended, or if its writer took nothing for
    /// [`PACED_PATIENCE`] (a client that does not read, or a hibernating session).
    pub async fn send_paced(&self, stanza: Element) -> bool {
        self.half_free().await && self.send(stanza)
    }

    /// [`Self::send_paced`] for a stanza serialised once for many sessions (a big room's
    /// presences to a joining occupant): no element copy is made.
    pub async fn send_shared_paced(&self, stanza: &Arc<SharedStanza>) -> bool {
        self.half_free().await && self.send_shared(stanza)
    }

    /// Waits until half the queue is free; false if the session ended or its writer took
    /// nothing for [`PACED_PATIENCE`].
    async fn half_free(&self) -> bool {
        let room = self.tx.max_capacity().div_ceil(2);
        loop {
            if self.tx.is_closed() || self.closer.is_cancelled() {
                return false;
            }
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.tx.capacity() >= room {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.closer.cancelled() => return false,
                _ = self.tx.closed() => return false,
                _ = tokio::time::sleep(PACED_PATIENCE) => return false,
            }
        }
    }

    /// Wakes paced senders: every transport's writer calls it after each write to the client.
    pub fn drained(&self) {
        self.drained.notify_waiters();
    }

    /// Queues a stream-level element (XEP-0198 nonzas and the like).
    pub fn send_nonza(&self, item: Outbound) -> bool {
        self.tx.try_send(item).is_ok()
    }

    /// The stream management state.
    pub fn sm(&self) -> std::sync::MutexGuard<'_, SmState> {
        self.sm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token cancelled when a resuming connection takes this session over.
    pub fn detach_token(&self) -> CancellationToken {
        self.detach.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Asks the connection serving this session to let go of it (for a resumption).
    pub fn request_detach(&self) {
        if let Ok(t) = self.detach.lock() {
            t.cancel();
        }
    }

    /// A fresh detach token for the next connection serving this session.
    pub fn renew_detach(&self) {
        if let Ok(mut t) = self.detach.lock() {
            *t = CancellationToken::new();
        }
    }

    /// Whether the session waits for a resumption with no connection.
    pub fn is_hibernating(&self) -> bool {
        self.hibernating.load(Ordering::Relaxed)
    }

    /// Marks the session as hibernating or attached.
    pub fn set_hibernating(&self, on: bool) {
        self.hibernating.store(on, Ordering::Relaxed);
    }

    /// Queues a stanza serialised once for many sessions (see [`SharedStanza`]); like
    /// [`Self::send`], except that while the client is inactive (XEP-0352) it takes the
    /// element path, so that presence is held back as usual.
    pub fn send_shared(&self, stanza: &Arc<SharedStanza>) -> bool {
        if self.csi_inactive.load(Ordering::Relaxed) {
            return self.send(stanza.addressed(&self.jid));
        }
        self.enqueue_item(Outbound::Shared(stanza.clone()))
    }

    fn enqueue(&self, stanza: Element) -> bool {
        let bytes = super::budget::approx_size(&stanza);
        let Some(charge) = self.meter.charge(self, bytes) else {
            return false;
        };
        // A shared item is not charged: its bytes are held once for all its recipients.
        self.enqueue_item(Outbound::Stanza(Queued(Box::new((stanza, Some(charge))))))
    }

    fn enqueue_item(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(queue::TrySendError::Full(_)) => {
                tracing::warn!(jid = %self.jid, "send queue full; disconnecting");
                if !self.closer.is_cancelled() {
                    self.queue_drops.fetch_add(1, Ordering::Relaxed);
                }
                self.close(StreamError::with_text(
                    StreamErrorCondition::ResourceConstraint,
                    "too many unread stanzas",
                ));
                false
            }
            Err(queue::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the session to end with `error`.
    pub fn close(&self, error: StreamError) {
        if let Ok(mut r) = self.close_reason.lock()
            && r.is_none()
        {
            *r = Some(error);
        }
        self.closer.cancel();
    }

    /// Queues the end of the stream behind pending stanzas; false if the writer is gone or stuck.
    pub async fn finish(&self, error: Option<StreamError>) -> bool {
        let send = self.tx.send(Outbound::Close(error.map(Box::new)));
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), send).await,
            Ok(Ok(()))
        )
    }

    /// Resolves when someone asked the session to close.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closer.cancelled()
    }

    /// Why the session was asked to close, if it was.
    pub fn close_reason(&self) -> Option<StreamError> {
        self.close_reason.lock().ok().and_then(|r| r.clone())
    }

    /// Whether the client has sent initial presence and not gone unavailable.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// The presence priority (RFC 6121 §4.7.2.3).
    pub fn priority(&self) -> i8 {
        self.priority.load(Ordering::Relaxed)
    }

    /// Records the session's broadcast presence; returns true when it just became available (initial presence).
    pub fn set_presence(&self, available: bool, priority: i8, last: Option<Element>) -> bool {
        self.priority.store(priority, Ordering::Relaxed);
        if let Ok(mut l) = self.last_presence.lock() {
            *l = last;
        }
        !self.available.swap(available, Ordering::Relaxed) && available
    }

    /// The last broadcast presence of an available session.
    pub fn last_presence(&self) -> Option<Element> {
        self.last_presence.lock().ok().and_then(|l| l.clone())
    }

    /// Marks that the client fetched its roster, so it gets roster pushes (RFC 6121 §2.1.6).
    pub fn set_roster_requested(&self) {
        self.roster_requested.store(true, Ordering::Relaxed);
    }

    /// Whether the client fetched its roster.
    pub fn roster_requested(&self) -> bool {
        self.roster_requested.load(Ordering::Relaxed)
    }

    /// Records a directed presence recipient (RFC 6121 §4.6); `false` removes it.
    pub fn set_directed(&self, to: &Jid, present: bool) {
        if let Ok(mut d) = self.directed.lock() {
            if present {
                // Bounded: a client cannot grow this without limit.
                if d.len() < 1000 {
                    d.insert(to.clone());
                }
            } else {
                d.remove(to);
            }
        }
    }

    /// Turns XEP-0280 message carbons on or off for this session.
    pub fn set_carbons(&self, on: bool) {
        self.carbons.store(on, Ordering::Relaxed);
    }

    /// Whether this session enabled XEP-0280 message carbons.
    pub fn carbons(&self) -> bool {
        self.carbons.load(Ordering::Relaxed)
    }

    /// Takes the set of directed presence recipients (on unavailable).
    pub fn take_directed(&self) -> Vec<Jid> {
        self.directed
            .lock()
            .map(|mut d| d.drain().collect())
            .unwrap_or_default()
    }
}

/// Why a bind failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// The resource is taken and the policy refuses.
    #[error("resource conflict")]
    Conflict,
    /// The server is at its session limit.
    #[error("too many sessions")]
    ResourceConstraint,
    /// A `pre-resource-bind` handler refused the resource.
    #[error("binding refused")]
    NotAllowed,
}

/// A session waiting, without a connection, for its client to resume it (XEP-0198).
pub struct Hibernated {
    /// The session.
    pub handle: Arc<SessionHandle>,
    /// Its outbound queue, to be drained by the resuming connection.
    pub rx: queue::Receiver<Outbound>,
}

/// The session manager.
#[derive(Default)]
pub struct Sessions {
    resumable: Mutex<std::collections::HashMap<String, Arc<SessionHandle>>>,
    hibernated: Mutex<std::collections::HashMap<String, Hibernated>>,
    by_bare: DashMap<Jid, Vec<Arc<SessionHandle>>>,
    /// Woken whenever a session hibernates, for a resumption waiting to take it over.
    pub(super) parked: tokio::sync::Notify,
    count: AtomicUsize,
    next_id: AtomicU64,
    queue_drops: Arc<AtomicU64>,
    /// The global budget every session's queue draws from.
    budget: Arc<QueueBudget>,
}

/// A bound session's receiving ends, owned by its connection.
pub struct BoundSession {
    /// The shared handle.
    pub handle: Arc<SessionHandle>,
    /// The outbound queue to drain.
    pub rx: queue::Receiver<Outbound>,
}

impl Sessions {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty manager whose sessions' queues draw from `budget`.
    pub fn with_budget(budget: Arc<QueueBudget>) -> Self {
        Sessions {
            budget,
            ..Self::default()
        }
    }

    /// The global budget the sessions' queues draw from.
    pub fn budget(&self) -> &Arc<QueueBudget> {
        &self.budget
    }

    /// Sessions disconnected so far because their send queue was full.
    pub fn queue_drops(&self) -> u64 {
        self.queue_drops.load(Ordering::Relaxed)
    }

    /// Binds `resource` for `bare`, applying `policy` when it is taken.
    pub fn bind(
        &self,
        bare: &Jid,
        resource: &str,
        policy: ResourceConflict,
        queue: usize,
        conn: Connection,
    ) -> Result<BoundSession, BindError> {
        let mut resource = resource.to_string();
        let mut kicked = None;
        let mut entry = self.by_bare.entry(bare.clone()).or_default();
        if let Some(pos) = entry
            .iter()
            .position(|s| s.jid.resource() == Some(resource.as_str()))
        {
            match policy {
                ResourceConflict::Refuse => return Err(BindError::Conflict),
                ResourceConflict::Random => resource = random_resource(),
                ResourceConflict::KickOld => kicked = Some(entry.remove(pos)),
            }
        }
        let jid = bare
            .with_resource(&resource)
            .map_err(|_| BindError::Conflict)?;
        let (tx, rx) = queue::channel(queue);
        let handle = Arc::new(SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            jid,
            peer: conn.peer.clone(),
            secure: conn.secure,
            conn,
            tx,
            closer: CancellationToken::new(),
            close_reason: Mutex::new(None),
            available: AtomicBool::new(false),
            priority: AtomicI8::new(0),
            roster_requested: AtomicBool::new(false),
            last_presence: Mutex::new(None),
            directed: Mutex::new(Default::default()),
            carbons: AtomicBool::new(false),
            sm: Mutex::new(SmState::default()),
            detach: Mutex::new(CancellationToken::new()),
            hibernating: AtomicBool::new(false),
            csi_inactive: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            last_active: AtomicU64::new(unix_now()),
            queue_drops: self.queue_drops.clone(),
            drained: tokio::sync::Notify::new(),
            meter: Meter::new(self.budget.clone()),
        });
        let shed: Arc<dyn Sheddable> = handle.clone();
        self.budget.register(handle.id, Arc::downgrade(&shed));
        entry.push(handle.clone());
        drop(entry);
        if let Some(old) = kicked {
            old.close(StreamError::with_text(
                StreamErrorCondition::Conflict,
                "replaced by a new session",
            ));
        } else {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(BoundSession { handle, rx })
    }

    /// Removes a session (idempotent); whether it was bound until now.
    pub fn unbind(&self, handle: &SessionHandle) -> bool {
        let mut removed = false;
        self.by_bare
            .remove_if_mut(handle.jid.bare_str(), |_, list| {
                if let Some(pos) = list.iter().position(|s| s.id == handle.id) {
                    list.remove(pos);
                    removed = true;
                }
                list.is_empty()
            });
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Registers a resumable session under its stream management id.
    pub fn register_resumable(&self, id: &str, handle: Arc<SessionHandle>) {
        if let Ok(mut m) = self.resumable.lock() {
            m.insert(id.to_string(), handle);
        }
    }

    /// Forgets a resumable session (it ended for good).
    pub fn forget_resumable(&self, id: &str) {
        if let Ok(mut m) = self.resumable.lock() {
            m.remove(id);
        }
        if let Ok(mut m) = self.hibernated.lock() {
            m.remove(id);
        }
    }

    /// The resumable session with this id, attached or not.
    pub fn resumable(&self, id: &str) -> Option<Arc<SessionHandle>> {
        self.resumable.lock().ok()?.get(id).cloned()
    }

    /// Parks a session whose connection was lost, keeping its queue.
    pub fn hibernate(&self, id: &str, handle: Arc<SessionHandle>, rx: queue::Receiver<Outbound>) {
        handle.set_hibernating(true);
        if let Ok(mut m) = self.hibernated.lock() {
            m.insert(id.to_string(), Hibernated { handle, rx });
        }
        self.parked.notify_waiters();
    }

    /// Takes a hibernating session out for resumption (or final cleanup).
    pub fn take_hibernated(&self, id: &str) -> Option<Hibernated> {
        let h = self.hibernated.lock().ok()?.remove(id)?;
        h.handle.set_hibernating(false);
        Some(h)
    }

    /// The session bound to exactly this full JID.
    pub fn get(&self, full: &Jid) -> Option<Arc<SessionHandle>> {
        let list = self.by_bare.get(full.bare_str())?;
        list.iter().find(|s| s.jid == *full).cloned()
    }

    /// Every session of an account.
    pub fn resources(&self, bare: &Jid) -> Vec<Arc<SessionHandle>> {
        self.by_bare
            .get(bare)
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Whether an account has any session.
    pub fn is_online(&self, bare: &Jid) -> bool {
        self.by_bare.contains_key(bare)
    }

    /// Number of bound sessions.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// All sessions on `host` (or every host when `None`).
    pub fn all(&self, host: Option<&str>) -> Vec<Arc<SessionHandle>> {
        self.by_bare
            .iter()
            .filter(|e| host.is_none_or(|h| e.key().domain() == h))
            .flat_map(|e| e.value().clone())
            .collect()
    }

    /// The distinct accounts with at least one session on `host` (or every host), sorted.
    pub fn online_users(&self, host: Option<&str>) -> Vec<Jid> {
        let mut users: Vec<Jid> = self
            .by_bare
            .iter()
            .filter(|e| host.is_none_or(|h| e.key().domain() == h) && !e.value().is_empty())
            .map(|e| e.key().clone())
            .collect();
        users.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        users
    }

    /// Asks every session to close with `error` (shutdown).
    pub fn close_all(&self, error: StreamError) {
        for s in self.all(None) {
            s.close(error.clone());
        }
    }
}

/// A server-generated resource (RFC 6120 §7.6).
pub fn random_resource() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("oxp-{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_stanza_writes_what_the_addressed_element_serialises_to() {
        use crate::xmpp::ns;
        let to = Jid::parse("b@localhost/r\"&<").expect("jid");
        let with_children = Element::new("message", ns::CLIENT)
            .attr("from", "r@c.localhost/n>")
            .attr("to", "dropped@localhost")
            .attr("type", "groupchat")
            .child(Element::new("body", ns::CLIENT).text("a > b"));
        let empty = Element::new("presence", ns::CLIENT).attr("from", "r@c.localhost/n");
        for el in [with_children, empty] {
            let shared = SharedStanza::new(el);
            let mut out = String::new();
            shared.write_for(&to, &mut out);
            assert_eq!(out, shared.addressed(&to).to_xml(ns::CLIENT));
            assert_eq!(shared.element().get_attr("to"), None);
        }
    }

    #[test]
    fn shared_stanzas_are_queued_and_take_the_element_path_while_inactive() {
        let sessions = Sessions::new();
        let bare = Jid::parse("a@localhost").expect("jid");
        let mut bound = sessions
            .bind(
                &bare,
                "r",
                ResourceConflict::KickOld,
                8,
                Connection::new("127.0.0.1:1", true),
            )
            .expect("bound");
        let presence = SharedStanza::new(
            Element::new("presence", crate::xmpp::ns::CLIENT).attr("from", "r@c.localhost/n"),
        );
        assert!(bound.handle.send_shared(&presence));
        assert!(matches!(bound.rx.try_recv(), Ok(Outbound::Shared(_))));
        // Inactive (XEP-0352): the presence is held back, as an element would be.
        bound.handle.set_inactive(true);
        assert!(bound.handle.send_shared(&presence));
        assert!(bound.rx.try_recv().is_err());
        bound.handle.set_inactive(false);
        match bound.rx.try_recv() {
            Ok(Outbound::Stanza(el)) => {
                assert_eq!(el.get_attr("to"), Some("a@localhost/r"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_queue_counts_one_drop_per_session_and_idle_starts_at_bind() {
        let sessions = Sessions::new();
        let bare = Jid::parse("a@localhost").expect("jid");
        let bound = sessions
            .bind(
                &bare,
                "r",
                ResourceConflict::KickOld,
                1,
                Connection::new("127.0.0.1:1", true),
            )
            .expect("bound");
        let h = &bound.handle;
        assert!(h.idle_secs() <= 1, "just bound");
        h.touch();
        assert_eq!(sessions.queue_drops(), 0);
        let msg = || Element::new("message", "jabber:client");
        assert!(h.send(msg()), "fits");
        assert!(!h.send(msg()), "full: the session is closed");
        assert!(!h.send(msg()), "still full, already closing");
        assert_eq!(sessions.queue_drops(), 1, "one session dropped once");
    }

    #[test]
    fn queue_slots_stay_small() {
        // tokio's channel allocates its slots 32 at a time, at creation: this is per session.
        assert!(std::mem::size_of::<Outbound>() <= 32);
    }

    #[test]
    fn queued_stanzas_are_charged_to_the_budget_until_taken() {
        let budget = Arc::new(QueueBudget::new(1 << 20));
        let s = Sessions::with_budget(budget.clone());
        let bare = Jid::parse("a@localhost").expect("jid");
        let mut bound = s
            .bind(
                &bare,
                "r",
                ResourceConflict::KickOld,
                8,
                Connection::new("p:1", true),
            )
            .expect("bound");
        let msg = Element::new("message", "jabber:client")
            .child(Element::new("body", "jabber:client").text("x".repeat(500)));
        assert!(bound.handle.send(msg.clone()) && bound.handle.send(msg));
        let one = super::super::budget::approx_size(
            &Element::new("message", "jabber:client")
                .child(Element::new("body", "jabber:client").text("x".repeat(500))),
        );
        assert_eq!(budget.used(), 2 * one);
        assert_eq!(bound.handle.queued_bytes(), 2 * one);
        let Ok(Outbound::Stanza(first)) = bound.rx.try_recv() else {
            panic!("a stanza");
        };
        assert_eq!(first.name(), "message");
        drop(first);
        assert_eq!(budget.used(), one);
        // What is left goes back when the queue is dropped with the session.
        drop(bound);
        assert_eq!(budget.used(), 0);
    }

    fn bound(queue: usize) -> BoundSession {
        let s = Sessions::new();
        let bare = Jid::parse("alice@localhost").expect("jid");
        s.bind(
            &bare,
            "r",
            ResourceConflict::KickOld,
            queue,
            Connection::new("peer:1", true),
        )
        .expect("bind")
    }

    #[tokio::test]
    async fn a_paced_burst_larger_than_the_queue_streams_as_the_writer_drains() {
        let BoundSession { handle, mut rx } = bound(8);
        let sender = handle.clone();
        let burst = tokio::spawn(async move {
            for i in 0..100 {
                let el = Element::new("message", "jabber:client").attr("id", i.to_string());
                if !sender.send_paced(el).await {
                    return i;
                }
            }
            100
        });
        let mut ids = Vec::new();
        let mut taken = 0;
        while ids.len() < 100 {
            let Some(Outbound::Stanza(el)) = rx.recv().await else {
                panic!("queue ended after {ids:?}");
            };
            if el.name() == "message" {
                ids.push(el.get_attr("id").unwrap_or_default().to_string());
            }
            taken += 1;
            // Live traffic still finds room while the burst streams.
            if taken % 10 == 0 {
                assert!(handle.send(Element::new("presence", "jabber:client")));
            }
            // A write to the client happened.
            handle.drained();
        }
        assert_eq!(burst.await.expect("burst"), 100);
        let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(ids, want);
        assert!(handle.close_reason().is_none(), "never overflowed");
    }

    #[tokio::test]
    async fn a_paced_sender_stops_when_the_session_closes() {
        let BoundSession { handle, rx: _rx } = bound(2);
        assert!(
            handle
                .send_paced(Element::new("message", "jabber:client"))
                .await
        );
        let sender = handle.clone();
        let waiting = tokio::spawn(async move {
            sender
                .send_paced(Element::new("message", "jabber:client"))
                .await
        });
        handle.close(StreamError::new(StreamErrorCondition::SystemShutdown));
        assert!(!waiting.await.expect("task"));
    }
}
