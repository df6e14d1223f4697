//! The XMPP stream parser over arbitrary bytes, fed whole and in chunks whose sizes the input
//! chooses: it never panics, and both feedings give the same events.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use oxpecker::xmpp::parser::{Limits, StreamParser};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

/// A reader handing out `data` in chunks of the given sizes (cycled).
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let size = this.sizes[this.turn % this.sizes.len()].max(1);
        this.turn += 1;
        let end = (this.pos + size.min(buf.remaining())).min(this.data.len());
        buf.put_slice(&this.data[this.pos..end]);
        this.pos = end;
        Poll::Ready(Ok(()))
    }
}

/// Every event (Debug text) until the end or the first error ("error").
fn events<R: AsyncRead + Unpin>(rt: &tokio::runtime::Runtime, r: R) -> Vec<String> {
    let limits = Limits { max_stanza_bytes: 64 * 1024, ..Limits::default() };
    let mut p = StreamParser::new(BufReader::with_capacity(64, r), limits);
    rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match p.next().await {
                Ok(ev) => out.push(format!("{ev:?}")),
                Err(_) => {
                    out.push("error".to_string());
                    break;
                }
            }
        }
        out
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { return };
    let sizes: Vec<usize> = (0..4).map(|i| usize::from(seed.rotate_left(i * 2) % 17) + 1).collect();
    let whole = events(&rt, Chunked { data: data.to_vec(), pos: 0, sizes: vec![usize::MAX], turn: 0 });
    let chunked = events(&rt, Chunked { data: data.to_vec(), pos: 0, sizes, turn: 0 });
    assert_eq!(whole, chunked, "the split points changed what was parsed");
});
