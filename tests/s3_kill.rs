//! SIGKILL in the middle of a large PATCH to object storage: the real
//! binary is killed while parts are in flight, restarted on the same data
//! directory, and the upload resumes from an offset that never went back.
//!
//! Needs `TUSKER_TEST_S3_ENDPOINT`; without it the test is ignored.

mod common;

use bytes::Bytes;
use common::proc::Spawn;
use common::s3::*;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// PATCHes `data[start..]` as one request whose body trickles out in
/// 128 KiB pieces; `sent` counts the bytes handed to the connection.
fn slow_patch(
    c: &reqwest::Client,
    url: &str,
    data: Arc<Vec<u8>>,
    start: usize,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let len = data.len() - start;
    let body = futures_util::stream::unfold(start, move |pos| {
        let (data, sent) = (data.clone(), sent.clone());
        async move {
            if pos >= data.len() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            let end = (pos + 128 * 1024).min(data.len());
            sent.fetch_add((end - pos) as u64, Ordering::SeqCst);
            let piece = Bytes::copy_from_slice(&data[pos..end]);
            Some((Ok::<_, std::io::Error>(piece), end))
        }
    });
    let req = c
        .patch(url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", start.to_string())
        .header("Content-Length", len.to_string())
        .body(reqwest::Body::wrap_stream(body));
    tokio::spawn(req.send())
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn sigkill_mid_patch_never_loses_acknowledged_bytes() {
    let s3 = s3::endpoint();
    let bucket = bucket(&s3).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("tusker.log");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let data = Arc::new(bytes(40 * MIB + 12345, 31));

    let mut tusker = Spawn::new(&data_dir, &log)
        .s3(&s3, &bucket, "uploads")
        .start()
        .await;
    let url = create(&c, &tusker.endpoint(), data.len() as u64).await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    // The highest offset any response has reported so far.
    let mut acked = 0u64;

    // How far into the slow PATCH each round is killed.
    for (round, kill_after) in [9 * MIB, 14 * MIB + 100 * 1024, 6 * MIB]
        .into_iter()
        .enumerate()
    {
        let url = tusker.url(&id);
        let head = offset(&c, &url).await;
        assert!(
            head >= acked,
            "round {round}: HEAD says {head}, {acked} was acknowledged; log:\n{}",
            tusker.log_text()
        );
        acked = head;
        // A few small acknowledged PATCHes (staged tails), then a big one.
        let start = acked as usize;
        upload_in_chunks(
            &c,
            &url,
            start,
            &data[start..start + 1400 * 1024],
            700 * 1024,
        )
        .await;
        acked += 1400 * 1024;

        let sent = Arc::new(AtomicU64::new(0));
        let request = slow_patch(&c, &url, data.clone(), acked as usize, sent.clone());
        let midway = eventually(Duration::from_secs(60), || {
            let sent = sent.clone();
            async move { sent.load(Ordering::SeqCst) >= kill_after as u64 }
        })
        .await;
        assert!(midway, "round {round}: the body did not get going");
        tusker.kill();
        eprintln!(
            "round {round}: resumed at {head}, killed after {} body bytes",
            sent.load(Ordering::SeqCst)
        );
        match tokio::time::timeout(Duration::from_secs(30), request).await {
            Ok(Ok(Ok(res))) if res.status() == 204 => {
                let reported: u64 = header(&res, "upload-offset")
                    .and_then(|o| o.parse().ok())
                    .expect("Upload-Offset");
                acked = acked.max(reported);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("PATCH task: {e}"),
            Err(_) => panic!("round {round}: PATCH did not end after the kill"),
        }
        tusker.restart().await;
    }

    let url = tusker.url(&id);
    let head = offset(&c, &url).await;
    assert!(head >= acked, "HEAD says {head}, {acked} was acknowledged");
    assert!(head <= data.len() as u64);
    let start = head as usize;
    upload_in_chunks(&c, &url, start, &data[start..], data.len()).await;
    assert!(
        download(&c, &url).await == *data,
        "upload differs; log:\n{}",
        tusker.log_text()
    );
    assert_eq!(open_multipart_uploads(&s3, &bucket).await, 0);
    assert_eq!(
        keys_under(&s3, &bucket, "uploads/.tusker-staging/").await,
        0
    );
    tusker.kill();
}

/// SIGKILL right after a run of acknowledged 1 MiB PATCHes, with the local
/// tail spool (`--s3-tail-staging local`): their parts are still uploading in
/// the background when the process dies, and every acknowledged byte is
/// there after the restart, uploaded from the spool files.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn sigkill_with_parts_in_flight_after_acknowledged_chunks() {
    let s3 = s3::endpoint();
    let bucket = bucket(&s3).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("tusker.log");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let data = bytes(23 * MIB + 4321, 57);

    let mut tusker = Spawn::new(&data_dir, &log)
        .s3(&s3, &bucket, "uploads")
        .args(["--s3-tail-staging", "local"])
        .start()
        .await;
    let url = create(&c, &tusker.endpoint(), data.len() as u64).await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    let mut acked = 0;
    // 7 MiB, then 6 MiB more: each round ends with a part just cut.
    for (round, end) in [7 * MIB, 13 * MIB, 20 * MIB].into_iter().enumerate() {
        let url = tusker.url(&id);
        upload_in_chunks(&c, &url, acked, &data[acked..end], MIB).await;
        acked = end;
        tusker.kill();
        tusker.restart().await;
        let head = offset(&c, &tusker.url(&id)).await;
        assert_eq!(
            head,
            acked as u64,
            "round {round}: HEAD after the kill; log:\n{}",
            tusker.log_text()
        );
    }
    let url = tusker.url(&id);
    upload_in_chunks(&c, &url, acked, &data[acked..], MIB).await;
    assert!(
        download(&c, &url).await == data,
        "upload differs; log:\n{}",
        tusker.log_text()
    );
    assert_eq!(open_multipart_uploads(&s3, &bucket).await, 0);
    assert_eq!(
        keys_under(&s3, &bucket, "uploads/.tusker-staging/").await,
        0,
        "nothing is staged in the bucket"
    );
    let spool = data_dir.join("object-tails").join(&id);
    assert!(!spool.exists(), "the finished upload's spool was left");
    tusker.kill();
}
