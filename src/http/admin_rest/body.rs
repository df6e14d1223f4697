//! The request body, bounded: a body over the limit gets a 413 with the JSON error body, and
//! the client gets to read it: what it is still sending is read and discarded first (bounded),
//! since closing a socket with unread data resets the connection and loses the answer.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, header};

use super::ApiError;

/// Most bytes read and thrown away after a refused body, so the client reads the 413.
pub const MAX_DISCARD: usize = 64 * 1024 * 1024;
/// Longest time spent discarding a refused body.
pub const DISCARD_TIME: Duration = Duration::from_secs(10);

/// Whether the request declares (`Content-Length`) a body larger than `max`.
pub fn declared_too_large(headers: &HeaderMap, max: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
}

/// Whether the client waits for `100 Continue` before sending its body (then nothing needs
/// discarding: the body is never asked for).
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Refuses a body declared too large: discards what the client sends anyway, then the 413.
pub async fn refuse(headers: &HeaderMap, body: Body) -> ApiError {
    if !expects_continue(headers) {
        discard(body, 0).await;
    }
    ApiError::BodyTooLarge
}

/// Reads the whole body if it holds at most `max` bytes; a larger one is discarded (bounded)
/// and refused with [`ApiError::BodyTooLarge`].
pub async fn read(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    if declared_too_large(headers, max) {
        return Err(refuse(headers, body).await);
    }
    let mut body = body;
    let mut out = Vec::new();
    while let Some(chunk) = next_data(&mut body).await {
        let chunk = chunk.map_err(|_| ApiError::InvalidBody)?;
        if out.len().saturating_add(chunk.len()) > max {
            discard(body, chunk.len()).await;
            return Err(ApiError::BodyTooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The next data chunk of `body` (trailers skipped); `None` at its end.
async fn next_data(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    loop {
        let frame =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Reads and drops the rest of a body, up to [`MAX_DISCARD`] bytes and [`DISCARD_TIME`].
async fn discard(mut body: Body, already: usize) {
    let mut seen = already;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while seen <= MAX_DISCARD {
            match next_data(&mut body).await {
                Some(Ok(chunk)) => seen = seen.saturating_add(chunk.len()),
                _ => return,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let b = read(&HeaderMap::new(), Body::from("{\"a\":1}"), 16).await;
        assert_eq!(b.expect("body"), Bytes::from_static(b"{\"a\":1}"));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_declared_or_not() {
        let big = vec![b'x'; 100];
        let undeclared = read(&HeaderMap::new(), Body::from(big.clone()), 64).await;
        assert!(matches!(undeclared, Err(ApiError::BodyTooLarge)));
        let declared = headers(&[("content-length", "100")]);
        assert!(declared_too_large(&declared, 64));
        assert!(!declared_too_large(&declared, 100));
        let r = read(&declared, Body::from(big), 64).await;
        assert!(matches!(r, Err(ApiError::BodyTooLarge)));
        let cont = headers(&[("content-length", "100"), ("expect", "100-continue")]);
        assert!(matches!(
            refuse(&cont, Body::empty()).await,
            ApiError::BodyTooLarge
        ));
    }
}
