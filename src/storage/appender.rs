//! The archive writer: one thread takes every archive append, encodes it and writes whatever
//! has queued up meanwhile as one atomic batch (group commit on the write side), so appends
//! need no hop to the blocking pool, no lock per item and no read.
//!
//! Every append gets its sequence number while it is queued (under the queue's lock), so the
//! queue, the batches and what queries see all follow sequence order: a query never sees item
//! N+1 without item N. A lazy append with a generated id returns its id at once, without
//! waiting for the writer; queries, deletes and flushes first pass a barrier through the queue,
//! so they see every append queued before them. When every append queued so far is already
//! written (the usual case for a login's offline check), the barrier returns at once, without
//! waking the writer; a batch without appends writes nothing and leaves nothing to flush.
//!
//! Ids are derived from the engine's monotonic id (sequence number) without reading anything;
//! a generated id carries its sequence number (`{seq:x}-{hash:016x}`), so it needs no id-index
//! entry: [`super::lookup_seq`] parses it back. Only a caller-supplied id (imports, tests) gets
//! an index entry and the replace-by-id lookup.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::item::{encode_item, item_id_with};
use super::totals::Totals;
use super::with_index::with_key;
use super::{ARCHIVE_TREE, Backend, Result, StorageError, encode, index_key, item_key, lookup_seq};

/// What archive writers share: the engine, the id salt, the archive lock and the dirty flag.
#[derive(Clone)]
pub(super) struct Writer {
    /// The engine.
    pub(super) backend: Arc<dyn Backend>,
    /// Salt of generated ids (unguessable ids without a read).
    pub(super) id_salt: RandomState,
    /// Serialises archive mutations (replace-by-id, delete, wipe) with batches.
    pub(super) lock: Arc<Mutex<()>>,
    /// Set after a write that did not wait for a flush; the flush thread flushes soon.
    pub(super) dirty: Arc<AtomicBool>,
    /// How many appends were queued and how many of them are written (see [`Progress`]).
    pub(super) progress: Arc<Progress>,
    /// Archive totals counted once and kept current here.
    pub(super) totals: Arc<Totals>,
}

/// Counts of appends queued and written; both only grow, and `written` follows queue order, so
/// `written >= queued` as read by a barrier means every append queued before it is written.
#[derive(Default)]
pub(super) struct Progress {
    /// Appends handed to the writer thread (counted under the queue's lock, before sending).
    queued: AtomicU64,
    /// Appends whose batch was applied to the engine (counted after the apply).
    written: AtomicU64,
}

impl Progress {
    /// Whether every append queued so far is written.
    fn settled(&self) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        self.written.load(Ordering::Acquire) >= queued
    }
}

/// Most appends written in one batch.
const MAX_BATCH: usize = 4096;
/// The first capacity of a payload's JSON buffer (an archived chat message's JSON is about
/// this long, so it seldom grows and is never copied).
const JSON_START: usize = 1024;

/// One queued append.
pub(super) struct AppendReq {
    /// `host\0store\0user\0`.
    pub(super) user_prefix: Vec<u8>,
    /// Caller-supplied id (replaces an item with the same id), or None to generate one.
    pub(super) id: Option<String>,
    /// Timestamp, unix seconds.
    pub(super) when: i64,
    /// Conversation partner.
    pub(super) with: String,
    /// The payload, already serialised as JSON by the caller (off the writer thread).
    pub(super) value_json: Vec<u8>,
    /// Sequence number reserved by the caller ([`Appender::send_reserved`]), or None.
    pub(super) seq: Option<u64>,
    /// Told the item's id once the batch holding it is written (not yet flushed); None for an
    /// append nobody waits for (a failure is logged).
    pub(super) reply: Option<tokio::sync::oneshot::Sender<Result<String>>>,
}

/// Work for the writer thread.
pub(super) enum Job {
    /// Append one item.
    Append(AppendReq),
    /// Answer once every job queued before it is written (read-your-writes for queries).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

impl AppendReq {
    /// Builds a request; serialises `value` here, on the caller's thread.
    pub(super) fn new<V: Serialize + ?Sized>(
        user_prefix: Vec<u8>,
        id: Option<String>,
        when: i64,
        with: String,
        value: &V,
    ) -> Result<(AppendReq, tokio::sync::oneshot::Receiver<Result<String>>)> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let mut req = AppendReq::unanswered(user_prefix, when, with, value)?;
        req.id = id;
        req.reply = Some(reply);
        Ok((req, rx))
    }

    /// Builds a request with a generated id that nobody waits for (no reply channel). `value`
    /// is serialised straight to its JSON bytes (a borrowed struct needs no `Value` tree).
    pub(super) fn unanswered<V: Serialize + ?Sized>(
        user_prefix: Vec<u8>,
        when: i64,
        with: String,
        value: &V,
    ) -> Result<AppendReq> {
        let mut value_json = Vec::with_capacity(JSON_START);
        serde_json::to_writer(&mut value_json, value)
            .map_err(|e| StorageError::Io(format!("cannot serialize value: {e}")))?;
        Ok(AppendReq {
            user_prefix,
            id: None,
            when,
            with,
            value_json,
            seq: None,
            reply: None,
        })
    }
}

/// The generated id of sequence number `seq`.
pub(super) fn generated_id(w: &Writer, seq: u64) -> String {
    let mut h = w.id_salt.build_hasher();
    h.write_u64(seq);
    format!("{seq:x}-{:016x}", h.finish())
}

/// The sequence number a generated id claims (`{seq:x}-{16 hex}`), if it has that shape.
pub(super) fn claimed_seq(id: &str) -> Option<u64> {
    let (seq, hash) = id.split_once('-')?;
    if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || seq.len() > 16 {
        return None;
    }
    u64::from_str_radix(seq, 16).ok()
}

/// Caller-supplied ids staged in one batch: id-index key -> (sequence number, partner).
pub(super) type Supplied = HashMap<Vec<u8>, (u64, String)>;

/// Adds the ops of one append to `ops`: the item and its per-partner index entry, and for a
/// caller-supplied id its id-index entry and the removal of the item it replaces.
pub(super) fn stage(
    inner: &Writer,
    req: &AppendReq,
    ops: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    supplied: &mut Supplied,
) -> Result<String> {
    let seq = match req.seq {
        Some(seq) => seq,
        None => inner.backend.next_id()?,
    };
    let prefix = &req.user_prefix;
    if let Some(key) = with_key(prefix, &req.with, seq) {
        ops.push((key, Some(Vec::new())));
    }
    let Some(id) = &req.id else {
        let id = generated_id(inner, seq);
        let item = encode_item(&id, req.when, &req.with, &req.value_json)?;
        ops.push((item_key(prefix, seq), Some(item)));
        return Ok(id);
    };
    let index = index_key(prefix, id);
    let old = match supplied.get(&index) {
        Some(old) => Some(old.clone()),
        None => match lookup_seq(&*inner.backend, prefix, id)? {
            Some(old) => match inner.backend.get(ARCHIVE_TREE, &item_key(prefix, old))? {
                Some(v) => Some((old, item_id_with(&v)?.1)),
                None => None,
            },
            None => None,
        },
    };
    ops.push((
        item_key(prefix, seq),
        Some(encode_item(id, req.when, &req.with, &req.value_json)?),
    ));
    if let Some((old, old_with)) = old {
        ops.push((item_key(prefix, old), None));
        if let Some(key) = with_key(prefix, &old_with, old) {
            ops.push((key, None));
        }
    }
    ops.push((index.clone(), Some(encode(&seq)?)));
    supplied.insert(index, (seq, req.with.clone()));
    Ok(id.clone())
}

/// Writes `reqs` as one batch (under the archive lock) and answers each of them.
fn write_batch(inner: &Writer, jobs: Vec<Job>) {
    let mut reqs = Vec::with_capacity(jobs.len());
    let mut barriers = Vec::new();
    for job in jobs {
        match job {
            Job::Append(r) => reqs.push(r),
            Job::Barrier(b) => barriers.push(b),
        }
    }
    if reqs.is_empty() {
        // Only barriers: everything before them is written already; nothing to apply or flush.
        for b in barriers {
            let _ = b.send(());
        }
        return;
    }
    let mut ops = Vec::with_capacity(reqs.len().saturating_mul(2).saturating_add(4));
    let mut supplied = Supplied::new();
    let _guard = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
    let staged: Vec<Result<String>> = reqs
        .iter()
        .map(|r| stage(inner, r, &mut ops, &mut supplied))
        .collect();
    let applied = inner.backend.apply(ARCHIVE_TREE, ops);
    if applied.is_ok() {
        let (fresh, replacing): (Vec<&AppendReq>, Vec<&AppendReq>) =
            reqs.iter().partition(|r| r.id.is_none());
        inner.totals.added(
            fresh
                .iter()
                .map(|r| (r.user_prefix.as_slice(), r.with.as_str())),
        );
        for r in replacing {
            inner.totals.forget(&r.user_prefix);
        }
    }
    drop(_guard);
    inner.dirty.store(true, Ordering::Release);
    let appended = u64::try_from(reqs.len()).unwrap_or(u64::MAX);
    inner.progress.written.fetch_add(appended, Ordering::AcqRel);
    for (req, id) in reqs.into_iter().zip(staged) {
        let answer = match &applied {
            Ok(()) => id,
            Err(e) => Err(e.clone()),
        };
        match (req.reply, answer) {
            (Some(reply), answer) => {
                let _ = reply.send(answer);
            }
            (None, Err(e)) => tracing::error!(error = %e, "archive append failed"),
            (None, Ok(_)) => {}
        }
    }
    for b in barriers {
        let _ = b.send(());
    }
}

/// Handle to the writer thread; dropping it stops the thread after the queued appends.
pub(super) struct Appender {
    /// Locked while a sequence number is reserved and its append queued, so the queue (and
    /// therefore what queries see) follows sequence order.
    tx: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Appender {
    /// Starts the writer thread.
    pub(super) fn start(writer: Writer) -> Appender {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("oxpecker-archive".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut reqs = vec![first];
                    while reqs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => reqs.push(r),
                            Err(_) => break,
                        }
                    }
                    write_batch(&writer, reqs);
                }
            })
            .ok();
        Appender {
            tx: Mutex::new(Some(tx)),
            thread,
        }
    }

    /// Queues a job (an append gets its sequence number here, in queue order); false if the
    /// writer is gone.
    pub(super) fn send(&self, writer: &Writer, mut job: Job) -> Result<bool> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Job::Append(req) = &mut job {
            if req.seq.is_none() {
                req.seq = Some(writer.backend.next_id()?);
            }
            writer.progress.queued.fetch_add(1, Ordering::AcqRel);
        }
        Ok(tx.as_ref().is_some_and(|tx| tx.send(job).is_ok()))
    }

    /// Reserves the next sequence number, names the item by it, and queues the append without
    /// waiting for it; returns the generated id. Queries see it after their [`Appender::barrier`].
    pub(super) fn send_reserved(&self, writer: &Writer, mut req: AppendReq) -> Result<String> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let seq = writer.backend.next_id()?;
        req.seq = Some(seq);
        req.reply = None;
        let id = generated_id(writer, seq);
        writer.progress.queued.fetch_add(1, Ordering::AcqRel);
        let sent = tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Append(req)).is_ok());
        if !sent {
            return Err(StorageError::Io("the archive writer is gone".into()));
        }
        Ok(id)
    }

    /// Waits until every append queued so far is written (not flushed); at once if they all are.
    pub(super) async fn barrier(&self, writer: &Writer) -> Result<()> {
        if writer.progress.settled() {
            return Ok(());
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        let sent = {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            tx.as_ref()
                .is_some_and(|tx| tx.send(Job::Barrier(done)).is_ok())
        };
        if !sent {
            return Err(StorageError::Io("the archive writer is gone".into()));
        }
        rx.await
            .map_err(|_| StorageError::Io("the archive writer stopped".into()))
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the queued appends are written.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        Writer {
            backend: Arc::new(super::super::MemoryBackend::new()),
            id_salt: RandomState::new(),
            lock: Default::default(),
            dirty: Default::default(),
            progress: Default::default(),
            totals: Default::default(),
        }
    }

    #[test]
    fn a_batch_of_barriers_only_writes_nothing() {
        let w = writer();
        let (done, mut rx) = tokio::sync::oneshot::channel();
        write_batch(&w, vec![Job::Barrier(done)]);
        assert!(rx.try_recv().is_ok(), "the barrier is answered");
        assert!(!w.dirty.load(Ordering::Acquire), "nothing left to flush");
    }

    #[tokio::test]
    async fn barrier_sees_every_queued_append() {
        let w = writer();
        let appender = Appender::start(w.clone());
        assert!(w.progress.settled());
        appender.barrier(&w).await.unwrap();
        let prefix = b"h\0s\0u\0".to_vec();
        let mut ids = Vec::new();
        for i in 0..50 {
            let req = AppendReq::unanswered(prefix.clone(), i, "x".into(), &i).unwrap();
            ids.push(appender.send_reserved(&w, req).unwrap());
        }
        appender.barrier(&w).await.unwrap();
        assert!(w.progress.settled());
        for id in &ids {
            let seq = claimed_seq(id).unwrap();
            let key = super::super::item_key(&prefix, seq);
            assert!(w.backend.get(ARCHIVE_TREE, &key).unwrap().is_some(), "{id}");
        }
        assert!(w.dirty.load(Ordering::Acquire), "the appends await a flush");
    }

    #[test]
    fn generated_ids_carry_their_sequence() {
        assert_eq!(claimed_seq("1f-00000000deadbeef"), Some(0x1f));
        assert_eq!(claimed_seq("i3"), None);
        assert_eq!(claimed_seq("1f-deadbeef"), None);
        assert_eq!(claimed_seq("zz-00000000deadbeef"), None);
        assert_eq!(claimed_seq("-00000000deadbeef"), None);
    }
}
