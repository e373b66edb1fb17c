//! `--max-body-size` on a request body as it streams: the bytes within
//! the limit flow on, then the stream fails; and the answer for a body cut
//! there or broken in its chunked framing.

use super::{code, ApiError};
use crate::upload::UploadError;
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub(super) fn body_too_large(max: u64) -> ApiError {
    ApiError::new(
        code::REQUEST_BODY_TOO_LARGE,
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
            _ if self.malformed.load(Ordering::Relaxed) => ApiError::new(
                code::MALFORMED_BODY,
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
