//! [`ApiError`]: every way an admin call fails, rendered as a status and a JSON body
//! `{"result": <mod_admin_rest's message>, "error": "<machine-readable code>"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::core::accounts::AccountError;
use crate::core::allowlist::AllowlistError;
use crate::storage::StorageError;

/// The realm announced in `WWW-Authenticate`.
pub const REALM: &str = "Basic realm=\"oxpecker\"";

/// The `Retry-After` (seconds) of a 503 for a failed write.
const STORAGE_RETRY_AFTER: &str = "5";

/// An admin API failure. `Display` is the `result` message (mod_admin_rest's wording).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route matches the path.
    #[error("Invalid request path")]
    InvalidPath,
    /// The route exists but not for this method.
    #[error("Invalid request method")]
    InvalidMethod,
    /// The body is missing, not JSON, or lacks a required field.
    #[error("Body does not exist or is malformed")]
    InvalidBody,
    /// The body is larger than the limit.
    #[error("Request body is too large")]
    BodyTooLarge,
    /// The named host is not served here.
    #[error("Host does not exist or is malformed")]
    UnknownHost,
    /// The user named in the path is not a valid JID (or, for messages, does not exist).
    #[error("User does not exist or is malformed")]
    InvalidUser,
    /// The user does not exist.
    #[error("User does not exist: {0}")]
    UserNotFound(String),
    /// The roster contact is missing or invalid.
    #[error("Contact does not exist or is malformed")]
    InvalidContact,
    /// No `Authorization` header.
    #[error("Missing authorization header")]
    MissingAuth,
    /// The `Authorization` header cannot be parsed.
    #[error("Invalid authentication details")]
    InvalidAuth,
    /// Wrong credentials, unknown account or unknown token.
    #[error("Authentication failure")]
    AuthFailure,
    /// Authenticated, but not an admin.
    #[error("User must be an administrator")]
    NotAdmin,
    /// The client address is not on the allowlist.
    #[error("IP address is not whitelisted: {0}")]
    IpNotAllowed(String),
    /// `admin_rest_secure` is on and the request came over plain HTTP.
    #[error("HTTPS is required")]
    HttpsRequired,
    /// Too many failed authentications from this address; retry after the given seconds.
    #[error("Too many failed authentication attempts")]
    Throttled(u64),
    /// The recipient is offline and no offline storage is loaded.
    #[error("Message dropped per configuration")]
    MessageDropped,
    /// A server-side failure (logged; the client sees only the generic message).
    #[error("Internal server error")]
    Internal(String),
    /// A write failed for a reason that may pass (disk full, I/O error); nothing was changed
    /// and the same request may be retried (logged; the client sees the generic message).
    #[error("Storage is temporarily unavailable, try again later")]
    StorageUnavailable(String),
    /// Any other failure with its own status, code and message.
    #[error("{message}")]
    Other {
        /// HTTP status.
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// The `result` message.
        message: String,
    },
    /// A failure whose `result` is an object (e.g. `{"connected": false}`).
    #[error("{code}")]
    WithResult {
        /// HTTP status.
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// The `result` value.
        result: Value,
    },
}

impl ApiError {
    /// A failure with its own status, code and message.
    pub fn other(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Other {
            status,
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidPath | UnknownHost | InvalidUser | UserNotFound(_) | InvalidContact => {
                StatusCode::NOT_FOUND
            }
            InvalidMethod => StatusCode::METHOD_NOT_ALLOWED,
            InvalidBody => StatusCode::BAD_REQUEST,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            MissingAuth | InvalidAuth | AuthFailure => StatusCode::UNAUTHORIZED,
            NotAdmin | IpNotAllowed(_) | HttpsRequired => StatusCode::FORBIDDEN,
            Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            MessageDropped => StatusCode::NOT_IMPLEMENTED,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Other { status, .. } | WithResult { status, .. } => *status,
        }
    }

    /// The machine-readable code (the `error` field).
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidPath => "invalid_path",
            InvalidMethod => "invalid_method",
            InvalidBody => "invalid_body",
            BodyTooLarge => "body_too_large",
            UnknownHost => "unknown_host",
            InvalidUser => "invalid_user",
            UserNotFound(_) => "user_not_found",
            InvalidContact => "invalid_contact",
            MissingAuth => "missing_credentials",
            InvalidAuth => "invalid_credentials",
            AuthFailure => "authentication_failed",
            NotAdmin => "not_admin",
            IpNotAllowed(_) => "ip_not_allowed",
            HttpsRequired => "https_required",
            Throttled(_) => "too_many_failures",
            MessageDropped => "message_dropped",
            Internal(_) => "internal_error",
            StorageUnavailable(_) => "storage_unavailable",
            Other { code, .. } | WithResult { code, .. } => code,
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidJid(_) => ApiError::InvalidUser,
            AccountError::UnknownHost(_) => ApiError::UnknownHost,
            AccountError::NotFound(j) => ApiError::UserNotFound(j),
            AccountError::Exists(j) => ApiError::other(
                StatusCode::CONFLICT,
                "user_exists",
                format!("User exists: {j}"),
            ),
            AccountError::Password(p) => {
                ApiError::other(StatusCode::BAD_REQUEST, "invalid_password", p.to_string())
            }
            AccountError::Storage(e) => e.into(),
            e @ AccountError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<AllowlistError> for ApiError {
    fn from(e: AllowlistError) -> Self {
        match e {
            AllowlistError::UnknownHost(_) => ApiError::UnknownHost,
            AllowlistError::Storage(e) => e.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    /// A temporary failure is a 503 the client may retry; anything else is a 500.
    fn from(e: StorageError) -> Self {
        if e.is_temporary() {
            ApiError::StorageUnavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "admin_rest: internal error")
            }
            ApiError::StorageUnavailable(detail) => {
                tracing::warn!(error = %detail, "admin_rest: storage unavailable")
            }
            _ => {}
        }
        let result = match &self {
            ApiError::WithResult { result, .. } => result.clone(),
            other => Value::String(other.to_string()),
        };
        let mut resp = (
            status,
            super::json_response(json!({ "result": result, "error": self.code() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        if let ApiError::Throttled(secs) = self
            && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(STORAGE_RETRY_AFTER),
            );
        }
        resp
    }
}
