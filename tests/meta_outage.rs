//! PostgreSQL going away under running tusker processes: every request
//! answers 503 with Retry-After and ERR_META_STORE_UNAVAILABLE within its
//! time budget (never 423 after the lock wait, never a hang), /readyz
//! reports not ready, and once the database is back the same processes
//! serve again by themselves: uploads continue byte-exact, and stop
//! requests between instances (LISTEN/NOTIFY) flow again.
//!
//! A creation refused that way leaves no multipart upload behind.
//!
//! Runs a private PostgreSQL cluster (`common::pg_private`) it can stop;
//! data on local files, so no other service is needed, except by the
//! multipart check (`TUSKER_TEST_S3_ENDPOINT`). Ignored by a plain `cargo
//! test`, which needs nothing but Rust; CI includes them.

mod common;

use common::pg_private::PrivatePg;
use common::proc::{Spawn, Tusker};
use common::*;
use std::path::Path;
use std::time::Duration;

const KIB: usize = 1024;

/// Longer than any request may take with `--lock-timeout 3s`: a request
/// still running after this has missed its budget.
const BUDGET: Duration = Duration::from_secs(12);

async fn instance(dir: &Path, n: usize, meta: &str) -> Tusker {
    Spawn::new(
        &dir.join(format!("data-{n}")),
        &dir.join(format!("tusker-{n}.log")),
    )
    .args(["--meta", meta, "--lease-ttl", "2s", "--lock-timeout", "3s"])
    .start()
    .await
}

fn bounded_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(BUDGET)
        .build()
        .expect("client")
}

/// Asserts `res` is the meta store's 503.
async fn assert_unavailable(what: &str, res: Result<reqwest::Response, reqwest::Error>) {
    let res = res.unwrap_or_else(|e| panic!("{what}: no answer within {BUDGET:?}: {e}"));
    let status = res.status();
    let retry = header(&res, "retry-after");
    let body = res.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{what}: {body}");
    assert!(
        retry.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0)),
        "{what}: Retry-After missing"
    );
    // A HEAD answer has no body to carry the code.
    assert!(
        what.starts_with("HEAD") || body.starts_with("ERR_META_STORE_UNAVAILABLE"),
        "{what}: body {body:?}"
    );
}

async fn readyz(c: &reqwest::Client, t: &Tusker) -> (u16, String) {
    let res = c
        .get(format!("http://{}/readyz", t.addr))
        .send()
        .await
        .expect("/readyz answers within the budget");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

#[tokio::test]
#[ignore = "needs PostgreSQL's initdb and pg_ctl (TUSKER_TEST_PG_BIN or /usr/lib/postgresql)"]
async fn requests_answer_503_while_postgres_is_down_and_serve_again_after() {
    let mut pg = PrivatePg::start();
    let dir = tempfile::tempdir().unwrap();
    let mut t = instance(dir.path(), 0, &pg.url()).await;
    let c = bounded_client();

    let data = bytes(300 * KIB, 1);
    let url = create(&c, &t.endpoint(), data.len() as u64).await;
    let res = patch(&c, &url, 0, data[..100 * KIB].to_vec()).await;
    assert_eq!(res.status(), 204);
    assert_eq!(readyz(&c, &t).await.0, 200);

    pg.stop();
    // Several rounds: the first finds pooled connections dead, later ones
    // find no server to connect to.
    for round in 0..3 {
        let head = c.head(&url).header(TUS.0, TUS.1).send().await;
        assert_unavailable(&format!("HEAD, round {round}"), head).await;
        let patch = c
            .patch(&url)
            .header(TUS.0, TUS.1)
            .header(OCTET.0, OCTET.1)
            .header("Upload-Offset", (100 * KIB).to_string())
            .body(data[100 * KIB..200 * KIB].to_vec())
            .send()
            .await;
        assert_unavailable(&format!("PATCH, round {round}"), patch).await;
        let post = c
            .post(t.endpoint())
            .header(TUS.0, TUS.1)
            .header("Upload-Length", "10")
            .send()
            .await;
        assert_unavailable(&format!("POST, round {round}"), post).await;
        let (status, body) = readyz(&c, &t).await;
        assert_eq!(status, 503, "/readyz while the database is down: {body}");
        assert!(body.starts_with("ERR_META_STORE_UNAVAILABLE"), "{body:?}");
    }
    t.assert_running();

    pg.start_again();
    let back = eventually(Duration::from_secs(30), || async {
        readyz(&c, &t).await.0 == 200
    })
    .await;
    assert!(back, "not ready again; log:\n{}", t.log_tail(30));
    // Nothing acknowledged was lost, nothing unacknowledged was kept.
    assert_eq!(offset(&c, &url).await, 100 * KIB as u64);
    let res = patch(&c, &url, 100 * KIB as u64, data[100 * KIB..].to_vec()).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(download(&c, &url).await, data);
    let fresh = upload(&c, &t.endpoint(), b"after the outage").await;
    assert_eq!(download(&c, &fresh).await, b"after the outage");
    t.assert_running();
    assert_eq!(t.starts, 1, "tusker was restarted");
}

/// A PATCH streaming into `a` that `b`'s HEAD must stop through a stop
/// request (the lease is heartbeated, so without it `b` answers 423).
/// Returns `b`'s HEAD status and `a`'s PATCH status.
async fn stop_across(
    c: &reqwest::Client,
    a: &Tusker,
    b: &Tusker,
    url_a: &str,
    id: &str,
) -> (u16, u16) {
    let at = offset(c, url_a).await;
    let mut sock = raw::Conn::connect(a.addr).await;
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\nContent-Length: {}\r\n\r\n",
        a.addr,
        1024 * KIB
    );
    sock.send(head.as_bytes()).await;
    sock.send(&bytes(16 * KIB, at)).await;
    // The PATCH now holds the lease and waits for more body.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let head_b = c
        .head(b.url(id))
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect("HEAD on b");
    let status_b = head_b.status().as_u16();
    let status_a = if status_b == 200 {
        sock.read_response(false).await.status
    } else {
        0
    };
    (status_b, status_a)
}

#[tokio::test]
#[ignore = "needs PostgreSQL's initdb and pg_ctl (TUSKER_TEST_PG_BIN or /usr/lib/postgresql)"]
async fn stop_requests_reach_other_instances_again_after_a_restart() {
    let mut pg = PrivatePg::start();
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), 0, &pg.url()).await;
    let b = instance(dir.path(), 1, &pg.url()).await;
    let c = bounded_client();
    let url = create(&c, &a.endpoint(), 4096 * KIB as u64).await;
    let id = id_of(&url);

    let before = stop_across(&c, &a, &b, &url, &id).await;
    assert_eq!(before, (200, 204), "before the restart");

    pg.restart_after(Duration::from_secs(3));
    // The listener comes back on its own, with backoff; a few tries.
    let mut last = (0, 0);
    for _ in 0..10 {
        if eventually(Duration::from_secs(20), || async {
            readyz(&c, &a).await.0 == 200 && readyz(&c, &b).await.0 == 200
        })
        .await
        {
            last = stop_across(&c, &a, &b, &url, &id).await;
            if last == (200, 204) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        last,
        (200, 204),
        "stop requests do not reach instance a after the restart; log:\n{}",
        a.log_tail(30)
    );
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn a_creation_refused_for_want_of_postgres_leaves_no_multipart_upload() {
    let s3 = common::s3::endpoint();
    let bucket = common::s3::bucket(&s3).await;
    let mut pg = PrivatePg::start();
    let dir = tempfile::tempdir().unwrap();
    let t = Spawn::in_dir(dir.path())
        .s3(&s3, &bucket, "x")
        .args([
            "--meta",
            &pg.url(),
            "--lease-ttl",
            "2s",
            "--lock-timeout",
            "3s",
        ])
        .start()
        .await;
    let c = bounded_client();
    pg.stop();
    for round in 0..3 {
        let post = c
            .post(t.endpoint())
            .header(TUS.0, TUS.1)
            .header("Upload-Length", (6 * 1024 * KIB).to_string())
            .send()
            .await;
        assert_unavailable(&format!("POST, round {round}"), post).await;
    }
    let open = common::s3::open_multipart_keys(&s3, &bucket).await;
    assert!(
        open.is_empty(),
        "multipart uploads of refused creations: {open:?}"
    );
}
