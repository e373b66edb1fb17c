//! Tus-Resumable: 412 + Tus-Version when missing or unsupported on every
//! verb that needs it, nothing changed afterwards; and Tus-Resumable on
//! every response, errors and 404s included.

mod common;

use common::*;

#[tokio::test]
async fn missing_or_wrong_tus_resumable_is_412() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let url = create(&c, &ep, 100).await;
    assert_eq!(patch(&c, &url, 0, bytes(10, 1)).await.status(), 204);

    for (version_name, version) in [
        ("missing", None),
        ("0.2.2", Some("0.2.2")),
        ("1.0", Some("1.0")),
        ("empty", Some("")),
    ] {
        let with = |r: Req| match version {
            Some(v) => r.h("Tus-Resumable", v),
            None => r,
        };
        let refused = |body: bool| {
            let w = Want::status(412).is("tus-version", "1.0.0");
            if body {
                w.err("ERR_UNSUPPORTED_VERSION")
            } else {
                w
            }
        };
        let rows = vec![
            row(
                "POST",
                with(Req::new("POST", &ep)).h("Upload-Length", "5"),
                refused(true),
            ),
            row(
                "POST with upload",
                with(Req::new("POST", &ep))
                    .h("Upload-Length", "5")
                    .octet()
                    .body(b"hello".to_vec()),
                refused(true),
            ),
            row("HEAD", with(Req::new("HEAD", &url)), refused(false)),
            row(
                "PATCH",
                with(Req::new("PATCH", &url))
                    .octet()
                    .h("Upload-Offset", "10")
                    .body(bytes(10, 2)),
                refused(true),
            ),
            row("DELETE", with(Req::new("DELETE", &url)), refused(true)),
            row(
                "POST overridden to PATCH",
                with(Req::new("POST", &url))
                    .h("X-HTTP-Method-Override", "PATCH")
                    .octet()
                    .h("Upload-Offset", "10")
                    .body(bytes(10, 2)),
                refused(true),
            ),
        ];
        for r in rows {
            let resp = r.req.send(&c).await;
            check(&format!("{version_name}: {}", r.name), &resp, &r.want);
            assert!(resp.header("location").is_none());
            // Nothing changed: the one upload is still there at offset 10.
            assert_eq!(offset(&c, &url).await, 10, "[{version_name}: {}]", r.name);
            assert_eq!(
                stored_files(dir.path()),
                vec![id_of(&url)],
                "[{version_name}: {}]",
                r.name
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn every_error_and_404_carries_tus_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let base = format!("http://{}", server.addr);
    let unknown = format!("{ep}0123456789abcdef0123456789abcdef");
    // check() asserts Tus-Resumable: 1.0.0 on every row.
    run(
        &c,
        vec![
            row(
                "HEAD unknown",
                Req::new("HEAD", &unknown).tus(),
                Want::status(404),
            ),
            row(
                "PATCH unknown",
                Req::new("PATCH", &unknown)
                    .tus()
                    .octet()
                    .h("Upload-Offset", "0")
                    .body(b"x".to_vec()),
                Want::status(404).err("ERR_UPLOAD_NOT_FOUND"),
            ),
            row(
                "DELETE unknown",
                Req::new("DELETE", &unknown).tus(),
                Want::status(404).err("ERR_UPLOAD_NOT_FOUND"),
            ),
            row(
                "GET unknown",
                Req::new("GET", &unknown),
                Want::status(404).err("ERR_UPLOAD_NOT_FOUND"),
            ),
            row(
                "GET outside the base path",
                Req::new("GET", format!("{base}/elsewhere")),
                Want::status(404).err("ERR_NOT_FOUND"),
            ),
            row(
                "POST outside the base path",
                Req::new("POST", format!("{base}/elsewhere"))
                    .tus()
                    .h("Upload-Length", "1"),
                Want::status(404),
            ),
            row(
                "nested path under the base",
                Req::new("HEAD", format!("{ep}a/b")).tus(),
                Want::status(404),
            ),
            row(
                "PUT on an upload",
                Req::new("PUT", &unknown).tus(),
                Want::status(405),
            ),
            row(
                "bad request",
                Req::new("POST", &ep).tus(),
                Want::status(400).err("ERR_MISSING_UPLOAD_LENGTH"),
            ),
            row(
                "success",
                Req::new("POST", &ep).tus().h("Upload-Length", "1"),
                Want::status(201),
            ),
            row("OPTIONS", Req::new("OPTIONS", &ep), Want::status(200)),
        ],
    )
    .await;
    let text = metrics_text(&c, &server).await;
    assert_eq!(
        sample(&text, "tusker_uploads_created_total"),
        Some(1.0),
        "only the one successful POST created an upload: {text}"
    );
    server.stop().await;
}
