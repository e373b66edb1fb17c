//! One writer per upload: a newer request stops a stalled one, which keeps
//! what it received; bytes of two writers never mix. Many uploads at once
//! complete byte-exact.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const TOTAL: usize = 4 << 20;

/// Opens a PATCH at `offset` declaring `TOTAL - offset` bytes and sends
/// `sent` of them, then stalls.
async fn stalled_patch(server: &TestServer, url: &str, data: &[u8], sent: usize) -> raw::Conn {
    let mut sock = raw::Conn::connect(server.addr).await;
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        path_of(url),
        server.addr,
        data.len()
    );
    sock.send(head.as_bytes()).await;
    sock.send(&data[..sent]).await;
    sock
}

/// Waits until the upload's file holds at least `n` bytes: the stalled
/// PATCH is then certainly inside its body loop, holding the upload.
async fn wait_for_file_len(server: &TestServer, url: &str, n: u64) {
    let file = server.data_dir.join("uploads").join(id_of(url));
    let reached = eventually(Duration::from_secs(20), || {
        let file = file.clone();
        async move {
            std::fs::metadata(&file)
                .map(|m| m.len() >= n)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(reached, "the stalled PATCH never wrote {n} bytes");
}

#[tokio::test]
async fn a_second_patch_stops_a_stalled_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, TOTAL as u64).await;
    let first_data = bytes(TOTAL, 1);
    let second_data = bytes(TOTAL, 2);
    let sent = 3 << 19; // 1.5 MiB of 4
    let mut first = stalled_patch(&server, &url, &first_data, sent).await;
    wait_for_file_len(&server, &url, 512 * 1024).await;

    // A reconnecting client re-sends from where it last knew: offset 0.
    let second = patch(&c, &url, 0, second_data[..65_536].to_vec()).await;
    let status = second.status().as_u16();
    let reached: usize = match status {
        409 => header(&second, "upload-offset")
            .expect("409 carries Upload-Offset")
            .parse()
            .unwrap(),
        other => panic!("second PATCH: {other} {:?}", second.text().await),
    };
    assert!(
        (512 * 1024..=sent).contains(&reached),
        "first reached {reached}"
    );

    // The stopped request is answered with what it kept.
    let first_resp = first.read_response(false).await;
    assert_eq!(first_resp.status, 204, "{first_resp:?}");
    assert_eq!(
        first_resp.header("upload-offset"),
        Some(reached.to_string().as_str())
    );
    assert_eq!(offset(&c, &url).await, reached as u64);

    // The second client resumes from the 409's offset with its own bytes.
    let res = patch(&c, &url, reached as u64, second_data[reached..].to_vec()).await;
    assert_eq!(res.status(), 204);
    let want = [&first_data[..reached], &second_data[reached..]].concat();
    assert_eq!(download(&c, &url).await, want);

    // The stalled connection sending the rest of its body changes nothing.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        first.sock.write_all(&first_data[sent..]),
    )
    .await;
    drop(first);
    assert_eq!(offset(&c, &url).await, TOTAL as u64);
    assert_eq!(download(&c, &url).await, want);
    server.stop().await;
}

#[tokio::test]
async fn head_during_a_stalled_patch_reports_what_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, TOTAL as u64).await;
    let data = bytes(TOTAL, 3);
    let sent = 3 << 19;
    let mut first = stalled_patch(&server, &url, &data, sent).await;
    wait_for_file_len(&server, &url, 512 * 1024).await;

    let h = head(&c, &url).await;
    check("HEAD", &h, &Want::status(200).has("upload-offset"));
    let reached = h.offset().unwrap() as usize;
    assert!((512 * 1024..=sent).contains(&reached), "reached {reached}");
    let first_resp = first.read_response(false).await;
    assert_eq!(first_resp.status, 204);
    assert_eq!(
        first_resp.header("upload-offset"),
        Some(reached.to_string().as_str())
    );
    drop(first);

    assert_eq!(
        patch(&c, &url, reached as u64, data[reached..].to_vec())
            .await
            .status(),
        204
    );
    assert_eq!(download(&c, &url).await, data);
    server.stop().await;
}

/// Two clients PATCH the same upload at offset 0 at once, with different
/// bytes. Whatever the interleaving, the stored prefix is one client's
/// bytes, never a mix, and every acknowledgement is truthful.
#[tokio::test]
async fn racing_patches_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let len = 512 * 1024;
    for round in 0..8u64 {
        let url = create(&c, &server.endpoint, len as u64).await;
        let a = bytes(len, 100 + round);
        let b = bytes(len, 200 + round);
        let (ra, rb) = tokio::join!(patch(&c, &url, 0, a.clone()), patch(&c, &url, 0, b.clone()));
        let stored = offset(&c, &url).await as usize;
        for (name, r) in [("a", &ra), ("b", &rb)] {
            let s = r.status().as_u16();
            let off: Option<usize> = header(r, "upload-offset").map(|v| v.parse().unwrap());
            match s {
                204 => assert!(
                    off.unwrap() <= stored,
                    "round {round} {name}: acked {off:?} > stored {stored}"
                ),
                409 => assert!(
                    off.is_some(),
                    "round {round} {name}: 409 without Upload-Offset"
                ),
                423 => {}
                other => panic!("round {round} {name}: {other}"),
            }
        }
        assert!(
            ra.status() == 204 || rb.status() == 204,
            "round {round}: nobody wrote"
        );
        // Complete with a third pattern and look at the prefix.
        let fill = bytes(len, 300 + round);
        if stored < len {
            assert_eq!(
                patch(&c, &url, stored as u64, fill[stored..].to_vec())
                    .await
                    .status(),
                204
            );
        }
        let got = download(&c, &url).await;
        assert_eq!(&got[stored..], &fill[stored..], "round {round}");
        assert!(
            got[..stored] == a[..stored] || got[..stored] == b[..stored],
            "round {round}: the first {stored} bytes mix both writers"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn many_parallel_uploads_complete_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let jobs = (0..24u64).map(|i| {
        let (c, ep) = (c.clone(), server.endpoint.clone());
        async move {
            let data = bytes(100_000 + i as usize * 7_919, i);
            let url = create(&c, &ep, data.len() as u64).await;
            let mut off = 0;
            for piece in data.chunks(40_000) {
                let res = patch(&c, &url, off as u64, piece.to_vec()).await;
                assert_eq!(res.status(), 204, "upload {i}");
                off += piece.len();
                assert_eq!(header(&res, "upload-offset"), Some(off.to_string()));
            }
            (url, data)
        }
    });
    let done = futures_util::future::join_all(jobs).await;
    let checks = done.iter().map(|(url, data)| {
        let c = c.clone();
        async move { assert!(download(&c, url).await == *data, "{url} differs") }
    });
    futures_util::future::join_all(checks).await;
    assert_eq!(stored_files(dir.path()).len(), 24);
    server.stop().await;
}
