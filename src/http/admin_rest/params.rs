//! [`Params`]: path parameters whose rejection is a JSON [`ApiError`] (axum's own is plain text).

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Like axum's `Path`, but a bad parameter (e.g. invalid UTF-8) is 404 `Invalid request path`.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Params(v)),
            Err(_) => Err(ApiError::InvalidPath),
        }
    }
}
