//! Faults on both sides at once: the real tusker binary stores in S3
//! through a fault-injecting proxy (errors, resets before and after S3 acted,
//! stalls past the request timeout, latency) on every kind of S3 call,
//! while raw-socket clients cut their PATCH bodies at random points (reset,
//! FIN, or silence past the body idle timeout) and resume from HEAD.
//!
//! Every upload must end byte-exact in the bucket (the object read back
//! from S3 directly: no part duplicated or missing), no multipart upload
//! and no staged segment may be left over, offsets must never go down or
//! exceed what was sent, and the server's peak memory (VmHWM) must stay
//! within a bound derived from its configured buffers.
//!
//! The schedule is random but seeded: the seed is printed, and
//! `TUSKER_TORTURE_SEED=<seed>` replays it (up to thread timing);
//! `TUSKER_TORTURE_TRACE=1` prints every client round.
//! Needs `TUSKER_TEST_S3_ENDPOINT`; without it the test is ignored.

mod common;

use common::fault_proxy::{Call, Chaos, FaultKind, FaultProxy, Mode};
use common::proc::{mib, Spawn, MIB};
use common::rng::Rng;
use common::s3::{bucket, keys_under, open_multipart_uploads};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for anything the server must answer; every wait is bounded by it.
const PATIENCE: Duration = Duration::from_secs(60);
/// Rounds (PATCH attempts) one upload may take before the test gives up.
const MAX_ROUNDS: usize = 400;

/// The run's seed: `TUSKER_TORTURE_SEED`, or a fresh one (printed).
fn seed() -> u64 {
    let seed = std::env::var("TUSKER_TORTURE_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("torture seed {seed} (replay with TUSKER_TORTURE_SEED={seed})");
    seed
}

/// How a client round ends.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The whole chunk is sent and the answer read.
    None,
    /// After some bytes the socket is reset (RST, no FIN).
    Reset,
    /// After some bytes the client sends FIN and waits for the answer.
    Fin,
    /// After some bytes the client goes silent (no FIN) until the server
    /// gives up on the body.
    Silence,
}

/// Reads everything until the server closes; `None` if it never does.
async fn until_closed(sock: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(raw)
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

fn header_of(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One raw PATCH of `chunk` at `offset`, ended as `cut` says after `keep`
/// bytes. Returns the bytes written and the answer (if any).
async fn patch_round(
    addr: SocketAddr,
    url: &str,
    offset: u64,
    chunk: &[u8],
    cut: Cut,
    keep: usize,
) -> (usize, Option<Vec<u8>>) {
    let Ok(mut sock) = TcpStream::connect(addr).await else {
        return (0, None);
    };
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        path_of(url),
        chunk.len()
    );
    if sock.write_all(head.as_bytes()).await.is_err() {
        return (0, None);
    }
    let send = match cut {
        Cut::None => chunk.len(),
        _ => keep.min(chunk.len()),
    };
    // The server may answer (e.g. 503) and stop reading before the end.
    let (mut r, mut w) = sock.into_split();
    let writer = async {
        let mut written = 0;
        for piece in chunk[..send].chunks(256 * 1024) {
            if w.write_all(piece).await.is_err() {
                break;
            }
            written += piece.len();
        }
        let _ = w.flush().await;
        (written, w)
    };
    match cut {
        Cut::None => {
            let reader = async {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + PATIENCE;
                loop {
                    match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
                        Err(_) => return None,
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    }
                }
            };
            let ((written, _w), got) = tokio::join!(writer, reader);
            (written, got)
        }
        Cut::Reset => {
            let (written, w) = writer.await;
            if let Ok(sock) = r.reunite(w) {
                let _ = sock.set_zero_linger();
            }
            (written, None)
        }
        Cut::Fin => {
            let (written, mut w) = writer.await;
            let _ = w.shutdown().await;
            let mut sock = match r.reunite(w) {
                Ok(s) => s,
                Err(_) => return (written, None),
            };
            (written, until_closed(&mut sock).await)
        }
        Cut::Silence => {
            let (written, w) = writer.await;
            let mut sock = match r.reunite(w) {
                Ok(s) => s,
                Err(_) => return (written, None),
            };
            let got = until_closed(&mut sock).await;
            assert!(
                got.is_some(),
                "a silent body was not cut within {PATIENCE:?}"
            );
            (written, got)
        }
    }
}

/// HEAD's offset, retried while the upload is busy (423) or storage is
/// failing (503); panics on anything else.
async fn head_offset(c: &reqwest::Client, url: &str) -> u64 {
    for _ in 0..200 {
        match c.head(url).header(TUS.0, TUS.1).send().await {
            Ok(res) if res.status() == 200 => {
                return header(&res, "upload-offset")
                    .and_then(|v| v.parse().ok())
                    .expect("Upload-Offset");
            }
            Ok(res) if [423, 503].contains(&res.status().as_u16()) => {}
            Ok(res) => panic!("HEAD {url}: {}", res.status()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("HEAD {url} never answered 200");
}

/// Uploads `data` to `url` through cut, stalled and completed PATCHes of
/// random sizes; checks the offset invariants after every round.
async fn torture_upload(addr: SocketAddr, url: String, data: Vec<u8>, mut rng: Rng) -> usize {
    let c = client();
    let total = data.len() as u64;
    let mut acked = 0u64;
    let mut sent_max = 0u64;
    let trace = std::env::var_os("TUSKER_TORTURE_TRACE").is_some();
    for round in 0..MAX_ROUNDS {
        let off = head_offset(&c, &url).await;
        assert!(
            off >= acked,
            "{url} round {round}: offset went down from {acked} to {off}"
        );
        assert!(
            off <= sent_max,
            "{url} round {round}: offset {off} beyond the {sent_max} bytes sent"
        );
        acked = off;
        if off == total {
            return round;
        }
        let remaining = total - off;
        let size = rng.range(128 * 1024, 12 * MIB - 1).min(remaining) as usize;
        let cut = match rng.range(0, 99) {
            0..=54 => Cut::None,
            55..=69 => Cut::Reset,
            70..=84 => Cut::Fin,
            _ => Cut::Silence,
        };
        let keep = rng.range(0, size as u64) as usize;
        let start = off as usize;
        let (written, answer) =
            patch_round(addr, &url, off, &data[start..start + size], cut, keep).await;
        sent_max = sent_max.max(off + written as u64);
        if trace {
            eprintln!(
                "{url} round {round}: at {off}, {size} bytes, {cut:?} after {keep}: wrote {written}, answer {:?}",
                answer.as_deref().and_then(status_of)
            );
        }
        if let Some(status) = answer.as_deref().and_then(status_of) {
            let raw = answer.as_deref().unwrap_or_default();
            match status {
                204 => {
                    let now: u64 = header_of(raw, "upload-offset")
                        .and_then(|v| v.parse().ok())
                        .expect("204 carries Upload-Offset");
                    // Usually the whole body; less when a newer request for
                    // the upload stopped this one. A request this client
                    // abandoned (reset) can reach the server late and be
                    // that newer request: the 204 then reports what was
                    // kept, and the client goes on from there.
                    assert!(
                        (off..=off + written as u64).contains(&now),
                        "{url} round {round}: 204 with offset {now} outside {off}..={}",
                        off + written as u64
                    );
                    acked = now;
                }
                // Busy, storage failing, body broken: resume from HEAD.
                503 | 423 => {}
                // A previous round's bytes landed after our HEAD.
                409 => {}
                other => panic!(
                    "{url} round {round} ({cut:?}): unexpected {other}: {}",
                    String::from_utf8_lossy(raw)
                ),
            }
        }
    }
    panic!("{url}: not complete after {MAX_ROUNDS} rounds");
}

/// POST, retried like a client would while storage fails (5xx, or no
/// answer within the client's timeout while storage calls stall).
async fn create_retrying(c: &reqwest::Client, endpoint: &str, length: u64) -> String {
    for _ in 0..20 {
        let res = match c
            .post(endpoint)
            .header(TUS.0, TUS.1)
            .header("Upload-Length", length.to_string())
            .send()
            .await
        {
            Ok(res) => res,
            Err(e) => {
                eprintln!("create failed: {e}; retrying");
                continue;
            }
        };
        let status = res.status().as_u16();
        if status == 201 {
            return location(&res);
        }
        let body = res.text().await.unwrap_or_default();
        assert!(status >= 500, "create: {status} {body}");
        eprintln!("create answered {status} {body}; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("create never succeeded");
}

/// The log lines about storage clean-up, for failure messages.
fn warnings(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("WARN") && (l.contains("delet") || l.contains("list")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stored object, read from S3 directly (not through the proxy).
async fn object(endpoint: &str, bucket: &str, key: &str) -> Vec<u8> {
    let res = client()
        .get(format!("{endpoint}/{bucket}/{key}"))
        .send()
        .await
        .expect("GET object");
    assert_eq!(res.status(), 200, "object {key}");
    res.bytes().await.expect("object body").to_vec()
}

/// A download through tusker (and the faulty proxy): retried until one
/// arrives whole.
async fn download_whole(c: &reqwest::Client, url: &str, len: usize) -> Vec<u8> {
    for _ in 0..20 {
        if let Ok(res) = c.get(url).send().await {
            if res.status() == 200 {
                if let Ok(body) = res.bytes().await {
                    if body.len() == len {
                        return body.to_vec();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} never downloaded whole");
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn uploads_survive_faults_on_both_sides_with_bounded_memory() {
    let endpoint = s3::endpoint();
    let seed = seed();
    let mut rng = Rng(seed);
    let bucket = bucket(&endpoint).await;
    // Faults on every call; responses of CreateMultipartUpload are never
    // lost (see `Chaos::lossless`).
    let proxy = FaultProxy::start(
        &endpoint,
        Mode::Chaos(Chaos {
            seed: seed ^ 0x5eed,
            percent: 20,
            calls: vec![
                Call::CreateMultipart,
                Call::PutPart,
                Call::CompleteMultipart,
                Call::AbortMultipart,
                Call::PutObject,
                Call::Get,
                Call::List,
                Call::Delete,
            ],
            kinds: vec![
                FaultKind::Status500,
                FaultKind::Status503,
                FaultKind::ResetMidRequest,
                FaultKind::ResetMidResponse,
                FaultKind::StallRequest,
                FaultKind::StallResponse,
            ],
            lossless: vec![Call::CreateMultipart],
            latency: Duration::from_millis(20),
            stall: Duration::from_secs(3),
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    const BUFFER_MEMORY: u64 = 16 * MIB;
    const PART_SIZE: u64 = 5 * MIB;
    const UPLOADS: usize = 4;
    let args: Vec<String> = [
        "--storage",
        &format!("s3://{bucket}/uploads"),
        "--s3-endpoint",
        &proxy.url,
        "--part-size",
        "5MiB",
        "--part-concurrency",
        "2",
        "--buffer-memory",
        "16MiB",
        "--body-idle-timeout",
        "1s",
        "--storage-timeout",
        "2s",
        "--storage-retries",
        "8",
        "--storage-retry-max-delay",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bin = Spawn::in_dir(dir.path()).args(args).start().await;
    let before = bin.memory();
    let c = client();

    let mut tasks = Vec::new();
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        // Not a multiple of the part size: a tail is always staged.
        let len = rng.range(20 * MIB, 36 * MIB - 1) as usize;
        let data = bytes(len, seed.wrapping_add(i as u64));
        let url = create_retrying(&c, &bin.endpoint(), len as u64).await;
        uploads.push((url.clone(), data.clone()));
        let rng = Rng(rng.next());
        tasks.push(tokio::spawn(torture_upload(bin.addr, url, data, rng)));
    }
    for (task, (url, _)) in tasks.into_iter().zip(&uploads) {
        let rounds = task.await.expect("upload task");
        eprintln!("{url}: complete after {rounds} rounds");
    }
    eprintln!("proxy: {}", proxy.summary());
    assert!(proxy.faults() > 0, "no fault was injected");

    for (url, data) in &uploads {
        let key = format!("uploads/{}", id_of(url));
        let stored = object(&endpoint, &bucket, &key).await;
        assert_eq!(stored.len(), data.len(), "{key}: object size");
        if let Some(at) = stored.iter().zip(data).position(|(a, b)| a != b) {
            panic!("{key}: object differs from byte {at} on");
        }
        assert!(
            download_whole(&c, url, data.len()).await == *data,
            "{url}: download differs"
        );
    }
    assert_eq!(
        open_multipart_uploads(&endpoint, &bucket).await,
        0,
        "multipart uploads left in the bucket"
    );
    let left = keys_under(&endpoint, &bucket, "uploads/.tusker-staging/").await;
    assert_eq!(
        left,
        0,
        "staged segments left for finished uploads; server warnings:\n{}",
        warnings(&bin.log_text())
    );

    if let (Some(before), Some(after)) = (before, bin.memory()) {
        // Part buffers (the budget), the tail cache (a quarter of it), and
        // per running upload its pending bytes and staged tail (a part
        // each), plus a fixed allowance for the runtime, sockets and logs.
        let bound = before.hwm
            + BUFFER_MEMORY
            + BUFFER_MEMORY / 4
            + UPLOADS as u64 * 2 * PART_SIZE
            + 48 * MIB;
        let through: u64 = uploads.iter().map(|(_, d)| d.len() as u64).sum();
        eprintln!(
            "memory: start {} peak {} bound {} ({} uploaded)",
            mib(before.hwm),
            mib(after.hwm),
            mib(bound),
            mib(through)
        );
        assert!(
            after.hwm <= bound,
            "peak memory {} above the bound {}",
            mib(after.hwm),
            mib(bound)
        );
    }
}

/// Finishing an upload removes its staged segments even when the first
/// listings and deletions of them fail (they are retried like any storage
/// call; a segment left there belongs to no record and stays forever).
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn staged_segments_go_even_when_listing_and_deleting_them_fails_at_first() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let proxy = FaultProxy::start(&endpoint, Mode::Pass);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::s3::s3_config(dir.path(), &proxy.url, &bucket);
    cfg.storage_options.tuning.retry_attempts = 4;
    cfg.storage_options.tuning.retry_max_delay = Duration::from_millis(100);
    cfg.tail_staging = tusker::config::TailStaging::Bucket;
    let server = TestServer::start(cfg);
    let c = client();
    // A part and a staged tail of two segments.
    let data = bytes(7 * MIB as usize + 11, 9);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    common::s3::upload_in_chunks(&c, &url, 0, &data[..6 * MIB as usize], 3 * MIB as usize).await;
    assert!(keys_under(&endpoint, &bucket, "uploads/.tusker-staging/").await > 0);
    proxy.set_mode(Mode::FailFirst(vec![(Call::List, 2), (Call::Delete, 2)]));
    common::s3::upload_in_chunks(
        &c,
        &url,
        6 * MIB as usize,
        &data[6 * MIB as usize..],
        MIB as usize,
    )
    .await;
    assert!(download(&c, &url).await == data);
    eprintln!("proxy: {}", proxy.summary());
    assert_eq!(
        keys_under(&endpoint, &bucket, "uploads/.tusker-staging/").await,
        0,
        "staged segments left behind"
    );
    assert!(proxy.faults() >= 4, "the faults were not injected");
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}

/// Many uploads each hold most of a part's bytes and then go quiet (no
/// `--max-concurrent-uploads`). The part bytes the server buffers must stay
/// within `--buffer-memory`: beyond it, bodies are read more slowly (the
/// bytes wait in the clients' sockets), not buffered.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn partial_parts_of_many_uploads_stay_within_the_buffer_budget() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    const BUFFER_MEMORY: u64 = 16 * MIB;
    const UPLOADS: usize = 24;
    const HELD: usize = (4 * MIB + MIB / 2) as usize;
    let args: Vec<String> = [
        "--storage",
        &format!("s3://{bucket}/uploads"),
        "--s3-endpoint",
        &endpoint,
        "--part-size",
        "5MiB",
        "--buffer-memory",
        "16MiB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bin = Spawn::in_dir(dir.path()).args(args).start().await;
    // Memory is read from /proc: these tests run on Linux only.
    let before = bin.memory().expect("the server's memory from /proc");
    let c = client();
    let data = bytes(10 * MIB as usize, 10);
    let mut held = Vec::new();
    for _ in 0..UPLOADS {
        let url = create(&c, &bin.endpoint(), data.len() as u64).await;
        let mut sock = TcpStream::connect(bin.addr).await.unwrap();
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
            path_of(&url),
            bin.addr,
            data.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        // Written in the background: with the budget used up the server
        // stops reading, and the client's writes wait.
        let body = data[..HELD].to_vec();
        let (r, mut w) = sock.into_split();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&body).await;
            w
        });
        held.push((url, r, writer));
    }
    // Until the server has taken all it will take.
    let base = format!("http://{}", bin.addr);
    let received = || metric(&c, &base, "tusker_bytes_received_total");
    let mut last = None;
    let mut steady = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = received().await;
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        if steady >= 10 {
            break;
        }
    }
    let after = bin.memory().expect("memory");
    let bound = before.hwm + BUFFER_MEMORY + BUFFER_MEMORY / 4 + 32 * MIB;
    eprintln!(
        "memory: start {} peak {} bound {}; server took {} of {} held",
        mib(before.hwm),
        mib(after.hwm),
        mib(bound),
        mib(last.unwrap_or(0.0) as u64),
        mib((UPLOADS * HELD) as u64)
    );
    assert!(
        after.hwm <= bound,
        "peak memory {} above the bound {}",
        mib(after.hwm),
        mib(bound)
    );
    // Every held upload finishes once the clients go on (all at once: the
    // ones waiting for memory need the others' parts to be cut first).
    let mut rest = Vec::new();
    for (url, r, writer) in held {
        let tail = data[HELD..].to_vec();
        rest.push(tokio::spawn(async move {
            let mut w = writer.await.expect("writer");
            w.write_all(&tail).await.expect("rest of the body");
            (url, r, w)
        }));
    }
    for task in rest {
        let (url, mut r, _w) = task.await.expect("task");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            let n = tokio::time::timeout(PATIENCE, r.read(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "{url}: closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        assert_eq!(status_of(&answer), Some(204), "{url}");
        let stored = object(&endpoint, &bucket, &format!("uploads/{}", id_of(&url))).await;
        assert!(stored == data, "{url}: stored object differs");
    }
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
}
