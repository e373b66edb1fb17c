//! Durability: bytes survive broken connections and restarts.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn connection_dropped_mid_body_keeps_received_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let url = create(&c, &server.endpoint, 1 << 20).await;
    let path = url
        .strip_prefix(&format!("http://{}", server.addr))
        .unwrap()
        .to_owned();
    let data = bytes(300_000, 7);

    let mut sock = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        1 << 20
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(sock);

    let kept = eventually(Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move { offset(&c, &url).await == 300_000 }
    })
    .await;
    assert!(kept, "offset after the drop: {}", offset(&c, &url).await);

    // The client resumes from there and the result is byte-exact.
    let mut rest = bytes((1 << 20) - 300_000, 8);
    let res = patch(&c, &url, 300_000, rest.clone()).await;
    assert_eq!(res.status(), 204);
    let mut want = data;
    want.append(&mut rest);
    assert_eq!(download(&c, &url).await, want);
    server.stop().await;
}

#[tokio::test]
async fn resume_across_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let data = bytes(100_000, 3);
    let server = TestServer::on(dir.path());
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        patch(&c, &url, 0, data[..40_000].to_vec()).await.status(),
        204
    );
    server.stop().await;

    let server = TestServer::on(dir.path());
    let url = format!("{}{id}", server.endpoint);
    assert_eq!(offset(&c, &url).await, 40_000);
    assert_eq!(
        patch(&c, &url, 40_000, data[40_000..].to_vec())
            .await
            .status(),
        204
    );
    assert_eq!(download(&c, &url).await, data);
    server.stop().await;
}
