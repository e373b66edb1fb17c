use super::{apply_storage_choices, validate_destination, UploadError};
use crate::data::object::{Buckets, ObjectData, ObjectTuning};
use crate::model::{Representation, UploadInfo};
use crate::protocol::UploadId;
use std::collections::HashMap;
use std::sync::Arc;

fn storage(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A hook's storage choices as a table: what it sent → what the record
/// gets, or that the creation is refused with the record unchanged.
#[test]
fn storage_choices() {
    let data = ObjectData::new(
        Arc::new(object_store::memory::InMemory::new()),
        "",
        "memory",
        ObjectTuning::default(),
    );
    let buckets = Buckets::new("main", data.clone()).allow("media", data);
    let files =
        crate::data::FileStore::open(tempfile::tempdir().expect("dir").keep()).expect("file store");
    let ok = |s: &[(&str, &str)]| {
        let mut info = UploadInfo::new(UploadId::generate(), None, 0);
        apply_storage_choices(&buckets, &mut info, &storage(s)).map(|()| info)
    };
    let info = ok(&[
        ("Bucket", "media"),
        ("ContentType", "Video/MP4"),
        ("ContentDisposition", "attachment; filename=\"a.mp4\""),
        ("CacheControl", "max-age=60"),
        ("Key", "ignored/here.mp4"),
    ])
    .expect("accepted");
    assert_eq!(info.bucket.as_deref(), Some("media"));
    assert_eq!(
        info.representation,
        Representation {
            content_type: Some("video/mp4".into()),
            content_disposition: Some("attachment; filename=\"a.mp4\"".into()),
            cache_control: Some("max-age=60".into()),
        }
    );
    // The default bucket named explicitly, and empty values: no choice.
    let info = ok(&[
        ("Bucket", "main"),
        ("ContentType", " "),
        ("CacheControl", ""),
    ])
    .expect("accepted");
    assert_eq!(info.bucket, None);
    assert!(info.representation.is_empty());

    // Refused: the record keeps none of the choices, valid ones included.
    for (sent, error) in [
        (("Bucket", "elsewhere"), "BucketNotAllowed"),
        (("ContentType", "video"), "InvalidStorageChoice"),
        (
            ("ContentType", "video/mp4\r\nX-Evil: 1"),
            "InvalidStorageChoice",
        ),
        (
            ("ContentDisposition", "inline\nX: y"),
            "InvalidStorageChoice",
        ),
        (
            ("ContentDisposition", "; filename=a"),
            "InvalidStorageChoice",
        ),
        (("CacheControl", "no-cache\r\n"), "InvalidStorageChoice"),
        (("CacheControl", "max-age=60 ü"), "InvalidStorageChoice"),
    ] {
        let mut info = UploadInfo::new(UploadId::generate(), None, 0);
        let before = info.clone();
        let mut choices = storage(&[("ContentType", "video/mp4"), ("Bucket", "media")]);
        choices.insert(sent.0.to_owned(), sent.1.to_owned());
        let got = match apply_storage_choices(&buckets, &mut info, &choices) {
            Err(UploadError::BucketNotAllowed(_)) => "BucketNotAllowed",
            Err(UploadError::InvalidStorageChoice(_)) => "InvalidStorageChoice",
            other => panic!("{sent:?}: {other:?}"),
        };
        assert_eq!(got, error, "{sent:?}");
        assert_eq!(info, before, "{sent:?}: the record changed");
    }
    // Local files have no buckets.
    let mut info = UploadInfo::new(UploadId::generate(), None, 0);
    assert!(matches!(
        apply_storage_choices(&files, &mut info, &storage(&[("Bucket", "main")])),
        Err(UploadError::BucketNotAllowed(_))
    ));
}

#[test]
fn destinations() {
    for ok in ["a.mp4", "videos/2026/a b.mp4", "é/🎬.mov"] {
        assert!(validate_destination(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "/abs",
        "a/../b",
        "..",
        "a//b",
        "dir/",
        "./a",
        ".tusker-staging/x",
        "a\\b",
        "a\nb",
    ] {
        assert!(validate_destination(bad).is_err(), "{bad:?}");
    }
}

/// Recording a delivered post-finish enters the upload like every
/// path that changes its record: it waits at the I/O gate for work a
/// dropped request left running, and clears the debt of an expired
/// record too (the sweep removes that record later).
#[tokio::test]
async fn clearing_a_finish_debt_waits_at_the_gate() {
    use crate::meta::{Lookup, MetaStore, SledMetaStore};
    use crate::upload::{Engine, EngineConfig, NewUpload};
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(SledMetaStore::open(&dir.path().join("meta")).expect("meta"));
    let data = Arc::new(crate::data::FileStore::open(dir.path().join("data")).expect("data"));
    let engine = Engine::new(meta.clone(), data, EngineConfig::default());
    let new = NewUpload {
        length: Some(10),
        ..NewUpload::default()
    };
    let ctx = crate::hooks::RequestInfo::default();
    let created = engine.create(new, &ctx).await.expect("create");
    let mut owed = engine.load(&created.id).await.expect("load");
    owed.finish_hook_pending = true;
    owed.expires_at = Some(1);
    meta.save(&mut owed).await.expect("save");

    // Work a dropped request left running holds the gate.
    let left_running = engine.io_gate(&created.id).await.expect("gate");
    let waited = engine.gates.waiting.notified();
    let entrance = engine.entrance();
    let clear = super::clear_finish_debt(&entrance, &created.id);
    tokio::pin!(clear);
    tokio::select! {
        r = &mut clear => panic!("the debt was cleared while the gate was closed: {r:?}"),
        _ = waited => {}
    }
    drop(left_running);
    clear.await.expect("clear");
    match meta.get(&created.id).await.expect("get") {
        Some(Lookup::Live(info)) => assert!(!info.finish_hook_pending),
        other => panic!("record: {other:?}"),
    }
}
