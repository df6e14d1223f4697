//! The HTTP side of an upload service, under `/upload/<service>/<slot>/<file name>`: `PUT`
//! with the slot's token stores the file once; `GET` and `HEAD` serve it (with `Range`, its
//! type, a `Content-Disposition` naming it, and `nosniff`); `OPTIONS` answers CORS preflights
//! for the origins in `http.cors_origins`.

use std::sync::Arc;

use percent_encoding::{percent_decode_str, utf8_percent_encode};

use super::UploadService;
use super::files::{FileMeta, WriteError};
use super::slot::{self, SlotError};
use crate::core::module_api::http::{HttpBody, HttpRequest, HttpResponse};

/// The slot and file name a request path names, if it is well formed.
fn target<'a>(svc: &UploadService, path: &'a str) -> Option<(&'a str, String)> {
    let rest = path.strip_prefix(&svc.prefix)?;
    let (slot, name) = rest.split_once('/')?;
    if !super::valid_slot_id(slot) {
        return None;
    }
    let name = percent_decode_str(name).decode_utf8().ok()?.into_owned();
    super::valid_file_name(&name).then_some((slot, name))
}

fn text(status: u16, message: &str) -> HttpResponse {
    HttpResponse::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// Adds the CORS headers for the request's `Origin`, if it is allowed.
fn cors(svc: &UploadService, req: &HttpRequest, resp: HttpResponse) -> HttpResponse {
    let Some(origin) = req.header("origin") else {
        return resp;
    };
    let Some(core) = svc.core.upgrade() else {
        return resp;
    };
    let allowed = core.config.load().http.cors_origins.clone();
    let value = if allowed.iter().any(|o| o == "*") {
        "*".to_string()
    } else if allowed.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        origin.to_string()
    } else {
        return resp;
    };
    resp.header("access-control-allow-origin", value)
        .header("vary", "Origin")
        .header(
            "access-control-expose-headers",
            "Content-Length, Content-Range, Content-Disposition",
        )
}

/// `OPTIONS`: the CORS preflight of a browser's `PUT` or `GET`.
pub fn preflight(svc: &UploadService, req: &HttpRequest) -> HttpResponse {
    let resp = HttpResponse::new(204, "text/plain", Vec::new())
        .header("access-control-allow-methods", "GET, HEAD, PUT, OPTIONS")
        .header("access-control-allow-headers", "Content-Type")
        .header("access-control-max-age", "86400");
    cors(svc, req, resp)
}

/// `PUT`: stores the body as the slot's file if the token is valid and the slot unused.
pub async fn put(svc: Arc<UploadService>, req: HttpRequest, mut body: HttpBody) -> HttpResponse {
    let resp = put_inner(&svc, &req, &mut body).await;
    cors(&svc, &req, resp)
}

async fn put_inner(svc: &UploadService, req: &HttpRequest, body: &mut HttpBody) -> HttpResponse {
    let Some((slot_id, name)) = target(svc, &req.path) else {
        return text(404, "no such slot");
    };
    let token = req
        .query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_default();
    let Ok(secret) = svc.secret().await else {
        return text(500, "the upload service cannot read its secret");
    };
    let now = crate::core::accounts::now();
    let claims = match slot::verify(&secret, &svc.host, slot_id, &name, token, now) {
        Ok(c) => c,
        Err(SlotError::Expired) => return text(403, "the upload slot expired"),
        Err(SlotError::BadSignature) => return text(403, "invalid upload slot"),
    };
    if let Some(len) = req.header("content-length") {
        match len.trim().parse::<u64>() {
            Ok(n) if n > claims.size => return text(413, "larger than the slot allows"),
            Ok(n) if n == claims.size => {}
            _ => return text(400, "Content-Length does not match the slot"),
        }
    }
    let sent_type = req
        .header("content-type")
        .map(super::mime_type)
        .unwrap_or_default();
    if !claims.content_type.is_empty() && sent_type != claims.content_type {
        return text(400, "Content-Type does not match the slot");
    }
    match svc.files.usage(&claims.owner).await {
        Ok(used) if used.saturating_add(claims.size) > svc.limits.quota => {
            return text(413, "upload quota exceeded");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "upload: cannot read the quota");
            return text(500, "storage failure");
        }
    }
    let meta = FileMeta {
        owner: claims.owner,
        name,
        size: claims.size,
        content_type: claims.content_type,
        time: now,
    };
    match svc.files.store(slot_id, &meta, body).await {
        Ok(()) => text(201, "created"),
        Err(WriteError::Used) => text(409, "the slot was used already"),
        Err(WriteError::TooLarge) => text(413, "larger than the slot allows"),
        Err(WriteError::Incomplete) => text(400, "the body is shorter than the slot"),
        Err(WriteError::Body(_)) => text(400, "the request body failed"),
        Err(e) => {
            tracing::warn!(error = %e, "upload: cannot store a file");
            text(500, "storage failure")
        }
    }
}

/// `GET` and `HEAD`: the file, whole or the one range asked for.
pub async fn get(svc: Arc<UploadService>, req: HttpRequest) -> HttpResponse {
    let resp = get_inner(&svc, &req).await;
    cors(&svc, &req, resp)
}

async fn get_inner(svc: &UploadService, req: &HttpRequest) -> HttpResponse {
    let Some((slot_id, name)) = target(svc, &req.path) else {
        return text(404, "not found");
    };
    let meta = match svc.files.meta(slot_id).await {
        Ok(Some(m)) if m.name == name => m,
        Ok(_) => return text(404, "not found"),
        Err(e) => {
            tracing::warn!(error = %e, "upload: cannot read a file record");
            return text(500, "storage failure");
        }
    };
    let (status, offset, len) = match req.header("range").map(|r| range(r, meta.size)) {
        None | Some(Range::Ignored) => (200, 0, meta.size),
        Some(Range::Part(start, end)) => (206, start, end - start + 1),
        Some(Range::Unsatisfiable) => {
            return text(416, "range not satisfiable")
                .header("content-range", format!("bytes */{}", meta.size));
        }
    };
    let content_type = if meta.content_type.is_empty() {
        "application/octet-stream"
    } else {
        meta.content_type.as_str()
    };
    let mut resp = HttpResponse::new(status, content_type, Vec::new())
        .header("content-length", len.to_string())
        .header("accept-ranges", "bytes")
        .header("content-disposition", disposition(&meta))
        .header("x-content-type-options", "nosniff")
        .header(
            "content-security-policy",
            "default-src 'none'; sandbox; frame-ancestors 'none'",
        )
        .header("cache-control", "private, max-age=86400");
    if status == 206 {
        resp = resp.header(
            "content-range",
            format!("bytes {offset}-{}/{}", offset + len - 1, meta.size),
        );
    }
    if req.method.eq_ignore_ascii_case("GET") && len > 0 {
        resp = resp.file(svc.files.path(slot_id), offset, len);
    }
    resp
}

/// `inline` for media a browser shows safely, `attachment` otherwise; always with the name.
fn disposition(meta: &FileMeta) -> String {
    let inline = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| meta.content_type.starts_with(p))
        && meta.content_type != "image/svg+xml";
    let kind = if inline { "inline" } else { "attachment" };
    let ascii: String = meta
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(&meta.name, super::NAME);
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Not a single byte range we serve: send the whole file (RFC 9110 allows ignoring it).
    Ignored,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing of the file is in the range.
    Unsatisfiable,
}

fn range(header: &str, size: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Range::Ignored,
        // The last `b` bytes.
        (true, false) => match parse(b) {
            Some(0) => return Range::Unsatisfiable,
            Some(n) if size > 0 => (size.saturating_sub(n), size - 1),
            Some(_) => return Range::Unsatisfiable,
            None => return Range::Ignored,
        },
        (false, _) => {
            let Some(start) = parse(a) else {
                return Range::Ignored;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match parse(b) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return Range::Ignored,
                }
            };
            (start, end)
        }
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-4", 10), Range::Part(0, 4));
        assert_eq!(range("bytes=5-", 10), Range::Part(5, 9));
        assert_eq!(range("bytes=-3", 10), Range::Part(7, 9));
        assert_eq!(range("bytes=-30", 10), Range::Part(0, 9));
        assert_eq!(range("bytes=8-100", 10), Range::Part(8, 9));
        assert_eq!(range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), Range::Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(range("bytes=5-2", 10), Range::Ignored);
        assert_eq!(range("bytes=0-1,3-4", 10), Range::Ignored);
        assert_eq!(range("items=0-1", 10), Range::Ignored);
        assert_eq!(range("bytes=x-1", 10), Range::Ignored);
        assert_eq!(
            range("bytes=18446744073709551615-", 10),
            Range::Unsatisfiable
        );
    }

    #[test]
    fn disposition_names_the_file_safely() {
        let meta = |name: &str, t: &str| FileMeta {
            owner: "a@b".into(),
            name: name.into(),
            size: 1,
            content_type: t.into(),
            time: 0,
        };
        assert_eq!(
            disposition(&meta("cat.jpg", "image/jpeg")),
            "inline; filename=\"cat.jpg\"; filename*=UTF-8''cat.jpg"
        );
        let d = disposition(&meta("a \"b\".svg", "image/svg+xml"));
        assert!(d.starts_with("attachment; filename=\"a__b_.svg\""), "{d}");
        assert!(disposition(&meta("x.html", "text/html")).starts_with("attachment"));
    }
}
