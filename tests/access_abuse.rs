//! Regression tests for the ways around access checks and the requests
//! that did unbounded work: repeated partials, final sizes, forwarded
//! headers, creation floods, finished uploads that never expired and
//! repeated single-value headers.

mod common;

use common::*;
use std::time::Duration;

async fn partial(c: &reqwest::Client, ep: &str, data: &[u8]) -> String {
    let url = create_with(
        c,
        ep,
        &[
            ("Upload-Length", &data.len().to_string()),
            ("Upload-Concat", "partial"),
        ],
    )
    .await;
    assert_eq!(patch(c, &url, 0, data.to_vec()).await.status(), 204);
    url
}

#[tokio::test]
async fn a_final_names_each_partial_once_and_counts_against_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_size = Some(1000);
    let server = TestServer::start(cfg);
    let c = client();
    let ep = server.endpoint.clone();
    let p = partial(&c, &ep, &[7u8; 600]).await;
    let q = partial(&c, &ep, &[8u8; 300]).await;
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Concat", format!("final;{p} {q} {p}"))
        .send(&c)
        .await;
    check(
        "the same partial twice",
        &resp,
        &Want::status(400).err("ERR_CONCAT_DUPLICATE_PART"),
    );
    let r = partial(&c, &ep, &[9u8; 200]).await;
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Concat", format!("final;{p} {q} {r}"))
        .send(&c)
        .await;
    check(
        "assembled size over --max-size",
        &resp,
        &Want::status(413).err("ERR_MAX_SIZE_EXCEEDED"),
    );
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Concat", format!("final;{p} {q}"))
        .send(&c)
        .await;
    assert_eq!(resp.status, 201, "{resp:?}");
    server.stop().await;
}

#[tokio::test]
async fn exactly_one_forwarded_scheme_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.behind_proxy = true;
    cfg.max_uploads_per_client = Some(1);
    let server = TestServer::start(cfg);
    let c = client();
    // What nginx sends for a client that added its own Forwarded header.
    let resp = Req::new("POST", &server.endpoint)
        .tus()
        .h("Upload-Length", "5")
        .h("Forwarded", "for=6.6.6.6;host=evil.example;proto=http")
        .h("X-Forwarded-Host", "uploads.example")
        .h("X-Forwarded-Proto", "https")
        .h("X-Forwarded-For", "10.0.0.7")
        .send(&c)
        .await;
    assert_eq!(resp.status, 201);
    let location = resp.header("location").unwrap();
    assert!(
        location.starts_with("https://uploads.example/files/"),
        "{location}"
    );
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.behind_proxy = true;
    cfg.forwarded_headers = tusker::config::ForwardedHeaders::Forwarded;
    let server = TestServer::start(cfg);
    let resp = Req::new("POST", &server.endpoint)
        .tus()
        .h("Upload-Length", "5")
        .h("X-Forwarded-Host", "evil.example")
        .h("Forwarded", "for=10.0.0.7;host=uploads.example;proto=https")
        .send(&c)
        .await;
    let location = resp.header("location").unwrap();
    assert!(
        location.starts_with("https://uploads.example/files/"),
        "{location}"
    );
    server.stop().await;
}

#[tokio::test]
async fn creations_per_client_are_limited_zero_length_included() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_creations_per_client = Some(3);
    let server = TestServer::start(cfg);
    let c = client();
    for _ in 0..3 {
        create(&c, &server.endpoint, 0).await;
    }
    let resp = Req::new("POST", &server.endpoint)
        .tus()
        .h("Upload-Length", "0")
        .send(&c)
        .await;
    check(
        "fourth creation in a minute",
        &resp,
        &Want::status(429)
            .err("ERR_TOO_MANY_CREATIONS")
            .has("retry-after"),
    );
    let resp = Req::new("POST", &server.endpoint)
        .h("Upload-Draft-Interop-Version", "6")
        .h("Upload-Complete", "?1")
        .body(b"x".to_vec())
        .send(&c)
        .await;
    assert_eq!(resp.status, 429, "IETF creation counts too");
    server.stop().await;
}

#[tokio::test]
async fn finished_uploads_expire_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.expire_finished_after = Some(Duration::from_secs(1));
    cfg.sweep_interval = Duration::from_millis(200);
    let server = TestServer::start(cfg);
    let c = client();
    let empty = create(&c, &server.endpoint, 0).await;
    let full = upload(&c, &server.endpoint, b"hello").await;
    for url in [&empty, &full] {
        let gone = eventually(Duration::from_secs(10), || async {
            head(&c, url).await.status == 410
        })
        .await;
        assert!(gone, "{url} still there");
    }
    server.stop().await;

    // Off by default: finished uploads stay.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sweep_interval = Duration::from_millis(200);
    let server = TestServer::start(cfg);
    let empty = create(&c, &server.endpoint, 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(head(&c, &empty).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn repeated_single_value_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 10).await;
    let ep = server.endpoint.clone();
    let mut rows = Vec::new();
    for name in [
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Concat",
        "Upload-Defer-Length",
        "Tus-Resumable",
    ] {
        let value = match name {
            "Upload-Metadata" => "a YQ==",
            "Upload-Concat" => "partial",
            "Tus-Resumable" => "1.0.0",
            _ => "1",
        };
        rows.push(row(
            name,
            Req::new("POST", &ep)
                .tus()
                .h("Upload-Length", "5")
                .h(name, value)
                .h(name, value),
            Want::status(400).err("ERR_DUPLICATE_HEADER").no("location"),
        ));
    }
    rows.push(row(
        "Upload-Offset",
        Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("Upload-Offset", "0")
            .h("Upload-Offset", "5")
            .body(b"abcde".to_vec()),
        Want::status(400).err("ERR_DUPLICATE_HEADER"),
    ));
    rows.push(row(
        "Upload-Checksum",
        Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("Upload-Offset", "0")
            .h("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
            .h("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
            .body(b"abcde".to_vec()),
        Want::status(400).err("ERR_DUPLICATE_HEADER"),
    ));
    rows.push(row(
        "X-HTTP-Method-Override",
        Req::new("POST", &url)
            .tus()
            .h("X-HTTP-Method-Override", "DELETE")
            .h("X-HTTP-Method-Override", "HEAD"),
        Want::status(400).err("ERR_DUPLICATE_HEADER"),
    ));
    for (name, value) in [
        ("Upload-Draft-Interop-Version", "6"),
        ("Upload-Complete", "?1"),
        ("Upload-Incomplete", "?0"),
    ] {
        let mut req = Req::new("POST", &ep)
            .h("Upload-Draft-Interop-Version", "6")
            .h(name, value);
        if name != "Upload-Draft-Interop-Version" {
            req = req.h(name, value);
        }
        rows.push(row(
            name,
            req.body(b"x".to_vec()),
            Want::status(400).err("ERR_DUPLICATE_HEADER").no("location"),
        ));
    }
    run(&c, rows).await;
    assert_eq!(offset(&c, &url).await, 0, "nothing was written");
    server.stop().await;
}

/// `100 Continue` goes out only once the request passed validation and its
/// blocking hooks: a refused request gets its final answer first.
#[tokio::test]
async fn continue_only_after_validation() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 5).await;
    let path = path_of(&url);
    let addr = server.addr;
    let send_head = |head: String| async move {
        let mut sock = raw::Conn::connect(addr).await;
        sock.send(head.as_bytes()).await;
        sock
    };
    let head = |offset: u64| {
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n\
             Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
    };
    // A wrong offset: the 409 comes without a 100 before it.
    let mut sock = send_head(head(3)).await;
    let resp = sock.read_response(false).await;
    assert_eq!(resp.status, 409, "{resp:?}");
    // A valid request: 100, then the body, then 204.
    let mut sock = send_head(head(0)).await;
    let resp = sock.read_response(false).await;
    assert_eq!(resp.status, 100, "{resp:?}");
    sock.send(b"hello").await;
    let resp = sock.read_response(false).await;
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(resp.header("upload-offset"), Some("5"));
    server.stop().await;
}
