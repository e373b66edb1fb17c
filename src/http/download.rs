//! GET of a finished upload: streamed, with Range, ETag, a safe
//! Content-Type and an RFC 6266 Content-Disposition.

use super::range::{self, RangeOutcome};
use super::request::{has_body, request_info, upload_id};
use super::{code, ApiError, AppState};
use crate::model::UploadInfo;
use crate::protocol::representation::{content_disposition, served_type};
use crate::protocol::Metadata;
use actix_web::http::header::{
    self, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, LOCATION,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

/// `307 Temporary Redirect` to a presigned URL of the upload's object
/// (`--download-redirect`), or `None` when the data store makes no such
/// URLs. The client's Range and conditional headers go to the store with
/// the redirected request; the object carries the upload's headers
/// (docs/storage.md). Not cached: the URL expires.
async fn redirect(
    state: &AppState,
    info: &UploadInfo,
    ttl: std::time::Duration,
) -> Result<Option<HttpResponse>, ApiError> {
    let url = state
        .engine
        .data()
        .download_url(info, ttl)
        .await
        .map_err(crate::upload::UploadError::from)?;
    Ok(url.map(|url| {
        HttpResponse::TemporaryRedirect()
            .insert_header((LOCATION, url))
            .insert_header((CACHE_CONTROL, "no-store"))
            .finish()
    }))
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
    if let Some(ttl) = state.settings.download_redirect {
        if let Some(url) = redirect(&state, &info, ttl).await? {
            return Ok(url);
        }
    }
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
    // A type a pre-create hook set is filtered like `filetype`: on this
    // origin, only types that cannot become active content.
    let chosen = &info.representation;
    let (ctype, inline) = served_type(
        chosen
            .content_type
            .as_deref()
            .or_else(|| metadata.get_str("filetype")),
    );
    let filename = metadata
        .get_str("filename")
        .or_else(|| metadata.get_str("name"));
    let disposition = chosen
        .content_disposition
        .clone()
        .unwrap_or_else(|| content_disposition(filename, inline));

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
        .insert_header((CONTENT_DISPOSITION, disposition))
        .insert_header((ETAG, tag))
        .insert_header((ACCEPT_RANGES, "bytes"));
    if let Some(cache) = &chosen.cache_control {
        res.insert_header((CACHE_CONTROL, cache.as_str()));
    }
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
