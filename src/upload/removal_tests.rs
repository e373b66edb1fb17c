//! Removal (DELETE, expiry) against a stale view and a dropped request.

use super::*;
use crate::data::{ByteStream, FileStore, UploadWriter};
use crate::meta::SledMetaStore;
use std::collections::BTreeMap;
use tokio::sync::Notify;

/// A file store whose `delete` waits for a go-ahead once it began.
struct HeldDelete {
    inner: FileStore,
    entered: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl DataStore for HeldDelete {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn create(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        self.inner.create(info).await
    }
    async fn writer(
        &self,
        info: &UploadInfo,
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError> {
        self.inner.writer(info, permit).await
    }
    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        self.inner.finish(info).await
    }
    async fn read(&self, info: &UploadInfo, start: u64, end: u64) -> Result<ByteStream, DataError> {
        self.inner.read(info, start, end).await
    }
    async fn delete(&self, info: &UploadInfo) -> Result<(), DataError> {
        self.entered.notify_one();
        self.release.notified().await;
        self.inner.delete(info).await
    }
    async fn concatenate(
        &self,
        target: &UploadInfo,
        parts: &[UploadInfo],
    ) -> Result<serde_json::Value, DataError> {
        self.inner.concatenate(target, parts).await
    }
    async fn ping(&self) -> Result<(), DataError> {
        self.inner.ping().await
    }
    fn describe(&self, info: &UploadInfo) -> BTreeMap<String, String> {
        self.inner.describe(info)
    }
}

/// A remover whose view is stale (an expiry sweep or DELETE that
/// stalled while another request took the upload over and wrote) is
/// refused before it touches the bytes: the upload stays whole.
#[tokio::test]
async fn a_stale_removal_leaves_the_upload_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(SledMetaStore::open(&dir.path().join("meta")).expect("meta"));
    let data = Arc::new(FileStore::open(dir.path().join("data")).expect("data"));
    let engine = Engine::new(meta.clone(), data.clone(), EngineConfig::default());
    let ctx = RequestInfo::default();
    let new = NewUpload {
        length: Some(10),
        ..NewUpload::default()
    };
    let created = engine.create(new, &ctx).await.expect("create");
    let stale = engine.load(&created.id).await.expect("load");

    let body =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"hello"))]);
    let req = AppendRequest::default();
    let current = engine
        .append(&created.id, req, body, &ctx)
        .await
        .expect("append");
    assert_eq!(current.offset, 5);

    let permit = engine.io_gate(&created.id).await.expect("gate");
    let removed = engine.remove(&stale, &permit).await;
    drop(permit);
    assert!(
        matches!(removed, Err(UploadError::Meta(MetaError::Stale(_)))),
        "{removed:?}"
    );
    let info = engine.head(&created.id, &ctx).await.expect("head");
    assert_eq!(info.offset, 5);
    assert_eq!(std::fs::read(data.path(&info)).expect("read"), b"hello");
}

/// A client hanging up on its DELETE while the bytes are being deleted
/// must not leave the record behind (it would name bytes that are gone).
#[tokio::test]
async fn a_dropped_terminate_still_removes_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(SledMetaStore::open(&dir.path().join("meta")).expect("meta"));
    let data = Arc::new(HeldDelete {
        inner: FileStore::open(dir.path().join("data")).expect("data"),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let engine = Engine::new(meta.clone(), data.clone(), EngineConfig::default());
    let ctx = RequestInfo::default();
    let info = engine
        .create(
            NewUpload {
                length: Some(10),
                ..NewUpload::default()
            },
            &ctx,
        )
        .await
        .expect("create");

    {
        let terminate = engine.terminate(&info.id, &ctx);
        tokio::pin!(terminate);
        tokio::select! {
            r = &mut terminate => panic!("terminate ended before deleting: {r:?}"),
            _ = data.entered.notified() => {}
        }
        // The request is dropped here, in the middle of the deletion.
    }
    data.release.notify_one();
    // The removal finishes on its own; the next request waits for it
    // at the upload's gate, then finds the upload gone.
    let permit = engine.io_gate(&info.id).await.expect("gate");
    drop(permit);
    assert!(
        matches!(meta.get(&info.id).await.expect("get"), Some(Lookup::Gone)),
        "the record outlived its bytes"
    );
    assert!(matches!(
        engine.head(&info.id, &ctx).await,
        Err(UploadError::Gone)
    ));
}
