//! Protocol errors: stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3).

use super::element::Element;
use super::ns;

/// A stream-level error condition (RFC 6120 §4.9.3); fatal to the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamErrorCondition {
    /// The entity sent XML that cannot be processed.
    #[error("bad-format")]
    BadFormat,
    /// A stream header has an unsupported namespace prefix.
    #[error("bad-namespace-prefix")]
    BadNamespacePrefix,
    /// A new stream for this entity replaced the existing one.
    #[error("conflict")]
    Conflict,
    /// The peer has not generated traffic for too long.
    #[error("connection-timeout")]
    ConnectionTimeout,
    /// The host the stream is with is no longer served here.
    #[error("host-gone")]
    HostGone,
    /// The server resets the stream (e.g. an admin closed the session; the client may reconnect).
    #[error("reset")]
    Reset,
    /// The `to` of the stream header names no host served here.
    #[error("host-unknown")]
    HostUnknown,
    /// The server is misconfigured or hit an internal error.
    #[error("internal-server-error")]
    InternalServerError,
    /// A stanza lacks the `from` or `to` a server-to-server stream requires.
    #[error("improper-addressing")]
    ImproperAddressing,
    /// The `from` of a stanza does not match the authenticated entity.
    #[error("invalid-from")]
    InvalidFrom,
    /// The stream or content namespace is wrong.
    #[error("invalid-namespace")]
    InvalidNamespace,
    /// The entity sent invalid XML, or XML that breaks the stream's structure.
    #[error("invalid-xml")]
    InvalidXml,
    /// The entity tried something before it was allowed to (e.g. a stanza before auth).
    #[error("not-authorized")]
    NotAuthorized,
    /// The XML is not well-formed.
    #[error("not-well-formed")]
    NotWellFormed,
    /// A local policy was violated (e.g. a stanza over the size limit).
    #[error("policy-violation")]
    PolicyViolation,
    /// The server lacks resources to serve the stream.
    #[error("resource-constraint")]
    ResourceConstraint,
    /// Restricted XML (comments, PIs, DTDs, entity references) was sent.
    #[error("restricted-xml")]
    RestrictedXml,
    /// The server is shutting down.
    #[error("system-shutdown")]
    SystemShutdown,
    /// Catch-all for other conditions.
    #[error("undefined-condition")]
    UndefinedCondition,
    /// The encoding is not UTF-8.
    #[error("unsupported-encoding")]
    UnsupportedEncoding,
    /// A first-level child is not a supported stanza or feature element.
    #[error("unsupported-stanza-type")]
    UnsupportedStanzaType,
    /// The stream `version` is not supported.
    #[error("unsupported-version")]
    UnsupportedVersion,
}

/// A stream error: a condition and an optional human-readable text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream error {condition}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StreamError {
    /// The defined condition.
    pub condition: StreamErrorCondition,
    /// Optional descriptive text sent to the peer.
    pub text: Option<String>,
}

impl StreamError {
    /// A stream error with no text.
    pub fn new(condition: StreamErrorCondition) -> Self {
        StreamError {
            condition,
            text: None,
        }
    }

    /// A stream error with descriptive text.
    pub fn with_text(condition: StreamErrorCondition, text: impl Into<String>) -> Self {
        StreamError {
            condition,
            text: Some(text.into()),
        }
    }

    /// The `<stream:error/>` element.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("error", ns::STREAM)
            .child(Element::new(self.condition.to_string(), ns::STREAMS));
        if let Some(t) = &self.text {
            el.push(Element::new("text", ns::STREAMS).text(t.clone()));
        }
        el
    }
}

impl From<StreamErrorCondition> for StreamError {
    fn from(c: StreamErrorCondition) -> Self {
        StreamError::new(c)
    }
}

/// The `type` attribute of a stanza error (RFC 6120 §8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Proceed; the condition was only a warning.
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting.
    Wait,
}

impl ErrorType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error condition (RFC 6120 §8.3.3) with its default type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StanzaErrorCondition {
    /// The request was malformed.
    #[error("bad-request")]
    BadRequest,
    /// The resource or name is in use.
    #[error("conflict")]
    Conflict,
    /// The feature is not implemented.
    #[error("feature-not-implemented")]
    FeatureNotImplemented,
    /// The requester lacks the permissions.
    #[error("forbidden")]
    Forbidden,
    /// The entity is gone.
    #[error("gone")]
    Gone,
    /// The server hit an internal error.
    #[error("internal-server-error")]
    InternalServerError,
    /// The addressed item or JID was not found.
    #[error("item-not-found")]
    ItemNotFound,
    /// The JID is malformed.
    #[error("jid-malformed")]
    JidMalformed,
    /// The request is not acceptable by policy.
    #[error("not-acceptable")]
    NotAcceptable,
    /// The entity is not allowed to do this.
    #[error("not-allowed")]
    NotAllowed,
    /// Authentication is required.
    #[error("not-authorized")]
    NotAuthorized,
    /// A local policy forbids it.
    #[error("policy-violation")]
    PolicyViolation,
    /// The intended recipient is temporarily unavailable.
    #[error("recipient-unavailable")]
    RecipientUnavailable,
    /// Registration (membership) is required first.
    #[error("registration-required")]
    RegistrationRequired,
    /// The remote server could not be found.
    #[error("remote-server-not-found")]
    RemoteServerNotFound,
    /// The remote server did not answer in time.
    #[error("remote-server-timeout")]
    RemoteServerTimeout,
    /// The server lacks resources.
    #[error("resource-constraint")]
    ResourceConstraint,
    /// No service handles this request.
    #[error("service-unavailable")]
    ServiceUnavailable,
    /// A subscription is required.
    #[error("subscription-required")]
    SubscriptionRequired,
    /// Catch-all.
    #[error("undefined-condition")]
    UndefinedCondition,
    /// The request was unexpected now.
    #[error("unexpected-request")]
    UnexpectedRequest,
}

impl StanzaErrorCondition {
    /// The error type RFC 6120 suggests for this condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaErrorCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation => ErrorType::Modify,
            NotAuthorized | SubscriptionRequired | Forbidden | RegistrationRequired => {
                ErrorType::Auth
            }
            InternalServerError | ResourceConstraint | RecipientUnavailable
            | RemoteServerTimeout | UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error: condition, type and optional text (RFC 6120 §8.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stanza error {condition}")]
pub struct StanzaError {
    /// The defined condition.
    pub condition: StanzaErrorCondition,
    /// The error type.
    pub kind: ErrorType,
    /// Optional descriptive text.
    pub text: Option<String>,
}

impl StanzaError {
    /// An error with the condition's default type.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: None,
        }
    }

    /// An error with descriptive text.
    pub fn with_text(condition: StanzaErrorCondition, text: impl Into<String>) -> Self {
        StanzaError {
            text: Some(text.into()),
            ..StanzaError::new(condition)
        }
    }

    /// The `<error/>` child element.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("error", ns::CLIENT)
            .attr("type", self.kind.as_str())
            .child(Element::new(self.condition.to_string(), ns::STANZAS));
        if let Some(t) = &self.text {
            el.push(
                Element::new("text", ns::STANZAS)
                    .attr("xml:lang", "en")
                    .text(t.clone()),
            );
        }
        el
    }
}

impl From<StanzaErrorCondition> for StanzaError {
    fn from(c: StanzaErrorCondition) -> Self {
        StanzaError::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_element() {
        let e = StreamError::with_text(StreamErrorCondition::PolicyViolation, "too big");
        assert_eq!(
            e.to_element().to_xml(ns::CLIENT),
            "<stream:error><policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/><text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">too big</text></stream:error>"
        );
    }

    #[test]
    fn stanza_error_types() {
        let e = StanzaError::new(StanzaErrorCondition::ServiceUnavailable);
        assert_eq!(e.kind, ErrorType::Cancel);
        assert!(
            e.to_element()
                .get_child("service-unavailable", ns::STANZAS)
                .is_some()
        );
        assert_eq!(
            StanzaError::new(StanzaErrorCondition::BadRequest).kind,
            ErrorType::Modify
        );
    }
}
