//! Crash torture: several uploads run at once against the real binary,
//! with random sizes and random PATCH sizes, while tusker is SIGKILLed at
//! random moments (after a random delay, in the middle of a request body,
//! right after a 201/204, just after a POST went out) and restarted on the same data directory (and the
//! same bucket, for object storage). Clients resume from HEAD after every
//! failure, as tus clients do.
//!
//! Every offset the server ever acknowledged (201 and 204 `Upload-Offset`,
//! HEAD and 409 answers) is recorded per upload. Proven throughout:
//! - HEAD never reports less than the highest offset acknowledged before it
//!   was sent, and never more than the client has handed over;
//! - after every restart, every unfinished upload (and a sample of the
//!   finished ones) answers HEAD (no lock or record left stuck) with such
//!   an offset;
//! - every finished upload downloads byte-exact (for S3 also read straight
//!   from the bucket), still after one last kill, and leaves no multipart
//!   upload and no staged segment behind; a multipart upload without a
//!   record comes only from a creation the kill cut short.
//!
//! The seed is printed; `TUSKER_TORTURE_SEED=N` replays the same choices
//! (sizes, PATCH sizes, kill modes and delays; thread timing still varies).
//! CI runs 12 kills per backend; `TUSKER_TORTURE_SOAK=1` runs 60 kills
//! with more clients and larger files, `TUSKER_TORTURE_KILLS=N` sets the
//! number of kills. The S3 variant needs `TUSKER_TEST_S3_ENDPOINT` and is
//! ignored without it.

mod common;

use bytes::Bytes;
use common::proc::{Spawn, Tusker};
use common::rng::Rng;
use common::s3::MIB;
use common::*;
use object_store::ObjectStoreExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How hard to torture.
#[derive(Clone, Debug)]
struct Plan {
    clients: usize,
    kills: usize,
    /// Largest upload.
    max_size: u64,
    /// Longest wait before a kill, in ms.
    max_delay_ms: u64,
    /// The whole run must end within this.
    limit: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let soak = std::env::var("TUSKER_TORTURE_SOAK").is_ok_and(|v| v == "1");
        let mut plan = if soak {
            Plan {
                clients: 8,
                kills: 60,
                max_size: 48 * MIB as u64,
                max_delay_ms: 3000,
                limit: Duration::ZERO,
            }
        } else {
            Plan {
                clients: 6,
                kills: 12,
                max_size: 17 * MIB as u64,
                max_delay_ms: 1500,
                limit: Duration::ZERO,
            }
        };
        if let Some(kills) = std::env::var("TUSKER_TORTURE_KILLS")
            .ok()
            .and_then(|k| k.parse().ok())
        {
            plan.kills = kills;
        }
        // A kill cycle takes a few seconds (wait, restart, HEADs); far
        // more means something hangs.
        plan.limit = Duration::from_secs(120 + 20 * plan.kills as u64);
        plan
    }

    /// An upload size: some empty, many small, many spanning several
    /// 5 MiB parts.
    fn size(&self, rng: &mut Rng) -> u64 {
        match rng.next() % 100 {
            0..=4 => 0,
            5..=29 => rng.range(1, 64 * 1024),
            30..=64 => rng.range(64 * 1024, 3 * MIB as u64),
            _ => rng.range(5 * MIB as u64, self.max_size),
        }
    }
}

/// The seed: `TUSKER_TORTURE_SEED`, else the clock.
fn seed() -> u64 {
    std::env::var("TUSKER_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A PATCH size: from 1 byte to several MiB, at most `left`.
fn patch_size(rng: &mut Rng, left: u64) -> u64 {
    let size = match rng.next() % 100 {
        0..=9 => rng.range(1, 16),
        10..=39 => rng.range(1, 64 * 1024),
        40..=74 => rng.range(1, MIB as u64),
        _ => rng.range(MIB as u64, 6 * MIB as u64),
    };
    size.min(left)
}

/// What one upload went through, as the client saw it.
struct Track {
    id: String,
    data: Arc<Vec<u8>>,
    /// Highest offset the server ever acknowledged.
    acked: AtomicU64,
    /// Every offset acknowledged, in the order the answers arrived.
    acks: Mutex<Vec<u64>>,
    /// Highest offset of any byte the client handed to a connection.
    sent: AtomicU64,
    /// Downloaded byte-exact after the last byte was acknowledged.
    finished: AtomicBool,
}

impl Track {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn ack(&self, offset: u64) {
        self.acks.lock().unwrap().push(offset);
        self.acked.fetch_max(offset, Ordering::SeqCst);
    }

    /// Checks an offset the server reported for a request sent when
    /// `acked_before` was the highest acknowledged offset, then records it.
    fn check(&self, what: &str, reported: u64, acked_before: u64) {
        let sent = self.sent.load(Ordering::SeqCst);
        assert!(
            reported >= acked_before,
            "{}: {what} reports offset {reported}, below the acknowledged {acked_before} (acks so far {:?})",
            self.id,
            self.acks.lock().unwrap()
        );
        assert!(
            reported <= sent && reported <= self.len(),
            "{}: {what} reports offset {reported}, more than the {sent} bytes sent (length {})",
            self.id,
            self.len()
        );
        self.ack(reported);
    }
}

/// What the killer waits for.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A body piece went out; `into_body` bytes of this request so far.
    Body { into_body: u64 },
    /// A 201 or 204 arrived.
    Acked,
    /// A POST is about to go out.
    Creating,
}

/// State shared by the clients and the killer.
struct Shared {
    /// The endpoint of the running server; `None` while it is down.
    endpoint: watch::Sender<Option<String>>,
    events: broadcast::Sender<Event>,
    tracks: Mutex<Vec<Arc<Track>>>,
    /// Set once every kill happened: clients end their current upload.
    winding_down: AtomicBool,
    /// Creations whose answer was lost in a kill.
    lost_creations: AtomicUsize,
    /// Requests that failed (connection broken, 5xx, 423) and were resumed.
    resumes: AtomicUsize,
    http: reqwest::Client,
}

/// Most attempts at one step before the test gives up (each attempt waits
/// for a running server, or at most 100 ms).
const ATTEMPTS: usize = 600;

impl Shared {
    /// The running server's endpoint, waiting while it is down.
    async fn endpoint(&self) -> String {
        let mut rx = self.endpoint.subscribe();
        let got = tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|e| e.is_some()))
            .await
            .expect("the server came back")
            .expect("killer alive");
        got.clone().expect("some")
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// HEAD until it answers; checks and records the offset. Panics when
    /// the upload is gone or the server keeps refusing (a stuck lock).
    async fn head(&self, t: &Track) -> u64 {
        for _ in 0..ATTEMPTS {
            let endpoint = self.endpoint().await;
            let before = t.acked.load(Ordering::SeqCst);
            let res = self
                .http
                .head(format!("{endpoint}{}", t.id))
                .header(TUS.0, TUS.1)
                .send()
                .await;
            match res {
                Ok(res) if res.status() == 200 => {
                    let offset: u64 = header(&res, "upload-offset")
                        .and_then(|o| o.parse().ok())
                        .expect("HEAD has Upload-Offset");
                    t.check("HEAD", offset, before);
                    return offset;
                }
                Ok(res) if res.status() == 423 || res.status().is_server_error() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(res) => panic!("{}: HEAD answered {}", t.id, res.status()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("{}: HEAD never answered 200", t.id);
    }
}

/// A request body of `data[from..to]` in random pieces, sometimes
/// pausing; `sent` grows before each piece is handed over, and the killer
/// hears of the progress.
fn body(shared: &Arc<Shared>, t: &Arc<Track>, from: u64, to: u64, rng: &mut Rng) -> reqwest::Body {
    let mut rng = rng.fork();
    let (shared, t) = (shared.clone(), t.clone());
    let stream = futures_util::stream::unfold(from, move |pos| {
        let (shared, t) = (shared.clone(), t.clone());
        let piece = rng.range(1, 256 * 1024);
        let pause = rng.chance(20).then(|| rng.range(1, 8));
        async move {
            if pos >= to {
                return None;
            }
            if let Some(ms) = pause {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let end = (pos + piece).min(to);
            t.sent.fetch_max(end, Ordering::SeqCst);
            shared.emit(Event::Body {
                into_body: end - from,
            });
            let bytes = Bytes::copy_from_slice(&t.data[pos as usize..end as usize]);
            Some((Ok::<_, std::io::Error>(bytes), end))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// One client: uploads one file after another until the killer is done,
/// resuming from HEAD after every failure.
async fn client(shared: Arc<Shared>, plan: Plan, mut rng: Rng, n: usize) {
    let mut uploads = 0u64;
    while !shared.winding_down.load(Ordering::SeqCst) {
        let size = plan.size(&mut rng);
        let data = Arc::new(bytes(size as usize, rng.next()));
        let Some(t) = create(&shared, data, &mut rng).await else {
            continue;
        };
        uploads += 1;
        let mut offset = t.acked.load(Ordering::SeqCst);
        let mut attempts = 0usize;
        while offset < t.len() {
            attempts += 1;
            assert!(attempts < 20 * ATTEMPTS, "{}: no progress", t.id);
            let endpoint = shared.endpoint().await;
            let to = offset + patch_size(&mut rng, t.len() - offset);
            let before = t.acked.load(Ordering::SeqCst);
            let res = shared
                .http
                .patch(format!("{endpoint}{}", t.id))
                .header(TUS.0, TUS.1)
                .header(OCTET.0, OCTET.1)
                .header("Upload-Offset", offset.to_string())
                .header("Content-Length", (to - offset).to_string())
                .body(body(&shared, &t, offset, to, &mut rng))
                .send()
                .await;
            match res {
                Ok(res) if res.status() == 204 => {
                    let reported: u64 = header(&res, "upload-offset")
                        .and_then(|o| o.parse().ok())
                        .expect("204 has Upload-Offset");
                    assert!(
                        reported >= offset && reported <= to,
                        "{}: PATCH {offset}..{to} answered offset {reported}",
                        t.id
                    );
                    t.check("204", reported, before);
                    shared.emit(Event::Acked);
                    offset = reported;
                    // Between requests, now and then a breath.
                    if rng.chance(10) {
                        tokio::time::sleep(Duration::from_millis(rng.range(1, 50))).await;
                    }
                }
                Ok(res) if res.status() == 409 => {
                    // Only a lost answer can leave the client behind; the
                    // 409 carries the server's offset.
                    let reported: u64 = header(&res, "upload-offset")
                        .and_then(|o| o.parse().ok())
                        .expect("409 has Upload-Offset");
                    t.check("409", reported, before);
                    shared.resumes.fetch_add(1, Ordering::SeqCst);
                    offset = shared.head(&t).await;
                }
                Ok(res) if res.status() == 423 || res.status().is_server_error() => {
                    shared.resumes.fetch_add(1, Ordering::SeqCst);
                    offset = shared.head(&t).await;
                }
                Ok(res) => {
                    let status = res.status();
                    panic!(
                        "{}: PATCH {offset}..{to} answered {status}: {:?}",
                        t.id,
                        res.text().await
                    );
                }
                Err(_) => {
                    // The kill broke the request: resume from HEAD.
                    shared.resumes.fetch_add(1, Ordering::SeqCst);
                    offset = shared.head(&t).await;
                }
            }
        }
        verify_download(&shared, &t).await;
        t.finished.store(true, Ordering::SeqCst);
    }
    eprintln!("client {n}: {uploads} uploads");
}

/// Creates an upload, sometimes with its first bytes in the POST
/// (creation-with-upload). `None` when the answer was lost in a kill: the
/// client cannot know the upload and starts another one.
async fn create(shared: &Arc<Shared>, data: Arc<Vec<u8>>, rng: &mut Rng) -> Option<Arc<Track>> {
    let len = data.len() as u64;
    let with_body = len > 0 && rng.chance(35);
    let first = if with_body {
        patch_size(rng, len).max(1)
    } else {
        0
    };
    let t = Arc::new(Track {
        id: String::new(),
        data,
        acked: AtomicU64::new(0),
        acks: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        finished: AtomicBool::new(false),
    });
    for _ in 0..ATTEMPTS {
        let endpoint = shared.endpoint().await;
        shared.emit(Event::Creating);
        let mut req = shared
            .http
            .post(&endpoint)
            .header(TUS.0, TUS.1)
            .header("Upload-Length", len.to_string());
        if with_body {
            req = req
                .header(OCTET.0, OCTET.1)
                .header("Content-Length", first.to_string())
                .body(body(shared, &t, 0, first, rng));
        }
        match req.send().await {
            Ok(res) if res.status() == 201 => {
                let id = id_of(&location(&res));
                let offset: u64 = header(&res, "upload-offset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(0);
                assert!(offset <= first, "{id}: 201 with offset {offset} > {first}");
                let t = Arc::new(Track {
                    id,
                    data: t.data.clone(),
                    acked: AtomicU64::new(0),
                    acks: Mutex::new(vec![]),
                    sent: AtomicU64::new(t.sent.load(Ordering::SeqCst)),
                    finished: AtomicBool::new(false),
                });
                t.check("201", offset, 0);
                shared.emit(Event::Acked);
                shared.tracks.lock().unwrap().push(t.clone());
                return Some(t);
            }
            Ok(res) if res.status().is_server_error() => {
                // Maybe created, maybe not: start over.
                shared.lost_creations.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            Ok(res) => {
                let status = res.status();
                panic!("POST answered {status}: {:?}", res.text().await);
            }
            Err(e) if e.is_connect() => {
                // Nothing reached the server: try again.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                shared.lost_creations.fetch_add(1, Ordering::SeqCst);
                return None;
            }
        }
    }
    panic!("POST never got through");
}

/// GETs a finished upload until it answers; the bytes must be exact.
async fn verify_download(shared: &Shared, t: &Track) {
    for _ in 0..ATTEMPTS {
        let endpoint = shared.endpoint().await;
        let res = match shared.http.get(format!("{endpoint}{}", t.id)).send().await {
            Ok(res) => res,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let status = res.status();
        if status == 423 || status.is_server_error() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "{}: GET of a finished upload", t.id);
        let Ok(got) = res.bytes().await else {
            continue; // killed while downloading
        };
        assert!(
            got.len() == t.data.len() && got[..] == t.data[..],
            "{}: downloaded {} bytes that differ from the {} uploaded",
            t.id,
            got.len(),
            t.data.len()
        );
        return;
    }
    panic!("{}: GET never answered", t.id);
}

/// Percentage of finished uploads HEADed after each restart.
const FINISHED_SAMPLE: u64 = 5;

/// When to kill.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// After a random delay.
    Delay(u64),
    /// Once some request body is this far along.
    MidBody(u64),
    /// Right after a 201/204 arrived.
    AfterAck,
    /// This many ms after a POST went out (while the server creates the
    /// record and the storage).
    MidCreate(u64),
}

/// Kills and restarts the server `plan.kills` times; after each restart
/// every known upload must answer HEAD with a consistent offset.
async fn killer(shared: Arc<Shared>, server: &mut Tusker, plan: &Plan, mut rng: Rng) {
    for k in 0..plan.kills {
        let moment = match rng.next() % 4 {
            0 => Moment::Delay(rng.range(0, plan.max_delay_ms)),
            1 => Moment::MidBody(rng.range(1, 4 * MIB as u64)),
            2 => Moment::MidCreate(rng.range(0, 30)),
            _ => Moment::AfterAck,
        };
        // Let the clients get going after the restart.
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        let mut events = shared.events.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            match moment {
                Moment::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Moment::MidBody(at) => loop {
                    match events.recv().await {
                        Ok(Event::Body { into_body }) if into_body >= at => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                },
                Moment::AfterAck => loop {
                    match events.recv().await {
                        Ok(Event::Acked) => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                },
                Moment::MidCreate(ms) => {
                    loop {
                        match events.recv().await {
                            Ok(Event::Creating) => break,
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => break,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
        })
        .await;
        server.assert_running();
        shared.endpoint.send_replace(None);
        server.kill();
        eprintln!(
            "kill {}/{}: {moment:?}{}",
            k + 1,
            plan.kills,
            if waited.is_err() { " (timed out)" } else { "" }
        );
        server.restart().await;
        shared.endpoint.send_replace(Some(server.endpoint()));
        // Every unfinished upload, and some finished ones (all of them are
        // checked at the end), still answers, with nothing lost.
        let tracks: Vec<Arc<Track>> = shared.tracks.lock().unwrap().clone();
        for t in &tracks {
            let finished = t.finished.load(Ordering::SeqCst);
            if finished && !rng.chance(FINISHED_SAMPLE) {
                continue;
            }
            let offset = shared.head(t).await;
            if finished {
                assert_eq!(offset, t.len(), "{}: finished upload shrank", t.id);
            }
        }
    }
    shared.winding_down.store(true, Ordering::SeqCst);
}

/// Where the finished uploads live, for the checks after the run.
enum Backend {
    Disk,
    S3 { endpoint: String, bucket: String },
}

/// Runs the torture against `server`, then kills it once more and checks
/// every finished upload.
async fn torture(mut server: Tusker, backend: Backend) {
    let plan = Plan::from_env();
    let seed = seed();
    eprintln!("torture seed {seed} (replay with TUSKER_TORTURE_SEED={seed}); {plan:?}");
    let mut rng = Rng(seed);
    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        endpoint: watch::Sender::new(Some(server.endpoint())),
        events,
        tracks: Mutex::new(Vec::new()),
        winding_down: AtomicBool::new(false),
        lost_creations: AtomicUsize::new(0),
        resumes: AtomicUsize::new(0),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    });

    let started = std::time::Instant::now();
    let run = async {
        let clients: Vec<_> = (0..plan.clients)
            .map(|n| tokio::spawn(client(shared.clone(), plan.clone(), rng.fork(), n)))
            .collect();
        killer(shared.clone(), &mut server, &plan, rng.fork()).await;
        for c in clients {
            if let Err(e) = c.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    };
    if tokio::time::timeout(plan.limit, run).await.is_err() {
        panic!(
            "torture did not end within {:?}; log:\n{}",
            plan.limit,
            server.log_tail(60)
        );
    }

    // One more kill; everything finished stays finished and exact.
    server.restart().await;
    shared.endpoint.send_replace(Some(server.endpoint()));
    let tracks: Vec<Arc<Track>> = shared.tracks.lock().unwrap().clone();
    let finished: Vec<&Arc<Track>> = tracks
        .iter()
        .filter(|t| t.finished.load(Ordering::SeqCst))
        .collect();
    for t in &finished {
        assert_eq!(shared.head(t).await, t.len(), "{}", t.id);
        verify_download(&shared, t).await;
    }
    if let Backend::S3 { endpoint, bucket } = &backend {
        let open = s3::open_multipart_keys(endpoint, bucket).await;
        let bucket_store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("S3 client");
        for t in &finished {
            let key = format!("uploads/{}", t.id);
            let got = bucket_store
                .get(&object_store::path::Path::from(key.as_str()))
                .await
                .unwrap_or_else(|e| panic!("{key} in the bucket: {e}"))
                .bytes()
                .await
                .expect("object body");
            assert!(got[..] == t.data[..], "{key} in the bucket differs");
            assert!(
                !open.contains(&key),
                "{key}: finished, but its multipart upload is still open"
            );
            let staged = s3::keys_under(
                endpoint,
                bucket,
                &format!("uploads/.tusker-staging/{}/", t.id),
            )
            .await;
            assert_eq!(staged, 0, "{key}: finished, staged segments left");
        }
    }
    if let Backend::S3 { endpoint, bucket } = &backend {
        // An open multipart upload whose upload the server does not know
        // can only come from a creation killed between CreateMultipartUpload
        // and the record's write (object_store cannot list them, so no
        // expiry will abort it: the bucket lifecycle rule does); every other
        // one belongs to an upload that expiry or DELETE will abort.
        let mut unknown = Vec::new();
        for key in s3::open_multipart_keys(endpoint, bucket).await {
            let id = key.strip_prefix("uploads/").unwrap_or(&key);
            let res = shared
                .http
                .head(server.url(id))
                .header(TUS.0, TUS.1)
                .send()
                .await
                .expect("HEAD");
            match res.status().as_u16() {
                200 => {}
                404 => unknown.push(key),
                status => panic!("{key}: HEAD answered {status}"),
            }
        }
        let lost = shared.lost_creations.load(Ordering::SeqCst);
        assert!(
            unknown.len() <= lost,
            "{} multipart uploads without a record ({unknown:?}), only {lost} creations were cut",
            unknown.len()
        );
        eprintln!(
            "{} open multipart uploads without a record, from {lost} cut creations",
            unknown.len()
        );
    }
    let acks: usize = tracks.iter().map(|t| t.acks.lock().unwrap().len()).sum();
    eprintln!(
        "{} kills in {:?}: {} uploads known ({} finished), {} acknowledgements checked, {} resumes, {} creations lost",
        plan.kills,
        started.elapsed(),
        tracks.len(),
        finished.len(),
        acks,
        shared.resumes.load(Ordering::SeqCst),
        shared.lost_creations.load(Ordering::SeqCst)
    );
    assert!(
        finished.len() >= plan.clients,
        "only {} uploads finished",
        finished.len()
    );
    server.kill();
}

/// Long PATCHes record their progress every 2 MiB, so kills also land
/// between such checkpoints and the recovery from them is exercised.
const CHECKPOINTS: [&str; 2] = ["--checkpoint-size", "2MiB"];

/// The test directory (data directory, sled, the server's log), kept when
/// the test fails so the failure can be examined.
struct KeepOnFailure(Option<tempfile::TempDir>);

impl KeepOnFailure {
    fn new() -> KeepOnFailure {
        KeepOnFailure(Some(tempfile::tempdir().unwrap()))
    }

    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("present").path()
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("kept {} (data, sled, tusker.log)", dir.keep().display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_survives_random_sigkills() {
    let dir = KeepOnFailure::new();
    let server = Spawn::new(&dir.path().join("data"), &dir.path().join("tusker.log"))
        .args(CHECKPOINTS)
        .start()
        .await;
    torture(server, Backend::Disk).await;
}

/// The same with whole blocks written by direct I/O: kills land between a
/// block's partial write through the page cache and its whole direct write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_with_direct_io_survives_random_sigkills() {
    let dir = KeepOnFailure::new();
    let server = Spawn::new(&dir.path().join("data"), &dir.path().join("tusker.log"))
        .args(CHECKPOINTS)
        .args(["--file-direct-io"])
        .start()
        .await;
    torture(server, Backend::Disk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn s3_survives_random_sigkills() {
    let endpoint = s3::endpoint();
    let bucket = s3::bucket(&endpoint).await;
    let dir = KeepOnFailure::new();
    let server = Spawn::new(&dir.path().join("data"), &dir.path().join("tusker.log"))
        .s3(&endpoint, &bucket, "uploads")
        .args(CHECKPOINTS)
        .start()
        .await;
    torture(server, Backend::S3 { endpoint, bucket }).await;
}
