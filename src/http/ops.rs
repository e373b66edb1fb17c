//! Operations endpoints and request plumbing: `/healthz`, `/readyz`,
//! `/metrics`, the request-id / access-log / metrics middleware, and the
//! limits on requests that stream into uploads (body size, concurrency).

use super::{ApiError, AppState};
use crate::config::ForwardedHeaders;
use crate::meta::MetaError;
use crate::telemetry;
use crate::upload::UploadError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::Stream;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Paths of the operations endpoints (outside the upload base path and
/// routed before it, so a base path of `/` keeps working).
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long `/readyz` waits for the stores.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// `GET /readyz`: both stores answer (503 with the failing store's error
/// code otherwise, and while shutting down).
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let unready =
        |code, message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
    if state.engine.is_stopping() {
        return Err(unready(
            "ERR_SHUTTING_DOWN",
            "server is shutting down".into(),
        ));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.engine.ready()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ready\n")),
        Ok(Err(
            e @ (UploadError::BelowReserve { .. } | UploadError::Meta(MetaError::NoSpace(_))),
        )) => Err(unready("ERR_INSUFFICIENT_STORAGE", e.to_string())),
        Ok(Err(UploadError::Meta(e))) => {
            Err(unready(super::error::META_UNAVAILABLE, e.to_string()))
        }
        Ok(Err(e)) => Err(unready("ERR_DATA_STORE_UNAVAILABLE", e.to_string())),
        Err(_) => Err(unready(
            "ERR_READINESS_TIMEOUT",
            format!("stores did not answer within {}s", READY_TIMEOUT.as_secs()),
        )),
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// A request streaming into an upload; counted in
/// `tusker_uploads_in_progress` and holding a concurrency slot (global and
/// per client) until dropped.
pub struct UploadSlot {
    _client: Option<ClientSlot>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Requests streaming into uploads per client address, each at most `max`.
/// Only clients with a request running have an entry, so the map stays as
/// small as the number of requests in flight.
#[derive(Debug)]
pub struct ClientSlots {
    max: usize,
    running: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One request's place in [`ClientSlots`]; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: IpAddr,
}

impl ClientSlots {
    /// At most `max` requests per client (at least one).
    pub fn new(max: usize) -> Self {
        ClientSlots {
            max: max.max(1),
            running: Default::default(),
        }
    }

    /// Takes a slot for `client`, or `None` when it already has `max`.
    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(client).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: self.clone(),
            client,
        })
    }

    /// Clients with at least one request running.
    pub fn clients(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.client);
            }
        }
    }
}

/// The client's address: the peer, or behind a proxy the address the
/// proxy saw. That is the *last* `Forwarded: for=` / `X-Forwarded-For`
/// entry: a proxy appends the peer it saw, so earlier entries are whatever
/// the client chose to send and cannot be trusted.
pub fn client_ip(req: &HttpRequest, settings: &super::HttpSettings) -> Option<IpAddr> {
    client_ip_of(req.headers(), req.peer_addr(), settings)
}

/// [`client_ip`] from the parts a middleware has at hand.
pub fn client_ip_of(
    headers: &actix_web::http::header::HeaderMap,
    peer: Option<std::net::SocketAddr>,
    settings: &super::HttpSettings,
) -> Option<IpAddr> {
    if settings.behind_proxy {
        if let Some(ip) = forwarded_for(headers, settings.forwarded) {
            return Some(ip);
        }
    }
    peer.map(|a| a.ip())
}

/// The last forwarded client address of the trusted scheme only: a
/// client's own header of the other scheme is ignored (several header
/// lines count as one list).
fn forwarded_for(
    headers: &actix_web::http::header::HeaderMap,
    scheme: ForwardedHeaders,
) -> Option<IpAddr> {
    use super::request::{forwarded_param, last_forwarded};
    match scheme {
        ForwardedHeaders::Forwarded => last_forwarded(headers, "forwarded")
            .and_then(|element| forwarded_param(&element, "for"))
            .and_then(|v| parse_ip(&v)),
        ForwardedHeaders::XForwarded => {
            last_forwarded(headers, "x-forwarded-for").and_then(|v| parse_ip(&v))
        }
    }
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

/// `1.2.3.4`, `1.2.3.4:5`, `::1`, `[::1]` or `[::1]:5`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::UPLOADS_IN_PROGRESS).decrement(1.0);
    }
}

/// Admits a request that carries upload bytes, before its body is read:
/// 503 while shutting down or when `--max-concurrent-uploads` are running,
/// 429 when its client already runs `--max-uploads-per-client`, 413 when
/// its `Content-Length` exceeds `--max-body-size`.
pub fn begin_upload(state: &AppState, req: &HttpRequest) -> Result<UploadSlot, ApiError> {
    if state.engine.is_stopping() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR_SHUTTING_DOWN",
            "server is shutting down; retry later",
        )
        .with_header("retry-after", 5));
    }
    if let Some(max) = state.settings.max_body_size {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(body_too_large(max));
        }
    }
    let client = match &state.client_slots {
        None => None,
        Some(slots) => match client_ip(req, &state.settings) {
            // No address (not a TCP peer): nothing to count it under.
            None => None,
            Some(ip) => Some(slots.acquire(ip).ok_or_else(|| {
                tracing::debug!(client = %ip, "per-client upload limit reached");
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ERR_TOO_MANY_UPLOADS_FROM_CLIENT",
                    "too many uploads in progress from this client; retry later",
                )
                .with_header("retry-after", 2)
            })?),
        },
    };
    let permit = match &state.upload_slots {
        None => None,
        Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_TOO_MANY_UPLOADS",
                "too many uploads in progress; retry later",
            )
            .with_header("retry-after", 2)
        })?),
    };
    metrics::gauge!(telemetry::UPLOADS_IN_PROGRESS).increment(1.0);
    Ok(UploadSlot {
        _client: client,
        _permit: permit,
    })
}

fn body_too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "ERR_REQUEST_BODY_TOO_LARGE",
        format!("a request body may carry at most {max} bytes; send smaller chunks"),
    )
}

/// Why a limited body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Payload(#[from] actix_web::error::PayloadError),
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
}

/// A request body cut at `--max-body-size`: the bytes within the limit flow
/// on, then the stream fails (so the engine keeps what arrived, as for any
/// broken body).
pub struct LimitedBody<S> {
    inner: S,
    limit: Option<u64>,
    seen: u64,
    tripped: Arc<AtomicBool>,
    malformed: Arc<AtomicBool>,
    done: bool,
}

/// Tells whether a [`LimitedBody`] hit its limit or ended in malformed
/// framing.
#[derive(Clone)]
pub struct BodyLimit {
    tripped: Arc<AtomicBool>,
    malformed: Arc<AtomicBool>,
    limit: Option<u64>,
}

impl BodyLimit {
    /// Whether the body was cut at the limit.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// Maps an append error: a body cut at the limit is a 413; a body whose
    /// chunked framing is malformed is the client's fault and not transient,
    /// so 400 rather than the 503 of a broken connection.
    pub fn error(&self, e: UploadError) -> ApiError {
        match (self.tripped.load(Ordering::Relaxed), self.limit) {
            (true, Some(max)) => body_too_large(max),
            _ if self.malformed.load(Ordering::Relaxed) => ApiError::bad_request(
                "ERR_MALFORMED_BODY",
                "the request body's chunked framing is malformed",
            ),
            _ => e.into(),
        }
    }
}

/// Wraps a request body in the `--max-body-size` limit.
pub fn limit_body<S>(inner: S, limit: Option<u64>) -> (LimitedBody<S>, BodyLimit) {
    let tripped = Arc::new(AtomicBool::new(false));
    let malformed = Arc::new(AtomicBool::new(false));
    (
        LimitedBody {
            inner,
            limit,
            seen: 0,
            tripped: tripped.clone(),
            malformed: malformed.clone(),
            done: false,
        },
        BodyLimit {
            tripped,
            malformed,
            limit,
        },
    )
}

impl<S> Stream for LimitedBody<S>
where
    S: Stream<Item = Result<Bytes, actix_web::error::PayloadError>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.tripped.load(Ordering::Relaxed) {
            self.done = true;
            return Poll::Ready(self.limit.map(|max| Err(BodyError::TooLarge(max))));
        }
        let chunk = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                // actix reports a request that stops parsing inside its body
                // (bad chunk size, bare LF, …) as a corrupted encoding.
                if matches!(e, actix_web::error::PayloadError::EncodingCorrupted) {
                    self.malformed.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(Some(Ok(chunk))) => chunk,
        };
        let Some(max) = self.limit else {
            return Poll::Ready(Some(Ok(chunk)));
        };
        let room = max - self.seen;
        if chunk.len() as u64 <= room {
            self.seen += chunk.len() as u64;
            return Poll::Ready(Some(Ok(chunk)));
        }
        // The body goes past the limit: hand on what fits, fail next time.
        self.tripped.store(true, Ordering::Relaxed);
        self.seen = max;
        if room == 0 {
            self.done = true;
            return Poll::Ready(Some(Err(BodyError::TooLarge(max))));
        }
        Poll::Ready(Some(Ok(chunk.slice(..room as usize))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

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

    fn chunks(
        sizes: &[usize],
    ) -> impl Stream<Item = Result<Bytes, actix_web::error::PayloadError>> + Unpin {
        futures_util::stream::iter(
            sizes
                .iter()
                .map(|&n| Ok(Bytes::from(vec![7u8; n])))
                .collect::<Vec<_>>(),
        )
    }

    async fn collect<S: Stream<Item = Result<Bytes, BodyError>> + Unpin>(s: S) -> (u64, bool) {
        let items: Vec<_> = s.collect().await;
        let bytes = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(|b| b.len() as u64)
            .sum();
        let failed = items.last().is_some_and(|i| i.is_err());
        (bytes, failed)
    }

    #[test]
    fn client_slots_cap_each_client_and_forget_idle_ones() {
        let slots = Arc::new(ClientSlots::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let a1 = slots.acquire(a).unwrap();
        let a2 = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).is_none());
        let b1 = slots.acquire(b).unwrap();
        assert_eq!(slots.clients(), 2);
        drop(a1);
        let a3 = slots.acquire(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(slots.clients(), 0);
    }

    #[test]
    fn the_last_forwarded_entry_is_the_client() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let map = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            m
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        use ForwardedHeaders::{Forwarded as F, XForwarded as X};
        for (scheme, headers, want) in [
            (X, map(&[("x-forwarded-for", "10.0.0.1")]), ip("10.0.0.1")),
            (
                X,
                map(&[("x-forwarded-for", "6.6.6.6, 10.0.0.1")]),
                ip("10.0.0.1"),
            ),
            (
                X,
                map(&[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "10.0.0.1"),
                ]),
                ip("10.0.0.1"),
            ),
            (
                F,
                map(&[(
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8::1]:80\";proto=https",
                )]),
                ip("2001:db8::1"),
            ),
            // A client's own header of the untrusted scheme is ignored.
            (
                X,
                map(&[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "10.0.0.3"),
                ]),
                ip("10.0.0.3"),
            ),
            (X, map(&[("forwarded", "for=6.6.6.6")]), None),
            (F, map(&[("x-forwarded-for", "6.6.6.6")]), None),
            (F, map(&[("forwarded", "proto=https")]), None),
            (X, map(&[("x-forwarded-for", "10.0.0.1, unknown")]), None),
            (X, map(&[]), None),
        ] {
            assert_eq!(forwarded_for(&headers, scheme), want, "{headers:?}");
        }
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

    #[test]
    fn forwarded_addresses() {
        for (text, want) in [
            ("10.1.2.3", Some("10.1.2.3")),
            ("10.1.2.3:4567", Some("10.1.2.3")),
            ("::1", Some("::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:80", Some("2001:db8::1")),
            ("\"[::1]:80\"", Some("::1")),
            ("unknown", None),
            ("_hidden", None),
        ] {
            let want: Option<IpAddr> = want.map(|w| w.parse().unwrap());
            assert_eq!(parse_ip(text), want, "{text}");
        }
    }

    #[actix_rt::test]
    async fn body_limit_cuts_and_fails() {
        let (body, limit) = limit_body(chunks(&[4, 4, 4]), Some(10));
        assert_eq!(collect(body).await, (10, true));
        assert!(limit.tripped.load(Ordering::Relaxed));

        let (body, limit) = limit_body(chunks(&[5, 5]), Some(10));
        assert_eq!(collect(body).await, (10, false));
        assert!(!limit.tripped.load(Ordering::Relaxed));

        let (body, _) = limit_body(chunks(&[5, 5, 1]), Some(10));
        assert_eq!(collect(body).await, (10, true));

        let (body, _) = limit_body(chunks(&[64; 100]), None);
        assert_eq!(collect(body).await, (6400, false));
    }

    #[actix_rt::test]
    async fn corrupted_framing_is_a_client_error() {
        use actix_web::error::PayloadError;
        let broken = |e: PayloadError| {
            futures_util::stream::iter(vec![Ok(Bytes::from_static(b"abc")), Err(e)])
        };
        let (body, limit) = limit_body(broken(PayloadError::EncodingCorrupted), None);
        assert_eq!(collect(body).await, (3, true));
        let err = limit.error(UploadError::Body("corrupted".into()));
        assert_eq!((err.status.as_u16(), err.code), (400, "ERR_MALFORMED_BODY"));

        // A body cut off by the network stays a transient 503.
        let (body, limit) = limit_body(broken(PayloadError::Incomplete(None)), None);
        assert_eq!(collect(body).await, (3, true));
        let err = limit.error(UploadError::Body("cut".into()));
        assert_eq!(err.status.as_u16(), 503);
    }
}
