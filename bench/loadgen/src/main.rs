//! Load generator for tusker's benchmarks. Speaks tus 1.0 over plain
//! HTTP/1.1 on loopback (POST, PATCH with offsets, creation-with-upload),
//! and measures the loopback-to-disk limit of this machine with a trivial
//! receiver (`sink`) that writes the bytes to a file and fsyncs.
//!
//! Every scenario prints one JSON object on stdout (and appends it to
//! `--out` when given). The server's CPU time comes from
//! `/proc/PID/stat` (utime + stime) and its peak RSS from `VmHWM`, reset
//! before the scenario through `/proc/PID/clear_refs` (root) and, as a
//! fallback, sampled `VmRSS`.

mod http;
mod proc_stats;
mod report;

use http::Conn;
use proc_stats::ProcWatch;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn usage() -> ! {
    eprintln!(
        "usage: loadgen <single|small|many|sink|limit|report> [--flag value]...\n\
         single --url URL --size N [--chunk N]         one upload, one PATCH (or --chunk-sized PATCHes)\n\
         small  --url URL --count N --size N --concurrency C   creation-with-upload\n\
         many   --url URL --uploads N --size N         N concurrent uploads, one PATCH each\n\
         download --url URL --size N [--reps N]      one upload, then N GETs of it (measured)\n\
         slow   --url URL --uploads N --size N --rate N   N uploads trickling N bytes/s each, HEAD probes of idle uploads\n\
         sink   --listen ADDR --dir DIR [--uncached-after N]   limit receiver (read, write, fsync)\n\
         limit  --addr ADDR --size N [--streams N]     send to a sink\n\
         report --in FILE.jsonl --out TABLES.md [--machine TEXT]\n\
         common: --pid PID (server to watch) --server NAME --scenario NAME --out FILE.jsonl\n\
         sizes accept KiB/MiB/GiB suffixes"
    );
    std::process::exit(2)
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> (String, Args) {
        let mut it = std::env::args().skip(1);
        let cmd = it.next().unwrap_or_else(|| usage());
        let mut map = HashMap::new();
        while let Some(k) = it.next() {
            let Some(k) = k.strip_prefix("--") else {
                usage()
            };
            let v = it.next().unwrap_or_else(|| usage());
            map.insert(k.to_owned(), v);
        }
        (cmd, Args(map))
    }
    fn str(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn req(&self, k: &str) -> &str {
        self.str(k).unwrap_or_else(|| {
            eprintln!("missing --{k}");
            usage()
        })
    }
    fn size(&self, k: &str, default: u64) -> u64 {
        self.str(k).map(parse_size).unwrap_or(default)
    }
}

fn parse_size(s: &str) -> u64 {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim().parse::<u64>().expect("size") * mult
}

/// 1 MiB of pseudo-random bytes, sent over and over.
fn payload() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(MIB as usize);
    while v.len() < MIB as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Arc::new(v)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn emit(args: &Args, mut v: Value) {
    let obj = v.as_object_mut().expect("object");
    for k in ["server", "scenario"] {
        if let Some(s) = args.str(k) {
            obj.insert(k.to_owned(), json!(s));
        }
    }
    obj.insert(
        "unix_time".into(),
        json!(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    );
    let line = v.to_string();
    println!("{line}");
    if let Some(path) = args.str("out") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open --out");
        writeln!(f, "{line}").expect("write --out");
    }
}

fn finish(args: &Args, watch: Option<ProcWatch>, bytes: u64, secs: f64, mut v: Value) {
    let obj = v.as_object_mut().expect("object");
    obj.insert("bytes".into(), json!(bytes));
    obj.insert("seconds".into(), json!(secs));
    obj.insert("mb_per_s".into(), json!(bytes as f64 / secs / 1e6));
    if let Some(w) = watch {
        let s = w.finish();
        obj.insert("server_cpu_s".into(), json!(s.cpu_s));
        obj.insert(
            "cpu_s_per_gib".into(),
            json!(s.cpu_s / (bytes as f64 / GIB)),
        );
        obj.insert("peak_rss_mib".into(), json!(s.peak_rss_kib as f64 / 1024.0));
    }
    obj.insert(
        "client_cpu_s".into(),
        json!(proc_stats::cpu_seconds(std::process::id())),
    );
    emit(args, v)
}

fn watch(args: &Args) -> Option<ProcWatch> {
    args.str("pid")
        .map(|p| ProcWatch::start(p.parse().expect("--pid")))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (cmd, args) = Args::parse();
    match cmd.as_str() {
        "single" => single(&args).await,
        "small" => small(&args).await,
        "many" => many(&args).await,
        "download" => download(&args).await,
        "slow" => slow(&args).await,
        "limit" => limit(&args).await,
        "sink" => tokio::task::spawn_blocking(move || sink(&args))
            .await
            .expect("sink"),
        "report" => report::run(
            args.req("in"),
            args.req("out"),
            args.str("machine").unwrap_or(""),
        ),
        _ => usage(),
    }
}

/// Creates an upload of `size` bytes; returns its path.
async fn create(conn: &mut Conn, base: &str, size: u64) -> String {
    let res = conn
        .request("POST", base, &[("Upload-Length", size.to_string())], None)
        .await
        .expect("POST");
    assert_eq!(res.status, 201, "POST answered {}", res.status);
    http::path_of(res.header("location").expect("Location"))
}

/// PATCHes `len` bytes at `offset`; checks the new offset.
async fn patch(conn: &mut Conn, path: &str, offset: u64, len: u64, data: &Arc<Vec<u8>>) {
    let res = conn
        .request(
            "PATCH",
            path,
            &[
                ("Upload-Offset", offset.to_string()),
                ("Content-Type", "application/offset+octet-stream".into()),
            ],
            Some((len, data)),
        )
        .await
        .expect("PATCH");
    assert!(
        res.status == 204 || res.status == 200,
        "PATCH answered {}",
        res.status
    );
    let got: u64 = res
        .header("upload-offset")
        .and_then(|v| v.parse().ok())
        .expect("Upload-Offset");
    assert_eq!(got, offset + len, "offset after PATCH");
}

async fn single(args: &Args) {
    let url = http::Url::parse(args.req("url"));
    let size = args.size("size", 1 << 30);
    let chunk = args.size("chunk", 0);
    let chunk = if chunk == 0 { size } else { chunk };
    let data = payload();
    let mut conn = Conn::connect(&url.addr).await.expect("connect");
    let w = watch(args);
    let t0 = Instant::now();
    let path = create(&mut conn, &url.path, size).await;
    let mut offset = 0;
    let mut requests = 0u64;
    while offset < size {
        let n = chunk.min(size - offset);
        if conn.closed {
            conn = Conn::connect(&url.addr).await.expect("connect");
        }
        patch(&mut conn, &path, offset, n, &data).await;
        offset += n;
        requests += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    finish(
        args,
        w,
        size,
        secs,
        json!({"kind": "single", "chunk": chunk, "requests": requests}),
    );
}

async fn small(args: &Args) {
    let url = Arc::new(http::Url::parse(args.req("url")));
    let count = args.size("count", 2000);
    let size = args.size("size", 64 * 1024);
    let conc = args.size("concurrency", 32);
    let data = payload();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let w = watch(args);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (url, data, next) = (url.clone(), data.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = Conn::connect(&url.addr).await.expect("connect");
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                if conn.closed {
                    conn = Conn::connect(&url.addr).await.expect("connect");
                }
                let t = Instant::now();
                let res = conn
                    .request(
                        "POST",
                        &url.path,
                        &[
                            ("Upload-Length", size.to_string()),
                            ("Content-Type", "application/offset+octet-stream".into()),
                        ],
                        Some((size, &data)),
                    )
                    .await
                    .expect("POST with body");
                assert_eq!(res.status, 201, "POST answered {}", res.status);
                let off: Option<u64> = res.header("upload-offset").and_then(|v| v.parse().ok());
                assert_eq!(off, Some(size), "creation-with-upload offset");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).expect("nan"));
    finish(
        args,
        w,
        count * size,
        secs,
        json!({
            "kind": "small", "uploads": count, "upload_size": size, "concurrency": conc,
            "uploads_per_s": count as f64 / secs,
            "p50_ms": percentile(&lat, 50.0), "p99_ms": percentile(&lat, 99.0),
        }),
    );
}

async fn many(args: &Args) {
    let url = Arc::new(http::Url::parse(args.req("url")));
    let uploads = args.size("uploads", 100);
    let size = args.size("size", 64 * MIB);
    let data = payload();
    let w = watch(args);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..uploads {
        let (url, data) = (url.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&url.addr).await.expect("connect");
            let path = create(&mut conn, &url.path, size).await;
            if conn.closed {
                conn = Conn::connect(&url.addr).await.expect("connect");
            }
            patch(&mut conn, &path, 0, size, &data).await;
        }));
    }
    for t in tasks {
        t.await.expect("upload task");
    }
    let secs = t0.elapsed().as_secs_f64();
    finish(
        args,
        w,
        uploads * size,
        secs,
        json!({"kind": "many", "uploads": uploads, "upload_size": size}),
    );
}

/// One upload of `--size` bytes (not measured), then `--reps` GETs of it
/// one after another on one connection.
async fn download(args: &Args) {
    let url = http::Url::parse(args.req("url"));
    let size = args.size("size", 1 << 30);
    let reps = args.size("reps", 4);
    let data = payload();
    let mut conn = Conn::connect(&url.addr).await.expect("connect");
    let path = create(&mut conn, &url.path, size).await;
    if conn.closed {
        conn = Conn::connect(&url.addr).await.expect("connect");
    }
    patch(&mut conn, &path, 0, size, &data).await;
    let w = watch(args);
    let t0 = Instant::now();
    for _ in 0..reps {
        if conn.closed {
            conn = Conn::connect(&url.addr).await.expect("connect");
        }
        let (status, len) = conn.download(&path).await.expect("GET");
        assert_eq!((status, len), (200, size), "GET answered");
    }
    let secs = t0.elapsed().as_secs_f64();
    finish(
        args,
        w,
        reps * size,
        secs,
        json!({"kind": "download", "reps": reps, "upload_size": size}),
    );
}

/// The limit receiver: each connection sends an 8-byte big-endian length
/// and that many bytes; they are written to a fresh file, fsynced, and
/// acknowledged with one byte. Blocking threads: the cheapest receiver;
/// writeback is started every 8 MiB so the final fsync is short.
///
/// `--uncached-after N`: past a stream's first N bytes, write with
/// `pwritev2(RWF_DONTCACHE)` instead (Linux 6.14+; the kernel starts
/// writeback at once and drops the pages after it), the other way this
/// machine can write a stream. Refused by the kernel → plain writes.
fn sink(args: &Args) {
    let listener = std::net::TcpListener::bind(args.req("listen")).expect("bind");
    let dir = std::path::PathBuf::from(args.req("dir"));
    let uncached_after = args
        .str("uncached-after")
        .map(|_| args.size("uncached-after", 0));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut n = 0u64;
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        n += 1;
        let path = dir.join(format!("sink-{n}"));
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            let mut left = u64::from_be_bytes(len);
            let mut f = std::fs::File::create(&path)?;
            let mut buf = vec![0u8; MIB as usize];
            let (mut written, mut kicked) = (0u64, 0u64);
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let got = s.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if uncached_after.is_some_and(|after| written >= after) {
                    write_uncached(&f, &buf[..got], written)?;
                    kicked = written + got as u64;
                } else {
                    f.write_all(&buf[..got])?;
                }
                left -= got as u64;
                written += got as u64;
                if written - kicked >= 8 * MIB {
                    start_writeback(&f, kicked, written - kicked);
                    kicked = written;
                }
            }
            f.sync_data()?;
            s.write_all(b"k")?;
            drop(f);
            std::fs::remove_file(&path)
        });
    }
}

/// Writes `data` at `at` with `RWF_DONTCACHE`, or plainly where the kernel
/// refuses the flag.
fn write_uncached(f: &std::fs::File, mut data: &[u8], mut at: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    while !data.is_empty() {
        let iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: `iov` points into `data`, alive for the call; `f` keeps
        // the fd open.
        let n = unsafe {
            libc::pwritev2(
                f.as_raw_fd(),
                &iov,
                1,
                at as libc::off_t,
                libc::RWF_DONTCACHE,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => return f.write_all_at(data, at),
                _ => return Err(e),
            }
        }
        data = &data[n as usize..];
        at += n as u64;
    }
    Ok(())
}

/// Starts writeback of a written range early (as a well-tuned receiver
/// would), so the final fsync finds little left to do.
fn start_writeback(f: &std::fs::File, pos: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain integer arguments; `f` keeps the fd open for the call.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            pos as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

async fn limit(args: &Args) {
    let addr = args.req("addr").to_owned();
    let size = args.size("size", 1 << 30);
    let streams = args.size("streams", 1);
    let data = payload();
    let w = watch(args);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (addr, data) = (addr.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            s.set_nodelay(true).ok();
            s.write_all(&size.to_be_bytes()).await.expect("send");
            let mut left = size;
            while left > 0 {
                let n = (data.len() as u64).min(left) as usize;
                s.write_all(&data[..n]).await.expect("send");
                left -= n as u64;
            }
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack).await.expect("ack");
        }));
    }
    for t in tasks {
        t.await.expect("stream");
    }
    let secs = t0.elapsed().as_secs_f64();
    finish(
        args,
        w,
        streams * size,
        secs,
        json!({"kind": "limit", "streams": streams}),
    );
    // Lets the sink's threads remove their files.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// N concurrent uploads, each one PATCH whose body trickles in at `--rate`
/// bytes a second on a connection of its own (phones on bad links), while
/// a prober HEADs idle uploads on one keep-alive connection. Reports how
/// many completed byte-exact, the HEAD latencies and the server's memory
/// per slow upload.
async fn slow(args: &Args) {
    let url = Arc::new(http::Url::parse(args.req("url")));
    let uploads = args.size("uploads", 1000);
    let size = args.size("size", 16 * 1024);
    let rate = args.size("rate", 1024);
    let data = payload();
    // Idle uploads for the prober, made before the load.
    let mut probe = Conn::connect(&url.addr).await.expect("connect");
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(create(&mut probe, &url.path, 1 << 20).await);
    }
    let w = watch(args);
    let rss_before = args
        .str("pid")
        .and_then(|p| proc_stats::rss_kib(p.parse().ok()?))
        .unwrap_or(0);
    let t0 = Instant::now();
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..uploads {
        let (url, data, started) = (url.clone(), data.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the starts over a second, as real clients arrive.
            tokio::time::sleep(Duration::from_micros((i * 997) % 1_000_000)).await;
            let mut conn = Conn::connect(&url.addr).await.ok()?;
            // A refused or reset creation counts as not completed.
            let res = conn
                .request("POST", &url.path, &[("Upload-Length", size.to_string())], None)
                .await
                .ok()?;
            if res.status != 201 {
                return None;
            }
            let path = http::path_of(res.header("location")?);
            if conn.closed {
                conn = Conn::connect(&url.addr).await.ok()?;
            }
            started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let res = conn
                .request_trickle(
                    "PATCH",
                    &path,
                    &[
                        ("Upload-Offset", "0".into()),
                        ("Content-Type", "application/offset+octet-stream".into()),
                    ],
                    size,
                    rate,
                    &data,
                )
                .await
                .ok()?;
            let offset: u64 = res.header("upload-offset")?.parse().ok()?;
            (res.status == 204 && offset == size).then_some(())
        }));
    }
    // HEADs while the uploads trickle: from the moment all have started
    // until the first would finish.
    let mut lat = Vec::new();
    let mut rss_all_started = 0;
    let trickle = Duration::from_secs(size.div_ceil(rate.max(1)));
    let deadline = Instant::now() + trickle + Duration::from_secs(60);
    while started.load(std::sync::atomic::Ordering::Relaxed) < uploads && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(pid) = args.str("pid").and_then(|p| p.parse().ok()) {
        rss_all_started = proc_stats::rss_kib(pid).unwrap_or(0);
    }
    let probe_until = Instant::now() + trickle.saturating_sub(Duration::from_secs(2)).max(Duration::from_secs(1));
    let mut k = 0;
    while Instant::now() < probe_until {
        let path = &idle[k % idle.len()];
        k += 1;
        if probe.closed {
            probe = Conn::connect(&url.addr).await.expect("connect");
        }
        let t = Instant::now();
        let res = probe.request("HEAD", path, &[], None).await;
        if matches!(res, Ok(r) if r.status == 200) {
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut completed = 0u64;
    for t in tasks {
        if let Ok(Some(())) = t.await {
            completed += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let per_upload_kib = rss_all_started.saturating_sub(rss_before) as f64 / uploads.max(1) as f64;
    finish(
        args,
        w,
        completed * size,
        secs,
        json!({
            "kind": "slow", "uploads": uploads, "upload_size": size, "rate": rate,
            "completed": completed, "head_probes": lat.len(),
            "head_p50_ms": percentile(&lat, 50.0), "head_p99_ms": percentile(&lat, 99.0),
            "rss_all_started_mib": rss_all_started as f64 / 1024.0,
            "rss_per_upload_kib": per_upload_kib,
        }),
    );
}
