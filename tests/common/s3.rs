//! Helpers for tests against a real S3 protocol server
//! (`TUSKER_TEST_S3_ENDPOINT`, e.g. a local moto_server).

use super::*;
use std::sync::Once;
use std::time::Duration;
use tusker::config::Config;

pub const MIB: usize = 1024 * 1024;

/// The test S3 endpoint, with dummy credentials exported for object_store.
/// Panics when `TUSKER_TEST_S3_ENDPOINT` is not set: the tests calling it
/// are marked `#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]`.
pub fn endpoint() -> String {
    static ENV: Once = Once::new();
    let endpoint = std::env::var("TUSKER_TEST_S3_ENDPOINT")
        .expect("TUSKER_TEST_S3_ENDPOINT must name an S3 server (moto_server) for this test");
    ENV.call_once(|| {
        // A local S3 server accepts any credentials; the variables must
        // exist so object_store does not look for instance credentials.
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
    });
    endpoint
}

/// A fresh bucket on the test server (an unsigned PUT).
pub async fn bucket(endpoint: &str) -> String {
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let res = client()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await
        .expect("create bucket");
    assert!(res.status().is_success(), "create bucket: {}", res.status());
    name
}

/// A server storing in `s3://BUCKET/uploads` with 5 MiB parts and short
/// retry pauses.
pub fn s3_config(dir: &std::path::Path, endpoint: &str, bucket: &str) -> Config {
    let mut c = config(dir);
    c.storage = Some(format!("s3://{bucket}/uploads"));
    c.storage_options.s3_endpoint = Some(endpoint.to_owned());
    c.storage_options.tuning.part_size = 5 * MIB as u64;
    c.storage_options.tuning.retry_max_delay = Duration::from_millis(500);
    c
}

/// Open multipart uploads in the bucket (ListMultipartUploads).
pub async fn open_multipart_uploads(endpoint: &str, bucket: &str) -> usize {
    let body = client()
        .get(format!("{endpoint}/{bucket}?uploads"))
        .send()
        .await
        .expect("list uploads")
        .text()
        .await
        .expect("body");
    body.matches("<Upload>").count()
}

/// How many keys are under `prefix` (ListObjectsV2, first page).
pub async fn keys_under(endpoint: &str, bucket: &str, prefix: &str) -> usize {
    keys(endpoint, bucket, prefix).await.len()
}

/// The keys under `prefix` (ListObjectsV2, first page).
pub async fn keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let body = client()
        .get(format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}"))
        .send()
        .await
        .expect("list objects")
        .text()
        .await
        .expect("body");
    tag_values(&body, "Key")
}

/// The text of every `<tag>` element in an XML listing.
fn tag_values(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    body.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.find(close.as_str()).map(|end| rest[..end].to_owned()))
        .collect()
}

/// PATCHes `data` in pieces of `chunk` bytes, starting at `start`; every
/// PATCH must succeed.
pub async fn upload_in_chunks(
    c: &reqwest::Client,
    url: &str,
    start: usize,
    data: &[u8],
    chunk: usize,
) {
    let mut offset = start;
    for piece in data.chunks(chunk) {
        let res = patch(c, url, offset as u64, piece.to_vec()).await;
        assert_eq!(
            res.status(),
            204,
            "PATCH at {offset}: {:?}",
            res.text().await
        );
        offset += piece.len();
        assert_eq!(header(&res, "upload-offset"), Some(offset.to_string()));
    }
}

/// Keys of the open multipart uploads in the bucket (ListMultipartUploads,
/// first page).
pub async fn open_multipart_keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let res = client()
        .get(format!("{endpoint}/{bucket}?uploads"))
        .send()
        .await
        .expect("list uploads");
    assert_eq!(res.status(), 200, "list multipart uploads");
    let body = res.text().await.expect("body");
    tag_values(&body, "Key")
}
