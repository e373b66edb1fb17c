//! Meta-store benchmark: uploads created per second and PATCH latency,
//! sled against PostgreSQL, on one in-process server with local-file
//! storage (so the meta store is what differs).
//!
//! `cargo bench --bench meta -- [postgres://…/postgres]` (bench/meta.sh
//! wraps it). The PostgreSQL run uses a throw-away database
//! created on that server and dropped afterwards.

use sqlx::Connection;
use std::time::{Duration, Instant};
use tusker::meta::postgres::with_database;

const CREATES: usize = 2000;
const CONCURRENCY: usize = 16;
const PATCHES: usize = 400;
const CHUNK: usize = 256 * 1024;

struct Figures {
    creates_per_sec: f64,
    patch_p50: Duration,
    patch_p99: Duration,
}

fn run_server(config: tusker::config::Config) -> (String, actix_web::dev::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let base = config.base_path.clone();
            let server = match tusker::start(config).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("server failed: {e}");
                    std::process::exit(1);
                }
            };
            let _ = tx.send((format!("http://{}{base}", server.addr()), server.handle()));
            let _ = server.wait().await;
        })
    });
    rx.recv().expect("server started")
}

async fn measure(meta: Option<String>) -> Result<Figures, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = tusker::config::Config::new(dir.path());
    config.listen = "127.0.0.1:0".into();
    config.workers = Some(2);
    config.meta = meta;
    let (endpoint, handle) = run_server(config);
    let c = reqwest::Client::new();

    // Creations, CONCURRENCY at a time.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (c, endpoint) = (c.clone(), endpoint.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..CREATES / CONCURRENCY {
                let res = c
                    .post(&endpoint)
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Length", (PATCHES * CHUNK).to_string())
                    .send()
                    .await?;
                if res.status() != 201 {
                    return Err(format!("create answered {}", res.status()).into());
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    let creates_per_sec =
        (CREATES / CONCURRENCY * CONCURRENCY) as f64 / started.elapsed().as_secs_f64();

    // Sequential PATCHes of one upload.
    let res = c
        .post(&endpoint)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (PATCHES * CHUNK).to_string())
        .send()
        .await?;
    let url = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location")?
        .to_owned();
    let chunk = vec![7u8; CHUNK];
    let mut times = Vec::with_capacity(PATCHES);
    for i in 0..PATCHES {
        let t = Instant::now();
        let res = c
            .patch(&url)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", (i * CHUNK).to_string())
            .body(chunk.clone())
            .send()
            .await?;
        if res.status() != 204 {
            return Err(format!("PATCH answered {}", res.status()).into());
        }
        times.push(t.elapsed());
    }
    times.sort();
    handle.stop(true).await;
    Ok(Figures {
        creates_per_sec,
        patch_p50: times[times.len() / 2],
        patch_p99: times[times.len() * 99 / 100],
    })
}

fn print(name: &str, f: &Figures) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} |",
        f.creates_per_sec,
        f.patch_p50.as_secs_f64() * 1000.0,
        f.patch_p99.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench` before the arguments given after `--`.
    let pg = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!(
        "{CREATES} creations ({CONCURRENCY} concurrent); {PATCHES} sequential PATCHes of {} KiB\n",
        CHUNK / 1024
    );
    println!("| meta store | creations/s | PATCH p50 (ms) | PATCH p99 (ms) |");
    println!("|---|---|---|---|");
    print("sled", &measure(None).await?);
    if let Some(admin) = pg {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let result = measure(Some(with_database(&admin, &name))).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        print("PostgreSQL", &result?);
    }
    Ok(())
}
