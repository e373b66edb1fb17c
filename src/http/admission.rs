//! Admission of every request before routing: `X-HTTP-Method-Override`,
//! repeated single-value headers, the bearer token (JWT authorization) and
//! the creation rate per client. A refused request reaches no handler, so
//! it reveals and changes nothing.

use super::forwarded::client_ip_of;
use super::health::{HEALTHZ, READYZ};
use super::prometheus::METRICS;
use super::request::{duplicate, repeated_header, Verified};
use super::{code, ApiError, AppState};
use actix_web::dev::ServiceRequest;
use actix_web::http::Method;
use actix_web::{web, HttpMessage};
use std::net::IpAddr;
use std::sync::Arc;

/// Runs every check; `Err` is answered instead of routing the request.
pub fn admit(req: &mut ServiceRequest) -> Result<(), ApiError> {
    if req.method() == Method::OPTIONS {
        // CORS preflights and capability discovery carry no token.
        return Ok(());
    }
    if let Some(name) = repeated_header(req.headers()) {
        return Err(duplicate(name));
    }
    method_override(req);
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(());
    };
    let path = req.path().to_owned();
    if !is_upload_path(&state.settings.base_path, &path) {
        return Ok(());
    }
    if let Some(verifier) = &state.auth {
        let token = bearer_token(req)?;
        let identity = verifier
            .verify(&token, crate::model::now_secs())
            .map_err(|e| {
                tracing::info!(reason = %e, "bearer token refused");
                ApiError::unauthorized(Some(("invalid_token", &e.to_string())))
            })?;
        req.extensions_mut().insert(Verified(Arc::new(identity)));
    }
    if let Some(limit) = &state.creation_limit {
        if is_creation(&state.settings.base_path, req) {
            let client = client_ip_of(req.headers(), req.peer_addr(), &state.settings);
            if let Some(ip) = client {
                limit.admit(ip, crate::model::now_secs()).map_err(|wait| {
                    tracing::info!(client = %ip, "creation rate limit reached");
                    ApiError::new(
                        code::TOO_MANY_CREATIONS,
                        "too many uploads created from this client; retry later",
                    )
                    .with_header("retry-after", wait)
                })?;
            }
        }
    }
    Ok(())
}

/// `X-HTTP-Method-Override` replaces the method, as tus 1.0 requires (for
/// clients and proxies that cannot send PATCH or DELETE).
fn method_override(req: &mut ServiceRequest) {
    let Some(method) = req
        .headers()
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok())
    else {
        return;
    };
    req.head_mut().method = method;
}

/// The upload collection and the uploads under it; the operations
/// endpoints and the demo page (routed first) are not.
fn is_upload_path(base: &str, path: &str) -> bool {
    let ops = matches!(path, HEALTHZ | READYZ | METRICS) || path.starts_with(super::demo::PREFIX);
    !ops && (path.starts_with(base) || path == base.trim_end_matches('/'))
}

/// A request on the collection that creates an upload (tus POST; IETF
/// POST, PUT or PATCH).
fn is_creation(base: &str, req: &ServiceRequest) -> bool {
    let path = req.path();
    let collection = path == base || path == base.trim_end_matches('/');
    let ietf = req.headers().contains_key(super::interim::IETF_HEADER);
    collection
        && (req.method() == Method::POST
            || (ietf && (req.method() == Method::PUT || req.method() == Method::PATCH)))
}

/// The bearer token of `Authorization`, or for GET and HEAD of the
/// `access_token` query parameter (RFC 6750 §2.3), never both.
fn bearer_token(req: &ServiceRequest) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default().trim().to_owned());
    let query = match *req.method() {
        Method::GET | Method::HEAD => query_token(req.query_string()),
        _ => None,
    };
    match (header, query) {
        (Some(_), Some(_)) => Err(ApiError::unauthorized(Some((
            "invalid_request",
            "send the token in one place only",
        )))),
        (Some(h), None) => match h.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(token.trim().to_owned()).and_then(|t| {
                    if t.is_empty() {
                        Err(ApiError::unauthorized(Some((
                            "invalid_token",
                            "empty token",
                        ))))
                    } else {
                        Ok(t)
                    }
                })
            }
            _ => Err(ApiError::unauthorized(None)),
        },
        (None, Some(q)) => Ok(q),
        (None, None) => Err(ApiError::unauthorized(None)),
    }
}

fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "access_token")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|v| !v.is_empty())
}

/// Uploads created per client address in the current minute
/// (`--max-creations-per-client`). Windows are fixed minutes; the map is
/// emptied when a new minute starts, so it holds at most the clients of
/// one minute.
#[derive(Debug)]
pub struct CreationLimit {
    per_minute: u32,
    window: std::sync::Mutex<(u64, std::collections::HashMap<IpAddr, u32>)>,
}

impl CreationLimit {
    pub fn new(per_minute: u32) -> Self {
        CreationLimit {
            per_minute: per_minute.max(1),
            window: Default::default(),
        }
    }

    /// Counts one creation by `client` at unix second `now`; `Err` with the
    /// seconds until the next minute when the client is over its limit.
    pub fn admit(&self, client: IpAddr, now: u64) -> Result<(), u64> {
        let minute = now / 60;
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.0 != minute {
            *window = (minute, Default::default());
        }
        let n = window.1.entry(client).or_insert(0);
        if *n >= self.per_minute {
            return Err(60 - now % 60);
        }
        *n += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths() {
        assert!(is_upload_path("/files/", "/files/abc"));
        assert!(is_upload_path("/files/", "/files"));
        assert!(!is_upload_path("/files/", "/healthz"));
        assert!(is_upload_path("/", "/abc"));
        assert!(!is_upload_path("/", "/metrics"));
    }

    #[test]
    fn query_tokens() {
        assert_eq!(query_token("a=1&access_token=x.y.z"), Some("x.y.z".into()));
        assert_eq!(query_token("access_token="), None);
        assert_eq!(query_token(""), None);
    }

    #[test]
    fn creations_are_limited_per_client_and_minute() {
        let limit = CreationLimit::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        assert_eq!(limit.admit(a, 600), Ok(()));
        assert_eq!(limit.admit(a, 610), Ok(()));
        assert_eq!(limit.admit(a, 620), Err(40));
        assert_eq!(limit.admit(b, 620), Ok(()));
        // A new minute starts over.
        assert_eq!(limit.admit(a, 660), Ok(()));
    }
}
