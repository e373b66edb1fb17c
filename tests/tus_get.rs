//! GET of finished uploads: bytes, validators, ranges, and headers that a
//! hostile filename or filetype cannot turn into active content.

mod common;

use common::*;

#[tokio::test]
async fn get_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let data = bytes(1000, 5);
    let meta = format!(
        "filename {},filetype {}",
        b64("vidéo 🎬.mp4".as_bytes()),
        b64(b"video/mp4")
    );
    let url = create_with(
        &c,
        &ep,
        &[("Upload-Length", "1000"), ("Upload-Metadata", &meta)],
    )
    .await;
    let unfinished = create(&c, &ep, 10).await;
    assert_eq!(patch(&c, &unfinished, 0, bytes(3, 1)).await.status(), 204);

    run(
        &c,
        vec![row(
            "nothing uploaded yet",
            Req::new("GET", &url),
            Want::status(409).err("ERR_UPLOAD_NOT_FINISHED"),
        )],
    )
    .await;
    assert_eq!(patch(&c, &url, 0, data.clone()).await.status(), 204);

    let full = Req::new("GET", &url).send(&c).await;
    check(
        "finished",
        &full,
        &Want::status(200)
            .is("content-length", "1000")
            .is("content-type", "video/mp4")
            .is(
                "content-disposition",
                "inline; filename=\"vid_o _.mp4\"; filename*=UTF-8''vid%C3%A9o%20%F0%9F%8E%AC.mp4",
            )
            .is("accept-ranges", "bytes")
            .is("x-content-type-options", "nosniff")
            .has("etag"),
    );
    assert_eq!(full.body, data);
    let etag = full.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );

    let get = || Req::new("GET", &url);
    let rows = vec![
        row(
            "unfinished",
            Req::new("GET", &unfinished),
            Want::status(409).err("ERR_UPLOAD_NOT_FINISHED"),
        ),
        row(
            "unknown",
            Req::new("GET", format!("{ep}0123456789abcdef0123456789abcdef")),
            Want::status(404).err("ERR_UPLOAD_NOT_FOUND"),
        ),
        row(
            "If-None-Match: same",
            get().h("If-None-Match", &etag),
            Want::status(304).is("etag", &etag),
        ),
        row(
            "If-None-Match: list incl. same",
            get().h("If-None-Match", format!("\"x\", {etag}")),
            Want::status(304),
        ),
        row(
            "If-None-Match: *",
            get().h("If-None-Match", "*"),
            Want::status(304),
        ),
        row(
            "If-None-Match: other",
            get().h("If-None-Match", "\"other\""),
            Want::status(200).is("content-length", "1000"),
        ),
        row(
            "Range first ten",
            get().h("Range", "bytes=0-9"),
            Want::status(206)
                .is("content-range", "bytes 0-9/1000")
                .is("content-length", "10"),
        ),
        row(
            "Range open end",
            get().h("Range", "bytes=990-"),
            Want::status(206)
                .is("content-range", "bytes 990-999/1000")
                .is("content-length", "10"),
        ),
        row(
            "Range suffix",
            get().h("Range", "bytes=-5"),
            Want::status(206)
                .is("content-range", "bytes 995-999/1000")
                .is("content-length", "5"),
        ),
        row(
            "Range end past the size is clipped",
            get().h("Range", "bytes=500-5000"),
            Want::status(206)
                .is("content-range", "bytes 500-999/1000")
                .is("content-length", "500"),
        ),
        row(
            "Range start past the end",
            get().h("Range", "bytes=1000-"),
            Want::status(416)
                .is("content-range", "bytes */1000")
                .err("ERR_RANGE_NOT_SATISFIABLE"),
        ),
        row(
            "Range reversed",
            get().h("Range", "bytes=9-3"),
            Want::status(416).is("content-range", "bytes */1000"),
        ),
        row(
            "several ranges: the whole body",
            get().h("Range", "bytes=0-1,5-6"),
            Want::status(200).is("content-length", "1000"),
        ),
    ];
    for r in rows {
        let resp = r.req.send(&c).await;
        check(r.name, &resp, &r.want);
        match resp.status {
            304 => assert!(resp.body.is_empty(), "[{}] 304 with a body", r.name),
            200 if r.name != "unknown" => assert_eq!(resp.body, data, "[{}]", r.name),
            206 => {
                let cr = resp.header("content-range").unwrap();
                let (range, _) = cr.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
                let (a, b) = range.split_once('-').unwrap();
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                assert_eq!(resp.body, data[a..=b], "[{}]", r.name);
            }
            _ => {}
        }
    }
    server.stop().await;
}

/// (filetype, filename, expected Content-Type, Content-Disposition check)
type SafetyCase = (
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    fn(&str) -> bool,
);

#[tokio::test]
async fn content_type_and_disposition_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    // (filetype, filename) → (Content-Type, Content-Disposition check)
    let cases: Vec<SafetyCase> = vec![
        (
            Some("text/html"),
            Some("page.html"),
            "application/octet-stream",
            |d| d == "attachment; filename=\"page.html\"",
        ),
        (
            Some("image/svg+xml"),
            None,
            "application/octet-stream",
            |d| d == "attachment",
        ),
        (
            Some("application/javascript"),
            None,
            "application/octet-stream",
            |d| d == "attachment",
        ),
        (
            Some("text/html; charset=utf-8"),
            None,
            "application/octet-stream",
            |d| d == "attachment",
        ),
        (
            Some("video/mp4\r\nSet-Cookie: a=b"),
            None,
            "application/octet-stream",
            |d| d == "attachment",
        ),
        (Some("Image/PNG"), Some("a.png"), "image/png", |d| {
            d == "inline; filename=\"a.png\""
        }),
        (Some("text/plain"), Some("notes.txt"), "text/plain", |d| {
            d.starts_with("inline;")
        }),
        (Some("application/pdf"), None, "application/pdf", |d| {
            d == "inline"
        }),
        (None, Some("x.bin"), "application/octet-stream", |d| {
            d == "attachment; filename=\"x.bin\""
        }),
        (
            None,
            Some("../../etc/passwd"),
            "application/octet-stream",
            |d| d.starts_with("attachment; filename=\"") && !d.contains('/') && !d.contains('\\'),
        ),
        (
            None,
            Some("a\"; filename=evil.html\r\nX-Injected: 1"),
            "application/octet-stream",
            |d| !d.contains('\r') && !d.contains('\n') && d.matches('"').count() == 2,
        ),
    ];
    for (filetype, filename, want_type, disposition_ok) in cases {
        let mut meta = Vec::new();
        if let Some(t) = filetype {
            meta.push(format!("filetype {}", b64(t.as_bytes())));
        }
        if let Some(n) = filename {
            meta.push(format!("filename {}", b64(n.as_bytes())));
        }
        let url = create_with(
            &c,
            &server.endpoint,
            &[("Upload-Length", "4"), ("Upload-Metadata", &meta.join(","))],
        )
        .await;
        assert_eq!(patch(&c, &url, 0, b"data".to_vec()).await.status(), 204);
        let resp = Req::new("GET", &url).send(&c).await;
        let name = format!("{filetype:?} {filename:?}");
        check(
            &name,
            &resp,
            &Want::status(200)
                .is("content-type", want_type)
                .is("x-content-type-options", "nosniff"),
        );
        let d = resp.header("content-disposition").unwrap_or_default();
        assert!(disposition_ok(&d), "[{name}] Content-Disposition {d:?}");
        assert!(
            resp.header("x-injected").is_none() && resp.header("set-cookie").is_none(),
            "[{name}]"
        );
        assert_eq!(resp.body, b"data");
    }
    server.stop().await;
}

/// A GET that declares a request body is refused with 400 before any byte
/// of the upload is sent. Before, the download started streaming while
/// actix drained the unread body, and a bad chunk in it cut the 200
/// response short (found by tests/torture_http_fuzz.rs).
#[tokio::test]
async fn get_with_a_request_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let data = bytes(512 * 1024, 9);
    let path = path_of(&upload(&c, &server.endpoint, &data).await);
    // (name, framing lines, body, status)
    let rows: Vec<(&str, &str, &str, u16)> = vec![
        (
            "bad chunk size",
            "Transfer-Encoding: chunked\r\n",
            "zz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            "chunk longer than its size",
            "Transfer-Encoding: chunked\r\n",
            "3\r\nabcdef\r\n0\r\n\r\n",
            400,
        ),
        (
            "valid empty chunked body",
            "Transfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
        ),
        ("Content-Length body", "Content-Length: 5\r\n", "hello", 400),
        ("Content-Length: 0", "Content-Length: 0\r\n", "", 200),
        ("no body", "", "", 200),
    ];
    for (name, framing, body, status) in rows {
        let mut sock = raw::Conn::connect(server.addr).await;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n{framing}\r\n{body}");
        sock.send(req.as_bytes()).await;
        let resp = sock.read_response(false).await;
        assert_eq!(resp.status, status, "[{name}] {:?}", resp.headers);
        if status == 200 {
            assert!(resp.body == data, "[{name}] body differs");
        } else {
            let text = String::from_utf8_lossy(&resp.body);
            assert!(text.starts_with("ERR_UNEXPECTED_BODY: "), "[{name}] {text}");
        }
    }
    server.stop().await;
}
