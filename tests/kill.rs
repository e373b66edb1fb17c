//! Crash safety: the real binary is SIGKILLed in the middle of a large
//! streaming PATCH, restarted on the same data directory, and must report
//! an offset no lower than anything it acknowledged; the upload then
//! completes byte-exact. And SIGKILLed amid many small creations: every
//! upload it answered 201 is whole after the restart.

mod common;

use common::proc::Spawn;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const TOTAL: usize = 24 << 20;

#[tokio::test]
async fn sigkill_mid_patch_never_loses_acknowledged_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("tusker.log");
    let c = client();
    let data = bytes(TOTAL, 42);

    let mut server = Spawn::new(&data_dir, &log).start().await;
    let url = create(&c, &server.endpoint(), TOTAL as u64).await;
    let id = id_of(&url);
    let file = data_dir.join("uploads").join(&id);
    let mut acked = 0usize;

    for round in 0..4usize {
        let url = format!("{}{id}", server.endpoint());
        // A short PATCH that is acknowledged.
        let from = offset(&c, &url).await as usize;
        assert!(
            from >= acked,
            "round {round}: offset {from} below acknowledged {acked}"
        );
        let to = from + 256 * 1024 + round * 12_345;
        let res = patch(&c, &url, from as u64, data[from..to].to_vec()).await;
        assert_eq!(res.status(), 204, "round {round}");
        acked = header(&res, "upload-offset").unwrap().parse().unwrap();
        assert_eq!(acked, to);

        // A large streaming PATCH for the rest, killed half way.
        let mut sock = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {acked}\r\nContent-Length: {}\r\n\r\n",
            path_of(&url),
            server.addr,
            TOTAL - acked
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let stream_len = (2 << 20) + round * (1 << 20);
        sock.write_all(&data[acked..acked + stream_len])
            .await
            .unwrap();
        sock.flush().await.unwrap();
        // Kill once the server has written some of it (bytes past the
        // recorded offset now sit in the file, unacknowledged).
        let target = (acked + 512 * 1024) as u64;
        let written = eventually(Duration::from_secs(20), || {
            let file = file.clone();
            async move {
                std::fs::metadata(&file)
                    .map(|m| m.len() >= target)
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(
            written,
            "round {round}: the server never wrote the streamed bytes"
        );
        server.kill();
        drop(sock);

        server.restart().await;
        let url = format!("{}{id}", server.endpoint());
        let after = offset(&c, &url).await as usize;
        assert!(
            after >= acked && after <= acked + stream_len,
            "round {round}: offset after restart {after}, acknowledged {acked}, streamed up to {}",
            acked + stream_len
        );
        acked = after;
    }

    // Resume and complete; the result is exactly the data.
    let url = format!("{}{id}", server.endpoint());
    let from = offset(&c, &url).await as usize;
    assert!(from >= acked);
    let res = patch(&c, &url, from as u64, data[from..].to_vec()).await;
    assert_eq!(res.status(), 204, "{}", server.log_text());
    let got = download(&c, &url).await;
    assert!(
        got.len() == data.len() && got == data,
        "downloaded bytes differ after kills"
    );

    // And it stays complete across one more restart.
    server.restart().await;
    let url = format!("{}{id}", server.endpoint());
    let h = head(&c, &url).await;
    check(
        "after restart",
        &h,
        &Want::status(200)
            .is("upload-offset", TOTAL)
            .is("upload-length", TOTAL),
    );
    server.kill();
}

/// Clients creating 64 KiB uploads with their bytes (creation-with-upload)
/// at once, the server SIGKILLed amid them: each upload answered 201 is
/// complete and byte-exact after the restart, and creation goes on. Records
/// and their expiry entries are written without transactions here
/// (src/meta/sled_store/writes.rs); this is what a crash between their
/// steps must not break.
#[tokio::test]
async fn sigkill_amid_small_creations_keeps_every_acknowledged_upload() {
    const SIZE: usize = 64 * 1024;
    const CLIENTS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Spawn::new(&data_dir, &dir.path().join("tusker.log"))
        .start()
        .await;
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (endpoint, acked) = (server.endpoint(), acked.clone());
            tokio::spawn(async move {
                let c = client();
                // Bounded: the kill ends it long before.
                for i in 0..2_000 {
                    let seed = n * 100_000 + i;
                    let res = c
                        .post(&endpoint)
                        .header("Tus-Resumable", "1.0.0")
                        .header("Upload-Length", SIZE)
                        .header("Content-Type", "application/offset+octet-stream")
                        .body(bytes(SIZE, seed))
                        .send()
                        .await;
                    let Ok(res) = res else { break };
                    if res.status() == 201
                        && header(&res, "upload-offset") == Some(SIZE.to_string())
                    {
                        acked.lock().unwrap().push((id_of(&location(&res)), seed));
                    }
                }
            })
        })
        .collect();
    let enough = eventually(Duration::from_secs(30), || {
        let acked = acked.clone();
        async move { acked.lock().unwrap().len() >= 100 }
    })
    .await;
    assert!(enough, "too few creations before the kill");
    server.kill();
    for client in clients {
        client.await.unwrap();
    }

    server.restart().await;
    let c = client();
    let acked = acked.lock().unwrap().clone();
    // The files made ahead of use (src/data/file/pool.rs) that no upload
    // wrote to are gone at once. Those holding bytes of a creation whose
    // record the kill took (written without a flush of its own) go once
    // the restarted server has asked its meta store, and the killed
    // server's manifest with them. What is left: uploads with a record,
    // and the files the restarted server made ahead of use, listed in its
    // own manifest.
    let uploads = data_dir.join("uploads");
    let pool_dir = uploads.join(".tusker-pool");
    let checked = eventually(Duration::from_secs(30), || {
        let pool_dir = pool_dir.clone();
        async move { std::fs::read_dir(&pool_dir).unwrap().count() <= 1 }
    })
    .await;
    assert!(checked, "the killed server's manifest is left");
    let live = pooled_ids(&uploads);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&uploads).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_file() && !live.contains(&name) {
            assert!(meta.len() > 0, "empty file {name:?} left");
            files.push(name);
        }
    }
    assert!(
        files.len() >= acked.len() && files.len() <= acked.len() + CLIENTS as usize,
        "{} files for {} acknowledged uploads",
        files.len(),
        acked.len()
    );
    for name in &files {
        let res = head(&c, &server.url(name)).await;
        assert_eq!(res.status, 200, "file {name:?} left without a record");
    }
    for (id, seed) in &acked {
        let url = server.url(id);
        check(
            &format!("upload {id} after the kill"),
            &head(&c, &url).await,
            &Want::status(200)
                .is("upload-offset", SIZE)
                .is("upload-length", SIZE),
        );
        assert!(
            download(&c, &url).await == bytes(SIZE, *seed),
            "upload {id}: bytes differ after the kill"
        );
    }
    let url = create(&c, &server.endpoint(), 10).await;
    assert_eq!(offset(&c, &url).await, 0, "creation after the restart");
    server.kill();
}
