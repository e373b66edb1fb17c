//! POST: creation, creation-defer-length, creation-with-upload, Location
//! building (direct and behind a proxy), Upload-Expires.

mod common;

use common::*;
use std::time::{Duration, SystemTime};

fn location_ok(addr: std::net::SocketAddr, resp: &Resp, row: &str) -> String {
    let loc = resp
        .header("location")
        .unwrap_or_else(|| panic!("[{row}] no Location: {resp:?}"));
    let prefix = format!("http://{addr}/files/");
    let id = loc
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("[{row}] Location {loc:?} is not absolute under {prefix}"));
    assert!(
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "[{row}] id {id:?}"
    );
    loc
}

/// Requests that must be refused without creating anything.
#[tokio::test]
async fn post_rejections_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let post = || Req::new("POST", &ep).tus();
    let rows = vec![
        row(
            "no Upload-Length",
            post(),
            Want::status(400).err("ERR_MISSING_UPLOAD_LENGTH"),
        ),
        row(
            "negative Upload-Length",
            post().h("Upload-Length", "-1"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "non-numeric Upload-Length",
            post().h("Upload-Length", "ten"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "fractional Upload-Length",
            post().h("Upload-Length", "1.5"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "Upload-Length beyond u64",
            post().h("Upload-Length", "18446744073709551616"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "both Upload-Length and Upload-Defer-Length",
            post().h("Upload-Length", "5").h("Upload-Defer-Length", "1"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "Upload-Defer-Length other than 1",
            post().h("Upload-Defer-Length", "2"),
            Want::status(400).err("ERR_INVALID_UPLOAD_DEFER_LENGTH"),
        ),
        row(
            "metadata value not base64",
            post()
                .h("Upload-Length", "5")
                .h("Upload-Metadata", "filename !!!"),
            Want::status(400).err("ERR_INVALID_METADATA"),
        ),
        row(
            "metadata duplicate key",
            post()
                .h("Upload-Length", "5")
                .h("Upload-Metadata", "a YQ==,a Yg=="),
            Want::status(400).err("ERR_INVALID_METADATA"),
        ),
        row(
            "metadata trailing comma",
            post()
                .h("Upload-Length", "5")
                .h("Upload-Metadata", "a YQ==,"),
            Want::status(400).err("ERR_INVALID_METADATA"),
        ),
        row(
            "creation-with-upload without a content type",
            post().h("Upload-Length", "5").body(b"hello".to_vec()),
            Want::status(415).err("ERR_INVALID_CONTENT_TYPE"),
        ),
        row(
            "creation-with-upload as application/octet-stream",
            post()
                .h("Upload-Length", "5")
                .h("Content-Type", "application/octet-stream")
                .body(b"hello".to_vec()),
            Want::status(415).err("ERR_INVALID_CONTENT_TYPE"),
        ),
        row(
            "creation-with-upload with an unknown checksum algorithm",
            post()
                .h("Upload-Length", "5")
                .octet()
                .h("Upload-Checksum", "whirlpool AAAA")
                .body(b"hello".to_vec()),
            Want::status(400).err("ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"),
        ),
        row(
            "invalid Upload-Concat",
            post()
                .h("Upload-Length", "5")
                .h("Upload-Concat", "sideways"),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
    ];
    for r in rows {
        let resp = r.req.send(&c).await;
        check(r.name, &resp, &r.want);
        assert!(
            resp.header("location").is_none(),
            "[{}] Location on an error",
            r.name
        );
        assert!(
            stored_files(dir.path()).is_empty(),
            "[{}] a refused POST left {:?}",
            r.name,
            stored_files(dir.path())
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn post_over_max_size_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_size = Some(1000);
    let server = TestServer::start(cfg);
    let c = client();
    let ep = server.endpoint.clone();
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Length", "1001")
        .send(&c)
        .await;
    check(
        "over max",
        &resp,
        &Want::status(413)
            .err("ERR_MAX_SIZE_EXCEEDED")
            .no("location"),
    );
    assert!(stored_files(dir.path()).is_empty());
    let resp = Req::new("POST", &ep)
        .tus()
        .h("Upload-Length", "1000")
        .send(&c)
        .await;
    check("exactly max", &resp, &Want::status(201));
    server.stop().await;
}

/// Successful creations and the state HEAD reports afterwards.
#[tokio::test]
async fn post_creation_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let post = || Req::new("POST", &ep).tus();
    let meta = format!(
        "filename {},is_confidential",
        b64(b"world_domination_plan.pdf")
    );
    let data = bytes(1000, 1);

    // (row, request, expected 201, expected HEAD afterwards)
    let rows: Vec<(&str, Req, Want, Want)> = vec![
        (
            "plain",
            post().h("Upload-Length", "1000"),
            Want::status(201).check("upload-expires", "an IMF-fixdate", is_imf_fixdate),
            Want::status(200)
                .is("upload-offset", "0")
                .is("upload-length", "1000")
                .no("upload-defer-length")
                .no("upload-metadata")
                .is("cache-control", "no-store")
                .check("upload-expires", "an IMF-fixdate", is_imf_fixdate),
        ),
        (
            "collection URL without trailing slash",
            Req::new("POST", ep.trim_end_matches('/'))
                .tus()
                .h("Upload-Length", "3"),
            Want::status(201),
            Want::status(200)
                .is("upload-offset", "0")
                .is("upload-length", "3"),
        ),
        (
            "empty Upload-Metadata means none (tuspy)",
            post().h("Upload-Length", "10").h("Upload-Metadata", ""),
            Want::status(201),
            Want::status(200)
                .is("upload-length", "10")
                .no("upload-metadata"),
        ),
        (
            "metadata is echoed byte for byte",
            post()
                .h("Upload-Length", "10")
                .h("Upload-Metadata", meta.clone()),
            Want::status(201),
            Want::status(200).is("upload-metadata", meta.clone()),
        ),
        (
            "metadata with unpadded values and a space after the comma is echoed as sent",
            post()
                .h("Upload-Length", "10")
                .h("Upload-Metadata", "a YQ, b Yg,flag"),
            Want::status(201),
            Want::status(200).is("upload-metadata", "a YQ, b Yg,flag"),
        ),
        (
            "deferred length",
            post().h("Upload-Defer-Length", "1"),
            Want::status(201),
            Want::status(200)
                .is("upload-offset", "0")
                .is("upload-defer-length", "1")
                .no("upload-length"),
        ),
        (
            "zero-length upload is finished at once",
            post().h("Upload-Length", "0"),
            Want::status(201),
            Want::status(200)
                .is("upload-offset", "0")
                .is("upload-length", "0")
                .no("upload-expires"),
        ),
        (
            "creation-with-upload, part of the bytes",
            post()
                .h("Upload-Length", "1000")
                .octet()
                .body(data[..400].to_vec()),
            Want::status(201).is("upload-offset", "400").check(
                "upload-expires",
                "an IMF-fixdate",
                is_imf_fixdate,
            ),
            Want::status(200)
                .is("upload-offset", "400")
                .is("upload-length", "1000"),
        ),
        (
            "creation-with-upload, all bytes with a right checksum",
            post()
                .h("Upload-Length", "1000")
                .octet()
                .h("Upload-Checksum", format!("sha1 {}", b64(&sha1_of(&data))))
                .body(data.clone()),
            Want::status(201)
                .is("upload-offset", "1000")
                .no("upload-expires"),
            Want::status(200)
                .is("upload-offset", "1000")
                .is("upload-length", "1000")
                .no("upload-expires"),
        ),
        (
            "creation-with-upload with a wrong checksum keeps nothing",
            post()
                .h("Upload-Length", "1000")
                .octet()
                .h(
                    "Upload-Checksum",
                    format!("sha1 {}", b64(&sha1_of(b"other"))),
                )
                .body(data.clone()),
            Want::status(201).is("upload-offset", "0"),
            Want::status(200).is("upload-offset", "0"),
        ),
        (
            "creation-with-upload with a sha1 digest of the wrong length keeps nothing",
            post()
                .h("Upload-Length", "1000")
                .octet()
                .h("Upload-Checksum", "sha1 AAAA")
                .body(data.clone()),
            Want::status(201).is("upload-offset", "0"),
            Want::status(200).is("upload-offset", "0"),
        ),
        (
            "creation-with-upload, empty body with the content type",
            post().h("Upload-Length", "5").octet().body(Vec::new()),
            Want::status(201).is("upload-offset", "0"),
            Want::status(200)
                .is("upload-offset", "0")
                .is("upload-length", "5"),
        ),
    ];
    for (name, req, created, after) in rows {
        let resp = req.send(&c).await;
        check(name, &resp, &created);
        let url = location_ok(server.addr, &resp, name);
        check(name, &head(&c, &url).await, &after);
        if let Some(v) = resp.header("upload-expires") {
            let at = httpdate::parse_http_date(&v).unwrap();
            let now = SystemTime::now();
            assert!(
                at > now + Duration::from_secs(23 * 3600)
                    && at < now + Duration::from_secs(24 * 3600 + 300),
                "[{name}] Upload-Expires {v} is not about 24h ahead"
            );
        }
    }
    server.stop().await;
}

fn sha1_of(data: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(data).to_vec()
}

#[tokio::test]
async fn creation_with_upload_of_everything_is_downloadable() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let data = bytes(70_000, 9);
    let resp = Req::new("POST", &server.endpoint)
        .tus()
        .octet()
        .h("Upload-Length", data.len())
        .body(data.clone())
        .send(&c)
        .await;
    check(
        "with upload",
        &resp,
        &Want::status(201).is("upload-offset", data.len()),
    );
    let url = location_ok(server.addr, &resp, "with upload");
    assert_eq!(download(&c, &url).await, data);

    // Zero-length: finished at creation, downloadable as nothing.
    let url = create(&c, &server.endpoint, 0).await;
    let resp = Req::new("GET", &url).send(&c).await;
    check(
        "empty GET",
        &resp,
        &Want::status(200).is("content-length", "0"),
    );
    assert!(resp.body.is_empty());
    server.stop().await;
}

/// Location is built from the Host header; forwarded headers only count
/// behind a proxy.
#[tokio::test]
async fn location_ignores_forwarded_headers_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    for (name, hdrs) in [
        (
            "x-forwarded",
            vec![
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Proto", "https"),
            ],
        ),
        (
            "forwarded",
            vec![("Forwarded", "host=evil.example;proto=https")],
        ),
    ] {
        let mut req = Req::new("POST", &server.endpoint)
            .tus()
            .h("Upload-Length", "1");
        for (k, v) in hdrs {
            req = req.h(k, v);
        }
        let resp = req.send(&c).await;
        check(name, &resp, &Want::status(201));
        location_ok(server.addr, &resp, name);
    }
    server.stop().await;
}

/// (row, forwarded headers, expected Location prefix)
type ProxyCase = (&'static str, Vec<(&'static str, &'static str)>, String);

#[tokio::test]
async fn location_behind_a_proxy_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.behind_proxy = true;
    let server = TestServer::start(cfg);
    let c = client();
    let direct = format!("http://{}/files/", server.addr);
    let rows: Vec<ProxyCase> = vec![
        (
            "X-Forwarded-Host and X-Forwarded-Proto",
            vec![
                ("X-Forwarded-Host", "uploads.example.com"),
                ("X-Forwarded-Proto", "https"),
            ],
            "https://uploads.example.com/files/".into(),
        ),
        (
            "X-Forwarded-Host alone keeps http",
            vec![("X-Forwarded-Host", "uploads.example.com:8080")],
            "http://uploads.example.com:8080/files/".into(),
        ),
        (
            "RFC 7239 Forwarded is not the trusted scheme",
            vec![(
                "Forwarded",
                "for=192.0.2.60;proto=https;host=proxy.example.org",
            )],
            direct.clone(),
        ),
        ("no forwarded headers", vec![], direct.clone()),
    ];
    for (name, hdrs, prefix) in rows {
        let mut req = Req::new("POST", &server.endpoint)
            .tus()
            .h("Upload-Length", "1");
        for (k, v) in hdrs {
            req = req.h(k, v);
        }
        let resp = req.send(&c).await;
        check(name, &resp, &Want::status(201));
        let loc = resp.header("location").unwrap();
        let id = loc
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("[{name}] Location {loc:?}, want prefix {prefix}"));
        // The id behind the proxy URL is the same upload.
        assert_eq!(offset(&c, &format!("{direct}{id}")).await, 0, "[{name}]");
    }
    server.stop().await;
}
