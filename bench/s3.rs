//! S3 throughput: the same bytes through a release tusker (one PATCH, and
//! 50, 5 and 1 MiB PATCHes as tus clients with a `chunkSize` send them) and
//! through object_store's own `WriteMultipart`, to the same S3 server. Each
//! tusker case runs right after a direct multipart upload of its own, and
//! its ratio is to that neighbour, so load that drifts during the run
//! weighs on both sides alike. Run through `bench/s3.sh`, which starts the server; by
//! hand:
//!
//! ```sh
//! TUSKER_BENCH_S3_ENDPOINT=http://127.0.0.1:8014 TUSKER_BENCH_BUCKET=bench \
//!   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=us-east-1 \
//!   cargo bench --bench s3
//! ```
//!
//! `TUSKER_BENCH_BYTES` (default 1 GiB) sets the upload size,
//! `TUSKER_BENCH_CHUNKS` (MiB, comma-separated, 0 = one PATCH; default
//! `0,50,5,1`) the cases, `TUSKER_BENCH_ARGS` extra tusker flags
//! (whitespace-separated), `TUSKER_BENCH_BIN` another tusker binary (an
//! older build, for a before/after).

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
/// tusker's default part size and parallelism, used for both sides.
const PART_SIZE: u64 = 16 * MIB;
const CONCURRENCY: usize = 4;
/// The payload is this block repeated (cheap to stream, not compressible).
const BLOCK: usize = 8 * MIB as usize;

struct Tusker(Child);

impl Drop for Tusker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn block() -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// `len` bytes starting at `offset` of the repeated block, as pieces.
fn pieces(block: &Bytes, offset: u64, len: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let (mut pos, end) = (offset, offset + len);
    while pos < end {
        let at = (pos % BLOCK as u64) as usize;
        let n = ((BLOCK - at) as u64).min(end - pos) as usize;
        out.push(block.slice(at..at + n));
        pos += n as u64;
    }
    out
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

async fn create(c: &reqwest::Client, endpoint: &str, len: u64) -> String {
    let res = c
        .post(endpoint)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", len.to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "create");
    res.headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("Location")
        .to_owned()
}

async fn patch(c: &reqwest::Client, url: &str, block: &Bytes, offset: u64, len: u64) {
    let body = futures_util::stream::iter(
        pieces(block, offset, len)
            .into_iter()
            .map(Ok::<_, std::io::Error>),
    );
    let res = c
        .patch(url)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Length", len.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("PATCH");
    let status = res.status();
    assert_eq!(status, 204, "PATCH at {offset}: {:?}", res.text().await);
}

/// Uploads `total` bytes through tusker in PATCHes of `chunk` bytes.
async fn through_tusker(
    c: &reqwest::Client,
    endpoint: &str,
    block: &Bytes,
    total: u64,
    chunk: u64,
) -> Duration {
    let url = create(c, endpoint, total).await;
    let start = Instant::now();
    let mut offset = 0;
    while offset < total {
        let n = chunk.min(total - offset);
        patch(c, &url, block, offset, n).await;
        offset += n;
    }
    let took = start.elapsed();
    // Terminated once measured, so the server holds one object at a time.
    let gone = c
        .delete(&url)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(gone.status(), 204, "DELETE");
    took
}

async fn through_object_store(store: &dyn ObjectStore, block: &Bytes, total: u64) -> Duration {
    let path = Path::from("object_store/plain");
    // The previous round's object goes first: the server holds less.
    let _ = store.delete(&path).await;
    let start = Instant::now();
    let upload = store.put_multipart(&path).await.expect("put_multipart");
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE as usize);
    for piece in pieces(block, 0, total) {
        writer
            .wait_for_capacity(CONCURRENCY)
            .await
            .expect("part upload");
        writer.put(piece);
    }
    writer.finish().await.expect("complete");
    let took = start.elapsed();
    let size = store.head(&path).await.expect("head").size;
    assert_eq!(size, total);
    took
}

/// The ceiling of acknowledging each `chunk` only once it is in the
/// bucket, one at a time as a sequential client's PATCHes come: the same
/// bytes as sequential PUTs of `chunk`-byte objects.
async fn sequential_puts(
    store: &dyn ObjectStore,
    block: &Bytes,
    total: u64,
    chunk: u64,
) -> Duration {
    let start = Instant::now();
    let mut offset = 0;
    while offset < total {
        let n = chunk.min(total - offset);
        let path = Path::from(format!("sequential/{}", offset / chunk));
        let payload = object_store::PutPayload::from_iter(pieces(block, offset, n));
        store.put(&path, payload).await.expect("put");
        offset += n;
    }
    let took = start.elapsed();
    offset = 0;
    while offset < total {
        let _ = store
            .delete(&Path::from(format!("sequential/{}", offset / chunk)))
            .await;
        offset += chunk;
    }
    took
}

/// The ceiling of acknowledging each `chunk` once it is on this machine's
/// disk (local tail staging): `chunk`-byte writes to one file under `dir`,
/// each followed by `fdatasync`.
fn sequential_fdatasync(dir: &std::path::Path, block: &Bytes, total: u64, chunk: u64) -> Duration {
    use std::io::Write;
    let path = dir.join("fdatasync-limit");
    let mut file = std::fs::File::create(&path).expect("limit file");
    let start = Instant::now();
    let mut offset = 0;
    while offset < total {
        let n = chunk.min(total - offset);
        for piece in pieces(block, offset, n) {
            file.write_all(&piece).expect("write");
        }
        file.sync_data().expect("fdatasync");
        offset += n;
    }
    let took = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    took
}

#[tokio::main]
async fn main() {
    let (Some(s3), Some(bucket)) = (env("TUSKER_BENCH_S3_ENDPOINT"), env("TUSKER_BENCH_BUCKET"))
    else {
        eprintln!(
            "skipped: set TUSKER_BENCH_S3_ENDPOINT and TUSKER_BENCH_BUCKET (see bench/s3.sh)"
        );
        return;
    };
    let total: u64 = env("TUSKER_BENCH_BYTES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024 * MIB);
    let chunks: Vec<u64> = env("TUSKER_BENCH_CHUNKS")
        .unwrap_or_else(|| "0,50,5,1".to_owned())
        .split(',')
        .map(|c| c.trim().parse().expect("TUSKER_BENCH_CHUNKS: MiB numbers"))
        .collect();
    let extra = env("TUSKER_BENCH_ARGS").unwrap_or_default();
    let block = block();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _tusker = Tusker(
        Command::new(
            env("TUSKER_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_tusker").to_owned()),
        )
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--storage", &format!("s3://{bucket}/tusker")])
        .args(["--s3-endpoint", &s3])
        .args(["--part-size", &PART_SIZE.to_string()])
        .args(["--part-concurrency", &CONCURRENCY.to_string()])
        .args(extra.split_whitespace())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start tusker"),
    );
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()
        .expect("client");
    let mut up = false;
    for _ in 0..100 {
        let res = c.request(reqwest::Method::OPTIONS, &endpoint).send().await;
        if res.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "tusker did not start");

    let store = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_endpoint(&s3)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(300)),
        )
        .with_retry(RetryConfig::default())
        .build()
        .expect("object_store client");

    println!(
        "{} MiB, {} MiB parts, {CONCURRENCY} in flight, server {s3}, tusker flags {extra:?}",
        total / MIB,
        PART_SIZE / MIB
    );
    let mut ratios = Vec::new();
    for chunk in chunks {
        let plain = through_object_store(&store, &block, total).await;
        let name = match chunk {
            0 => "one PATCH".to_owned(),
            n => format!("{n} MiB PATCHes"),
        };
        let size = if chunk == 0 { total } else { chunk * MIB };
        let took = through_tusker(&c, &endpoint, &block, total, size).await;
        let ratio = plain.as_secs_f64() / took.as_secs_f64();
        println!(
            "object_store WriteMultipart : {:8.1} MB/s  ({:.1} s)",
            mbps(total, plain),
            plain.as_secs_f64()
        );
        println!(
            "tusker, {name:<20}: {:8.1} MB/s  ({:.1} s)  ratio {ratio:.2}",
            mbps(total, took),
            took.as_secs_f64(),
        );
        ratios.push(format!("{name}: {ratio:.2}"));
        if chunk > 0 {
            // The two ways a sequential client's PATCH can be made durable
            // before its answer, measured on the same bytes in the same run.
            let puts = sequential_puts(&store, &block, total, size).await;
            let disk = sequential_fdatasync(dir.path(), &block, total, size);
            for (what, took) in [("sequential PUTs", puts), ("fdatasync'd writes", disk)] {
                println!(
                    "  limit, {what:<19}: {:8.1} MB/s  ({:.1} s)  ratio {:.2}",
                    mbps(total, took),
                    took.as_secs_f64(),
                    plain.as_secs_f64() / took.as_secs_f64()
                );
            }
        }
    }
    println!(
        "ratios to the direct multipart upload: {}",
        ratios.join(", ")
    );
}
