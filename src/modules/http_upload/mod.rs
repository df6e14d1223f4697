//! XEP-0363 HTTP File Upload, as a component module (`[[component]] module = "http_upload"`,
//! by default at `upload.<first host>`): a local user asks the component for a slot and gets
//! a PUT URL (carrying a signed token, [`slot`]) and a GET URL on the HTTP listener, served
//! through the module API's streaming routes ([`serve`]); the bytes and their records live in
//! [`files`]. Limits: file size, per-user quota and rate, allowed content types; files expire
//! (a module timer) and go with their uploader's account (a user cleanup on the parent host).

pub mod files;
pub mod serve;
pub mod slot;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::OnceCell;

use crate::core::Core;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::module_api::http::http_stream_handler;
use crate::core::modules::{HostType, LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::core::throttle::Throttle;
use crate::storage::StorageError;
use crate::xmpp::error::{ErrorType, StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, ns, stanza};
use files::Files;

/// The longest file name accepted, in bytes.
const MAX_NAME: usize = 255;

/// Characters escaped in a file name inside a URL path (RFC 3986 unreserved ones stay).
pub(crate) const NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The limits of an upload service (its `http_upload_*` options).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest file in bytes.
    pub max_file_size: u64,
    /// Bytes one user may keep stored.
    pub quota: u64,
    /// Slots one user may ask for per minute.
    pub rate_per_minute: usize,
    /// Content types accepted (`type/subtype` or `type/*`); empty = any.
    pub allowed_types: Vec<String>,
    /// How long a slot's PUT URL stays valid.
    pub slot_ttl: Duration,
    /// How long a file is kept; `None` = until its uploader's account is deleted.
    pub expire_after: Option<Duration>,
}

/// One upload service (a component host running `http_upload`).
pub struct UploadService {
    /// The component's domain.
    pub host: String,
    /// The path prefix of its URLs, `/upload/<host>/`.
    pub prefix: String,
    /// Its limits.
    pub limits: Limits,
    /// Its files.
    pub files: Files,
    /// The base of its URLs (`http_upload_url`); empty = the first plain-HTTP listener.
    pub base_url: String,
    core: Weak<Core>,
    parent: String,
    rate: Throttle,
    secret: OnceCell<Vec<u8>>,
}

impl UploadService {
    /// The slot-signing secret, made once per service and kept in the store.
    async fn secret(&self) -> Result<Vec<u8>, StorageError> {
        self.secret
            .get_or_try_init(|| async {
                let core = self
                    .core
                    .upgrade()
                    .ok_or_else(|| StorageError::Io("server stopped".into()))?;
                let store = core.store.keyval(&self.host, "http_upload_secret");
                if let Some(s) = store.get("secret").await?
                    && let Some(bytes) = s.as_str().and_then(|s| STANDARD.decode(s).ok())
                    && bytes.len() >= 32
                {
                    return Ok(bytes);
                }
                use rand::RngCore;
                let mut fresh = vec![0u8; 32];
                rand::rng().fill_bytes(&mut fresh);
                store
                    .set("secret", Some(serde_json::json!(STANDARD.encode(&fresh))))
                    .await?;
                Ok(fresh)
            })
            .await
            .cloned()
    }

    /// The base URL downloads and uploads are offered at, if there is one.
    fn base(&self) -> Option<String> {
        if !self.base_url.is_empty() {
            return Some(self.base_url.trim_end_matches('/').to_string());
        }
        let core = self.core.upgrade()?;
        let addr = core.http_bound.get()?.first().copied()?;
        Some(if addr.ip().is_unspecified() {
            format!("http://{}:{}", self.parent, addr.port())
        } else {
            format!("http://{addr}")
        })
    }

    /// Whether `content_type` is accepted.
    fn type_allowed(&self, content_type: &str) -> bool {
        let allowed = &self.limits.allowed_types;
        allowed.is_empty()
            || allowed.iter().any(|a| {
                a == content_type
                    || a.strip_suffix("/*").is_some_and(|major| {
                        content_type.split_once('/').map(|(m, _)| m) == Some(major)
                    })
            })
    }

    /// Answers a slot request: a slot, or the XEP-0363 error saying why not.
    async fn request_slot(&self, ev: &StanzaEvent) -> Result<Element, Element> {
        let refuse = |error: StanzaError| stanza::error_reply(&ev.stanza, &error);
        let bad = |why: &str| refuse(StanzaError::with_text(C::BadRequest, why));
        let fail = |e: Option<Element>| e.unwrap_or_else(|| Element::new("iq", ns::CLIENT));
        let local_user = ev.from.node().is_some()
            && ev
                .core
                .host(ev.from.domain())
                .is_some_and(|h| h.kind == HostType::Local);
        if !local_user {
            return Err(fail(refuse(StanzaError::with_text(
                C::Forbidden,
                "only local users may upload",
            ))));
        }
        let Some(req) = ev.stanza.get_child("request", ns::HTTP_UPLOAD) else {
            return Err(fail(bad("no request")));
        };
        let name = req.get_attr("filename").unwrap_or_default().to_string();
        if !valid_file_name(&name) {
            return Err(fail(bad("invalid file name")));
        }
        let Some(size) = req
            .get_attr("size")
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return Err(fail(bad("invalid size")));
        };
        let content_type = req
            .get_attr("content-type")
            .map(mime_type)
            .unwrap_or_default();
        if size > self.limits.max_file_size {
            let mut reply = fail(refuse(StanzaError::with_text(
                C::NotAcceptable,
                format!(
                    "the largest file accepted is {} bytes",
                    self.limits.max_file_size
                ),
            )));
            if let Some(error) = reply.get_child_mut("error", ns::CLIENT) {
                error.push(
                    Element::new("file-too-large", ns::HTTP_UPLOAD).child(
                        Element::new("max-file-size", ns::HTTP_UPLOAD)
                            .text(self.limits.max_file_size.to_string()),
                    ),
                );
            }
            return Err(reply);
        }
        if !self.type_allowed(&content_type) {
            return Err(fail(refuse(StanzaError::with_text(
                C::NotAcceptable,
                "this content type is not accepted",
            ))));
        }
        let owner = ev.from.bare().to_string();
        let wait = |why: &str| {
            let mut e = StanzaError::with_text(C::ResourceConstraint, why);
            e.kind = ErrorType::Wait;
            fail(refuse(e))
        };
        match self.files.usage(&owner).await {
            Ok(used) if used.saturating_add(size) > self.limits.quota => {
                return Err(wait("upload quota exceeded"));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "upload: cannot read the quota");
                return Err(fail(refuse(C::InternalServerError.into())));
            }
        }
        if !self
            .rate
            .allow(&owner, self.limits.rate_per_minute, Instant::now())
        {
            return Err(wait("too many uploads; try again in a minute"));
        }
        let (Ok(secret), Some(base)) = (self.secret().await, self.base()) else {
            return Err(fail(refuse(C::ServiceUnavailable.into())));
        };
        let slot_id = format!("{:032x}", rand::random::<u128>());
        let ttl = i64::try_from(self.limits.slot_ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = slot::Claims {
            owner,
            size,
            content_type,
            expires: crate::core::accounts::now().saturating_add(ttl),
        };
        let token = slot::sign(&secret, &self.host, &slot_id, &name, &claims);
        let get = format!(
            "{base}{}{slot_id}/{}",
            self.prefix,
            utf8_percent_encode(&name, NAME)
        );
        let put = format!("{get}?token={token}");
        let slot = Element::new("slot", ns::HTTP_UPLOAD)
            .child(Element::new("put", ns::HTTP_UPLOAD).attr("url", put))
            .child(Element::new("get", ns::HTTP_UPLOAD).attr("url", get));
        Ok(stanza::iq_result(&ev.stanza, Some(slot)))
    }
}

/// Whether `slot` looks like a slot id this module makes (32 lowercase hex digits).
pub fn valid_slot_id(slot: &str) -> bool {
    slot.len() == 32
        && slot
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` is acceptable as a file name (no path, no control characters, bounded).
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The `type/subtype` of a `Content-Type` value, lowercased, without parameters.
pub fn mime_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The `http_upload` module.
pub struct HttpUpload;

impl Module for HttpUpload {
    fn name(&self) -> &'static str {
        "http_upload"
    }

    fn options(&self) -> &'static [&'static str] {
        &[
            "http_upload_max_file_size",
            "http_upload_quota",
            "http_upload_rate_per_minute",
            "http_upload_allowed_types",
            "http_upload_slot_ttl",
            "http_upload_expire_after",
            "http_upload_url",
            "http_upload_name",
        ]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        if ctx.host_type() != HostType::Component {
            return Err(LoadError::bad_option(
                "modules_enabled",
                "http_upload runs on a [[component]] host, not on a user host",
            ));
        }
        let bytes = |name: &str, default: i64| {
            u64::try_from(ctx.option_integer(name, default, 0, i64::MAX)).unwrap_or(0)
        };
        let limits = Limits {
            max_file_size: bytes("http_upload_max_file_size", 10 * 1024 * 1024),
            quota: bytes("http_upload_quota", 100 * 1024 * 1024),
            rate_per_minute: usize::try_from(ctx.option_integer(
                "http_upload_rate_per_minute",
                30,
                1,
                1_000_000,
            ))
            .unwrap_or(30),
            allowed_types: ctx
                .option_set("http_upload_allowed_types", &[])
                .iter()
                .map(|t| mime_type(t))
                .collect(),
            slot_ttl: ctx
                .option_period("http_upload_slot_ttl", Some(Duration::from_secs(300)))
                .unwrap_or(Duration::from_secs(300)),
            expire_after: ctx.option_period(
                "http_upload_expire_after",
                Some(Duration::from_secs(7 * 24 * 3600)),
            ),
        };
        let host = ctx.host().to_string();
        let core = ctx.core();
        let (data_dir, parent) = match core.upgrade() {
            Some(c) => (
                c.config.load().data_dir.clone(),
                ctx.host_ref().parent.clone().unwrap_or_default(),
            ),
            None => return Err(LoadError::Unavailable("server stopped".into())),
        };
        let svc = Arc::new(UploadService {
            prefix: format!("/upload/{host}/"),
            files: Files::new(
                core.clone(),
                &host,
                data_dir.join("http_upload").join(&host),
            ),
            base_url: ctx.option_string("http_upload_url", ""),
            limits,
            core,
            parent,
            rate: Throttle::new(Duration::from_secs(60)),
            secret: OnceCell::new(),
            host,
        });
        let name = ctx.option_string("http_upload_name", "HTTP File Upload");
        ctx.add_identity("store", "file", &name);
        ctx.add_feature(ns::HTTP_UPLOAD);
        ctx.add_feature(ns::DISCO_INFO);
        ctx.add_feature(ns::DISCO_ITEMS);
        ctx.add_extension(
            Element::new("x", ns::DATA)
                .attr("type", "result")
                .child(
                    Element::new("field", ns::DATA)
                        .attr("var", "FORM_TYPE")
                        .attr("type", "hidden")
                        .child(Element::new("value", ns::DATA).text(ns::HTTP_UPLOAD)),
                )
                .child(
                    Element::new("field", ns::DATA)
                        .attr("var", "max-file-size")
                        .child(
                            Element::new("value", ns::DATA)
                                .text(svc.limits.max_file_size.to_string()),
                        ),
                ),
        );
        let s = svc.clone();
        ctx.hook(
            &format!("iq-get/host/{}:request", ns::HTTP_UPLOAD),
            priority::HANDLER,
            handler(move |ev| {
                let s = s.clone();
                async move {
                    let reply = match s.request_slot(&ev).await {
                        Ok(r) | Err(r) => r,
                    };
                    ev.reply(reply).await;
                    Flow::Handled
                }
            }),
        );
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_INFO),
            priority::HANDLER,
            handler(|ev| async move {
                let Some(host) = ev.core.host(ev.to.domain()).cloned() else {
                    return Flow::Continue(ev);
                };
                if ev
                    .stanza
                    .first_child()
                    .and_then(|q| q.get_attr("node"))
                    .is_some()
                {
                    ev.reply_error(C::ItemNotFound.into()).await;
                    return Flow::Handled;
                }
                let info = super::disco::component_info(&host);
                ev.reply(stanza::iq_result(&ev.stanza, Some(info))).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-get/host/{}:query", ns::DISCO_ITEMS),
            priority::HANDLER,
            handler(|ev| async move {
                let items = Element::new("query", ns::DISCO_ITEMS);
                ev.reply(stanza::iq_result(&ev.stanza, Some(items))).await;
                Flow::Handled
            }),
        );
        let route_error =
            |e: crate::core::module_api::http::RouteError| LoadError::Unavailable(e.to_string());
        let s = svc.clone();
        ctx.add_http_stream_route(
            "PUT",
            &svc.prefix,
            http_stream_handler(move |req, body| serve::put(s.clone(), req, body)),
        )
        .map_err(route_error)?;
        for method in ["GET", "HEAD"] {
            let s = svc.clone();
            ctx.add_http_stream_route(
                method,
                &svc.prefix,
                http_stream_handler(move |req, _| serve::get(s.clone(), req)),
            )
            .map_err(route_error)?;
        }
        let s = svc.clone();
        ctx.add_http_stream_route(
            "OPTIONS",
            &svc.prefix,
            http_stream_handler(move |req, _| {
                let answer = serve::preflight(&s, &req);
                async move { answer }
            }),
        )
        .map_err(route_error)?;
        // Files go with their uploader's account: this runs for accounts deleted on the parent host.
        let s = svc.clone();
        ctx.on_user_deleted(move |_, jid| {
            let s = s.clone();
            async move {
                s.files.delete_owner(&jid.bare().to_string()).await?;
                Ok(())
            }
        });
        if let Some(keep) = svc.limits.expire_after {
            // Checked a few times per expiry period, at least hourly.
            let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            let s = svc.clone();
            ctx.add_timer(every, move || {
                let s = s.clone();
                async move {
                    let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
                    let before = crate::core::accounts::now().saturating_sub(keep);
                    match s.files.expire(before).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(host = %s.host, files = n, "expired uploads removed")
                        }
                        Err(e) => {
                            tracing::warn!(host = %s.host, error = %e, "cannot expire uploads")
                        }
                    }
                    Some(every)
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types_are_checked() {
        assert!(valid_file_name("cat picture.jpg"));
        assert!(valid_file_name("ünïcode.txt"));
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert_eq!(mime_type(" Text/Plain; charset=utf-8"), "text/plain");
        assert!(valid_slot_id(&format!("{:032x}", 7u128)));
        assert!(!valid_slot_id("../../etc/passwd"));
        assert!(!valid_slot_id(&"A".repeat(32)));
    }
}
