//! Interim (1xx) responses on HTTP/1.1 connections, which actix-web has no API
//! for: `104 Upload Resumption Supported` must reach the client while the
//! creation request's body is still being sent.
//!
//! # How
//!
//! Every accepted connection is wrapped in an [`InterimIo`] before actix-http
//! sees it. The wrapper and a per-connection [`Interim`] handle (stored as
//! actix connection data, so handlers reach it with `HttpRequest::conn_data`)
//! share the socket. A handler hands complete interim responses to the
//! handle; the wrapper writes them at a point where they cannot interleave
//! with bytes of actix-http's own:
//!
//! * actix-http's h1 dispatcher buffers what it writes and drains that buffer
//!   fully before it calls `poll_flush` on the I/O object; it calls
//!   `poll_flush` on every turn of its loop. So when `InterimIo::poll_flush`
//!   runs, every byte actix produced so far is in the socket, and the final
//!   response of the current request cannot have started (its handler has not
//!   returned: it is waiting for the interim response to be written). That
//!   is the *flush point*: staged interim bytes are written there.
//! * `Expect: 100-continue`: the dispatcher queues `100 Continue` before it
//!   calls the service. [`expect`] lets it queue the 100 alone, the wrapper
//!   drops it, and [`continue_on_read`] sends it when the handler first
//!   reads the body: after validation and the blocking hooks, so a refused
//!   request gets its final answer without the client sending the body.
//!   Before that, at a flush point the 100 would already be out.
//!   [`expect`] is installed as actix-http's expect service: for an IETF
//!   request it first waits for a flush point (the dispatcher's buffer is
//!   empty then) and marks the connection; the dispatcher then queues only the
//!   100 and polls the handler at once. A handler that sends its interim
//!   response before its first `.await` sees the mark and writes ahead of the
//!   100 (both are complete messages, so the order is the only change).
//! * Pipelined requests: a previous response may still sit in the dispatcher's
//!   buffer when the next handler starts; staging until the flush point keeps
//!   the interim response behind it.
//!
//! Handlers must send interim responses before they read the request body and
//! before they return, and wait for [`Interim::send`] to finish.

use bytes::{Buf, BytesMut};
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Request header that marks a request of the IETF resumable upload draft.
pub const IETF_HEADER: &str = "upload-draft-interop-version";

#[derive(Default)]
struct State {
    /// Interim bytes to write before any further byte of actix-http.
    ready: BytesMut,
    /// Interim bytes waiting for the next flush point.
    staged: BytesMut,
    /// Set by [`expect`] at a flush point; cleared by actix's next write.
    ahead_of_continue: bool,
    /// actix-http's own `100 Continue` is about to be written: it is
    /// dropped unless the handler reads the body first.
    swallow_continue: bool,
    /// The request expects a `100 Continue` the handler has not released.
    continue_owed: bool,
    /// Incremented at every flush point.
    flush_points: u64,
    /// Tasks waiting for a flush point or for interim bytes to be written.
    waiters: Vec<Waker>,
    /// The socket failed while writing interim bytes.
    failed: bool,
}

impl State {
    fn wait(&mut self, cx: &Context<'_>) {
        if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiters.push(cx.waker().clone());
        }
    }
}

struct Shared {
    io: TcpStream,
    state: State,
}

impl Shared {
    /// Writes `ready` bytes; `Ready(Ok)` once none are left.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.state.ready.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.state.ready) {
                Poll::Ready(Ok(0)) => {
                    self.fail();
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.state.ready.advance(n),
                Poll::Ready(Err(e)) => {
                    self.fail();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.wake();
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self) {
        self.state.failed = true;
        self.wake();
    }

    fn wake(&mut self) {
        for w in self.state.waiters.drain(..) {
            w.wake();
        }
    }
}

/// The connection object actix-http reads from and writes to.
pub struct InterimIo {
    shared: Rc<RefCell<Shared>>,
}

/// The handle handlers use; stored as connection data.
#[derive(Clone)]
pub struct Interim {
    shared: Rc<RefCell<Shared>>,
}

impl InterimIo {
    pub fn new(io: TcpStream) -> Self {
        InterimIo {
            shared: Rc::new(RefCell::new(Shared {
                io,
                state: State::default(),
            })),
        }
    }

    /// The handle to store as connection data.
    pub fn handle(&self) -> Interim {
        Interim {
            shared: self.shared.clone(),
        }
    }
}

impl AsyncRead for InterimIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.shared.borrow_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for InterimIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.borrow_mut();
        shared.state.ahead_of_continue = false;
        if shared.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if std::mem::take(&mut shared.state.swallow_continue) && buf.starts_with(CONTINUE) {
            // Sent by the handler once the request passed its checks
            // (see [`continue_on_read`]).
            return Poll::Ready(Ok(CONTINUE.len()));
        }
        Pin::new(&mut shared.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.borrow_mut();
        // A flush point: actix-http has no unwritten bytes.
        let staged = std::mem::take(&mut shared.state.staged);
        shared.state.ready.extend_from_slice(&staged);
        if shared.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        shared.state.flush_points = shared.state.flush_points.wrapping_add(1);
        shared.wake();
        Pin::new(&mut shared.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.shared.borrow_mut().io).poll_shutdown(cx)
    }
}

impl Interim {
    /// Writes one complete interim response (`HTTP/1.1 1xx ...\r\n\r\n`)
    /// on this connection, ordered before the final response. Resolves once
    /// the bytes are in the socket.
    pub fn send(&self, response: &[u8]) -> impl Future<Output = io::Result<()>> + '_ {
        {
            let mut shared = self.shared.borrow_mut();
            if shared.state.ahead_of_continue {
                // Only a complete `100 Continue` can be buffered by actix now.
                shared.state.ready.extend_from_slice(response);
            } else {
                shared.state.staged.extend_from_slice(response);
            }
        }
        poll_fn(move |cx| {
            let mut shared = self.shared.borrow_mut();
            if shared.state.failed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if !shared.state.ready.is_empty() {
                if let Err(e) = std::task::ready!(shared.drain(cx)) {
                    return Poll::Ready(Err(e));
                }
            }
            if shared.state.ready.is_empty() && shared.state.staged.is_empty() {
                return Poll::Ready(Ok(()));
            }
            shared.state.wait(cx);
            Poll::Pending
        })
    }

    /// Resolves at the next flush point.
    fn flush_point(&self) -> impl Future<Output = ()> + '_ {
        let start = self.shared.borrow().state.flush_points;
        poll_fn(move |cx| {
            let mut shared = self.shared.borrow_mut();
            if shared.state.flush_points != start || shared.state.failed {
                return Poll::Ready(());
            }
            shared.state.wait(cx);
            Poll::Pending
        })
    }
}

/// The interim response actix-http writes for `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Interim {
    /// Sends the `100 Continue` the client waits for, if it is owed.
    async fn send_continue(self) -> io::Result<()> {
        let owed = {
            let mut shared = self.shared.borrow_mut();
            let owed = std::mem::take(&mut shared.state.continue_owed);
            if owed && std::mem::take(&mut shared.state.swallow_continue) {
                // actix-http's own 100 is still in its buffer: let it go.
                return Ok(());
            }
            // actix-http has written everything up to its dropped 100 and
            // writes nothing more until this request's response: the bytes
            // can go out at once, without waiting for a flush point.
            shared.state.ahead_of_continue |= owed;
            owed
        };
        if owed {
            self.send(CONTINUE).await?;
        }
        Ok(())
    }
}

/// A request body that sends the owed `100 Continue` when it is first
/// read: handlers read the body only after validation and the blocking
/// hooks (pre-create, pre-access), so a client that waits for the 100
/// sends no bytes for a request that is refused.
pub fn continue_on_read<S>(req: &actix_web::HttpRequest, body: S) -> ContinueOnRead<S> {
    ContinueOnRead {
        pending: req
            .conn_data::<Interim>()
            .filter(|_| req.headers().contains_key(actix_web::http::header::EXPECT))
            .map(|i| Box::pin(i.clone().send_continue()) as _),
        inner: body,
    }
}

/// See [`continue_on_read`].
pub struct ContinueOnRead<S> {
    pending: Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>,
    inner: S,
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for ContinueOnRead<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if let Some(pending) = self.pending.as_mut() {
            let sent = std::task::ready!(pending.as_mut().poll(cx));
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not send 100 Continue");
            }
            self.pending = None;
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// actix-http's expect service: waits for a flush point, so that the
/// `100 Continue` actix queues next is alone in its buffer and can be held
/// back until the handler reads the body ([`continue_on_read`]); for IETF
/// requests (`Upload-Draft-Interop-Version`
/// present), waits for a flush point so that the handler can send its interim
/// response ahead of `100 Continue`. Other requests pass unchanged.
pub async fn expect(req: actix_http::Request) -> Result<actix_http::Request, actix_http::Error> {
    let ietf = actix_http::HttpMessage::headers(&req).contains_key(IETF_HEADER);
    if let Some(interim) = req.conn_data::<Interim>() {
        interim.flush_point().await;
        let mut shared = interim.shared.borrow_mut();
        shared.state.swallow_continue = true;
        shared.state.continue_owed = true;
        shared.state.ahead_of_continue = ietf;
    }
    Ok(req)
}
