//! GET of a finished upload: streamed, with Range, ETag, a safe
//! Content-Type and an RFC 6266 Content-Disposition.

use super::range::{self, RangeOutcome};
use super::request::{has_body, request_info, upload_id};
use super::{code, ApiError, AppState};
use crate::model::UploadInfo;
use crate::protocol::Metadata;
use actix_web::http::header::{
    self, Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue,
    ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

/// Media types served as themselves; anything else is served as
/// `application/octet-stream` so an upload can never become active content
/// (HTML, SVG, JavaScript) on this origin.
const SAFE_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/pdf",
    "application/json",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/octet-stream",
];

/// The `Content-Type` for a `filetype` metadata value, and whether the
/// upload may be shown inline.
pub fn content_type(filetype: Option<&str>) -> (String, bool) {
    let fallback = ("application/octet-stream".to_owned(), false);
    let Some(essence) = filetype.map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) else {
        return fallback;
    };
    let Some((top, sub)) = essence.split_once('/') else {
        return fallback;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
    };
    if !token(top) || !token(sub) {
        return fallback;
    }
    let media = matches!(top, "image" | "video" | "audio") && essence != "image/svg+xml";
    if media || SAFE_TYPES.contains(&essence.as_str()) {
        let inline = media || matches!(essence.as_str(), "application/pdf" | "text/plain");
        (essence, inline)
    } else {
        fallback
    }
}

/// A file name fit for a header: no control characters, quotes, slashes.
fn clean_filename(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if matches!(c, '/' | '\\' | '"') {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect();
    let cleaned = cleaned.trim().to_owned();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then_some(cleaned)
}

/// `Content-Disposition` with an ASCII `filename` and, for non-ASCII names,
/// RFC 6266 `filename*=UTF-8''…`.
pub fn disposition(filename: Option<&str>, inline: bool) -> ContentDisposition {
    let mut parameters = Vec::new();
    if let Some(name) = filename.and_then(clean_filename) {
        let ascii: String = name
            .chars()
            .map(|c| if c.is_ascii() { c } else { '_' })
            .collect();
        parameters.push(DispositionParam::Filename(ascii));
        if !name.is_ascii() {
            parameters.push(DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: name.into_bytes(),
            }));
        }
    }
    ContentDisposition {
        disposition: if inline {
            DispositionType::Inline
        } else {
            DispositionType::Attachment
        },
        parameters,
    }
}

fn etag(info: &UploadInfo) -> String {
    format!("\"{}-{}\"", info.id, info.offset)
}

/// GET: the bytes of a finished upload.
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // A GET has no body. One that declares a body is refused before the
    // download starts: otherwise actix drains the unread body while the
    // response streams, and a framing error in it cuts the response short.
    if has_body(req.headers()) {
        return Err(ApiError::new(
            code::UNEXPECTED_BODY,
            "a GET request carries no body",
        ));
    }
    let id = upload_id(&req)?;
    let info = state.engine.finished(&id, &request_info(&req)).await?;
    let tag = etag(&info);
    let not_modified = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if not_modified {
        return Ok(HttpResponse::NotModified()
            .insert_header((ETAG, tag))
            .finish());
    }

    let metadata = info
        .metadata
        .as_deref()
        .and_then(|raw| Metadata::parse(raw).ok())
        .unwrap_or_default();
    let (ctype, inline) = content_type(metadata.get_str("filetype"));
    let filename = metadata
        .get_str("filename")
        .or_else(|| metadata.get_str("name"));

    let len = info.offset;
    let range_header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, end) = match range::evaluate(range_header, len) {
        RangeOutcome::Full => (StatusCode::OK, 0, len),
        RangeOutcome::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeOutcome::Unsatisfiable => {
            return Err(ApiError::new(
                code::RANGE_NOT_SATISFIABLE,
                format!("the upload has {len} bytes"),
            )
            .with_header("content-range", format!("bytes */{len}")));
        }
    };

    let mut res = HttpResponse::build(status);
    res.insert_header((CONTENT_TYPE, ctype))
        .insert_header(disposition(filename, inline))
        .insert_header((ETAG, tag))
        .insert_header((ACCEPT_RANGES, "bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        res.insert_header((CONTENT_RANGE, format!("bytes {start}-{}/{len}", end - 1)));
    }
    if end == start {
        return Ok(res.finish());
    }
    let stream = state
        .engine
        .data()
        .read(&info, start, end)
        .await
        .map_err(crate::upload::UploadError::from)?
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
    Ok(res.no_chunking(end - start).streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(Some("video/mp4")), ("video/mp4".into(), true));
        assert_eq!(content_type(Some("Image/PNG")), ("image/png".into(), true));
        assert_eq!(
            content_type(Some("application/zip")),
            ("application/zip".into(), false)
        );
        for unsafe_type in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "video/mp4\r\nX: y",
            "",
            "nonsense",
        ] {
            assert_eq!(
                content_type(Some(unsafe_type)).0,
                "application/octet-stream",
                "{unsafe_type:?}"
            );
        }
        assert_eq!(content_type(None).0, "application/octet-stream");
    }

    #[test]
    fn non_ascii_filenames_use_rfc6266() {
        let d = disposition(Some("vidéo 🎬.mp4"), true).to_string();
        assert_eq!(
            d,
            "inline; filename=\"vid_o _.mp4\"; filename*=UTF-8''vid%C3%A9o%20%F0%9F%8E%AC.mp4"
        );
        let d = disposition(Some("../evil\"\r\n.txt"), false).to_string();
        assert!(d
            .starts_with("attachment; filename=\"")
            .then_some(())
            .is_some());
        assert!(!d.contains('\r') && !d.contains('\n') && !d.contains('/'));
        assert_eq!(disposition(None, false).to_string(), "attachment");
    }
}
