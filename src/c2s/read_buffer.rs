//! A connection's read buffer that holds no memory while the connection is idle.
//!
//! `tokio::io::BufReader` keeps its whole buffer for the life of the connection, so every idle
//! session paid for it. [`ReadBuffer`] reads into a stack chunk and keeps on the heap only the
//! bytes read and not yet consumed; once the parser has taken them all the heap part is freed,
//! and it is allocated again, at the size of what arrived, when the next bytes come.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// Most bytes taken from the inner reader in one read.
pub const CHUNK: usize = 4096;

/// A buffered reader whose buffer exists only while it holds unconsumed bytes.
#[derive(Debug)]
pub struct ReadBuffer<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R> ReadBuffer<R> {
    /// Wraps `inner`, holding nothing yet.
    pub fn new(inner: R) -> Self {
        ReadBuffer {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The bytes read and not yet consumed.
    pub fn buffer(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Bytes of heap this reader holds now (0 while idle).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader; unconsumed bytes are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn release_if_consumed(&mut self) {
        if self.pos >= self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadBuffer<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos >= this.buf.len() {
            // Nothing buffered: read straight into the caller's buffer.
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let available = this.buffer();
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        this.pos += n;
        this.release_if_consumed();
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for ReadBuffer<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            // Read into the stack: a read that would block leaves nothing allocated.
            let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut rb = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            this.buf = rb.filled().to_vec();
            this.pos = 0;
        }
        Poll::Ready(Ok(this.buffer()))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = this.pos.saturating_add(amt).min(this.buf.len());
        this.release_if_consumed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_nothing_while_idle_and_reads_everything_in_order() {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let mut r = ReadBuffer::new(rx);
        assert_eq!(r.held(), 0);
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&big).await.unwrap();
        let mut got = Vec::new();
        while got.len() < big.len() {
            let chunk = r.fill_buf().await.unwrap();
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            // Consume in two steps: the rest stays buffered in between.
            let half = chunk.len().div_ceil(2);
            got.extend_from_slice(&chunk[..half]);
            r.consume(half);
            let rest = r.buffer().to_vec();
            got.extend_from_slice(&rest);
            r.consume(rest.len());
            assert_eq!(r.held(), 0, "fully consumed: the buffer is gone");
        }
        assert_eq!(got, big);
        // A read that would block allocates nothing.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.fill_buf()).await;
        assert!(pending.is_err());
        assert_eq!(r.held(), 0);
        // Plain reads drain what is buffered first, then read directly.
        tx.write_all(b"hello world").await.unwrap();
        assert_eq!(r.fill_buf().await.unwrap(), b"hello world");
        r.consume(6);
        let mut five = [0u8; 5];
        r.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"world");
        assert_eq!(r.held(), 0);
        drop(tx);
        assert!(r.fill_buf().await.unwrap().is_empty(), "end of stream");
    }
}
