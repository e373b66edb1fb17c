//! Operations surface of in-process servers: health, readiness, metrics,
//! request ids and the request limits.

mod common;

use bytes::Bytes;
use common::*;
use std::time::Duration;

/// A request body fed by the test, chunk by chunk, left open until the
/// sender is dropped.
fn open_body() -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

#[tokio::test]
async fn health_and_readiness_with_base_path_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.base_path = "/".into();
    let server = TestServer::start(cfg);
    let c = client();
    let base = format!("http://{}", server.addr);

    let res = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = c.head(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // Uploads still live at the root.
    let url = create(&c, &server.endpoint, 3).await;
    assert!(url.starts_with(&format!("{base}/")), "{url}");
    assert_eq!(patch(&c, &url, 0, b"abc".to_vec()).await.status(), 204);
    assert_eq!(download(&c, &url).await, b"abc");

    // The data store disappears: not ready, with a stable code. (Moved
    // away, not removed: files made ahead of use may be appearing in it.)
    std::fs::rename(dir.path().join("uploads"), dir.path().join("gone")).unwrap();
    let res = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(body.starts_with("ERR_DATA_STORE_UNAVAILABLE"), "{body}");
    // Still alive, though.
    let res = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_the_upload_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();

    let before = metrics_text(&c, &server).await;
    assert_eq!(sample(&before, "tusker_uploads_created_total"), Some(0.0));
    assert_eq!(sample(&before, "tusker_uploads_in_progress"), Some(0.0));

    let url = create(&c, &server.endpoint, 10).await;
    assert_eq!(patch(&c, &url, 0, bytes(4, 1)).await.status(), 204);
    assert_eq!(patch(&c, &url, 4, bytes(6, 2)).await.status(), 204);
    let other = create(&c, &server.endpoint, 10).await;
    let res = c.delete(&other).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 204);

    let text = metrics_text(&c, &server).await;
    assert_eq!(
        sample(&text, "tusker_uploads_created_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tusker_uploads_finished_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tusker_uploads_terminated_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tusker_bytes_received_total"),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tusker_uploads_in_progress"),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains(r#"tusker_http_requests_total{method="PATCH",status="204"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tusker_http_requests_total{method="POST",status="201"} 2"#),
        "{text}"
    );
    assert!(text.contains("# TYPE tusker_bytes_received_total counter"));

    // A second server in the same process keeps its own numbers.
    let dir2 = tempfile::tempdir().unwrap();
    let second = TestServer::on(dir2.path());
    let text = metrics_text(&c, &second).await;
    assert_eq!(
        sample(&text, "tusker_uploads_created_total"),
        Some(0.0),
        "{text}"
    );
    second.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();

    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", "1")
        .header("X-Request-ID", "client-id_42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "x-request-id").as_deref(),
        Some("client-id_42")
    );

    // Errors carry it too.
    let res = c
        .head(format!("{}nope", server.endpoint))
        .header(TUS.0, TUS.1)
        .header("X-Request-ID", "err-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(header(&res, "x-request-id").as_deref(), Some("err-1"));

    // Invalid ids are replaced by a generated one.
    for bad in ["has space".to_owned(), "x".repeat(129)] {
        let res = c
            .get(format!("http://{}/healthz", server.addr))
            .header("X-Request-ID", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = header(&res, "x-request-id").expect("generated id");
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
    let res = c
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    let a = header(&res, "x-request-id").expect("id");
    let res = c
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    let b = header(&res, "x-request-id").expect("id");
    assert_ne!(a, b);
    server.stop().await;
}

#[tokio::test]
async fn max_body_size_refuses_declared_and_cuts_streamed_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_body_size = Some(10);
    let server = TestServer::start(cfg);
    let c = client();
    let url = create(&c, &server.endpoint, 100).await;

    // Content-Length over the limit: refused before reading, nothing kept.
    let res = patch(&c, &url, 0, bytes(20, 1)).await;
    assert_eq!(res.status(), 413);
    assert!(res
        .text()
        .await
        .unwrap()
        .starts_with("ERR_REQUEST_BODY_TOO_LARGE"));
    assert_eq!(offset(&c, &url).await, 0);

    // Within the limit: fine.
    assert_eq!(patch(&c, &url, 0, bytes(10, 2)).await.status(), 204);

    // Chunked, running past the limit: the first 10 bytes are kept.
    let data = bytes(12, 3);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(4)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let res = c
        .patch(&url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", "10")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
        assert!(res
            .text()
            .await
            .unwrap()
            .starts_with("ERR_REQUEST_BODY_TOO_LARGE"));
    }
    assert_eq!(offset(&c, &url).await, 20);

    // Creation with upload obeys the same limit.
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Length", "50")
        .body(bytes(50, 4))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    server.stop().await;
}

#[tokio::test]
async fn max_concurrent_uploads_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_concurrent_uploads = Some(1);
    let server = TestServer::start(cfg);
    let c = client();
    let first = create(&c, &server.endpoint, 8).await;
    let second = create(&c, &server.endpoint, 8).await;

    let (tx, body) = open_body();
    let running = tokio::spawn({
        let c = c.clone();
        let first = first.clone();
        async move {
            c.patch(&first)
                .header(TUS.0, TUS.1)
                .header(OCTET.0, OCTET.1)
                .header("Upload-Offset", "0")
                .body(body)
                .send()
                .await
        }
    });
    tx.send(Ok(Bytes::from_static(b"abcd"))).await.unwrap();
    let busy = eventually(Duration::from_secs(10), || async {
        sample(
            &metrics_text(&c, &server).await,
            "tusker_uploads_in_progress",
        ) == Some(1.0)
    })
    .await;
    assert!(busy, "the first PATCH never showed as running");

    let res = patch(&c, &second, 0, b"12345678".to_vec()).await;
    assert_eq!(res.status(), 503);
    assert!(header(&res, "retry-after").is_some());
    assert!(res
        .text()
        .await
        .unwrap()
        .starts_with("ERR_TOO_MANY_UPLOADS"));

    tx.send(Ok(Bytes::from_static(b"efgh"))).await.unwrap();
    drop(tx);
    let res = running.await.unwrap().expect("first PATCH answers");
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "upload-offset").as_deref(), Some("8"));

    // The slot is free again.
    assert_eq!(
        patch(&c, &second, 0, b"12345678".to_vec()).await.status(),
        204
    );
    server.stop().await;
}
