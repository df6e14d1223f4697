//! `/vcards/{name}`: the user's vCard as text/vcard (RFC 6350) on the wire, stored as the same
//! vcard-temp (XEP-0054) element the XMPP side serves ([`crate::modules::vcard`]); the
//! conversion is [`crate::modules::vcard_text`]. A PUT body may also be a
//! `<vCard xmlns='vcard-temp'>` element, stored as is.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::params::Params;
use super::{ApiError, Ctx, existing_user, ok};
use crate::core::Core;
use crate::modules::vcard::{self, VcardError};
use crate::modules::vcard_text::{self, VcardTextError};

fn vcard_error(e: VcardError) -> ApiError {
    match e {
        VcardError::NotAUser(_) => ApiError::InvalidUser,
        VcardError::NotAVcard => invalid("not a vcard-temp <vCard/> element".into()),
        VcardError::Storage(e) => e.into(),
        e => ApiError::Internal(e.to_string()),
    }
}

fn invalid(why: String) -> ApiError {
    ApiError::other(
        StatusCode::BAD_REQUEST,
        "invalid_vcard",
        format!("Invalid vCard: {why}"),
    )
}

/// `GET /vcards/{name}`: 200 `text/vcard`, or 404 when the user has none.
pub async fn get(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let Some(el) = vcard::get_vcard(&core, &jid).await.map_err(vcard_error)? else {
        return Err(ApiError::other(
            StatusCode::NOT_FOUND,
            "no_vcard",
            format!("The user <{jid}> has no vCard configured."),
        ));
    };
    let mut resp = Response::new(Body::from(vcard_text::to_text(&el)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/vcard; charset=utf-8"),
    );
    Ok(resp)
}

/// `PUT /vcards/{name}` (text/vcard body): 200 `"vCard stored for <JID>"`.
pub async fn set(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let el = vcard_text::from_body(&body).map_err(|e: VcardTextError| invalid(e.to_string()))?;
    let max = core
        .config
        .load()
        .option(jid.domain(), "vcard_max_size")
        .and_then(|v| v.as_integer())
        .unwrap_or(vcard::DEFAULT_MAX_SIZE)
        .max(0) as usize;
    if el.to_xml("").len() > max {
        return Err(ApiError::other(
            StatusCode::PAYLOAD_TOO_LARGE,
            "vcard_too_large",
            format!("The vCard is larger than {max} bytes"),
        ));
    }
    vcard::set_vcard(&core, &jid, Some(el))
        .await
        .map_err(vcard_error)?;
    Ok(ok(format!("vCard stored for <{jid}>")))
}

/// `DELETE /vcards/{name}`: 200 `"vCard deleted for <JID>"`.
pub async fn delete(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    vcard::set_vcard(&core, &jid, None)
        .await
        .map_err(vcard_error)?;
    Ok(ok(format!("vCard deleted for <{jid}>")))
}
