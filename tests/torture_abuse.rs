//! Hostile clients: slowloris heads and bodies, idle and half-open
//! connections, floods of parallel uploads, one client hogging the upload
//! slots, oversized metadata. Each is cut or refused by a configured limit
//! with a clear status and code, the bytes that did arrive are kept, and
//! the server's memory stays bounded.

mod common;

use common::proc::{mib, Spawn, MIB};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything the server should do promptly; loops that wait
/// for the server are bounded by it.
const PATIENCE: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection (EOF or reset) and returns
/// what it sent; panics if it is still open after `PATIENCE`.
async fn until_closed(sock: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {PATIENCE:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of the first response in `raw`, if any.
fn first_status(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn patch_head(addr: SocketAddr, url: &str, offset: usize, len: usize, extra: &str) -> String {
    format!(
        "PATCH {} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {len}\r\n{extra}\r\n",
        path_of(url)
    )
}

/// A PATCH whose head and the first `sent` body bytes are on the wire; the
/// rest of the body never comes.
async fn held_patch(
    addr: SocketAddr,
    url: &str,
    data: &[u8],
    sent: usize,
    extra: &str,
) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(patch_head(addr, url, 0, data.len(), extra).as_bytes())
        .await
        .expect("head");
    sock.write_all(&data[..sent]).await.expect("body");
    sock.flush().await.expect("flush");
    sock
}

/// Sends a whole PATCH while reading the answer (the server may answer
/// and close before taking the body); returns everything it sent back.
async fn refused_patch(addr: SocketAddr, url: &str, body: &[u8]) -> Vec<u8> {
    let sock = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = sock.into_split();
    let head = patch_head(addr, url, 0, body.len(), "Connection: close\r\n");
    let send = async {
        // A write error means the server stopped reading: expected.
        if w.write_all(head.as_bytes()).await.is_ok() {
            let _ = w.write_all(body).await;
        }
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(PATIENCE, r.read(&mut buf)).await {
                Err(_) => panic!("no answer to a refused PATCH within {PATIENCE:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return got,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ((), got) = tokio::join!(send, read);
    got
}

async fn uploads_in_progress_reach(c: &reqwest::Client, addr: SocketAddr, n: f64) -> bool {
    let base = format!("http://{addr}");
    eventually(PATIENCE, || {
        let base = base.clone();
        async move { metric(c, &base, "tusker_uploads_in_progress").await == Some(n) }
    })
    .await
}

#[tokio::test]
async fn a_head_dribbled_byte_by_byte_is_cut_by_the_client_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.client_request_timeout = Duration::from_secs(1);
    let server = TestServer::start(cfg);
    let c = client();
    let url = create(&c, &server.endpoint, 10).await;
    // 600 bytes of head at one byte per 100 ms would take a minute.
    let head = patch_head(
        server.addr,
        &url,
        0,
        10,
        &format!("X-Pad: {}\r\n", "p".repeat(400)),
    );
    let mut sock = TcpStream::connect(server.addr).await.unwrap();
    let mut sent = 0;
    let mut cut = false;
    for b in head.as_bytes() {
        if sock.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        sent += 1;
        // The server answers 408 and closes: a read sees it.
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), sock.read(&mut probe)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(n)) => {
                assert_eq!(first_status(&probe[..n]), Some(408));
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the whole dribbled head ({sent} bytes) was accepted");
    assert!(sent < head.len(), "cut only after the head was complete");
    // Nothing reached the upload.
    assert_eq!(offset(&c, &url).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.client_request_timeout = Duration::from_secs(1);
    // Well above actix's cached clock's granularity: actix-http 3.20 arms
    // the keep-alive timer from a clock refreshed every 500 ms, and a
    // deadline already past when armed never wakes the connection (on a
    // starved worker, a 500 ms keep-alive left the connection open).
    cfg.keep_alive_timeout = Duration::from_secs(2);
    let server = TestServer::start(cfg);
    // Never a byte: closed by the request timeout (408 or plain close).
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let got = until_closed(&mut silent).await;
    assert!(
        got.is_empty() || first_status(&got) == Some(408),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Idle after one request: closed by the keep-alive timeout.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(format!("OPTIONS /files/ HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .await
        .unwrap();
    let got = until_closed(&mut idle).await;
    assert_eq!(first_status(&got), Some(200));
    assert_eq!(
        String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the close"
    );
    server.stop().await;

    // Keep-alive off: the answer says so and the connection closes,
    // though the client did not ask for that.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.keep_alive_timeout = Duration::ZERO;
    let server = TestServer::start(cfg);
    let mut one = TcpStream::connect(server.addr).await.unwrap();
    let options = format!("OPTIONS /files/ HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    one.write_all(options.as_bytes()).await.unwrap();
    let got = until_closed(&mut one).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    server.stop().await;
}

/// A body that stops (no FIN: a vanished phone) or dribbles with pauses
/// longer than `--body-idle-timeout` is cut; what arrived is kept and the
/// upload resumes from HEAD to a byte-exact file.
#[tokio::test]
async fn a_stalled_or_dribbled_body_is_cut_and_the_received_bytes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.body_idle_timeout = Duration::from_millis(700);
    let server = TestServer::start(cfg);
    let c = client();
    let data = bytes(64 * 1024, 5);

    // Stalled: 20000 bytes, then silence with the connection left open.
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let mut sock = held_patch(server.addr, &url, &data, 20_000, "").await;
    let got = until_closed(&mut sock).await;
    if let Some(status) = first_status(&got) {
        assert_eq!(status, 503, "{:?}", String::from_utf8_lossy(&got));
        assert!(String::from_utf8_lossy(&got).contains("ERR_BODY_INCOMPLETE"));
    }
    assert_eq!(offset(&c, &url).await, 20_000);

    // Dribbled: one byte, then pauses of twice the idle timeout.
    let dribbled = create(&c, &server.endpoint, data.len() as u64).await;
    let mut sock = held_patch(server.addr, &dribbled, &data, 1000, "").await;
    let mut sent = 1000;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1400)).await;
        if sock.write_all(&data[sent..sent + 1]).await.is_err() {
            break;
        }
        sent += 1;
        let mut probe = [0u8; 256];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(10), sock.read(&mut probe)).await
        {
            break;
        }
    }
    until_closed(&mut sock).await;
    let kept = offset(&c, &dribbled).await;
    assert!(
        (1000..=sent as u64).contains(&kept),
        "offset {kept} outside what was sent (1000..={sent})"
    );
    assert!(kept < data.len() as u64);

    // Both resume to the exact bytes.
    for url in [&url, &dribbled] {
        let from = offset(&c, url).await as usize;
        let res = patch(&c, url, from as u64, data[from..].to_vec()).await;
        assert_eq!(res.status(), 204);
        assert!(download(&c, url).await == data, "{url} differs");
    }
    server.stop().await;
}

/// A body that trickles in just faster than the idle timeout (never idle,
/// but far below `--min-body-rate`) is cut; the bytes are kept. Without a
/// minimum rate the same trickle would hold its upload slot for ever.
#[tokio::test]
async fn a_trickling_body_is_cut_by_the_minimum_rate_and_the_bytes_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.body_idle_timeout = Duration::from_secs(1);
    cfg.min_body_rate = Some(64 * 1024);
    let server = TestServer::start(cfg);
    let c = client();
    let data = bytes(100_000, 11);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let mut sock = held_patch(server.addr, &url, &data, 5000, "").await;
    let mut sent = 5000;
    // 500 bytes every 300 ms: about 1.6 KiB/s, never a second of silence.
    let mut cut = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if sock.write_all(&data[sent..sent + 500]).await.is_err() {
            cut = true;
            break;
        }
        sent += 500;
        let mut probe = [0u8; 1024];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(5), sock.read(&mut probe)).await {
            if let Ok(n) = r {
                assert!(n == 0 || first_status(&probe[..n]) == Some(503));
            }
            cut = true;
            break;
        }
    }
    assert!(cut, "a 1.6 KiB/s body was never cut ({sent} bytes sent)");
    until_closed(&mut sock).await;
    let kept = offset(&c, &url).await;
    assert!(
        (5000..=sent as u64).contains(&kept),
        "offset {kept} outside 5000..={sent}"
    );
    let res = patch(&c, &url, kept, data[kept as usize..].to_vec()).await;
    assert_eq!(res.status(), 204);
    assert!(download(&c, &url).await == data);
    server.stop().await;
}

/// The client sends FIN half way through the body and waits: the server
/// sees the body end early, keeps the bytes and still answers on the
/// half-closed connection.
#[tokio::test]
async fn a_body_ended_by_fin_keeps_the_bytes_and_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let data = bytes(300_000, 6);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let mut sock = held_patch(server.addr, &url, &data, 123_457, "").await;
    sock.shutdown().await.expect("FIN");
    let got = until_closed(&mut sock).await;
    assert_eq!(
        first_status(&got),
        Some(503),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(String::from_utf8_lossy(&got).contains("ERR_BODY_INCOMPLETE"));
    assert_eq!(offset(&c, &url).await, 123_457);
    let res = patch(&c, &url, 123_457, data[123_457..].to_vec()).await;
    assert_eq!(res.status(), 204);
    assert!(download(&c, &url).await == data);
    server.stop().await;
}

#[tokio::test]
async fn metadata_limits_answer_431_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_metadata_size = 1024;
    let server = TestServer::start(cfg);
    let c = client();
    let e = &server.endpoint;
    let post = |meta: String| {
        Req::new("POST", e.as_str())
            .tus()
            .h("Upload-Length", 10)
            .h("Upload-Metadata", meta)
    };
    // `name <base64>` of about `len` bytes.
    let sized = |len: usize| format!("name {}", "QUJD".repeat((len - 5) / 4));
    let base = sized(1000);
    // Padded with a value-less key to exactly the limit.
    let exact = format!("{base},{}", "x".repeat(1024 - base.len() - 1));
    assert_eq!(exact.len(), 1024);
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let too_large = Want::status(431)
        .err("ERR_METADATA_TOO_LARGE")
        .no("location");
    run(
        &c,
        vec![
            row(
                "at the limit",
                post(exact.clone()),
                Want::status(201).has("location"),
            ),
            row(
                "one byte over",
                post(format!("{exact}x")),
                too_large.clone(),
            ),
            row(
                "one huge value",
                post(format!("name {}", "QUJD".repeat(16 * 1024))),
                too_large.clone(),
            ),
            row(
                "many keys within the size",
                post(keys(200)),
                Want::status(201),
            ),
            row(
                "too many keys",
                // Small keys so the count, not the size, trips.
                post(
                    (0..257)
                        .map(|i| format!("{i:x}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                too_large.clone(),
            ),
            row(
                "malformed stays 400",
                post("a !!!".into()),
                Want::status(400).err("ERR_INVALID_METADATA"),
            ),
        ],
    )
    .await;
    assert!(keys(200).len() <= 1024);
    // Only the two accepted creations exist.
    let text = metrics_text(&c, &server).await;
    assert_eq!(
        sample(&text, "tusker_uploads_created_total"),
        Some(2.0),
        "{text}"
    );
    server.stop().await;

    // The default is 4 KiB.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let e = &server.endpoint;
    run(
        &c,
        vec![
            row(
                "2 KiB under the default",
                Req::new("POST", e.as_str())
                    .tus()
                    .h("Upload-Length", 1)
                    .h("Upload-Metadata", sized(2048)),
                Want::status(201),
            ),
            row(
                "5 KiB over the default",
                Req::new("POST", e.as_str())
                    .tus()
                    .h("Upload-Length", 1)
                    .h("Upload-Metadata", sized(5 * 1024)),
                Want::status(431).err("ERR_METADATA_TOO_LARGE"),
            ),
        ],
    )
    .await;
    server.stop().await;
}

/// One client address holds `--max-uploads-per-client` PATCHes open; its
/// next one is answered 429 before the body is read, while another client
/// (a different forwarded address behind the proxy) still gets through.
#[tokio::test]
async fn uploads_per_client_are_capped_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_uploads_per_client = Some(2);
    cfg.behind_proxy = true;
    let server = TestServer::start(cfg);
    let c = client();
    let data = bytes(1000, 7);
    let a = [
        create(&c, &server.endpoint, 1000).await,
        create(&c, &server.endpoint, 1000).await,
        create(&c, &server.endpoint, 1000).await,
    ];
    let b = create(&c, &server.endpoint, 1000).await;
    let from_a = "X-Forwarded-For: 10.0.0.1\r\n";
    let mut held = Vec::new();
    for url in &a[..2] {
        held.push(held_patch(server.addr, url, &data, 10, from_a).await);
    }
    assert!(uploads_in_progress_reach(&c, server.addr, 2.0).await);

    let send = |url: &str, fwd: Option<&str>| {
        let mut req = Req::new("PATCH", url)
            .tus()
            .octet()
            .h("Upload-Offset", 0)
            .body(data.clone());
        if let Some(f) = fwd {
            req = req.h("X-Forwarded-For", f);
        }
        req
    };
    let limited = Want::status(429)
        .err("ERR_TOO_MANY_UPLOADS_FROM_CLIENT")
        .has("retry-after");
    check(
        "third from A",
        &send(&a[2], Some("10.0.0.1")).send(&c).await,
        &limited,
    );
    // The proxy appends what it saw; an entry the client put in front
    // does not make it someone else.
    check(
        "third from A with a forged earlier entry",
        &send(&a[2], Some("10.0.0.2, 10.0.0.1")).send(&c).await,
        &limited,
    );
    assert_eq!(offset(&c, &a[2]).await, 0, "the refused body was not read");
    check(
        "first from B",
        &send(&b, Some("10.0.0.2")).send(&c).await,
        &Want::status(204).is("upload-offset", 1000),
    );
    // A's held requests end (bytes kept); A is admitted again.
    for mut sock in held {
        sock.shutdown().await.unwrap();
        until_closed(&mut sock).await;
    }
    assert!(uploads_in_progress_reach(&c, server.addr, 0.0).await);
    check(
        "A again",
        &send(&a[2], Some("10.0.0.1")).send(&c).await,
        &Want::status(204).is("upload-offset", 1000),
    );
    server.stop().await;

    // Not behind a proxy: the forwarded address is ignored, the peer counts.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_uploads_per_client = Some(1);
    let server = TestServer::start(cfg);
    let first = create(&c, &server.endpoint, 1000).await;
    let second = create(&c, &server.endpoint, 1000).await;
    let mut sock = held_patch(
        server.addr,
        &first,
        &data,
        10,
        "X-Forwarded-For: 10.0.0.1\r\n",
    )
    .await;
    assert!(uploads_in_progress_reach(&c, server.addr, 1.0).await);
    check(
        "spoofed",
        &send(&second, Some("10.0.0.9")).send(&c).await,
        &limited,
    );
    sock.shutdown().await.unwrap();
    until_closed(&mut sock).await;
    server.stop().await;
}

/// 4 upload slots, all held by stalled PATCHes; 48 more PATCHes of 8 MiB
/// each arrive at once. Every one is answered 503 + Retry-After before its
/// body is read, and the server's peak memory stays within a fixed
/// allowance of what it used before the flood (the refused bodies are never
/// buffered).
#[tokio::test]
async fn a_flood_beyond_max_concurrent_uploads_gets_503_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = Spawn::in_dir(dir.path())
        .args(["--max-concurrent-uploads", "4", "--buffer-memory", "16MiB"])
        .start()
        .await;
    // Memory is read from /proc: these tests run on Linux only.
    let before = bin.memory().expect("the server's memory from /proc");
    let c = client();
    let endpoint = bin.endpoint();
    let body = bytes(8 * MIB as usize, 8);
    let mut urls = Vec::new();
    for _ in 0..52 {
        urls.push(create(&c, &endpoint, body.len() as u64).await);
    }
    let mut held = Vec::new();
    for url in &urls[..4] {
        held.push(held_patch(bin.addr, url, &body, 64 * 1024, "").await);
    }
    assert!(uploads_in_progress_reach(&c, bin.addr, 4.0).await);

    let addr = bin.addr;
    let flood: Vec<_> = urls[4..]
        .iter()
        .map(|url| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { refused_patch(addr, &url, &body).await })
        })
        .collect();
    let mut answered = 0;
    for task in flood {
        let got = task.await.expect("task");
        let text = String::from_utf8_lossy(&got);
        assert_eq!(first_status(&got), Some(503), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("retry-after: 2"),
            "{text}"
        );
        assert!(text.contains("ERR_TOO_MANY_UPLOADS"), "{text}");
        answered += 1;
    }
    assert_eq!(answered, 48);
    for url in &urls[4..] {
        assert_eq!(offset(&c, url).await, 0);
    }
    let after = bin.memory().expect("memory");
    eprintln!(
        "memory: before {} (peak {}), after flood {} (peak {})",
        mib(before.rss),
        mib(before.hwm),
        mib(after.rss),
        mib(after.hwm)
    );
    // 48 bodies of 8 MiB are 384 MiB; buffering even a fraction would show.
    let allowance = 64 * MIB;
    assert!(
        after.hwm <= before.hwm + allowance,
        "peak memory grew from {} to {}",
        mib(before.hwm),
        mib(after.hwm)
    );
    for mut sock in held {
        sock.shutdown().await.unwrap();
        until_closed(&mut sock).await;
    }
    assert!(bin.alive());
}
