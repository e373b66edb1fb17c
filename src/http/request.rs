//! Reading typed values out of requests: tus headers, upload ids, and the
//! absolute URL of an upload.

use super::{ApiError, HttpSettings};
use crate::hooks::RequestInfo;
use crate::protocol::{self, concat, headers, UploadId};
use actix_web::http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use actix_web::HttpRequest;

/// A header as text; a header that is not visible ASCII is a client error.
pub fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request("ERR_INVALID_HEADER", format!("{name} is not valid ASCII"))
        }),
    }
}

/// What hooks learn about the request (`Event.HTTPRequest`).
pub fn request_info(req: &HttpRequest) -> RequestInfo {
    let mut header: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (name, value) in req.headers() {
        if let Ok(v) = value.to_str() {
            header
                .entry(name.as_str().to_owned())
                .or_default()
                .push(v.to_owned());
        }
    }
    RequestInfo {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        remote_addr: req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        header,
    }
}

/// Requires `Tus-Resumable: 1.0.0` (412 otherwise).
pub fn require_tus(req: &HttpRequest) -> Result<(), ApiError> {
    match header(req.headers(), "tus-resumable") {
        Ok(Some(v)) if v.trim() == protocol::TUS_VERSION => Ok(()),
        _ => Err(ApiError::unsupported_version()),
    }
}

/// Parses an integer header such as `Upload-Offset`.
pub fn u64_header(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, ApiError> {
    header(headers, name)?
        .map(|v| headers::parse_u64(name, v))
        .transpose()
        .map_err(Into::into)
}

/// `Content-Type` is `application/offset+octet-stream`.
pub fn has_offset_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(headers::is_offset_octet_stream)
}

/// `Content-Length`, if the request declares one.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    header(headers, "content-length")?
        .map(|v| headers::parse_u64("Content-Length", v))
        .transpose()
        .map_err(Into::into)
}

/// Whether the request may carry a body (non-zero length or chunked).
pub fn has_body(headers: &HeaderMap) -> bool {
    let chunked = headers.contains_key(TRANSFER_ENCODING);
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    chunked || length > 0
}

/// The upload id of the request path (404 when malformed).
pub fn upload_id(req: &HttpRequest) -> Result<UploadId, ApiError> {
    let raw = req.match_info().get("id").unwrap_or_default();
    UploadId::parse(raw).map_err(|_| ApiError::not_found())
}

/// Path of an upload, e.g. `/files/<id>`.
pub fn upload_path(settings: &HttpSettings, id: &UploadId) -> String {
    format!("{}{}", settings.base_path, id)
}

/// Absolute URL of an upload. Behind a proxy the forwarded scheme and host
/// are used; otherwise the `Host` header (when well-formed).
pub fn upload_url(req: &HttpRequest, settings: &HttpSettings, id: &UploadId) -> String {
    let path = upload_path(settings, id);
    if settings.behind_proxy {
        let info = req.connection_info();
        let host = info.host();
        if is_valid_host(host) {
            let scheme = if info.scheme() == "https" {
                "https"
            } else {
                "http"
            };
            return format!("{scheme}://{host}{path}");
        }
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_valid_host(h))
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| req.app_config().host().to_owned());
    let scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}{path}")
}

/// A host[:port] that is safe to put into a `Location` header.
fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Resolves the URLs of a final upload's `Upload-Concat` to upload ids:
/// each must be an upload URL of this server's base path.
pub fn concat_ids(settings: &HttpSettings, urls: &[String]) -> Result<Vec<UploadId>, ApiError> {
    urls.iter()
        .map(|url| {
            let path = concat::url_path(url)?;
            let invalid = || {
                ApiError::bad_request(
                    "ERR_INVALID_CONCAT",
                    format!("{url:?} is not an upload URL of this server"),
                )
            };
            let id = path
                .strip_prefix(settings.base_path.as_str())
                .ok_or_else(invalid)?;
            UploadId::parse(id).map_err(|_| invalid())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HttpSettings {
        HttpSettings {
            base_path: "/files/".into(),
            behind_proxy: false,
            cors_allow_origin: vec!["*".into()],
            max_body_size: None,
            max_metadata_size: crate::protocol::metadata::MAX_METADATA_LEN,
            demo_dir: None,
        }
    }

    #[test]
    fn concat_urls_resolve_to_ids() {
        let ids = concat_ids(
            &settings(),
            &["http://h:1/files/abc".into(), "/files/d-e_f".into()],
        )
        .unwrap();
        assert_eq!(ids[0].as_str(), "abc");
        assert_eq!(ids[1].as_str(), "d-e_f");
        for bad in [
            "/other/abc",
            "/files/",
            "/files/a/b",
            "/files/%2e%2e",
            "http://h/files/../x",
        ] {
            assert!(concat_ids(&settings(), &[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert!(is_valid_host("example.com:8080"));
        assert!(is_valid_host("[::1]:80"));
        assert!(!is_valid_host("evil.com/\r\nx"));
        assert!(!is_valid_host(""));
    }
}
