//! The object-storage data path against a real S3 protocol server.
//!
//! Needs `TUSKER_TEST_S3_ENDPOINT` (e.g. a moto_server that `.ci/run`
//! starts); without it every test is ignored (CI runs them with
//! `--include-ignored`).

mod common;

use common::s3::*;
use common::*;
use std::time::Duration;

/// Size of part `n` (1-based) of a finished object, via `partNumber`.
async fn part_size(endpoint: &str, bucket: &str, key: &str, n: usize) -> Option<u64> {
    let res = client()
        .head(format!("{endpoint}/{bucket}/{key}?partNumber={n}"))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    header(&res, "content-length")?.parse().ok()
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn client_chunk_sizes_land_byte_exact_with_equal_parts() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let c = client();
    // (total, PATCH size): tus-js-client 1 MiB chunks, TUSKit 500 KiB, one shot.
    for (i, (total, chunk)) in [
        (7 * MIB, MIB),
        (12 * MIB + 5, 500 * 1024),
        (23 * MIB + 1, 23 * MIB + 1),
    ]
    .into_iter()
    .enumerate()
    {
        let data = bytes(total, i as u64);
        let url = create(&c, &server.endpoint, total as u64).await;
        upload_in_chunks(&c, &url, 0, &data, chunk).await;
        assert_eq!(download(&c, &url).await, data, "upload {i}");
        let id = url.rsplit('/').next().unwrap();
        let key = format!("uploads/{id}");
        let parts = total.div_ceil(5 * MIB);
        for n in 1..parts {
            let size = part_size(&endpoint, &bucket, &key, n)
                .await
                .expect("part size via partNumber");
            assert_eq!(size, 5 * MIB as u64, "part {n} of upload {i}");
        }
        // Ranged reads come from the object store too.
        let res = c
            .get(&url)
            .header("Range", "bytes=5242870-5242889")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap().as_ref(), &data[5242870..5242890]);
    }
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}

/// With `--s3-part-policy variable` (what `auto` picks for this server) a
/// PATCH's rest of 5 MiB or more becomes a part of its own, never staged;
/// a smaller rest is staged and joins the next part. With `equal` every
/// non-last part has the part size. Either way the object is byte-exact
/// and the server completes the multipart upload (S3 refuses non-last
/// parts under 5 MiB).
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn patch_rests_of_5_mib_or_more_become_parts_with_the_variable_policy() {
    use tusker::data::object::PartPolicy;
    let endpoint = s3::endpoint();
    let patches = [6, 1, 19, 3, 14].map(|m| m * MIB);
    let total: usize = patches.iter().sum();
    let data = bytes(total, 77);
    for (policy, sizes, staged_after_first) in [
        (None, vec![6, 8, 8, 7, 8, 6], 0),
        (Some(PartPolicy::Equal), vec![8, 8, 8, 8, 8, 3], 1),
    ] {
        let bucket = bucket(&endpoint).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = s3_config(dir.path(), &endpoint, &bucket);
        config.storage_options.tuning.part_size = 8 * MIB as u64;
        config.storage_options.part_policy = policy;
        let server = TestServer::start(config);
        let c = client();
        let url = create(&c, &server.endpoint, total as u64).await;
        let id = url.rsplit('/').next().unwrap().to_owned();
        let staging = format!("uploads/.tusker-staging/{id}/");
        let mut offset = 0;
        for (n, size) in patches.iter().enumerate() {
            upload_in_chunks(&c, &url, offset, &data[offset..offset + size], *size).await;
            offset += size;
            if n == 0 {
                assert_eq!(
                    keys_under(&endpoint, &bucket, &staging).await,
                    staged_after_first,
                    "{policy:?}: segments staged for a 6 MiB PATCH"
                );
            }
        }
        assert!(
            download(&c, &url).await == data,
            "{policy:?}: object differs"
        );
        let key = format!("uploads/{id}");
        let mut got = Vec::new();
        for n in 1..=sizes.len() + 1 {
            match part_size(&endpoint, &bucket, &key, n).await {
                Some(size) => got.push(size / MIB as u64),
                None => break,
            }
        }
        assert_eq!(got, sizes, "{policy:?}: part sizes in MiB");
        assert_eq!(keys_under(&endpoint, &bucket, &staging).await, 0);
        assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
        server.stop().await;
    }
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn zero_byte_small_and_deferred_uploads() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let c = client();

    let empty = create(&c, &server.endpoint, 0).await;
    assert_eq!(download(&c, &empty).await, Vec::<u8>::new());

    let small = create(&c, &server.endpoint, 10).await;
    upload_in_chunks(&c, &small, 0, b"0123456789", 3).await;
    assert_eq!(download(&c, &small).await, b"0123456789");

    // Deferred length, set on the last PATCH.
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    let data = bytes(6 * MIB + 7, 9);
    upload_in_chunks(&c, &url, 0, &data[..6 * MIB], 2 * MIB).await;
    let res = c
        .patch(&url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", (6 * MIB).to_string())
        .header("Upload-Length", data.len().to_string())
        .body(data[6 * MIB..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(download(&c, &url).await, data);
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn checksum_mismatch_discards_the_chunk_on_object_storage() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let c = client();
    let data = bytes(11 * MIB, 4);
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    upload_in_chunks(&c, &url, 0, &data[..3 * MIB], 3 * MIB).await;
    // 6 MiB with a wrong sha1: a part would be cut, but nothing may count.
    let res = c
        .patch(&url)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", (3 * MIB).to_string())
        .header("Upload-Checksum", "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body(data[3 * MIB..9 * MIB].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 460);
    assert_eq!(offset(&c, &url).await, 3 * MIB as u64);
    upload_in_chunks(&c, &url, 3 * MIB, &data[3 * MIB..], 4 * MIB).await;
    assert_eq!(download(&c, &url).await, data);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn resumes_after_restart_and_terminates_cleanly() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let data = bytes(13 * MIB, 5);

    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let url = create(&c, &server.endpoint, data.len() as u64).await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    // 1 MiB + 5 MiB + 1 byte: one full part and a staged tail.
    upload_in_chunks(&c, &url, 0, &data[..6 * MIB + 1], 3 * MIB).await;
    let doomed = create(&c, &server.endpoint, 20 * MIB as u64).await;
    upload_in_chunks(&c, &doomed, 0, &bytes(7 * MIB, 6), 7 * MIB).await;
    server.stop().await;

    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let url = format!("{}{id}", server.endpoint);
    assert_eq!(offset(&c, &url).await, 6 * MIB as u64 + 1);
    upload_in_chunks(&c, &url, 6 * MIB + 1, &data[6 * MIB + 1..], MIB).await;
    assert_eq!(download(&c, &url).await, data);

    let doomed = format!("{}{}", server.endpoint, doomed.rsplit('/').next().unwrap());
    let res = c.delete(&doomed).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    let staging = client()
        .get(format!(
            "{endpoint}/{bucket}?list-type=2&prefix=uploads/.tusker-staging/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !staging.contains("<Key>"),
        "staged segments left behind: {staging}"
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn expired_uploads_leave_no_multipart_upload() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = s3_config(dir.path(), &endpoint, &bucket);
    // Expiry times are whole seconds, so 1 s could expire the upload before
    // its first PATCH; 3 s leaves that PATCH at least 2 s.
    cfg.expire_after = Some(Duration::from_secs(3));
    cfg.sweep_interval = Duration::from_millis(300);
    let server = TestServer::start(cfg);
    let c = client();
    let url = create(&c, &server.endpoint, 20 * MIB as u64).await;
    upload_in_chunks(&c, &url, 0, &bytes(6 * MIB, 1), 6 * MIB).await;
    let swept = eventually(Duration::from_secs(20), || {
        let (endpoint, bucket) = (endpoint.clone(), bucket.clone());
        async move { open_multipart_uploads(&endpoint, &bucket).await == 0 }
    })
    .await;
    assert!(swept, "multipart upload still open after expiry");
    let res = c.head(&url).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 410);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn concatenation_streams_into_a_new_object() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let c = client();
    let a = bytes(6 * MIB + 3, 11);
    let b = bytes(3 * MIB, 12);
    let mut partials = Vec::new();
    for data in [&a, &b] {
        let res = c
            .post(&server.endpoint)
            .header(TUS.0, TUS.1)
            .header("Upload-Concat", "partial")
            .header("Upload-Length", data.len().to_string())
            .send()
            .await
            .unwrap();
        let url = location(&res);
        upload_in_chunks(&c, &url, 0, data, 2 * MIB).await;
        partials.push(url);
    }
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header(
            "Upload-Concat",
            format!("final;{} {}", partials[0], partials[1]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let fin = location(&res);
    let mut want = a.clone();
    want.extend_from_slice(&b);
    assert_eq!(download(&c, &fin).await, want);
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}
