//! A session's bounded outbound queue that holds no heap while it is empty.
//!
//! tokio's `mpsc` channel allocates its shared state (cache-padded) and a first block of 32
//! slots when it is made and keeps both for its life, about 1.5 KiB per session whether anything
//! is ever queued or not. This queue keeps its items in a `VecDeque` allocated with the first
//! item and freed again once the receiver has drained it; one sender, one receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Makes a queue holding at most `cap` items (at least one).
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            rx_closed: false,
            tx_gone: false,
        }),
        item: Notify::new(),
        room: Notify::new(),
        cap: cap.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver: an item arrived, or the sender is gone.
    item: Notify,
    /// Wakes waiting senders: a full queue has room again, or the receiver is closed.
    room: Notify,
    cap: usize,
}

struct State<T> {
    items: VecDeque<T>,
    rx_closed: bool,
    tx_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `cap` items.
    Full(T),
    /// The receiver is closed or gone.
    Closed(T),
}

/// [`Receiver::try_recv`] found nothing queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nothing queued")]
pub struct Empty;

/// The sending end (held by the session's handle).
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item` if there is room and the receiver is open.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.0.lock();
        if state.rx_closed {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.0.cap {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.0.item.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room; gives it back if the receiver closes first.
    pub async fn send(&self, mut item: T) -> Result<(), T> {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(back),
                Err(TrySendError::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// Items that can still be queued now.
    pub fn capacity(&self) -> usize {
        self.0.cap.saturating_sub(self.0.lock().items.len())
    }

    /// The most items the queue holds.
    pub fn max_capacity(&self) -> usize {
        self.0.cap
    }

    /// Whether the receiver is closed or gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().rx_closed
    }

    /// Resolves once the receiver is closed or gone.
    pub async fn closed(&self) {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.is_closed() {
                return;
            }
            room.await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().tx_gone = true;
        self.0.item.notify_one();
    }
}

/// The receiving end (held by the connection serving the session, or by its hibernation).
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once the sender is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some(item) = self.pop(&mut state) {
                    return Some(item);
                }
                if state.tx_gone {
                    return None;
                }
            }
            // A permit stored by a send since the check above wakes this at once.
            self.0.item.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Result<T, Empty> {
        let mut state = self.0.lock();
        self.pop(&mut state).ok_or(Empty)
    }

    /// Refuses further items; those already queued can still be received.
    pub fn close(&mut self) {
        self.0.lock().rx_closed = true;
        self.0.room.notify_waiters();
    }

    /// Heap bytes the queue's items take now (0 while empty).
    pub fn held(&self) -> usize {
        self.0
            .lock()
            .items
            .capacity()
            .saturating_mul(std::mem::size_of::<T>())
    }

    fn pop(&self, state: &mut State<T>) -> Option<T> {
        let was_full = state.items.len() >= self.0.cap;
        let item = state.items.pop_front()?;
        if state.items.is_empty() {
            // Drained: give the slots back, so an idle session holds none.
            state.items = VecDeque::new();
        }
        if was_full {
            self.0.room.notify_waiters();
        }
        Some(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.0.lock();
            state.rx_closed = true;
            std::mem::take(&mut state.items)
        };
        self.0.room.notify_waiters();
        // Dropped outside the lock: an item's drop may give budget back.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_nothing_while_empty_and_keeps_order_and_bounds() {
        let (tx, mut rx) = channel::<u32>(3);
        assert_eq!(rx.held(), 0);
        assert_eq!((tx.capacity(), tx.max_capacity()), (3, 3));
        for i in 0..3 {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
        assert!(rx.held() > 0);
        assert_eq!(tx.capacity(), 0);
        assert_eq!(rx.recv().await, Some(0));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(Empty));
        assert_eq!(rx.held(), 0, "drained: the slots are freed");
        drop(tx);
        assert_eq!(rx.recv().await, None, "the sender is gone");
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_and_a_closed_receiver_refuses() {
        let (tx, mut rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let tx = Arc::new(tx);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2).await }
        });
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(rx.recv().await, Some(2));
        // The receiver wakes for an item sent while it waits.
        let late = tokio::spawn({
            let tx = tx.clone();
            async move {
                tokio::task::yield_now().await;
                tx.try_send(3)
            }
        });
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(late.await.unwrap(), Ok(()));
        tx.try_send(4).unwrap();
        let closed = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        rx.close();
        closed.await.unwrap();
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(5), Err(TrySendError::Closed(5)));
        assert_eq!(tx.send(6).await, Err(6));
        assert_eq!(
            rx.try_recv(),
            Ok(4),
            "queued before the close: still received"
        );
    }
}
