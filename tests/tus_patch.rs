//! PATCH: content type, offsets, lengths, checksums, method override,
//! chunked bodies with Expect: 100-continue.

mod common;

use common::*;

fn digest(alg: &str, data: &[u8]) -> String {
    use sha2::Digest;
    let d: Vec<u8> = match alg {
        "sha1" => sha1::Sha1::digest(data).to_vec(),
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "sha512" => sha2::Sha512::digest(data).to_vec(),
        "md5" => md5::Md5::digest(data).to_vec(),
        "crc32" => crc32fast::hash(data).to_be_bytes().to_vec(),
        other => panic!("{other}"),
    };
    format!("{alg} {}", b64(&d))
}

/// Requests that must be refused and leave the upload at offset 10.
#[tokio::test]
async fn patch_rejections_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 100).await;
    let first = bytes(10, 1);
    assert_eq!(patch(&c, &url, 0, first.clone()).await.status(), 204);
    let p = || Req::new("PATCH", &url).tus();
    let chunk = bytes(10, 2);
    let at10 = || p().octet().h("Upload-Offset", "10").body(chunk.clone());
    let rows = vec![
        row(
            "no Content-Type",
            p().h("Upload-Offset", "10").body(chunk.clone()),
            Want::status(415).err("ERR_INVALID_CONTENT_TYPE"),
        ),
        row(
            "application/octet-stream",
            p().h("Content-Type", "application/octet-stream")
                .h("Upload-Offset", "10")
                .body(chunk.clone()),
            Want::status(415).err("ERR_INVALID_CONTENT_TYPE"),
        ),
        row(
            "no Upload-Offset",
            p().octet().body(chunk.clone()),
            Want::status(400).err("ERR_MISSING_UPLOAD_OFFSET"),
        ),
        row(
            "negative Upload-Offset",
            p().octet().h("Upload-Offset", "-10").body(chunk.clone()),
            Want::status(400).err("ERR_INVALID_UPLOAD_OFFSET"),
        ),
        row(
            "offset behind: 409 with the current offset",
            p().octet().h("Upload-Offset", "0").body(chunk.clone()),
            Want::status(409)
                .err("ERR_MISMATCHED_OFFSET")
                .is("upload-offset", "10"),
        ),
        row(
            "offset ahead: 409 with the current offset",
            p().octet().h("Upload-Offset", "20").body(chunk.clone()),
            Want::status(409)
                .err("ERR_MISMATCHED_OFFSET")
                .is("upload-offset", "10"),
        ),
        row(
            "body past Upload-Length",
            p().octet().h("Upload-Offset", "10").body(bytes(91, 3)),
            Want::status(413).err("ERR_UPLOAD_LENGTH_EXCEEDED"),
        ),
        row(
            "different Upload-Length on a known length",
            at10().h("Upload-Length", "99"),
            Want::status(400).err("ERR_UPLOAD_LENGTH_IMMUTABLE"),
        ),
        row(
            "checksum mismatch",
            at10().h("Upload-Checksum", digest("sha1", b"something else")),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "checksum mismatch (crc32)",
            at10().h("Upload-Checksum", digest("crc32", b"something else")),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "unknown checksum algorithm",
            at10().h("Upload-Checksum", "whirlpool AAAAAAAAAAAAAAAAAAAAAA=="),
            Want::status(400).err("ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"),
        ),
        row(
            "checksum digest not base64",
            at10().h("Upload-Checksum", "sha1 !!!!"),
            Want::status(400).err("ERR_INVALID_CHECKSUM"),
        ),
        row(
            "checksum digest not of the form <algorithm> <base64>",
            at10().h("Upload-Checksum", "sha1"),
            Want::status(400).err("ERR_INVALID_CHECKSUM"),
        ),
        // Valid base64 of the wrong length for its algorithm cannot match
        // the data: a mismatch, not a malformed header.
        row(
            "sha256 digest of 3 bytes",
            at10().h("Upload-Checksum", "sha256 AAAA"),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "sha1 digest of 32 bytes (a sha256 length)",
            at10().h(
                "Upload-Checksum",
                digest("sha256", &chunk).replace("sha256", "sha1"),
            ),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "md5 digest of 20 bytes (the sha1 of the chunk)",
            at10().h(
                "Upload-Checksum",
                digest("sha1", &chunk).replace("sha1", "md5"),
            ),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "crc32 digest of 8 bytes",
            at10().h("Upload-Checksum", "crc32 AAAAAAAAAAA="),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "sha512 digest truncated to 63 bytes",
            at10().h("Upload-Checksum", {
                use sha2::Digest;
                format!("sha512 {}", b64(&sha2::Sha512::digest(&chunk)[..63]))
            }),
            Want::status(460).err("ERR_CHECKSUM_MISMATCH"),
        ),
        row(
            "unknown upload",
            Req::new(
                "PATCH",
                format!("{}0123456789abcdef0123456789abcdef", server.endpoint),
            )
            .tus()
            .octet()
            .h("Upload-Offset", "0")
            .body(chunk.clone()),
            Want::status(404).err("ERR_UPLOAD_NOT_FOUND"),
        ),
    ];
    for r in rows {
        let resp = r.req.send(&c).await;
        check(r.name, &resp, &r.want);
        let after = head(&c, &url).await;
        check(
            r.name,
            &after,
            &Want::status(200)
                .is("upload-offset", "10")
                .is("upload-length", "100"),
        );
    }

    // Refused bytes left no trace: completing the upload gives exactly
    // what was acknowledged.
    let rest = bytes(90, 4);
    assert_eq!(patch(&c, &url, 10, rest.clone()).await.status(), 204);
    assert_eq!(download(&c, &url).await, [first, rest].concat());
    server.stop().await;
}

/// Successful appends, each acknowledged with the new offset.
#[tokio::test]
async fn patch_success_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 100).await;
    let chunks: Vec<Vec<u8>> = (0..10).map(|i| bytes(10, 100 + i)).collect();
    let at = |off: u64, i: usize| {
        Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("Upload-Offset", off)
            .body(chunks[i].clone())
    };
    let ack = |off: u64| {
        Want::status(204).is("upload-offset", off).check(
            "upload-expires",
            "an IMF-fixdate",
            is_imf_fixdate,
        )
    };
    let rows = vec![
        row("plain", at(0, 0), ack(10)),
        row(
            "sha1",
            at(10, 1).h("Upload-Checksum", digest("sha1", &chunks[1])),
            ack(20),
        ),
        row(
            "sha256",
            at(20, 2).h("Upload-Checksum", digest("sha256", &chunks[2])),
            ack(30),
        ),
        row(
            "md5",
            at(30, 3).h("Upload-Checksum", digest("md5", &chunks[3])),
            ack(40),
        ),
        row(
            "crc32",
            at(40, 4).h("Upload-Checksum", digest("crc32", &chunks[4])),
            ack(50),
        ),
        row(
            "sha512",
            at(50, 5).h("Upload-Checksum", digest("sha512", &chunks[5])),
            ack(60),
        ),
        row(
            "content type with a parameter",
            Req::new("PATCH", &url)
                .tus()
                .h(
                    "Content-Type",
                    "application/offset+octet-stream; charset=binary",
                )
                .h("Upload-Offset", "60")
                .body(chunks[6].clone()),
            ack(70),
        ),
        row(
            "empty body",
            Req::new("PATCH", &url)
                .tus()
                .octet()
                .h("Upload-Offset", "70")
                .body(Vec::new()),
            ack(70),
        ),
        row(
            "same Upload-Length again",
            at(70, 7).h("Upload-Length", "100"),
            ack(80),
        ),
        row(
            "X-HTTP-Method-Override: PATCH on a POST",
            Req::new("POST", &url)
                .tus()
                .h("X-HTTP-Method-Override", "PATCH")
                .octet()
                .h("Upload-Offset", "80")
                .body(chunks[8].clone()),
            ack(90),
        ),
        row(
            "last chunk: finished, no expiry",
            at(90, 9),
            Want::status(204)
                .is("upload-offset", "100")
                .no("upload-expires"),
        ),
        row(
            "nothing fits after the end",
            Req::new("PATCH", &url)
                .tus()
                .octet()
                .h("Upload-Offset", "100")
                .body(b"x".to_vec()),
            Want::status(413).err("ERR_UPLOAD_LENGTH_EXCEEDED"),
        ),
    ];
    run(&c, rows).await;
    let after = head(&c, &url).await;
    check(
        "after",
        &after,
        &Want::status(200)
            .is("upload-offset", "100")
            .no("upload-expires"),
    );
    assert_eq!(download(&c, &url).await, chunks.concat());
    server.stop().await;
}

#[tokio::test]
async fn deferred_length_is_set_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create_with(&c, &server.endpoint, &[("Upload-Defer-Length", "1")]).await;
    let a = bytes(10, 1);
    let b = bytes(10, 2);
    let c2 = bytes(10, 3);
    let p = |off: u64, body: &[u8]| {
        Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("Upload-Offset", off)
            .body(body.to_vec())
    };
    let state = |off: u64| Want::status(200).is("upload-offset", off);
    let steps: Vec<(&str, Req, Want, Want)> = vec![
        (
            "bytes without a length",
            p(0, &a),
            Want::status(204).is("upload-offset", "10"),
            state(10).is("upload-defer-length", "1").no("upload-length"),
        ),
        (
            "length below the offset",
            p(10, &b).h("Upload-Length", "5"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
            state(10).is("upload-defer-length", "1").no("upload-length"),
        ),
        (
            "length declared",
            p(10, &b).h("Upload-Length", "30"),
            Want::status(204).is("upload-offset", "20"),
            state(20)
                .is("upload-length", "30")
                .no("upload-defer-length"),
        ),
        (
            "a different length later",
            p(20, &c2).h("Upload-Length", "31"),
            Want::status(400).err("ERR_UPLOAD_LENGTH_IMMUTABLE"),
            state(20).is("upload-length", "30"),
        ),
        (
            "the same length again",
            p(20, &c2).h("Upload-Length", "30"),
            Want::status(204).is("upload-offset", "30"),
            state(30).is("upload-length", "30").no("upload-expires"),
        ),
    ];
    for (name, req, want, after) in steps {
        check(name, &req.send(&c).await, &want);
        check(name, &head(&c, &url).await, &after);
    }
    assert_eq!(download(&c, &url).await, [a, b, c2].concat());

    // An empty PATCH that declares the length equal to the offset finishes.
    let url = create_with(&c, &server.endpoint, &[("Upload-Defer-Length", "1")]).await;
    let a = bytes(10, 5);
    assert_eq!(patch(&c, &url, 0, a.clone()).await.status(), 204);
    let resp = Req::new("PATCH", &url)
        .tus()
        .octet()
        .h("Upload-Offset", "10")
        .h("Upload-Length", "10")
        .send(&c)
        .await;
    check(
        "finishing empty PATCH",
        &resp,
        &Want::status(204).is("upload-offset", "10"),
    );
    assert_eq!(download(&c, &url).await, a);
    server.stop().await;
}

#[tokio::test]
async fn deferred_length_respects_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_size = Some(100);
    let server = TestServer::start(cfg);
    let c = client();
    let url = create_with(&c, &server.endpoint, &[("Upload-Defer-Length", "1")]).await;
    let resp = Req::new("PATCH", &url)
        .tus()
        .octet()
        .h("Upload-Offset", "0")
        .h("Upload-Length", "101")
        .body(b"x".to_vec())
        .send(&c)
        .await;
    check(
        "declared over max",
        &resp,
        &Want::status(413).err("ERR_MAX_SIZE_EXCEEDED"),
    );
    let resp = patch(&c, &url, 0, bytes(101, 1)).await;
    assert_eq!(resp.status(), 413, "body over max without a length");
    check(
        "after",
        &head(&c, &url).await,
        &Want::status(200)
            .is("upload-offset", "0")
            .is("upload-defer-length", "1"),
    );
    server.stop().await;
}

/// A chunked body (no Content-Length) that runs past the length is refused
/// once it does, and nothing of it counts.
#[tokio::test]
async fn chunked_body_past_length_is_413_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 100_000).await;
    let body = bytes(150_000, 1);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    let res = c
        .patch(&url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", "0")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The server may answer before it has read everything; if it does, the
    // answer is 413.
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
        assert!(res
            .text()
            .await
            .unwrap()
            .starts_with("ERR_UPLOAD_LENGTH_EXCEEDED"));
    }
    assert_eq!(offset(&c, &url).await, 0);
    let data = bytes(100_000, 2);
    assert_eq!(patch(&c, &url, 0, data.clone()).await.status(), 204);
    assert_eq!(download(&c, &url).await, data);
    server.stop().await;
}

/// What tus-java-client sends: chunked transfer with Expect: 100-continue,
/// as PATCH and as POST with X-HTTP-Method-Override.
#[tokio::test]
async fn chunked_with_expect_100_continue() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let data = bytes(300_000, 11);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let path = path_of(&url);
    let halves = [
        (0usize, 120_000usize, "PATCH", ""),
        (
            120_000,
            300_000,
            "POST",
            "X-HTTP-Method-Override: PATCH\r\n",
        ),
    ];
    for (start, end, method, extra) in halves {
        let mut sock = raw::Conn::connect(server.addr).await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n{extra}Content-Type: application/offset+octet-stream\r\nUpload-Offset: {start}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            server.addr
        );
        sock.send(head.as_bytes()).await;
        let interim = sock.read_response(false).await;
        assert_eq!(interim.status, 100, "{method}: {interim:?}");
        for piece in data[start..end].chunks(7_777) {
            sock.send(format!("{:x}\r\n", piece.len()).as_bytes()).await;
            sock.send(piece).await;
            sock.send(b"\r\n").await;
        }
        sock.send(b"0\r\n\r\n").await;
        let resp = sock.read_response(false).await;
        assert_eq!(resp.status, 204, "{method}: {resp:?}");
        assert_eq!(
            resp.header("upload-offset"),
            Some(end.to_string().as_str()),
            "{method}"
        );
        assert_eq!(resp.header("tus-resumable"), Some("1.0.0"));
    }
    assert_eq!(download(&c, &url).await, data);
    server.stop().await;
}
