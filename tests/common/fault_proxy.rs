//! A loopback HTTP/1.1 proxy that sits between tusker and an S3 server and
//! makes S3 calls fail on purpose.
//!
//! Every request on a client connection is parsed, so the decision to fail
//! is taken per request even when the client reuses its connections.
//! `Mode::Every` / `Mode::AllParts` fail part uploads
//! (`PUT …?partNumber=N&uploadId=…`), in turn with a 500 with an S3 error
//! document, a connection reset, a 503 (`SlowDown`), a connection reset.
//! `Mode::Chaos` fails any chosen kind of call ([`Call`]) with any chosen
//! [`FaultKind`] at a seeded random rate, and adds random latency.
//! Everything else is forwarded byte for byte over one upstream connection
//! per client connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Which requests fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Fail part upload number n (0-based, counted across the proxy's
    /// lifetime) when `n % every == every - 1`: `Every(5)` fails 20 %.
    Every(u64),
    /// Fail every part upload.
    AllParts,
    /// Seeded random faults on any kind of call.
    Chaos(Chaos),
    /// Answer the next n requests of each listed call with 503, then pass.
    FailFirst(Vec<(Call, u64)>),
}

/// The kind of S3 call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// `POST key?uploads`
    CreateMultipart,
    /// `PUT key?partNumber=N&uploadId=…`
    PutPart,
    /// `POST key?uploadId=…`
    CompleteMultipart,
    /// `DELETE key?uploadId=…`
    AbortMultipart,
    /// `PUT key` (staged segments, small finished uploads)
    PutObject,
    /// `GET key`
    Get,
    /// `GET ?list-type=2…` (ListObjectsV2)
    List,
    /// `DELETE key`, or `POST ?delete` (DeleteObjects)
    Delete,
    /// Anything else (HEAD…)
    Other,
}

/// How a chosen request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 `InternalError`; the request never reaches S3.
    Status500,
    /// 503 `SlowDown`; the request never reaches S3.
    Status503,
    /// Half the request body is read, then the connection is reset.
    ResetMidRequest,
    /// S3 executes the request; its response is cut half way by a reset.
    ResetMidResponse,
    /// The request is read and held for `Chaos::stall`, then dropped.
    StallRequest,
    /// S3 executes the request; the response is held for `Chaos::stall`,
    /// then dropped.
    StallResponse,
}

/// A seeded random fault schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    pub seed: u64,
    /// Chance, in percent, that a request of one of `calls` fails.
    pub percent: u64,
    pub calls: Vec<Call>,
    pub kinds: Vec<FaultKind>,
    /// Calls whose answers are never lost after S3 acted
    /// (`ResetMidResponse` and `StallResponse` become `Status503` for them).
    /// A lost CreateMultipartUpload answer orphans a multipart upload that
    /// no client can learn the id of, so only a bucket lifecycle rule can
    /// remove it.
    pub lossless: Vec<Call>,
    /// Every forwarded request waits a random time up to this first.
    pub latency: Duration,
    /// How long stalls last (longer than the client's request timeout).
    pub stall: Duration,
}

/// Which call a request is, from its method and target.
pub fn classify(method: &str, path: &str) -> Call {
    let (key, query) = path.split_once('?').unwrap_or((path, ""));
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    match method {
        "POST" if has("uploads") => Call::CreateMultipart,
        "POST" if has("uploadId") => Call::CompleteMultipart,
        "POST" if has("delete") => Call::Delete,
        "PUT" if has("partNumber") && has("uploadId") => Call::PutPart,
        "PUT" if !key.is_empty() => Call::PutObject,
        "DELETE" if has("uploadId") => Call::AbortMultipart,
        "DELETE" => Call::Delete,
        "GET" if has("list-type") => Call::List,
        "GET" => Call::Get,
        _ => Call::Other,
    }
}

/// What the proxy has seen and done.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests parsed on client connections.
    pub requests: AtomicU64,
    /// Part uploads among them.
    pub part_uploads: AtomicU64,
    /// Part uploads answered with a 500 or 503 by the proxy.
    pub error_replies: AtomicU64,
    /// Part uploads cut off with a TCP reset.
    pub resets: AtomicU64,
    /// Requests or responses held and then dropped.
    pub stalls: AtomicU64,
    /// Requests delayed by added latency.
    pub delayed: AtomicU64,
    /// Faults injected per kind of call.
    pub by_call: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    counters: Counters,
    /// Faults injected so far; picks the kind of the next one.
    faults: AtomicU64,
    /// State of the chaos schedule's random numbers.
    rng: Mutex<u64>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to be used as the S3 endpoint.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

enum Fault {
    Status(u16),
    Reset,
    ResetResponse,
    StallRequest(Duration),
    StallResponse(Duration),
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str, mode: Mode) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://IP:PORT");
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(mode.clone()),
            counters: Counters::default(),
            faults: AtomicU64::new(0),
            rng: Mutex::new(0),
        });
        shared.reseed(&mode);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        // Own thread and runtime: the proxy keeps going whatever the test's
        // runtime is busy with.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("proxy listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = accept_loop(listener, s) => {}
                }
            });
        });
        FaultProxy {
            url: format!("http://{addr}"),
            shared,
            stop: Some(stop),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.reseed(&mode);
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Faults injected so far (error replies, resets and stalls).
    pub fn faults(&self) -> u64 {
        Counters::get(&self.shared.counters.error_replies)
            + Counters::get(&self.shared.counters.resets)
            + Counters::get(&self.shared.counters.stalls)
    }

    /// One line describing what the proxy saw and did.
    pub fn summary(&self) -> String {
        let c = &self.shared.counters;
        format!(
            "{} requests ({} part uploads, {} delayed); faults: {} error replies, {} resets, {} stalls; by call {:?}",
            Counters::get(&c.requests),
            Counters::get(&c.part_uploads),
            Counters::get(&c.delayed),
            Counters::get(&c.error_replies),
            Counters::get(&c.resets),
            Counters::get(&c.stalls),
            c.by_call.lock().expect("by_call lock")
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // A failed connection only ends that connection.
            let _ = serve(client, shared).await;
        });
    }
}

/// One HTTP/1.1 request or response head, raw and parsed.
struct Head {
    raw: Vec<u8>,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// Reads a head up to the blank line; `None` on a clean EOF before it.
async fn read_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = r.read_until(b'\n', &mut raw).await?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        if raw.len() > 64 * 1024 {
            return Err(std::io::Error::other("head too large"));
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Stray blank line between messages.
                raw.clear();
                continue;
            }
            return Ok(Some(raw));
        }
    }
}

fn framing(headers: &[httparse::Header<'_>]) -> (Option<u64>, bool, bool) {
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    for h in headers {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.contains("close");
        }
    }
    (content_length, chunked, close)
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Copies (or, without `to`, drops) a body framed by `head`; `Ok(false)`
/// when the body runs to EOF, after which the connection cannot be reused.
async fn relay_body<R, W>(
    from: &mut BufReader<R>,
    mut to: Option<&mut W>,
    content_length: Option<u64>,
    chunked: bool,
    until_eof: bool,
) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if chunked {
        loop {
            let mut line = Vec::new();
            if from.read_until(b'\n', &mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let text = String::from_utf8_lossy(&line);
            let size_text = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
            if let Some(w) = to.as_mut() {
                w.write_all(&line).await?;
            }
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = Vec::new();
                    if from.read_until(b'\n', &mut t).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    if let Some(w) = to.as_mut() {
                        w.write_all(&t).await?;
                    }
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(true);
                    }
                }
            }
            copy_exact(from, to.as_deref_mut(), size + 2).await?;
        }
    } else if let Some(n) = content_length {
        copy_exact(from, to, n).await?;
        Ok(true)
    } else if until_eof {
        match to {
            Some(w) => {
                tokio::io::copy_buf(from, w).await?;
            }
            None => {
                tokio::io::copy_buf(from, &mut tokio::io::sink()).await?;
            }
        }
        Ok(false)
    } else {
        Ok(true)
    }
}

async fn copy_exact<R, W>(
    from: &mut BufReader<R>,
    to: Option<&mut W>,
    n: u64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut limited = from.take(n);
    let copied = match to {
        Some(w) => tokio::io::copy_buf(&mut limited, w).await?,
        None => tokio::io::copy_buf(&mut limited, &mut tokio::io::sink()).await?,
    };
    if copied != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn parse_request(raw: &[u8]) -> std::io::Result<(String, String, Head)> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw).map_err(|_| bad("request head"))? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(bad("partial request head")),
    }
    let method = req.method.unwrap_or("").to_owned();
    let path = req.path.unwrap_or("").to_owned();
    let (content_length, chunked, close) = framing(req.headers);
    Ok((
        method,
        path,
        Head {
            raw: raw.to_vec(),
            content_length,
            chunked,
            close,
        },
    ))
}

fn parse_response(raw: &[u8]) -> std::io::Result<(u16, Head)> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(raw).map_err(|_| bad("response head"))? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(bad("partial response head")),
    }
    let status = res.code.unwrap_or(0);
    let (content_length, chunked, close) = framing(res.headers);
    Ok((
        status,
        Head {
            raw: raw.to_vec(),
            content_length,
            chunked,
            close,
        },
    ))
}

/// What happens to one request.
enum Action {
    Forward,
    Fail(Fault),
}

impl Shared {
    fn reseed(&self, mode: &Mode) {
        if let Mode::Chaos(chaos) = mode {
            *self.rng.lock().expect("rng lock") = chaos.seed;
        }
    }

    /// The next number of the schedule (splitmix64).
    fn random(&self) -> u64 {
        let mut state = self.rng.lock().expect("rng lock");
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Decides a request's fate; also returns the latency to add.
    fn decide(&self, method: &str, path: &str) -> (Action, Duration) {
        self.counters.requests.fetch_add(1, Ordering::SeqCst);
        let call = classify(method, path);
        let n = if call == Call::PutPart {
            self.counters.part_uploads.fetch_add(1, Ordering::SeqCst)
        } else {
            0
        };
        let mode = {
            let mut mode = self.mode.lock().expect("mode lock");
            if let Mode::FailFirst(budget) = &mut *mode {
                let hit = budget.iter_mut().find(|(c, n)| *c == call && *n > 0);
                if let Some((_, n)) = hit {
                    *n -= 1;
                    // This request fails: a 503 on any call.
                    Mode::Chaos(Chaos {
                        seed: 0,
                        percent: 100,
                        calls: vec![call],
                        kinds: vec![FaultKind::Status503],
                        lossless: Vec::new(),
                        latency: Duration::ZERO,
                        stall: Duration::ZERO,
                    })
                } else {
                    Mode::Pass
                }
            } else {
                mode.clone()
            }
        };
        let (fault, latency) = match mode {
            Mode::Pass | Mode::FailFirst(_) => (None, Duration::ZERO),
            Mode::Every(every) => (
                (call == Call::PutPart && every > 0 && n % every == every - 1)
                    .then(|| self.rotating_fault()),
                Duration::ZERO,
            ),
            Mode::AllParts => (
                (call == Call::PutPart).then(|| self.rotating_fault()),
                Duration::ZERO,
            ),
            Mode::Chaos(chaos) => {
                let latency = match chaos.latency.as_millis() as u64 {
                    0 => Duration::ZERO,
                    max => Duration::from_millis(self.random() % (max + 1)),
                };
                let fails = chaos.calls.contains(&call)
                    && !chaos.kinds.is_empty()
                    && self.random() % 100 < chaos.percent;
                let fault = fails.then(|| {
                    let mut kind = chaos.kinds[(self.random() % chaos.kinds.len() as u64) as usize];
                    if chaos.lossless.contains(&call)
                        && matches!(kind, FaultKind::ResetMidResponse | FaultKind::StallResponse)
                    {
                        kind = FaultKind::Status503;
                    }
                    match kind {
                        FaultKind::Status500 => Fault::Status(500),
                        FaultKind::Status503 => Fault::Status(503),
                        FaultKind::ResetMidRequest => Fault::Reset,
                        FaultKind::ResetMidResponse => Fault::ResetResponse,
                        FaultKind::StallRequest => Fault::StallRequest(chaos.stall),
                        FaultKind::StallResponse => Fault::StallResponse(chaos.stall),
                    }
                });
                (fault, latency)
            }
        };
        if !latency.is_zero() {
            self.counters.delayed.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            None => (Action::Forward, latency),
            Some(fault) => {
                *self
                    .counters
                    .by_call
                    .lock()
                    .expect("by_call lock")
                    .entry(format!("{call:?}"))
                    .or_insert(0) += 1;
                (Action::Fail(fault), latency)
            }
        }
    }

    /// The fault of the part-upload modes: 500, reset, 503, reset.
    fn rotating_fault(&self) -> Fault {
        match self.faults.fetch_add(1, Ordering::SeqCst) % 4 {
            0 => Fault::Status(500),
            2 => Fault::Status(503),
            _ => Fault::Reset,
        }
    }
}

fn s3_error(status: u16) -> Vec<u8> {
    let (reason, code, message) = match status {
        503 => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        _ => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>tusker-fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: tusker-fault-proxy\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Drops the connection with a TCP reset instead of a FIN.
fn reset(reader: BufReader<OwnedReadHalf>, writer: OwnedWriteHalf) {
    if let Ok(stream) = reader.into_inner().reunite(writer) {
        let _ = stream.set_zero_linger();
        drop(stream);
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::with_capacity(256 * 1024, cr);
    let mut upstream: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> = None;
    loop {
        let Some(raw) = read_head(&mut cr).await? else {
            return Ok(());
        };
        let (method, path, req) = parse_request(&raw)?;
        let (action, latency) = shared.decide(&method, &path);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut after_upstream = None;
        match action {
            Action::Fail(Fault::Status(status)) => {
                relay_body::<_, OwnedWriteHalf>(
                    &mut cr,
                    None,
                    req.content_length,
                    req.chunked,
                    false,
                )
                .await?;
                cw.write_all(&s3_error(status)).await?;
                shared.counters.error_replies.fetch_add(1, Ordering::SeqCst);
                if req.close {
                    return Ok(());
                }
                continue;
            }
            Action::Fail(Fault::Reset) => {
                // Take part of the body first, as a real mid-transfer cut.
                let half = req.content_length.unwrap_or(0) / 2;
                let _ = copy_exact::<_, OwnedWriteHalf>(&mut cr, None, half).await;
                shared.counters.resets.fetch_add(1, Ordering::SeqCst);
                reset(cr, cw);
                return Ok(());
            }
            Action::Fail(Fault::StallRequest(stall)) => {
                let _ = relay_body::<_, OwnedWriteHalf>(
                    &mut cr,
                    None,
                    req.content_length,
                    req.chunked,
                    false,
                )
                .await;
                shared.counters.stalls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(stall).await;
                return Ok(());
            }
            Action::Fail(fault) => after_upstream = Some(fault),
            Action::Forward => {}
        }
        if upstream.is_none() {
            let s = TcpStream::connect(shared.upstream).await?;
            let _ = s.set_nodelay(true);
            let (ur, uw) = s.into_split();
            upstream = Some((BufReader::with_capacity(256 * 1024, ur), uw));
        }
        let Some((ur, uw)) = upstream.as_mut() else {
            return Ok(());
        };
        uw.write_all(&req.raw).await?;
        relay_body(&mut cr, Some(uw), req.content_length, req.chunked, false).await?;
        uw.flush().await?;
        // Interim 1xx responses are passed on; the final one ends the exchange.
        let (status, res) = loop {
            let Some(raw) = read_head(ur).await? else {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            };
            let (status, res) = parse_response(&raw)?;
            match after_upstream {
                Some(Fault::StallResponse(stall)) => {
                    // S3 did it; the client hears nothing and times out.
                    shared.counters.stalls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(stall).await;
                    return Ok(());
                }
                Some(_) => {
                    // S3 did it; the client gets half an answer.
                    cw.write_all(&res.raw[..res.raw.len() / 2]).await?;
                    cw.flush().await?;
                    shared.counters.resets.fetch_add(1, Ordering::SeqCst);
                    reset(cr, cw);
                    return Ok(());
                }
                None => {}
            }
            cw.write_all(&res.raw).await?;
            if !(100..200).contains(&status) {
                break (status, res);
            }
        };
        let bodyless = method == "HEAD" || status == 204 || status == 304;
        let reusable = if bodyless {
            true
        } else {
            relay_body(ur, Some(&mut cw), res.content_length, res.chunked, true).await?
        };
        cw.flush().await?;
        if !reusable || res.close || req.close {
            return Ok(());
        }
    }
}
