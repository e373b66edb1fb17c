//! The object-storage data path when the storage fails: a fault-injecting
//! proxy between tusker and the S3 server fails part uploads with 500/503
//! answers and connection resets.
//!
//! Needs `TUSKER_TEST_S3_ENDPOINT`; without it every test is ignored.

mod common;

use tusker::config::TailStaging;

use common::fault_proxy::{Counters, FaultProxy, Mode};
use common::s3::*;
use common::*;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn uploads_complete_byte_exact_while_a_fifth_of_part_uploads_fail() {
    let endpoint = s3::endpoint();
    logs::capture();
    let bucket = bucket(&endpoint).await;
    let proxy = FaultProxy::start(&endpoint, Mode::Every(5));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = s3_config(dir.path(), &proxy.url, &bucket);
    cfg.storage_options.tuning.retry_max_delay = Duration::from_millis(200);
    cfg.storage_options.tuning.retry_attempts = 6;
    let server = TestServer::start(cfg);
    let c = client();
    // (total, PATCH size): tus-js-client's 1 MiB chunks and one-shot bodies.
    let uploads = [
        (12 * MIB + 7, MIB),
        (30 * MIB, 30 * MIB),
        (17 * MIB + 3, MIB),
        (21 * MIB + 1, 21 * MIB + 1),
    ];
    for (i, (total, chunk)) in uploads.into_iter().enumerate() {
        let data = bytes(total, 100 + i as u64);
        let url = create(&c, &server.endpoint, total as u64).await;
        upload_in_chunks(&c, &url, 0, &data, chunk).await;
        assert!(download(&c, &url).await == data, "upload {i} differs");
    }
    let counters = proxy.counters();
    eprintln!(
        "proxy: {} requests, {} part uploads, {} 5xx, {} resets",
        Counters::get(&counters.requests),
        Counters::get(&counters.part_uploads),
        Counters::get(&counters.error_replies),
        Counters::get(&counters.resets)
    );
    let parts: u64 = uploads
        .iter()
        .map(|(t, _)| t.div_ceil(5 * MIB) as u64)
        .sum();
    assert!(
        Counters::get(&counters.part_uploads) >= parts,
        "proxy saw {} part uploads, want at least {parts}",
        Counters::get(&counters.part_uploads)
    );
    assert!(
        Counters::get(&counters.error_replies) >= 1,
        "no 5xx injected"
    );
    assert!(Counters::get(&counters.resets) >= 1, "no reset injected");
    // Every injected fault was followed by a logged retry.
    let retries = logs::count(&["storage call failed; retrying"]);
    assert!(
        retries as u64 >= proxy.faults(),
        "{retries} retries logged for {} faults",
        proxy.faults()
    );
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    assert_eq!(
        keys_under(&endpoint, &bucket, "uploads/.tusker-staging/").await,
        0
    );
    server.stop().await;
}

/// A PATCH answered during an outage: 503 with Retry-After.
async fn expect_unavailable(res: reqwest::Response, what: &str) {
    let status = res.status();
    let retry_after = header(&res, "retry-after");
    assert_eq!(status, 503, "{what}: {:?}", res.text().await);
    assert!(retry_after.is_some(), "{what}: no Retry-After");
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn an_outage_answers_503_keeps_the_offset_and_heals() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let proxy = FaultProxy::start(&endpoint, Mode::Pass);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = s3_config(dir.path(), &proxy.url, &bucket);
    cfg.storage_options.tuning.retry_max_delay = Duration::from_millis(100);
    cfg.storage_options.tuning.retry_attempts = 3;
    // Every PATCH waits for its parts: see the local-staging case below.
    cfg.tail_staging = TailStaging::Bucket;
    let server = TestServer::start(cfg);
    let c = client();
    let data = bytes(14 * MIB + 3, 21);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    upload_in_chunks(&c, &url, 0, &data[..3 * MIB], 3 * MIB).await;

    proxy.set_mode(Mode::AllParts);
    // Staged below a part: no part upload, so it is still acknowledged.
    upload_in_chunks(&c, &url, 3 * MIB, &data[3 * MIB..4 * MIB], MIB).await;
    let acked = 4 * MIB as u64;
    // Crosses a part boundary: the part cannot be stored.
    let res = patch(&c, &url, acked, data[4 * MIB..8 * MIB].to_vec()).await;
    expect_unavailable(res, "4 MiB PATCH").await;
    assert_eq!(offset(&c, &url).await, acked);
    // The whole rest in one PATCH: two parts fail.
    let res = patch(&c, &url, acked, data[4 * MIB..].to_vec()).await;
    expect_unavailable(res, "one-shot PATCH").await;
    assert_eq!(offset(&c, &url).await, acked);
    assert!(proxy.faults() >= 2 * 3, "faults: {}", proxy.faults());

    // Every byte arrives, but the last part cannot be uploaded when sealing.
    let small = bytes(6 * MIB + 5, 22);
    let sealed_late = create(&c, &server.endpoint, small.len() as u64).await;
    proxy.set_mode(Mode::Pass);
    upload_in_chunks(&c, &sealed_late, 0, &small[..6 * MIB], 6 * MIB).await;
    proxy.set_mode(Mode::AllParts);
    let res = patch(&c, &sealed_late, 6 * MIB as u64, small[6 * MIB..].to_vec()).await;
    expect_unavailable(res, "last PATCH").await;
    let res = c
        .head(&sealed_late)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .unwrap();
    expect_unavailable(res, "HEAD of an unsealed upload").await;

    proxy.set_mode(Mode::Pass);
    assert_eq!(offset(&c, &url).await, acked);
    upload_in_chunks(&c, &url, acked as usize, &data[4 * MIB..], data.len()).await;
    assert!(download(&c, &url).await == data, "upload differs");
    // HEAD seals the other one now that storage is back.
    assert_eq!(offset(&c, &sealed_late).await, small.len() as u64);
    assert!(
        download(&c, &sealed_late).await == small,
        "sealed upload differs"
    );
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    assert_eq!(
        keys_under(&endpoint, &bucket, "uploads/.tusker-staging/").await,
        0
    );
    server.stop().await;
}

/// A one-shot body larger than the parts allowed in flight: the failure
/// surfaces while the client is still sending. The client gets the 503 or,
/// if the server closes first, a broken connection; either way nothing
/// unacknowledged is reported and the upload resumes once storage is back.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn an_outage_while_the_body_is_still_arriving() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let proxy = FaultProxy::start(&endpoint, Mode::AllParts);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = s3_config(dir.path(), &proxy.url, &bucket);
    cfg.storage_options.tuning.retry_max_delay = Duration::from_millis(100);
    cfg.storage_options.tuning.retry_attempts = 3;
    cfg.storage_options.tuning.part_concurrency = 2;
    let server = TestServer::start(cfg);
    let c = client();
    let data = bytes(30 * MIB, 23);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let res = c
        .patch(&url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", "0")
        .body(data.clone())
        .send()
        .await;
    if let Ok(res) = res {
        expect_unavailable(res, "30 MiB PATCH").await;
    }
    assert_eq!(offset(&c, &url).await, 0);
    proxy.set_mode(Mode::Pass);
    upload_in_chunks(&c, &url, 0, &data, data.len()).await;
    assert!(download(&c, &url).await == data, "upload differs");
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}

/// With local tail staging a PATCH does not wait for its parts: during an
/// outage it is still acknowledged (its bytes are in the local spool), and
/// the part that failed in the background makes a later request answer
/// 503. No acknowledged byte is lost; once storage is back the spooled
/// part is uploaded again and the upload completes byte-exact.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn an_outage_with_local_tail_staging_keeps_acknowledged_bytes() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let proxy = FaultProxy::start(&endpoint, Mode::Pass);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = s3_config(dir.path(), &proxy.url, &bucket);
    cfg.storage_options.tuning.retry_max_delay = Duration::from_millis(100);
    cfg.storage_options.tuning.retry_attempts = 3;
    cfg.tail_staging = TailStaging::Local;
    let server = TestServer::start(cfg);
    let c = client();
    let data = bytes(12 * MIB + 7, 23);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    upload_in_chunks(&c, &url, 0, &data[..3 * MIB], 3 * MIB).await;

    proxy.set_mode(Mode::AllParts);
    // Crosses a part boundary: acknowledged, part 0 fails behind it.
    upload_in_chunks(&c, &url, 3 * MIB, &data[3 * MIB..7 * MIB], 4 * MIB).await;
    let mut acked = 7 * MIB;
    // Once the part's retries are spent, the next request learns of it.
    let mut refused = false;
    while acked + MIB < data.len() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let res = patch(&c, &url, acked as u64, data[acked..acked + MIB].to_vec()).await;
        match res.status().as_u16() {
            503 => {
                refused = true;
                break;
            }
            204 => acked += MIB,
            other => panic!("PATCH at {acked}: {other}"),
        }
    }
    assert!(refused, "the failed background part never surfaced");
    assert_eq!(offset(&c, &url).await, acked as u64);
    proxy.set_mode(Mode::Pass);
    upload_in_chunks(&c, &url, acked, &data[acked..], MIB).await;
    assert!(download(&c, &url).await == data, "upload differs");
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}
