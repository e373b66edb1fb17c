//! Chaos soak: several real tusker processes on a private PostgreSQL and
//! one S3 bucket, many concurrent uploads through clients that spread
//! their requests over the instances and retry as tus-js-client does
//! (HEAD to resume, retry on 409/423/5xx and broken connections with its
//! default delays), while instances are SIGKILLed (and restarted) and
//! SIGSTOPped (and later SIGCONTed) at random and PostgreSQL is restarted
//! once. Afterwards:
//!
//! - every upload whose completion was acknowledged is byte-exact (GET
//!   through any instance) and complete on every instance;
//! - no offset any client saw ever went down;
//! - after the expiry sweep, nothing is left in the bucket that no upload
//!   owns, and no multipart upload is left open.
//!
//! `TUSKER_SOAK_SECONDS` sets how long faults are injected (default 40);
//! `TUSKER_SOAK_SEED` replays a run's fault schedule and client choices
//! (printed at start; the interleaving with real time still varies).

mod common;

use common::pg_private::PrivatePg;
use common::proc::{Spawn, Tusker};
use common::rng::Rng;
use common::{bytes, header, id_of, location, OCTET, TUS};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INSTANCES: usize = 4;
/// Uploads running at once.
const CLIENTS: usize = 6;
const MIB: u64 = 1024 * 1024;
/// tus-js-client's default `retryDelays`; the last one repeats here.
const RETRY_DELAYS_MS: [u64; 4] = [0, 1000, 3000, 5000];
/// How long a client waits for an answer before it gives up on the
/// request and resumes elsewhere (shorter than most freezes).
const CLIENT_PATIENCE: Duration = Duration::from_secs(4);
/// How long the clients may take to finish once the faults stop.
const SETTLE: Duration = Duration::from_secs(150);
/// Unfinished uploads nobody continues (a creation whose answer was lost)
/// expire this long after their last write, so the sweep removes them.
const EXPIRE_AFTER: &str = "30s";

fn seed() -> u64 {
    match std::env::var("TUSKER_SOAK_SEED") {
        Ok(s) => s.parse().expect("TUSKER_SOAK_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

fn fault_time() -> Duration {
    let secs = std::env::var("TUSKER_SOAK_SECONDS")
        .map(|s| s.parse().expect("TUSKER_SOAK_SECONDS must be a number"))
        .unwrap_or(40);
    Duration::from_secs(secs)
}

/// Everything the clients observed.
#[derive(Default)]
struct Ledger {
    /// The highest offset any client saw, per upload.
    highest: HashMap<String, u64>,
    /// Offsets that went down.
    regressions: Vec<String>,
    /// Uploads whose completion was acknowledged: length and data seed.
    completed: BTreeMap<String, (usize, u64)>,
    /// Answers that must not happen (a known upload vanished, an
    /// unexpected status, an upload not finished in time).
    failures: Vec<String>,
}

impl Ledger {
    fn saw(&mut self, id: &str, offset: u64, via: String) {
        let highest = self.highest.entry(id.to_owned()).or_insert(0);
        if offset < *highest {
            self.regressions.push(format!(
                "{id}: offset {highest} was seen, then {offset} ({via})"
            ));
        } else {
            *highest = offset;
        }
    }
}

/// What the clients share: where the instances listen right now (`None`
/// while one is down), the ledger, and the HTTP client.
#[derive(Clone)]
struct Shared {
    addrs: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    ledger: Arc<Mutex<Ledger>>,
    http: reqwest::Client,
}

impl Shared {
    /// A random instance that is up (frozen ones included: the client
    /// cannot tell, as behind a load balancer).
    fn pick(&self, rng: &mut Rng) -> Option<SocketAddr> {
        let live: Vec<SocketAddr> = self
            .addrs
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect();
        (!live.is_empty()).then(|| *rng.pick(&live))
    }

    fn fail(&self, what: String) {
        eprintln!("soak failure: {what}");
        self.ledger.lock().unwrap().failures.push(what);
    }

    fn saw(&self, id: &str, offset: u64, via: String) {
        self.ledger.lock().unwrap().saw(id, offset, via);
    }
}

fn retryable(status: u16) -> bool {
    matches!(status, 409 | 423 | 500..=599)
}

/// Sleeps the next retry delay.
async fn pause(attempt: &mut usize) {
    let ms = RETRY_DELAYS_MS[(*attempt).min(RETRY_DELAYS_MS.len() - 1)];
    *attempt += 1;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One upload from creation to acknowledged completion, each request to a
/// random instance; gives up (as a failure) at `until`.
async fn client_upload(sh: Shared, mut rng: Rng, until: Instant) {
    let len = match rng.below(4) {
        0 => rng.range(1, 64 * 1024),
        1 => rng.range(1, 5 * MIB),
        _ => rng.range(5 * MIB, 14 * MIB),
    };
    let data_seed = rng.next();
    let data = bytes(len as usize, data_seed);
    let mut attempt = 0;
    let id = loop {
        if Instant::now() > until {
            return sh.fail(format!("creating an upload of {len} bytes never succeeded"));
        }
        pause(&mut attempt).await;
        let Some(addr) = sh.pick(&mut rng) else {
            continue;
        };
        let res = sh
            .http
            .post(format!("http://{addr}/files/"))
            .header(TUS.0, TUS.1)
            .header("Upload-Length", len.to_string())
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 201 => break id_of(&location(&r)),
            Ok(r) if retryable(r.status().as_u16()) => {}
            Ok(r) => return sh.fail(format!("POST on {addr} answered {}", r.status())),
            Err(_) => {}
        }
    };
    let (mut offset, mut resume, mut attempt) = (0u64, false, 0);
    loop {
        if Instant::now() > until {
            return sh.fail(format!("{id}: at {offset} of {len} when time ran out"));
        }
        if resume {
            pause(&mut attempt).await;
            let Some(addr) = sh.pick(&mut rng) else {
                continue;
            };
            let res = sh
                .http
                .head(format!("http://{addr}/files/{id}"))
                .header(TUS.0, TUS.1)
                .send()
                .await;
            match res {
                Ok(r) if r.status() == 200 => {
                    let Some(at) = header(&r, "upload-offset").and_then(|v| v.parse().ok()) else {
                        return sh.fail(format!("{id}: HEAD on {addr} without Upload-Offset"));
                    };
                    sh.saw(&id, at, format!("HEAD on {addr}"));
                    offset = at;
                    resume = false;
                }
                Ok(r) if retryable(r.status().as_u16()) => continue,
                Ok(r) => return sh.fail(format!("{id}: HEAD on {addr} answered {}", r.status())),
                Err(_) => continue,
            }
        }
        // tus-js-client takes a HEAD showing the whole length as done.
        if offset == len {
            break;
        }
        let Some(addr) = sh.pick(&mut rng) else {
            resume = true;
            continue;
        };
        let end = (offset + rng.range(64 * 1024, 3 * MIB)).min(len);
        let res = sh
            .http
            .patch(format!("http://{addr}/files/{id}"))
            .header(TUS.0, TUS.1)
            .header(OCTET.0, OCTET.1)
            .header("Upload-Offset", offset.to_string())
            .body(data[offset as usize..end as usize].to_vec())
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 204 => {
                let Some(at) = header(&r, "upload-offset").and_then(|v| v.parse::<u64>().ok())
                else {
                    return sh.fail(format!("{id}: PATCH on {addr} without Upload-Offset"));
                };
                if at < offset || at > end {
                    return sh.fail(format!(
                        "{id}: PATCH {offset}..{end} on {addr} answered {at}"
                    ));
                }
                // A PATCH stopped by a newer request (this client's own
                // retry elsewhere) before a byte landed keeps nothing and
                // says so; the client goes on from there.
                sh.saw(&id, at, format!("PATCH on {addr}"));
                if at > offset {
                    attempt = 0;
                }
                offset = at;
            }
            Ok(r) if retryable(r.status().as_u16()) => resume = true,
            Ok(r) => return sh.fail(format!("{id}: PATCH on {addr} answered {}", r.status())),
            Err(_) => resume = true,
        }
    }
    sh.ledger
        .lock()
        .unwrap()
        .completed
        .insert(id, (len as usize, data_seed));
}

/// Keeps `CLIENTS` uploads running until `stop`, then lets the last ones
/// finish (by `until`).
async fn clients(sh: Shared, mut rng: Rng, stop: Instant, until: Instant) -> usize {
    let mut running = tokio::task::JoinSet::new();
    let mut started = 0;
    while Instant::now() < stop {
        while running.len() < CLIENTS {
            running.spawn(client_upload(sh.clone(), rng.fork(), until));
            started += 1;
        }
        running.join_next().await;
    }
    while running.join_next().await.is_some() {}
    started
}

fn signal(t: &Tusker, sig: i32) {
    let pid = t.pid().expect("running") as i32;
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Injects faults for `length`, one at a time: SIGKILL and restart,
/// SIGSTOP and SIGCONT, and once, half way, a PostgreSQL restart.
/// Returns the number of SIGKILLs.
async fn inject_faults(
    procs: &mut [Tusker],
    sh: &Shared,
    pg: &mut PrivatePg,
    rng: &mut Rng,
    length: Duration,
) -> usize {
    let start = Instant::now();
    let mut kills = 0;
    let mut pg_restarted = false;
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 2500))).await;
        if !pg_restarted && start.elapsed() >= length / 2 {
            let down = Duration::from_millis(rng.range(1000, 5000));
            eprintln!("soak {:?}: PostgreSQL down for {down:?}", start.elapsed());
            tokio::task::block_in_place(|| pg.restart_after(down));
            pg_restarted = true;
            continue;
        }
        let i = rng.below(procs.len());
        if rng.chance(40) {
            let down = Duration::from_millis(rng.range(200, 4000));
            eprintln!(
                "soak {:?}: SIGKILL instance {i}, restart after {down:?}",
                start.elapsed()
            );
            sh.addrs.lock().unwrap()[i] = None;
            procs[i].kill();
            kills += 1;
            tokio::time::sleep(down).await;
            procs[i].restart().await;
            sh.addrs.lock().unwrap()[i] = Some(procs[i].addr);
        } else {
            // Longer than the lease (2 s) and the client's patience: another
            // instance takes the upload over while this one holds it.
            let frozen = Duration::from_millis(rng.range(1000, 10000));
            eprintln!(
                "soak {:?}: SIGSTOP instance {i} for {frozen:?}",
                start.elapsed()
            );
            signal(&procs[i], libc::SIGSTOP);
            tokio::time::sleep(frozen).await;
            signal(&procs[i], libc::SIGCONT);
        }
    }
    kills
}

async fn instance(dir: &Path, n: usize, s3: &str, bucket: &str, meta: &str) -> Tusker {
    Spawn::new(
        &dir.join(format!("data-{n}")),
        &dir.join(format!("tusker-{n}.log")),
    )
    .s3(s3, bucket, "x")
    .args(["--meta", meta, "--lease-ttl", "2s", "--lock-timeout", "3s"])
    .args(["--expire-after", EXPIRE_AFTER])
    .start()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn uploads_survive_killed_frozen_instances_and_a_database_restart() {
    let s3 = common::s3::endpoint();
    let seed = seed();
    let length = fault_time();
    eprintln!(
        "chaos soak: TUSKER_SOAK_SEED={seed} TUSKER_SOAK_SECONDS={}",
        length.as_secs()
    );
    let mut rng = Rng(seed);
    let mut pg = PrivatePg::start();
    let bucket = common::s3::bucket(&s3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    for n in 0..INSTANCES {
        procs.push(instance(dir.path(), n, &s3, &bucket, &pg.url()).await);
    }
    let sh = Shared {
        addrs: Arc::new(Mutex::new(procs.iter().map(|p| Some(p.addr)).collect())),
        ledger: Arc::default(),
        http: reqwest::Client::builder()
            .timeout(CLIENT_PATIENCE)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    };
    let stop = Instant::now() + length;
    let driver = tokio::spawn(clients(sh.clone(), rng.fork(), stop, stop + SETTLE));
    let kills = inject_faults(&mut procs, &sh, &mut pg, &mut rng, length).await;
    let started = driver.await.expect("clients");
    for p in &mut procs {
        p.assert_running();
    }

    let mut problems = Vec::new();
    let (completed, regressions, failures) = {
        let l = sh.ledger.lock().unwrap();
        (
            l.completed.clone(),
            l.regressions.clone(),
            l.failures.clone(),
        )
    };
    eprintln!(
        "soak: {started} uploads started, {} completed",
        completed.len()
    );
    problems.extend(regressions.iter().map(|r| format!("offset went down: {r}")));
    problems.extend(failures);

    // Acknowledged means kept: complete on every instance, byte-exact.
    let c = common::client();
    for (id, &(len, data_seed)) in &completed {
        for p in &procs {
            let res = c
                .head(p.url(id))
                .header(TUS.0, TUS.1)
                .send()
                .await
                .expect("HEAD");
            let at = header(&res, "upload-offset");
            if res.status() != 200 || at != Some(len.to_string()) {
                problems.push(format!(
                    "{id}: acknowledged complete ({len} bytes), HEAD on {} answers {} at {at:?}",
                    p.addr,
                    res.status()
                ));
            }
        }
        let p = &procs[rng.below(procs.len())];
        let res = c.get(p.url(id)).send().await.expect("GET");
        let status = res.status();
        let body = res.bytes().await.unwrap_or_default();
        if status != 200 || body.as_ref() != bytes(len, data_seed).as_slice() {
            problems.push(format!(
                "{id}: acknowledged complete, GET on {} answers {status} with {} bytes that differ",
                p.addr,
                body.len()
            ));
        }
    }

    // Once unfinished leftovers expired and were swept: every key is a
    // finished upload's object and no multipart upload is open — except at
    // most one per SIGKILL that cut a creation short between
    // CreateMultipartUpload and the record (nothing can list those but the
    // bucket; the lifecycle rule of docs/deployment.md removes them).
    let owned: Vec<String> = completed.keys().map(|id| format!("x/{id}")).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (clean, stray, open) = loop {
        let stray: Vec<String> = common::s3::keys(&s3, &bucket, "")
            .await
            .into_iter()
            .filter(|k| !owned.contains(k))
            .collect();
        let open = common::s3::open_multipart_keys(&s3, &bucket).await;
        let (known, unknown) = open
            .iter()
            .partition::<Vec<&String>, _>(|k| owned.contains(k));
        let clean = stray.is_empty() && known.is_empty() && unknown.len() <= kills;
        if clean || Instant::now() > deadline {
            break (clean, stray, open);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if !clean {
        problems.push(format!(
            "after the sweep ({kills} kills): keys no upload owns {stray:?}, open multipart uploads {open:?}"
        ));
    }

    assert!(
        problems.is_empty(),
        "chaos soak (TUSKER_SOAK_SEED={seed}) found {} problems:\n{}\n\
         what the instances logged about those uploads:\n{}",
        problems.len(),
        problems.join("\n"),
        logged_about(&procs, &problems)
    );
}

/// The log lines (of every instance) that name an upload a problem is
/// about, other than plain successes.
fn logged_about(procs: &[Tusker], problems: &[String]) -> String {
    let ids: std::collections::BTreeSet<&str> = problems
        .iter()
        .flat_map(|p| p.split(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let mut out = Vec::new();
    for (n, p) in procs.iter().enumerate() {
        for line in p.log_text().lines() {
            if ids.iter().any(|id| line.contains(id))
                && !line.contains("status=200")
                && !line.contains("status=204")
            {
                out.push(format!("[{n}] {line}"));
            }
        }
    }
    let skip = out.len().saturating_sub(200);
    out[skip..].join("\n")
}
