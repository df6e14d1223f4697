//! How a failed storage operation reaches the peer whose request needed it: one mapping from
//! [`StorageError`] to the stanza error every module replies with (the admin REST API's
//! counterpart, HTTP 503, is `From<StorageError> for ApiError`).
//!
//! A temporary failure ([`StorageError::is_temporary`]: disk full, an I/O error) becomes
//! `<internal-server-error/>` of type `wait` with a text saying to retry: nothing was stored,
//! and the same request may succeed later, once writes succeed again (the server recovers by
//! itself). Anything else (corrupt data, a bad name) is `internal-server-error` of type
//! `cancel`: retrying will not help.

use crate::storage::StorageError;
use crate::xmpp::error::{ErrorType, StanzaError, StanzaErrorCondition as C};

/// The text of the stanza error for a temporary storage failure.
pub const RETRY_TEXT: &str = "storage is temporarily unavailable; try again later";

/// The stanza error for a request that failed on `e` (logged here, once, with `what`).
pub fn stanza_error(e: &StorageError, what: &str) -> StanzaError {
    if e.is_temporary() {
        tracing::warn!(error = %e, "{what}: storage write failed; the request is refused");
        StanzaError::with_text(C::InternalServerError, RETRY_TEXT)
    } else {
        tracing::error!(error = %e, "{what}: storage failed");
        StanzaError {
            kind: ErrorType::Cancel,
            ..StanzaError::new(C::InternalServerError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_failures_say_wait_and_others_cancel() {
        let e = stanza_error(&StorageError::Io("No space left on device".into()), "t");
        assert_eq!(e.condition, C::InternalServerError);
        assert_eq!(e.kind, ErrorType::Wait);
        assert_eq!(e.text.as_deref(), Some(RETRY_TEXT));
        let e = stanza_error(&StorageError::Corrupt("bad".into()), "t");
        assert_eq!(e.condition, C::InternalServerError);
        assert_eq!(e.kind, ErrorType::Cancel);
        assert!(!StorageError::InvalidName("x".into()).is_temporary());
    }
}
