//! HEAD: offset, length (or deferred), metadata as sent, no caching;
//! unknown and malformed ids are 404, never 500.

mod common;

use common::*;

#[tokio::test]
async fn head_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let meta = format!(
        "filename {},filetype dmlkZW8vbXA0,empty",
        b64("vidéo 🎬.mp4".as_bytes())
    );

    let plain = create(&c, &ep, 100).await;
    assert_eq!(patch(&c, &plain, 0, bytes(42, 1)).await.status(), 204);
    let with_meta = create_with(
        &c,
        &ep,
        &[("Upload-Length", "7"), ("Upload-Metadata", &meta)],
    )
    .await;
    let deferred = create_with(&c, &ep, &[("Upload-Defer-Length", "1")]).await;
    let partial = create_with(
        &c,
        &ep,
        &[("Upload-Length", "3"), ("Upload-Concat", "partial")],
    )
    .await;
    let finished = upload(&c, &ep, &bytes(5, 2)).await;

    run(
        &c,
        vec![
            row(
                "in progress",
                Req::new("HEAD", &plain).tus(),
                Want::status(200)
                    .is("upload-offset", "42")
                    .is("upload-length", "100")
                    .no("upload-defer-length")
                    .no("upload-metadata")
                    .no("upload-concat")
                    .is("cache-control", "no-store")
                    .check("upload-expires", "an IMF-fixdate", is_imf_fixdate),
            ),
            row(
                "metadata byte-identical",
                Req::new("HEAD", &with_meta).tus(),
                Want::status(200)
                    .is("upload-metadata", meta.clone())
                    .is("upload-offset", "0")
                    .is("upload-length", "7"),
            ),
            row(
                "deferred length",
                Req::new("HEAD", &deferred).tus(),
                Want::status(200)
                    .is("upload-defer-length", "1")
                    .no("upload-length")
                    .is("upload-offset", "0"),
            ),
            row(
                "partial (tus-js-client sends Upload-Concat on HEAD too)",
                Req::new("HEAD", &partial)
                    .tus()
                    .h("Upload-Concat", "partial"),
                Want::status(200)
                    .is("upload-concat", "partial")
                    .is("upload-length", "3"),
            ),
            row(
                "finished: no expiry",
                Req::new("HEAD", &finished).tus(),
                Want::status(200)
                    .is("upload-offset", "5")
                    .is("upload-length", "5")
                    .no("upload-expires")
                    .is("cache-control", "no-store"),
            ),
            row(
                "unknown id",
                Req::new("HEAD", format!("{ep}0123456789abcdef0123456789abcdef")).tus(),
                Want::status(404),
            ),
        ],
    )
    .await;

    // HEAD is a pure read.
    assert_eq!(offset(&c, &plain).await, 42);
    assert_eq!(head(&c, &plain).await.body.len(), 0);
    server.stop().await;
}

/// Ids that try to escape the uploads directory, or are simply too long,
/// are 404 on every verb; sent raw so no client normalises them.
#[tokio::test]
async fn malformed_ids_are_404_never_500() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    // Something a traversal could reach: an upload and the meta store.
    let real = create(&c, &server.endpoint, 10).await;
    let real_id = id_of(&real);
    let long129 = format!("/files/{}", "a".repeat(129));
    let long4k = format!("/files/{}", "b".repeat(4000));
    let escape = format!("/files/..%2f..%2fuploads%2f{real_id}");
    let paths = [
        "/files/..",
        "/files/.",
        "/files/%2e%2e",
        "/files/%2E%2E",
        "/files/.%2e",
        "/files/..%2fmeta",
        "/files/%2e%2e%2fmeta",
        "/files/..%5cmeta",
        "/files/../meta",
        "/files/a%00b",
        "/files/%ff%fe",
        "/files/%20",
        escape.as_str(),
        long129.as_str(),
        long4k.as_str(),
    ];
    for path in paths {
        for method in ["HEAD", "GET", "PATCH", "DELETE"] {
            let mut head = format!("{method} {path} HTTP/1.1\r\nTus-Resumable: 1.0.0");
            let body: &[u8] = if method == "PATCH" {
                head.push_str("\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 1");
                b"x"
            } else {
                b""
            };
            let resp = raw(server.addr, &head, body).await;
            assert_eq!(resp.status, 404, "{method} {path}: {resp:?}");
            assert_eq!(
                resp.header("tus-resumable"),
                Some("1.0.0"),
                "{method} {path}"
            );
            if method != "HEAD" {
                let text = String::from_utf8_lossy(&resp.body);
                assert!(text.starts_with("ERR_"), "{method} {path}: {text:?}");
            }
        }
    }
    // The real upload was untouched by all of this.
    assert_eq!(offset(&c, &real).await, 0);
    // Nor did any of it create a file (the real one has no bytes, so no
    // file yet).
    assert!(stored_files(dir.path()).is_empty());
    server.stop().await;
}
