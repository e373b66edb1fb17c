//! Test harness: real tusker servers on 127.0.0.1:0, each in its own thread
//! with its own actix system, plus small HTTP helpers.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod logs;
pub mod pg_db;
pub mod pg_private;
pub mod proc;
pub mod raw;
pub mod rng;
pub mod s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tusker::config::Config;
/// For `pg_db`, which the library's unit tests include too.
use tusker::meta::postgres::with_database;

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
    // Every test client is 127.0.0.1: tests that create many uploads would
    // hit the per-client creation limit (tests of the limit set it).
    c.max_creations_per_client = None;
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

// ---------------------------------------------------------------------------
// Table-driven requests: one row = request → expected status, headers, error.
// ---------------------------------------------------------------------------

/// A request of a table row.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn new(method: &'static str, url: impl Into<String>) -> Req {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds `Tus-Resumable: 1.0.0`.
    pub fn tus(self) -> Req {
        self.h(TUS.0, TUS.1)
    }

    /// Adds `Content-Type: application/offset+octet-stream`.
    pub fn octet(self) -> Req {
        self.h(OCTET.0, OCTET.1)
    }

    pub fn h(mut self, name: &str, value: impl ToString) -> Req {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self
    }

    pub async fn send(&self, c: &reqwest::Client) -> Resp {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).expect("method");
        let mut rb = c.request(method, &self.url);
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(b) = &self.body {
            rb = rb.body(b.clone());
        }
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.url));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("response body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn offset(&self) -> Option<u64> {
        self.header("upload-offset")
            .map(|v| v.parse().expect("Upload-Offset is a number"))
    }
}

/// What a header of a response must be.
#[derive(Debug, Clone)]
pub enum Hv {
    /// Present with exactly this value.
    Is(String),
    /// Present, any value.
    Present,
    Absent,
    /// Present and satisfying the predicate (described by the text).
    Check(&'static str, fn(&str) -> bool),
}

/// Expected outcome of a row.
#[derive(Debug, Clone)]
pub struct Want {
    pub status: u16,
    pub headers: Vec<(&'static str, Hv)>,
    /// Error code the body must start with (`ERR_X: message`).
    pub error: Option<&'static str>,
}

impl Want {
    pub fn status(status: u16) -> Want {
        Want {
            status,
            headers: Vec::new(),
            error: None,
        }
    }

    pub fn is(mut self, name: &'static str, value: impl ToString) -> Want {
        self.headers.push((name, Hv::Is(value.to_string())));
        self
    }

    pub fn has(mut self, name: &'static str) -> Want {
        self.headers.push((name, Hv::Present));
        self
    }

    pub fn no(mut self, name: &'static str) -> Want {
        self.headers.push((name, Hv::Absent));
        self
    }

    pub fn check(mut self, name: &'static str, what: &'static str, f: fn(&str) -> bool) -> Want {
        self.headers.push((name, Hv::Check(what, f)));
        self
    }

    pub fn err(mut self, code: &'static str) -> Want {
        self.error = Some(code);
        self
    }
}

/// Asserts `resp` matches `want`, and that it carries `Tus-Resumable`
/// (every tus response does, errors and 404s included).
pub fn check(row: &str, resp: &Resp, want: &Want) {
    let ctx = || {
        format!(
            "[{row}] status {} headers {:?} body {:?}",
            resp.status,
            resp.headers,
            resp.text()
        )
    };
    assert_eq!(resp.status, want.status, "wrong status: {}", ctx());
    assert_eq!(
        resp.header("tus-resumable").as_deref(),
        Some("1.0.0"),
        "Tus-Resumable missing: {}",
        ctx()
    );
    for (name, hv) in &want.headers {
        let got = resp.header(name);
        match hv {
            Hv::Is(v) => assert_eq!(got.as_deref(), Some(v.as_str()), "header {name}: {}", ctx()),
            Hv::Present => assert!(got.is_some(), "header {name} missing: {}", ctx()),
            Hv::Absent => assert!(got.is_none(), "header {name} must be absent: {}", ctx()),
            Hv::Check(what, f) => assert!(
                got.as_deref().is_some_and(f),
                "header {name} must be {what}: {}",
                ctx()
            ),
        }
    }
    if let Some(code) = want.error {
        let text = resp.text();
        assert!(
            text.starts_with(&format!("{code}: ")),
            "body must start with {code}: {}",
            ctx()
        );
    }
}

/// A row of a table.
pub struct Row {
    pub name: &'static str,
    pub req: Req,
    pub want: Want,
}

pub fn row(name: &'static str, req: Req, want: Want) -> Row {
    Row { name, req, want }
}

/// Sends every row (in order) and checks its response.
pub async fn run(c: &reqwest::Client, rows: Vec<Row>) {
    for r in rows {
        let resp = r.req.send(c).await;
        check(r.name, &resp, &r.want);
    }
}

// ---------------------------------------------------------------------------
// Upload helpers.
// ---------------------------------------------------------------------------

/// HEAD with Tus-Resumable.
pub async fn head(c: &reqwest::Client, url: &str) -> Resp {
    Req::new("HEAD", url).tus().send(c).await
}

/// Creates an upload with extra headers (e.g. `Upload-Concat`); expects 201.
pub async fn create_with(c: &reqwest::Client, endpoint: &str, headers: &[(&str, &str)]) -> String {
    let mut req = Req::new("POST", endpoint).tus();
    for (k, v) in headers {
        req = req.h(k, v);
    }
    let resp = req.send(c).await;
    assert_eq!(resp.status, 201, "create: {resp:?}");
    resp.header("location").expect("Location")
}

/// Creates an upload of `data.len()` bytes and uploads it in one PATCH.
pub async fn upload(c: &reqwest::Client, endpoint: &str, data: &[u8]) -> String {
    let url = create(c, endpoint, data.len() as u64).await;
    let res = patch(c, &url, 0, data.to_vec()).await;
    assert_eq!(res.status(), 204);
    url
}

/// The path part (`/files/<id>`) of an upload URL of `server`.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/')
        .map(|i| rest[i..].to_owned())
        .expect("URL has a path")
}

pub fn id_of(url: &str) -> String {
    url.rsplit('/').next().expect("id").to_owned()
}

/// Files under `data_dir/uploads`, without the empty files made ahead of
/// use (listed in `.tusker-pool/`, see src/data/file/pool.rs): an empty
/// file holds no upload's bytes.
pub fn stored_files(data_dir: &Path) -> Vec<String> {
    let root = data_dir.join("uploads");
    let pooled = pooled_ids(&root);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".tusker-pool")
                .filter(|n| {
                    !pooled.contains(n)
                        || std::fs::metadata(root.join(n)).is_ok_and(|m| m.len() > 0)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The ids listed in the manifests of files made ahead of use under
/// `root`, less those marked kept (`+ID`: finished uploads with no bytes).
pub fn pooled_ids(root: &Path) -> std::collections::HashSet<String> {
    let lines: Vec<String> = std::fs::read_dir(root.join(".tusker-pool"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let kept: std::collections::HashSet<&str> =
        lines.iter().filter_map(|l| l.strip_prefix('+')).collect();
    lines
        .iter()
        .filter(|l| !l.starts_with('+') && !kept.contains(l.as_str()))
        .cloned()
        .collect()
}

/// The value of an unlabelled sample in a Prometheus text exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One unlabelled sample from `GET {base}/metrics`; `None` while the server
/// cannot answer (it may be restarting or starved).
pub async fn metric(c: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    sample(&text, name)
}

/// `GET /metrics` of an in-process server.
pub async fn metrics_text(c: &reqwest::Client, server: &TestServer) -> String {
    let res = c
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), 200);
    res.text().await.expect("text")
}

/// Base64 (standard, padded) for metadata values and checksums.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) that parses back.
pub fn is_imf_fixdate(v: &str) -> bool {
    let b = v.as_bytes();
    let shape = b.len() == 29
        && b[3] == b','
        && b[4] == b' '
        && v.ends_with(" GMT")
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':';
    shape && httpdate::parse_http_date(v).is_ok()
}

pub fn is_number(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// Sends `head` (request line and headers, without the final CRLF CRLF,
/// `Connection: close` added) and `body` on a new connection, raw (for
/// what reqwest cannot send: unnormalised paths, odd framing); returns the
/// final response.
pub async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> raw::Response {
    let mut conn = raw::Conn::connect(addr).await;
    let head = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.send(head.as_bytes()).await;
    conn.send(body).await;
    conn.read_final(head.starts_with("HEAD ")).await.1
}
