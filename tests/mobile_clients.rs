//! What the mobile tus clients put on the wire, replayed as raw HTTP/1.1
//! (their libraries cannot run here). tests/tus_patch.rs already covers a
//! single chunked PATCH and a single POST + `X-HTTP-Method-Override` with
//! `Expect: 100-continue`; these are whole uploads in each client's style.

mod common;

use common::raw::{Conn, Response};
use common::*;

const KIB: usize = 1024;

fn tus() -> (&'static str, String) {
    ("Tus-Resumable", "1.0.0".to_owned())
}

/// The upload's URL on the test server (the raw client sends
/// `Host: test.local`, so `Location` names that host).
fn local(server: &TestServer, location: &str) -> String {
    format!("{}{}", server.endpoint, id_of(location))
}

/// Sends one request with a `Transfer-Encoding: chunked` body behind
/// `Expect: 100-continue` on `conn` (kept alive), as HttpURLConnection does
/// in chunked streaming mode; returns the final response after checking
/// that `100 Continue` came first.
async fn java_chunked_request(
    conn: &mut Conn,
    method: &str,
    path: &str,
    extra: &[(&str, String)],
    body: &[u8],
    chunk: usize,
) -> Response {
    let mut headers = vec![
        tus(),
        ("Content-Type", "application/offset+octet-stream".to_owned()),
        ("Transfer-Encoding", "chunked".to_owned()),
        ("Expect", "100-continue".to_owned()),
    ];
    headers.extend_from_slice(extra);
    conn.send_head(method, path, &headers).await;
    let interim = conn.read_response(false).await;
    assert_eq!(interim.status, 100, "{method} {path}: {interim:?}");
    for piece in body.chunks(chunk) {
        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
        conn.send(&framed).await;
    }
    conn.send(b"0\r\n\r\n").await;
    let (more, res) = conn.read_final(false).await;
    assert!(more.is_empty(), "a second interim response: {more:?}");
    res
}

/// tus-java-client / tus-android-client: POST to create, then the file in
/// requests of `requestPayloadSize`, each streamed in `chunkSize` pieces
/// with chunked transfer and `Expect: 100-continue` — here through the
/// Android fallback (POST + `X-HTTP-Method-Override: PATCH`) for every
/// request, on one keep-alive connection, interrupted once and resumed
/// after HEAD on a new connection.
#[tokio::test]
async fn tus_java_client_whole_upload_with_method_override() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let data = bytes(2_500_000, 91);
    let payload = 700_000;
    let mut conn = Conn::connect(server.addr).await;
    let (_, created) = conn
        .request(
            "POST",
            "/files/",
            &[
                tus(),
                ("Upload-Length", data.len().to_string()),
                (
                    "Upload-Metadata",
                    format!("filename {}", b64(b"IMG_0042.jpg")),
                ),
            ],
            b"",
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let url = created.header("location").expect("Location").to_owned();
    let path = path_of(&url);

    // Two requests on the same connection.
    let mut offset = 0;
    for _ in 0..2 {
        let end = (offset + payload).min(data.len());
        let res = java_chunked_request(
            &mut conn,
            "POST",
            &path,
            &[
                ("X-HTTP-Method-Override", "PATCH".to_owned()),
                ("Upload-Offset", offset.to_string()),
            ],
            &data[offset..end],
            2 * KIB,
        )
        .await;
        assert_eq!(res.status, 204, "{res:?}");
        assert_eq!(res.header("upload-offset"), Some(end.to_string().as_str()));
        offset = end;
    }
    drop(conn);

    // The app restarts: HEAD for the offset, then the rest on a new connection.
    let mut conn = Conn::connect(server.addr).await;
    let (_, head) = conn.request("HEAD", &path, &[tus()], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("upload-offset"),
        Some(offset.to_string().as_str())
    );
    assert_eq!(
        head.header("upload-length"),
        Some(data.len().to_string().as_str())
    );
    for round in 0..10 {
        if offset == data.len() {
            break;
        }
        assert!(round < 9, "too many requests");
        let end = (offset + payload).min(data.len());
        let res = java_chunked_request(
            &mut conn,
            "POST",
            &path,
            &[
                ("X-HTTP-Method-Override", "PATCH".to_owned()),
                ("Upload-Offset", offset.to_string()),
            ],
            &data[offset..end],
            2 * KIB,
        )
        .await;
        assert_eq!(res.status, 204, "{res:?}");
        assert_eq!(res.header("upload-offset"), Some(end.to_string().as_str()));
        offset = end;
    }
    assert_eq!(download(&client(), &local(&server, &url)).await, data);
    server.stop().await;
}

/// tus-java-client retries a failed request after HEAD; a retried request
/// whose bytes had already landed meets 409 with the current offset.
#[tokio::test]
async fn tus_java_client_plain_patch_resend_meets_409() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let data = bytes(300_000, 92);
    let url = create(&client(), &server.endpoint, data.len() as u64).await;
    let path = path_of(&url);
    let mut conn = Conn::connect(server.addr).await;
    let first = &data[..200_000];
    let res = java_chunked_request(
        &mut conn,
        "PATCH",
        &path,
        &[("Upload-Offset", "0".to_owned())],
        first,
        8 * KIB,
    )
    .await;
    assert_eq!(res.status, 204);
    // The same request again (the client never saw the 204).
    let mut conn = Conn::connect(server.addr).await;
    conn.send_head(
        "PATCH",
        &path,
        &[
            tus(),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
            ("Upload-Offset", "0".to_owned()),
            ("Transfer-Encoding", "chunked".to_owned()),
            ("Expect", "100-continue".to_owned()),
        ],
    )
    .await;
    // The offset is stale: 409, either at once instead of 100 Continue
    // (then the client sends no body) or after the body.
    let first_answer = conn.read_response(false).await;
    let conflict = if first_answer.status == 100 {
        let mut framed = format!("{:x}\r\n", first.len()).into_bytes();
        framed.extend_from_slice(first);
        framed.extend_from_slice(b"\r\n0\r\n\r\n");
        conn.send(&framed).await;
        conn.read_final(false).await.1
    } else {
        first_answer
    };
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.header("upload-offset"), Some("200000"));
    let mut conn = Conn::connect(server.addr).await;
    let res = java_chunked_request(
        &mut conn,
        "PATCH",
        &path,
        &[("Upload-Offset", "200000".to_owned())],
        &data[200_000..],
        8 * KIB,
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(download(&client(), &url).await, data);
    server.stop().await;
}

/// TUSKit: OPTIONS split on "," without trimming; POST; HEAD read for both
/// `Upload-Length` and `Upload-Offset`; 500 KiB PATCHes with
/// Content-Length. A background URLSession re-sends a chunk the server
/// already applied: 409 with `Upload-Offset`, from which the client
/// continues (and HEAD agrees).
#[tokio::test]
async fn tuskit_500_kib_chunks_and_background_resend() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let chunk = 500 * KIB;
    let data = bytes(5 * chunk + 12_345, 93);
    let mut conn = Conn::connect(server.addr).await;

    let (_, options) = conn.request("OPTIONS", "/files/", &[], b"").await;
    assert_eq!(options.status, 200);
    let extensions: Vec<&str> = options
        .header("tus-extension")
        .expect("Tus-Extension")
        .split(',')
        .collect();
    for ext in ["creation", "termination", "concatenation", "checksum"] {
        assert!(extensions.contains(&ext), "{ext} in {extensions:?}");
    }

    let (_, created) = conn
        .request(
            "POST",
            "/files/",
            &[
                tus(),
                ("Upload-Length", data.len().to_string()),
                (
                    "Upload-Metadata",
                    format!(
                        "filename {},mimeType {}",
                        b64("clip.mov".as_bytes()),
                        b64(b"video/quicktime")
                    ),
                ),
            ],
            b"",
        )
        .await;
    assert_eq!(created.status, 201);
    let url = created.header("location").expect("Location").to_owned();
    let path = path_of(&url);
    let patch_headers = |offset: usize| {
        vec![
            tus(),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
            ("Upload-Offset", offset.to_string()),
        ]
    };

    let mut offset = 0;
    let mut resent = false;
    for round in 0..20 {
        assert!(round < 19, "too many requests");
        if offset == data.len() {
            break;
        }
        // TUSKit asks for the status before uploading.
        let (_, head) = conn.request("HEAD", &path, &[tus()], b"").await;
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("upload-length"),
            Some(data.len().to_string().as_str())
        );
        assert_eq!(
            head.header("upload-offset"),
            Some(offset.to_string().as_str())
        );
        let end = (offset + chunk).min(data.len());
        let (_, res) = conn
            .request("PATCH", &path, &patch_headers(offset), &data[offset..end])
            .await;
        assert_eq!(res.status, 204, "{res:?}");
        assert_eq!(res.header("upload-offset"), Some(end.to_string().as_str()));
        if !resent && end == 2 * chunk {
            // The app was suspended; the background session re-sends the
            // same request on a new connection.
            resent = true;
            let (_, again) = common::raw::request(
                server.addr,
                "PATCH",
                &path,
                &patch_headers(offset),
                &data[offset..end],
            )
            .await;
            assert_eq!(again.status, 409, "{again:?}");
            assert_eq!(
                again.header("upload-offset"),
                Some(end.to_string().as_str())
            );
            let recovered: usize = again
                .header("upload-offset")
                .and_then(|v| v.parse().ok())
                .expect("Upload-Offset on 409");
            offset = recovered;
            continue;
        }
        offset = end;
    }
    assert!(resent);
    let (_, head) = conn.request("HEAD", &path, &[tus()], b"").await;
    assert_eq!(
        head.header("upload-offset"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(download(&client(), &local(&server, &url)).await, data);
    server.stop().await;
}
