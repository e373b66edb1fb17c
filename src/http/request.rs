//! Reading typed values out of requests: tus headers, upload ids, and the
//! absolute URL of an upload.

use super::{code, ApiError, HttpSettings};
use crate::hooks::RequestInfo;
use crate::protocol::{self, concat, headers, UploadId};
use actix_web::http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use actix_web::{HttpMessage, HttpRequest};

/// A single-value header as text. A header that is not visible ASCII, or
/// that appears more than once (a proxy or hook might read another copy
/// than this server), is a client error.
pub fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name);
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(duplicate(name));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| ApiError::new(code::INVALID_HEADER, format!("{name} is not valid ASCII")))
}

/// 400 for a single-value header sent more than once.
pub fn duplicate(name: &str) -> ApiError {
    ApiError::new(
        code::DUPLICATE_HEADER,
        format!("{name} may appear only once"),
    )
}

/// Headers of the tus and IETF protocols that carry one value each.
pub const SINGLE_VALUE_HEADERS: &[&str] = &[
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-concat",
    "upload-checksum",
    "upload-defer-length",
    "upload-complete",
    "upload-incomplete",
    "upload-draft-interop-version",
    "x-http-method-override",
    "content-type",
    "content-length",
    "authorization",
];

/// The first single-value header that appears more than once.
pub fn repeated_header(headers: &HeaderMap) -> Option<&'static str> {
    SINGLE_VALUE_HEADERS
        .iter()
        .copied()
        .find(|name| headers.get_all(*name).nth(1).is_some())
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
        uri: redact_token(&req.uri().to_string()),
        remote_addr: req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        header,
        auth: req.extensions().get::<Verified>().map(|v| v.0.clone()),
    }
}

/// The verified token of a request (inserted by the admission middleware).
#[derive(Debug, Clone)]
pub struct Verified(pub std::sync::Arc<crate::auth::Identity>);

/// `uri` with the value of an `access_token` query parameter replaced, so
/// a token never reaches logs or hook receivers through the URI.
pub fn redact_token(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k == "access_token" => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
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
        let (host, proto) = forwarded_host_proto(req.headers(), settings.forwarded);
        if let Some(host) = host.filter(|h| is_valid_host(h)) {
            let scheme = match proto {
                Some(p) if p.eq_ignore_ascii_case("https") => "https",
                _ => "http",
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

/// The host and scheme the proxy forwarded, from the one trusted scheme
/// only: a client's own header of the other scheme is never read. With
/// `X-Forwarded-*` the last value counts (what the proxy set or appended);
/// with `Forwarded` the last element's `host=` and `proto=`.
pub fn forwarded_host_proto(
    headers: &HeaderMap,
    scheme: crate::config::ForwardedHeaders,
) -> (Option<String>, Option<String>) {
    let last = |name| last_forwarded(headers, name);
    match scheme {
        crate::config::ForwardedHeaders::XForwarded => {
            (last("x-forwarded-host"), last("x-forwarded-proto"))
        }
        crate::config::ForwardedHeaders::Forwarded => match last("forwarded") {
            None => (None, None),
            Some(element) => (
                forwarded_param(&element, "host"),
                forwarded_param(&element, "proto"),
            ),
        },
    }
}

/// The last comma-separated entry of all `name` header lines (what the
/// proxy set or appended), unquoted; `None` when empty.
pub fn last_forwarded(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// The value of `key=` in one `Forwarded` element, unquoted.
pub fn forwarded_param(element: &str, key: &str) -> Option<String> {
    element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
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
                ApiError::new(
                    code::INVALID_CONCAT,
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
            forwarded: crate::config::ForwardedHeaders::XForwarded,
            cors_allow_origin: vec!["*".into()],
            max_body_size: None,
            max_metadata_size: crate::protocol::metadata::MAX_METADATA_LEN,
            demo_dir: None,
            download_redirect: None,
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
    fn access_tokens_are_redacted_from_uris() {
        assert_eq!(
            redact_token("/files/a?x=1&access_token=eyJ.s.t&y=2"),
            "/files/a?x=1&access_token=REDACTED&y=2"
        );
        assert_eq!(redact_token("/files/a"), "/files/a");
    }

    #[test]
    fn only_the_trusted_forwarded_scheme_is_read() {
        use crate::config::ForwardedHeaders as F;
        use actix_web::http::header::{HeaderName, HeaderValue};
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("forwarded", "host=evil.example;proto=http"),
            ("x-forwarded-host", "uploads.example"),
            ("x-forwarded-proto", "https"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        assert_eq!(
            forwarded_host_proto(&h, F::XForwarded),
            (Some("uploads.example".into()), Some("https".into()))
        );
        assert_eq!(
            forwarded_host_proto(&h, F::Forwarded),
            (Some("evil.example".into()), Some("http".into()))
        );
        h.remove("forwarded");
        assert_eq!(forwarded_host_proto(&h, F::Forwarded), (None, None));
    }

    #[test]
    fn repeated_single_value_headers_are_found() {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_static("upload-offset"),
            HeaderValue::from_static("0"),
        );
        h.append(
            HeaderName::from_static("accept"),
            HeaderValue::from_static("a"),
        );
        h.append(
            HeaderName::from_static("accept"),
            HeaderValue::from_static("b"),
        );
        assert_eq!(repeated_header(&h), None);
        h.append(
            HeaderName::from_static("upload-offset"),
            HeaderValue::from_static("5"),
        );
        assert_eq!(repeated_header(&h), Some("upload-offset"));
        assert!(header(&h, "upload-offset").is_err());
    }

    #[test]
    fn hosts() {
        assert!(is_valid_host("example.com:8080"));
        assert!(is_valid_host("[::1]:80"));
        assert!(!is_valid_host("evil.com/\r\nx"));
        assert!(!is_valid_host(""));
    }
}
