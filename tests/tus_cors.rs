//! CORS for browser clients (tus-js-client, Uppy): every response to a
//! request with an Origin, errors included, lets the page read the tus
//! headers; preflights allow PATCH and the tus request headers.

mod common;

use common::*;

const ORIGIN: &str = "https://app.example";

fn exposes_tus_headers(v: &str) -> bool {
    let list: Vec<String> = v
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    [
        "location",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-expires",
        "tus-resumable",
        "tus-version",
    ]
    .iter()
    .all(|h| list.iter().any(|x| x == h))
}

fn cors_ok() -> fn(u16) -> Want {
    |status| {
        Want::status(status)
            .check("access-control-allow-origin", "the origin (or *)", |v| {
                v == ORIGIN || v == "*"
            })
            .check(
                "access-control-expose-headers",
                "a list with the tus headers",
                exposes_tus_headers,
            )
    }
}

#[tokio::test]
async fn every_response_to_a_browser_carries_cors_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let url = create(&c, &ep, 10).await;
    assert_eq!(patch(&c, &url, 0, bytes(4, 1)).await.status(), 204);
    let done = upload(&c, &ep, b"done").await;
    let unknown = format!("{ep}0123456789abcdef0123456789abcdef");
    let want = cors_ok();
    let o = |r: Req| r.h("Origin", ORIGIN);
    run(
        &c,
        vec![
            row(
                "POST 201",
                o(Req::new("POST", &ep).tus().h("Upload-Length", "1")),
                want(201).has("location"),
            ),
            row(
                "HEAD 200",
                o(Req::new("HEAD", &url).tus()),
                want(200).is("upload-offset", "4"),
            ),
            row(
                "PATCH 204",
                o(Req::new("PATCH", &url)
                    .tus()
                    .octet()
                    .h("Upload-Offset", "4")
                    .body(b"ab".to_vec())),
                want(204).is("upload-offset", "6"),
            ),
            row(
                "PATCH 409",
                o(Req::new("PATCH", &url)
                    .tus()
                    .octet()
                    .h("Upload-Offset", "0")
                    .body(b"ab".to_vec())),
                want(409)
                    .is("upload-offset", "6")
                    .err("ERR_MISMATCHED_OFFSET"),
            ),
            row("HEAD 404", o(Req::new("HEAD", &unknown).tus()), want(404)),
            row(
                "GET 404",
                o(Req::new("GET", &unknown)),
                want(404).err("ERR_UPLOAD_NOT_FOUND"),
            ),
            row(
                "404 outside the base path",
                o(Req::new("GET", format!("http://{}/nope", server.addr))),
                want(404),
            ),
            row(
                "POST 412",
                o(Req::new("POST", &ep).h("Upload-Length", "1")),
                want(412).is("tus-version", "1.0.0"),
            ),
            row("HEAD 412", o(Req::new("HEAD", &url)), want(412)),
            row(
                "GET 409 unfinished",
                o(Req::new("GET", &url)),
                want(409).err("ERR_UPLOAD_NOT_FINISHED"),
            ),
            row(
                "GET 200",
                o(Req::new("GET", &done)),
                want(200).is("content-length", "4"),
            ),
            row(
                "GET 206",
                o(Req::new("GET", &done).h("Range", "bytes=0-1")),
                want(206),
            ),
            row("DELETE 204", o(Req::new("DELETE", &done).tus()), want(204)),
            row("HEAD 410", o(Req::new("HEAD", &done).tus()), want(410)),
            row(
                "OPTIONS (not a preflight)",
                o(Req::new("OPTIONS", &ep)),
                want(200).is("tus-version", "1.0.0"),
            ),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn preflight_allows_patch_and_tus_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 10).await;
    let request_headers = "tus-resumable,upload-offset,content-type,upload-checksum,upload-length,upload-metadata,upload-concat,upload-defer-length,x-http-method-override";
    for (target, method) in [
        (&url, "PATCH"),
        (&url, "HEAD"),
        (&url, "DELETE"),
        (&server.endpoint, "POST"),
    ] {
        let resp = Req::new("OPTIONS", target)
            .h("Origin", ORIGIN)
            .h("Access-Control-Request-Method", method)
            .h("Access-Control-Request-Headers", request_headers)
            .send(&c)
            .await;
        let name = format!("preflight {method}");
        check(
            &name,
            &resp,
            &Want::status(200).check("access-control-allow-origin", "the origin (or *)", |v| {
                v == ORIGIN || v == "*"
            }),
        );
        let methods = resp
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .to_ascii_uppercase();
        assert!(
            methods.split(',').any(|m| m.trim() == method),
            "[{name}] methods {methods:?}"
        );
        let allowed: Vec<String> = resp
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        for h in request_headers.split(',') {
            assert!(
                allowed.iter().any(|a| a == h),
                "[{name}] {h} not allowed: {allowed:?}"
            );
        }
    }
    // A preflight changes nothing.
    assert_eq!(offset(&c, &url).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn configured_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.cors_allow_origin = vec![ORIGIN.into()];
    let server = TestServer::start(cfg);
    let c = client();
    let ep = server.endpoint.clone();
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Length", "1")
        .h("Origin", ORIGIN)
        .send(&c)
        .await;
    check(
        "allowed origin",
        &resp,
        &Want::status(201).is("access-control-allow-origin", ORIGIN),
    );
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Length", "1")
        .h("Origin", "https://evil.example")
        .send(&c)
        .await;
    // CORS is not authentication: the request is served (a non-browser
    // client could forge any Origin) but a browser may not read it.
    assert!(
        resp.header("access-control-allow-origin").is_none(),
        "{resp:?}"
    );
    // A browser on that origin never gets past the preflight.
    let resp = Req::new("OPTIONS", &ep)
        .h("Origin", "https://evil.example")
        .h("Access-Control-Request-Method", "POST")
        .h(
            "Access-Control-Request-Headers",
            "tus-resumable,upload-length",
        )
        .send(&c)
        .await;
    assert!(
        resp.header("access-control-allow-origin").is_none(),
        "{resp:?}"
    );
    assert_eq!(resp.header("tus-resumable").as_deref(), Some("1.0.0"));
    // Non-browser clients send no Origin and are served as usual.
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Length", "1")
        .send(&c)
        .await;
    check(
        "no origin",
        &resp,
        &Want::status(201).no("access-control-allow-origin"),
    );
    let text = metrics_text(&c, &server).await;
    assert_eq!(
        sample(&text, "tusker_uploads_created_total"),
        Some(3.0),
        "{text}"
    );
    server.stop().await;
}
