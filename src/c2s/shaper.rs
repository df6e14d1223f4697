//! Read bandwidth shaping (like Prosody's mod_limits): a token bucket on the bytes read from
//! one connection; a peer sending faster than its rate has its next read paused until the
//! bytes are paid for, so TCP flow control slows it down; it is never disconnected for it.
//! c2s shapes the read half of each connection; s2s shapes the whole inbound transport (writes
//! pass through unshaped).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::throttle::TokenBucket;

/// A reader whose bytes are paid for from a token bucket.
pub struct Shaped<R> {
    inner: R,
    bucket: Option<TokenBucket>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<R> Shaped<R> {
    /// `inner` shaped to `rate` bytes a second after a burst of `burst` (rate 0 = unshaped).
    pub fn new(inner: R, rate: u64, burst: u64) -> Self {
        Shaped {
            inner,
            bucket: (rate > 0).then(|| TokenBucket::new(rate, burst, Instant::now())),
            pause: None,
        }
    }

    /// Stops shaping (an exempt session).
    pub fn unshape(&mut self) {
        self.bucket = None;
        self.pause = None;
    }

    /// Whether reads are shaped.
    pub fn is_shaped(&self) -> bool {
        self.bucket.is_some()
    }

    /// The reader inside.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Shaped<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(p) = this.pause.as_mut() {
            ready!(p.as_mut().poll(cx));
            this.pause = None;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len().saturating_sub(before);
        if let Some(b) = this.bucket.as_mut() {
            let wait = b.charge(n as u64, Instant::now());
            if !wait.is_zero() {
                this.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Shaped<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_past_the_burst_are_paced_at_the_rate() {
        let data = vec![b'x'; 8 * 1024];
        let mut r = Shaped::new(&data[..], 16 * 1024, 4 * 1024);
        let start = tokio::time::Instant::now();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.expect("read");
        assert_eq!(out.len(), data.len(), "everything arrives: slowed, not cut");
        // 8 KiB at 16 KiB/s after a 4 KiB burst: a lower bound, at least 0.2 s of pauses.
        assert!(
            start.elapsed() >= std::time::Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
        let mut free = Shaped::new(&data[..], 0, 0);
        assert!(!free.is_shaped());
        free.read_to_end(&mut Vec::new()).await.expect("read");
        assert!(free.pause.is_none());
    }
}
