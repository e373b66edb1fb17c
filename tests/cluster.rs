//! Several tusker processes sharing one PostgreSQL meta store and one S3
//! bucket: any instance continues any upload, one writer per upload across
//! instances, a SIGKILLed instance's uploads complete through the others,
//! and each finished upload gets exactly one post-finish hook.
//!
//! Needs `TUSKER_TEST_POSTGRES_URL` and `TUSKER_TEST_S3_ENDPOINT`; without
//! them every test is ignored (CI runs them with `--include-ignored`).

mod common;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::pg_db::Db;
use common::proc::{Spawn, Tusker};
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

struct Env {
    pg_admin: String,
    s3: String,
}

/// The services every test here needs; panics when one is not set.
fn env() -> Env {
    Env {
        pg_admin: common::pg_db::admin_url(),
        s3: common::s3::endpoint(),
    }
}

async fn bucket(endpoint: &str) -> String {
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let res = client()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await
        .expect("create bucket");
    assert!(res.status().is_success(), "create bucket: {}", res.status());
    name
}

/// Counts post-finish hooks per upload id.
struct HookReceiver {
    url: String,
    finishes: Arc<Mutex<HashMap<String, usize>>>,
    handle: actix_web::dev::ServerHandle,
}

impl HookReceiver {
    fn start() -> HookReceiver {
        let finishes = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let counts = finishes.clone();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let counts = counts.clone();
                    App::new().default_service(web::to(move |body: web::Json<Value>| {
                        let counts = counts.clone();
                        async move {
                            if body["Type"] == "post-finish" {
                                let id = body["Event"]["Upload"]["ID"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned();
                                *counts.lock().unwrap().entry(id).or_insert(0) += 1;
                            }
                            HttpResponse::Ok().json(serde_json::json!({}))
                        }
                    }))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                server.await.unwrap();
            })
        });
        let (addr, handle) = rx.recv().unwrap();
        HookReceiver {
            url: format!("http://{addr}/hooks"),
            finishes,
            handle,
        }
    }

    fn count(&self, id: &str) -> usize {
        self.finishes.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Starts instance `n`: its own data directory and log, the shared
/// database, bucket and hook receiver.
async fn instance(dir: &Path, n: usize, env: &Env, db: &str, bucket: &str, hooks: &str) -> Tusker {
    Spawn::new(
        &dir.join(format!("data-{n}")),
        &dir.join(format!("tusker-{n}.log")),
    )
    .s3(&env.s3, bucket, "x")
    .args(["--meta", db, "--hooks-http", hooks])
    .args(["--lease-ttl", "2s", "--lock-timeout", "3s"])
    .args(["--hooks-enabled-events", "post-finish"])
    .env("RUST_LOG", "warn,tusker=info")
    .start()
    .await
}

/// Three instances on one database and bucket, and a client that sends
/// each request to the next live instance in turn.
struct Cluster {
    procs: Vec<Option<Tusker>>,
    next: usize,
    hooks: HookReceiver,
    db: Db,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(env: &Env) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(&env.pg_admin).await;
        let bucket = bucket(&env.s3).await;
        let hooks = HookReceiver::start();
        let mut procs = Vec::new();
        for n in 0..3 {
            procs.push(Some(
                instance(dir.path(), n, env, &db.url, &bucket, &hooks.url).await,
            ));
        }
        Cluster {
            procs,
            next: 0,
            hooks,
            db,
            _dir: dir,
        }
    }

    /// The endpoint of the next live instance.
    fn endpoint(&mut self) -> String {
        for _ in 0..self.procs.len() {
            let i = self.next % self.procs.len();
            self.next += 1;
            if let Some(p) = &self.procs[i] {
                return p.endpoint();
            }
        }
        panic!("no live instance");
    }

    fn url(&mut self, id: &str) -> String {
        format!("{}{id}", self.endpoint())
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(|p| p.log_text())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    async fn stop(mut self) {
        for p in self.procs.iter_mut().flatten() {
            p.kill();
        }
        self.db.drop().await;
    }
}

/// The offset, asking instances in turn; 423 (the upload's lease is held
/// by a dead instance until it expires) and 5xx are retried, bounded.
async fn cluster_offset(c: &reqwest::Client, cluster: &mut Cluster, id: &str) -> u64 {
    for _ in 0..60 {
        let url = cluster.url(id);
        let res = c
            .head(&url)
            .header(TUS.0, TUS.1)
            .send()
            .await
            .expect("HEAD");
        if res.status() == 200 {
            return header(&res, "upload-offset").unwrap().parse().unwrap();
        }
        assert!(
            res.status() == 423 || res.status().is_server_error(),
            "HEAD {url}: {}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("upload {id} stayed unavailable: {}", cluster.logs());
}

/// PATCHes `data` from the current offset in `chunk`-sized requests, each
/// to the next instance, as tus-js-client would (HEAD after a failure).
async fn upload_rest(
    c: &reqwest::Client,
    cluster: &mut Cluster,
    id: &str,
    data: &[u8],
    chunk: usize,
) {
    let mut offset = cluster_offset(c, cluster, id).await as usize;
    for _ in 0..400 {
        if offset == data.len() {
            return;
        }
        let end = (offset + chunk).min(data.len());
        let url = cluster.url(id);
        let res = patch(c, &url, offset as u64, data[offset..end].to_vec()).await;
        match res.status().as_u16() {
            204 => {
                let got: usize = header(&res, "upload-offset").unwrap().parse().unwrap();
                assert!(got > offset && got <= end, "offset {offset} -> {got}");
                offset = got;
            }
            409 | 423 | 500..=599 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                offset = cluster_offset(c, cluster, id).await as usize;
            }
            s => panic!("PATCH {url} at {offset}: {s} {:?}", res.text().await),
        }
    }
    panic!("upload {id} did not complete: {}", cluster.logs());
}

/// Creates an upload on the next instance; returns its id.
async fn cluster_create(c: &reqwest::Client, cluster: &mut Cluster, len: usize) -> String {
    let url = create(c, &cluster.endpoint(), len as u64).await;
    url.rsplit('/').next().unwrap().to_owned()
}

async fn assert_complete(c: &reqwest::Client, cluster: &mut Cluster, id: &str, data: &[u8]) {
    for _ in 0..3 {
        let url = cluster.url(id);
        let got = download(c, &url).await;
        assert!(got == data, "upload {id} differs when read through {url}");
    }
}

/// Waits until each upload got its post-finish, then checks none got two.
async fn assert_one_post_finish(cluster: &Cluster, ids: &[String]) {
    let all = eventually(Duration::from_secs(30), || async {
        ids.iter().all(|id| cluster.hooks.count(id) >= 1)
    })
    .await;
    assert!(all, "post-finish missing: {}", cluster.logs());
    for id in ids {
        assert_eq!(cluster.hooks.count(id), 1, "post-finish count of {id}");
    }
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn round_robin_requests_complete_byte_exact() {
    let env = env();
    let mut cluster = Cluster::start(&env).await;
    let c = client();
    let mut ids = Vec::new();
    for (i, (len, chunk)) in [(12 * MIB + 7, MIB), (6 * MIB, 500 * 1024), (1, 1)]
        .into_iter()
        .enumerate()
    {
        let data = bytes(len, i as u64);
        let id = cluster_create(&c, &mut cluster, len).await;
        upload_rest(&c, &mut cluster, &id, &data, chunk).await;
        assert_complete(&c, &mut cluster, &id, &data).await;
        ids.push(id);
    }
    assert_one_post_finish(&cluster, &ids).await;
    cluster.stop().await;
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn an_instance_killed_mid_patch_leaves_the_upload_to_the_others() {
    let env = env();
    let mut cluster = Cluster::start(&env).await;
    let c = client();
    let total = 16 * MIB + 3;
    let data = bytes(total, 7);
    let id = cluster_create(&c, &mut cluster, total).await;
    // Some acknowledged bytes first, through another instance.
    upload_rest(&c, &mut cluster, &id, &data[..3 * MIB], MIB).await;
    let acked = cluster_offset(&c, &mut cluster, &id).await as usize;
    assert_eq!(acked, 3 * MIB);

    // A streaming PATCH for the rest into instance 1, killed half way.
    let sock = patch_in_part(&cluster, 1, &id, &data, acked, 7 * MIB).await;
    if let Some(mut p) = cluster.procs[1].take() {
        p.kill();
    }
    drop(sock);

    // The others take over once the dead instance's lease expires.
    let after = cluster_offset(&c, &mut cluster, &id).await as usize;
    assert!(after >= acked, "offset went from {acked} down to {after}");
    upload_rest(&c, &mut cluster, &id, &data, 2 * MIB).await;
    assert_complete(&c, &mut cluster, &id, &data).await;
    assert_one_post_finish(&cluster, std::slice::from_ref(&id)).await;
    cluster.stop().await;
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn racing_patches_on_two_instances_keep_one_writer() {
    let env = env();
    let mut cluster = Cluster::start(&env).await;
    let c = client();
    let mut ids = Vec::new();
    for round in 0..3u64 {
        let total = 11 * MIB + round as usize;
        let data = bytes(total, 100 + round);
        let id = cluster_create(&c, &mut cluster, total).await;
        let (a, b) = (cluster.url(&id), cluster.url(&id));
        // Both send the whole upload from 0 at once.
        let (ra, rb) = tokio::join!(
            patch(&c, &a, 0, data.clone()),
            patch(&c, &b, 0, data.clone())
        );
        eprintln!(
            "round {round}: racing PATCHes answered {} (offset {:?}) and {} (offset {:?})",
            ra.status(),
            header(&ra, "upload-offset"),
            rb.status(),
            header(&rb, "upload-offset")
        );
        for r in [&ra, &rb] {
            assert!(
                [204, 409, 423].contains(&r.status().as_u16()),
                "racing PATCH answered {}",
                r.status()
            );
        }
        // The first to take the lease answers 204 (stopped part way by the
        // other, or done); the other then finds the offset moved on (409).
        assert!(
            ra.status() == 204 || rb.status() == 204,
            "neither racing PATCH succeeded"
        );
        upload_rest(&c, &mut cluster, &id, &data, 4 * MIB).await;
        assert_complete(&c, &mut cluster, &id, &data).await;
        ids.push(id);
    }
    assert_one_post_finish(&cluster, &ids).await;
    cluster.stop().await;
}

/// Opens a PATCH on instance `n` for all of `data` after `offset` and
/// sends its first `sent` bytes, leaving the body unfinished.
async fn patch_in_part(
    cluster: &Cluster,
    n: usize,
    id: &str,
    data: &[u8],
    offset: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    let addr = cluster.procs[n].as_ref().unwrap().addr;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {}\r\n\r\n",
        data.len() - offset
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[offset..offset + sent]).await.unwrap();
    sock.flush().await.unwrap();
    sock
}

/// Sends `signal` to instance `n` of the cluster.
fn signal(cluster: &Cluster, n: usize, signal: libc::c_int) {
    let pid = cluster.procs[n]
        .as_ref()
        .and_then(|p| p.pid())
        .expect("pid");
    // SAFETY: kill(2) with a pid this test started.
    let r = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(r, 0, "kill({pid}, {signal})");
}

/// The status line of the answer on `sock`, or `None` if it closed first.
async fn status_of(sock: &mut tokio::net::TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&got).into_owned();
    line.split(' ').nth(1).and_then(|s| s.parse().ok())
}

/// The finding: an instance frozen (SIGSTOP) in the middle of a
/// PATCH, the client finishing the upload through the others, then the
/// frozen one thawed (SIGCONT). Its late save must change nothing: the
/// upload stays finished and byte-exact on every instance, and the frozen
/// request does not succeed.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn a_frozen_instance_cannot_undo_a_finished_upload() {
    let env = env();
    let mut cluster = Cluster::start(&env).await;
    let c = client();
    let total = 16 * MIB + 3;
    let data = bytes(total, 11);
    let id = cluster_create(&c, &mut cluster, total).await;
    upload_rest(&c, &mut cluster, &id, &data[..MIB], MIB).await;
    let acked = cluster_offset(&c, &mut cluster, &id).await as usize;

    // A streaming PATCH into instance 1, which is frozen half way.
    let mut sock = patch_in_part(&cluster, 1, &id, &data, acked, 7 * MIB).await;
    // Let it take the bytes in (a part goes out) before it freezes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&cluster, 1, libc::SIGSTOP);
    let frozen = cluster.procs[1].take();

    // The client finishes through the others once the lease lapsed.
    upload_rest(&c, &mut cluster, &id, &data, 4 * MIB).await;
    assert_complete(&c, &mut cluster, &id, &data).await;

    // Thawed, the frozen instance finds its lease gone and ends its PATCH.
    cluster.procs[1] = frozen;
    signal(&cluster, 1, libc::SIGCONT);
    let late = tokio::time::timeout(Duration::from_secs(30), status_of(&mut sock))
        .await
        .expect("the thawed instance never answered its PATCH");
    eprintln!("the thawed instance answered its PATCH with {late:?}");
    assert!(
        !matches!(late, Some(200..=299)),
        "the thawed instance acknowledged its PATCH: {late:?}"
    );
    drop(sock);

    for n in 0..cluster.procs.len() {
        let url = cluster.procs[n].as_ref().unwrap().url(&id);
        let res = c
            .head(&url)
            .header(TUS.0, TUS.1)
            .send()
            .await
            .expect("HEAD");
        assert_eq!(res.status(), 200, "HEAD {url}");
        assert_eq!(
            header(&res, "upload-offset").as_deref(),
            Some(total.to_string().as_str()),
            "instance {n} reports a lower offset: {}",
            cluster.logs()
        );
    }
    assert_complete(&c, &mut cluster, &id, &data).await;
    assert_one_post_finish(&cluster, std::slice::from_ref(&id)).await;
    cluster.stop().await;
}
