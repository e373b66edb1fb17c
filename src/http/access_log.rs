//! The outermost middleware: a request id for every request (echoed in
//! `X-Request-ID`), a `request` span carrying it, one access-log line and
//! the request counter.

use super::health::{HEALTHZ, READYZ};
use super::prometheus::METRICS;
use crate::telemetry;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpResponse};
use std::future::Future;
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of a request, also found in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A client's `X-Request-ID` when it is 1 to 128 visible ASCII characters;
/// otherwise a new UUID.
pub fn request_id(header: Option<&HeaderValue>) -> String {
    header
        .map(HeaderValue::as_bytes)
        .filter(|b| (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c)))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_ops_path(path: &str) -> bool {
    matches!(path, HEALTHZ | READYZ | METRICS)
}

/// Outermost middleware: gives every request an id (echoed in
/// `X-Request-ID`), runs it inside a `request` span carrying that id, logs
/// one access line and counts the response in `tusker_http_requests_total`.
pub fn observe<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let id = request_id(req.headers().get(&REQUEST_ID));
    req.extensions_mut().insert(RequestId(id.clone()));
    let quiet = is_ops_path(req.path());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
    );
    let sent_method = telemetry::method_label(req.method());
    let started = Instant::now();
    let call = srv.call(req);
    async move {
        let outcome = call.instrument(span.clone()).await;
        let (status, method) = match &outcome {
            // The method after `X-HTTP-Method-Override`.
            Ok(res) => (
                res.status(),
                telemetry::method_label(res.request().method()),
            ),
            Err(e) => (e.as_response_error().status_code(), sent_method),
        };
        let status = status.as_u16();
        metrics::counter!(telemetry::HTTP_REQUESTS, "method" => method, "status" => status.to_string())
            .increment(1);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        span.in_scope(|| {
            if quiet {
                tracing::debug!(status, elapsed_ms, "request done");
            } else {
                tracing::info!(status, elapsed_ms, "request done");
            }
        });
        match outcome {
            Ok(mut res) => {
                if let Ok(v) = HeaderValue::from_str(&id) {
                    res.headers_mut().insert(REQUEST_ID, v);
                }
                Ok(res.map_into_boxed_body())
            }
            // Errors of middlewares (handlers answer their own errors)
            // become responses later; this one will carry the id too.
            Err(inner) => Err(WithRequestId { inner, id }.into()),
        }
    }
}

/// A middleware error whose response carries `X-Request-ID`.
#[derive(Debug)]
struct WithRequestId {
    inner: actix_web::Error,
    id: String,
}

impl std::fmt::Display for WithRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl actix_web::ResponseError for WithRequestId {
    fn status_code(&self) -> StatusCode {
        self.inner.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut res = self.inner.error_response();
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let given = HeaderValue::from_static("abc-123_X");
        assert_eq!(request_id(Some(&given)), "abc-123_X");
        for bad in ["", "has space", &"x".repeat(129)] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
        let non_ascii = HeaderValue::from_bytes("é".as_bytes()).unwrap();
        assert!(uuid::Uuid::parse_str(&request_id(Some(&non_ascii))).is_ok());
        assert_eq!(
            request_id(Some(&HeaderValue::from_str(&"y".repeat(128)).unwrap())).len(),
            128
        );
        assert!(uuid::Uuid::parse_str(&request_id(None)).is_ok());
    }
}
