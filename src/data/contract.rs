//! The behaviour every `DataStore` promises the engine, run against local
//! files and object storage on a real S3 server (`TUSKER_TEST_S3_ENDPOINT`,
//! e.g. moto). object_store's `InMemory` is no stand-in here: it differs
//! from S3 where the contract looks (an abort of a finished multipart
//! upload is an error of its own); data/object/tests.rs uses it for fault
//! injection only.
//! Each case drives the store the way the engine does: create, writers at
//! the recorded offset, sync, persist the durable state, `committed`,
//! finish, read, concatenate, delete.

use super::object::{ObjectTuning, MIN_PART_SIZE};
use super::open::{open, StorageOptions};
use super::{DataError, DataStore, FileStore, IoPermit};
use crate::model::{Concat, UploadInfo};
use crate::protocol::UploadId;
use bytes::Bytes;
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;

const PART: usize = MIN_PART_SIZE as usize;

/// Bytes that differ at every position and between uploads.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed.wrapping_mul(31)))
        .collect()
}

/// A record of `length` bytes (`None`: deferred) with its storage prepared.
async fn created(store: &dyn DataStore, length: Option<u64>) -> UploadInfo {
    let mut info = UploadInfo::new(UploadId::generate(), length, 0);
    info.storage = store.create(&info).await.expect("create");
    info
}

/// One request: a writer at `info.offset` takes `chunks`, syncs, and the
/// durable state is "persisted" into `info` before `committed`.
async fn append(store: &dyn DataStore, info: &mut UploadInfo, chunks: &[&[u8]]) {
    let mut w = store
        .writer(info, IoPermit::unshared())
        .await
        .expect("writer");
    let mut sent = 0u64;
    for chunk in chunks {
        w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        sent += chunk.len() as u64;
    }
    let durable = w.sync().await.expect("sync");
    assert_eq!(
        durable.offset,
        info.offset + sent,
        "sync reports every byte written"
    );
    info.offset = durable.offset;
    info.storage = durable.storage;
    w.committed().await;
}

async fn finish(store: &dyn DataStore, info: &mut UploadInfo) {
    info.storage = store.finish(info).await.expect("finish");
    info.finished = true;
}

async fn read(store: &dyn DataStore, info: &UploadInfo, start: u64, end: u64) -> Vec<u8> {
    let mut stream = store.read(info, start, end).await.expect("read");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("read chunk"));
    }
    out
}

/// Requests of many sizes, across part boundaries, land byte-exact, and
/// any range of the finished upload reads back.
async fn appends_land_in_order(store: &dyn DataStore) {
    let data = pattern(2 * PART + 12_345, 1);
    let mut info = created(store, Some(data.len() as u64)).await;
    // A tiny request, one in small chunks, one crossing a part boundary,
    // one ending exactly on the next, and the rest.
    let cuts = [7, 1000, PART + 3, 2 * PART, data.len()];
    let mut from = 0;
    for (i, &to) in cuts.iter().enumerate() {
        let piece = &data[from..to];
        if i == 1 {
            let chunks: Vec<&[u8]> = piece.chunks(97).collect();
            append(store, &mut info, &chunks).await;
        } else {
            append(store, &mut info, &[piece]).await;
        }
        assert_eq!(info.offset, to as u64);
        from = to;
    }
    finish(store, &mut info).await;
    let len = data.len() as u64;
    assert_eq!(read(store, &info, 0, len).await, data, "whole upload");
    for (start, end) in [(0, 1), (5, PART as u64 + 9), (len - 10, len), (len, len)] {
        assert_eq!(
            read(store, &info, start, end).await,
            &data[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
}

/// `discard` forgets what was written since the last sync; the next
/// writer continues from the durable offset.
async fn discard_keeps_the_durable_offset(store: &dyn DataStore) {
    let mut info = created(store, Some(20)).await;
    append(store, &mut info, &[b"0123456789"]).await;
    let mut w = store
        .writer(&info, IoPermit::unshared())
        .await
        .expect("writer");
    w.write(Bytes::from_static(b"WRONG")).await.expect("write");
    let durable = w.discard().await.expect("discard");
    assert_eq!(
        durable.offset, 10,
        "discard went back to the durable offset"
    );
    drop(w);
    append(store, &mut info, &[b"abcdefghij"]).await;
    finish(store, &mut info).await;
    assert_eq!(read(store, &info, 0, 20).await, b"0123456789abcdefghij");
}

/// A writer opened at the recorded offset discards bytes an earlier
/// request synced but never got recorded (its client was not answered).
async fn unrecorded_bytes_are_overwritten(store: &dyn DataStore) {
    let mut info = created(store, Some(8)).await;
    append(store, &mut info, &[b"abcd"]).await;
    let recorded = info.clone();
    // Synced, then the process died before the record was saved.
    let mut lost = info.clone();
    append(store, &mut lost, &[b"XY"]).await;
    let mut info = recorded;
    append(store, &mut info, &[b"efgh"]).await;
    finish(store, &mut info).await;
    assert_eq!(read(store, &info, 0, 8).await, b"abcdefgh");
}

/// Empty and deferred-length uploads; finishing twice is harmless (the
/// engine seals again after a crash, and after concatenating).
async fn empty_deferred_and_repeated_finish(store: &dyn DataStore) {
    let mut empty = created(store, Some(0)).await;
    finish(store, &mut empty).await;
    assert_eq!(read(store, &empty, 0, 0).await, b"");

    let mut deferred = created(store, None).await;
    append(store, &mut deferred, &[b"later "]).await;
    append(store, &mut deferred, &[b"length"]).await;
    deferred.length = Some(deferred.offset);
    finish(store, &mut deferred).await;
    finish(store, &mut deferred).await;
    assert_eq!(read(store, &deferred, 0, 12).await, b"later length");
}

/// A final upload's bytes are its parts' bytes in order; the parts stay
/// readable.
async fn concatenation(store: &dyn DataStore) {
    let a = pattern(PART + 17, 2);
    let b = pattern(333, 3);
    let mut parts = Vec::new();
    // An empty part between them: S3 refuses empty ranges.
    for bytes in [&a, &Vec::new(), &b] {
        let mut info = created(store, Some(bytes.len() as u64)).await;
        info.concat = Concat::Partial;
        if !bytes.is_empty() {
            append(store, &mut info, &[bytes]).await;
        }
        finish(store, &mut info).await;
        parts.push(info);
    }
    let total = (a.len() + b.len()) as u64;
    let mut target = UploadInfo {
        concat: Concat::Final {
            parts: parts.iter().map(|p| p.id.clone()).collect(),
        },
        ..UploadInfo::new(UploadId::generate(), Some(total), 0)
    };
    target.storage = store.create(&target).await.expect("create final");
    target.storage = store
        .concatenate(&target, &parts)
        .await
        .expect("concatenate");
    target.offset = total;
    finish(store, &mut target).await;
    let mut want = a.clone();
    want.extend_from_slice(&b);
    assert_eq!(read(store, &target, 0, total).await, want);
    assert_eq!(read(store, &parts[2], 0, 333).await, b, "a part is intact");
}

/// `delete` removes the bytes of finished and unfinished uploads, is
/// idempotent, and leaves other uploads alone.
async fn delete_is_idempotent_and_targeted(store: &dyn DataStore) {
    let mut kept = created(store, Some(4)).await;
    append(store, &mut kept, &[b"keep"]).await;
    finish(store, &mut kept).await;

    let mut done = created(store, Some(3)).await;
    append(store, &mut done, &[b"bye"]).await;
    finish(store, &mut done).await;
    let mut open = created(store, Some(PART as u64 * 2)).await;
    append(store, &mut open, &[&pattern(PART + 5, 4)]).await;
    for info in [&done, &open] {
        store.delete(info).await.expect("delete");
        store.delete(info).await.expect("delete again");
    }
    match store.read(&done, 0, 3).await {
        Err(DataError::Missing(_)) => {}
        Err(e) => panic!("read after delete: {e}, expected Missing"),
        Ok(mut stream) => {
            // Some stores only find out when the stream is polled.
            let first = stream.next().await;
            assert!(
                matches!(first, Some(Err(DataError::Missing(_)))),
                "read after delete gave {first:?}"
            );
        }
    }
    assert_eq!(read(store, &kept, 0, 4).await, b"keep");
    store.ping().await.expect("ping");
    assert!(
        !store.describe(&kept).is_empty(),
        "describe names the store"
    );
}

/// Runs `f` on local files in a fresh directory.
async fn on_files<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn DataStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DataStore> = Arc::new(FileStore::open(dir.path()).expect("file store"));
    f(store).await;
}

/// Runs `f` on a fresh bucket of the S3 server `TUSKER_TEST_S3_ENDPOINT`
/// names, opened as `--storage s3://…` is; `local`: tails in a local spool.
async fn on_s3<F, Fut>(local: bool, f: F)
where
    F: FnOnce(Arc<dyn DataStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let endpoint = std::env::var("TUSKER_TEST_S3_ENDPOINT")
        .expect("TUSKER_TEST_S3_ENDPOINT must name an S3 server (moto_server) for this test");
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let bucket = format!("c{}", uuid::Uuid::new_v4().simple());
    let res = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(res.status().is_success(), "create bucket: {}", res.status());
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StorageOptions {
        s3_endpoint: Some(endpoint),
        tuning: ObjectTuning {
            part_size: MIN_PART_SIZE,
            retry_max_delay: std::time::Duration::from_millis(500),
            tail_dir: local.then(|| dir.path().join("object-tails")),
            ..ObjectTuning::default()
        },
        ..StorageOptions::default()
    };
    let store = open(
        Some(&format!("s3://{bucket}/uploads")),
        dir.path(),
        &options,
    )
    .expect("open s3 store");
    f(store).await;
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod files {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_files(|s| async move { super::$name(&*s).await }).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
                async fn $name() {
                    super::on_s3(false, |s| async move { super::$name(&*s).await }).await;
                }
            )*
        }
        /// Tails staged in a local spool (`--s3-tail-staging local`).
        mod s3_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
                async fn $name() {
                    super::on_s3(true, |s| async move { super::$name(&*s).await }).await;
                }
            )*
        }
    };
}

contract!(
    appends_land_in_order,
    discard_keeps_the_durable_offset,
    unrecorded_bytes_are_overwritten,
    empty_deferred_and_repeated_finish,
    concatenation,
    delete_is_idempotent_and_targeted,
);
