//! Test harness: real tusker servers on 127.0.0.1:0, each in its own thread
//! with its own actix system, plus small HTTP helpers.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod logs;
pub mod s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tusker::config::Config;

pub const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
pub const OCTET: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/files/`
    pub endpoint: String,
    pub data_dir: PathBuf,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A configuration for tests: loopback, an ephemeral port, two workers.
pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::new(data_dir);
    c.listen = "127.0.0.1:0".into();
    c.workers = Some(2);
    c
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        let data_dir = config.data_dir.clone();
        let base = config.base_path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = tusker::start(config).await.expect("server starts");
                tx.send((server.addr(), server.handle()))
                    .expect("test alive");
                server.wait().await.expect("server runs");
            })
        });
        let (addr, handle) = rx.recv().expect("server started");
        TestServer {
            addr,
            endpoint: format!("http://{addr}{base}"),
            data_dir,
            handle,
            thread: Some(thread),
        }
    }

    /// Starts a server with test defaults on `dir`.
    pub fn on(dir: &Path) -> TestServer {
        Self::start(config(dir))
    }

    /// Stops gracefully and waits until the stores are closed.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join().expect("server thread"))
                .await
                .expect("join");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Sends the stop command eagerly; the future needs no polling.
            drop(self.handle.stop(false));
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Creates an upload of `length` bytes and returns its URL.
pub async fn create(c: &reqwest::Client, endpoint: &str, length: u64) -> String {
    let res = c
        .post(endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", length.to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 201, "create: {:?}", res.text().await);
    location(&res)
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .expect("Location")
        .to_str()
        .expect("ascii")
        .to_owned()
}

pub fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

pub async fn patch(
    c: &reqwest::Client,
    url: &str,
    offset: u64,
    body: Vec<u8>,
) -> reqwest::Response {
    c.patch(url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", offset.to_string())
        .body(body)
        .send()
        .await
        .expect("PATCH")
}

pub async fn offset(c: &reqwest::Client, url: &str) -> u64 {
    let res = c.head(url).header(TUS.0, TUS.1).send().await.expect("HEAD");
    assert_eq!(res.status(), 200);
    header(&res, "upload-offset")
        .expect("Upload-Offset")
        .parse()
        .expect("number")
}

pub async fn download(c: &reqwest::Client, url: &str) -> Vec<u8> {
    let res = c.get(url).send().await.expect("GET");
    assert_eq!(res.status(), 200);
    res.bytes().await.expect("body").to_vec()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Polls `f` every 50 ms until it returns true, at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
