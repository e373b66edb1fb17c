use super::*;
use crate::data::FileStore;
use crate::meta::{Lookup, MetaStore, SledMetaStore};
use crate::upload::{EngineConfig, NewUpload};
use futures_util::stream;
use std::sync::Arc;

#[test]
fn slow_bodies_are_judged_per_window_of_waiting() {
    let ms = Duration::from_millis;
    let mut slow = SlowBody {
        rate: 1000,
        window: ms(1000),
        waited: Duration::ZERO,
        bytes: 0,
    };
    // 600 bytes in 600 ms: the window is not over yet.
    assert!(slow.arrived(ms(600), 600).is_ok());
    // 1100 bytes in 1100 ms: fast enough; a new window starts.
    assert!(slow.arrived(ms(500), 500).is_ok());
    assert_eq!(slow.waited, Duration::ZERO);
    // A trickle: 10 bytes a second, never idle, cut after a window.
    assert!(slow.arrived(ms(900), 10).is_ok());
    assert!(slow.arrived(ms(900), 10).is_err());
}

const BATCH: usize = 512 * 1024;

/// A checkpoint's `fdatasync` and meta save run beside the body: the
/// request goes on receiving while they are held, the record shows
/// nothing the sync has not covered, and the end waits for them.
#[tokio::test]
async fn a_checkpoint_does_not_stall_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(SledMetaStore::open(&dir.path().join("meta")).expect("meta"));
    let mut data = FileStore::open(dir.path().join("data")).expect("data");
    let mut held = data.hold_first_checkpoint();
    let data = Arc::new(data);
    let config = EngineConfig {
        checkpoint_bytes: 2 * BATCH as u64,
        ..EngineConfig::default()
    };
    let engine = Engine::new(meta.clone(), data.clone(), config);
    let ctx = RequestInfo::default();
    let total = 8 * BATCH;
    let info = engine
        .create(
            NewUpload {
                length: Some(total as u64),
                ..NewUpload::default()
            },
            &ctx,
        )
        .await
        .expect("create");
    let id = info.id.clone();

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let append = engine.append(&id, AppendRequest::default(), body, &ctx);
    tokio::pin!(append);
    let chunk = |i: usize| Bytes::from(vec![b'a' + i as u8; BATCH]);
    let feed = async {
        // Two batches reach the checkpoint; its sync is then held...
        for i in 0..2 {
            tx.send(Ok(chunk(i))).await.expect("send");
        }
        held.entered().await;
        // ...and the other six are taken all the same.
        for i in 2..8 {
            tx.send(Ok(chunk(i))).await.expect("send");
        }
    };
    let fed = async {
        tokio::select! {
            r = &mut append => panic!("the append ended while its checkpoint was held: {r:?}"),
            _ = feed => {}
        }
    };
    tokio::time::timeout(Duration::from_secs(60), fed)
        .await
        .expect("the body stalled behind the checkpoint's sync");
    drop(tx);
    match meta.get(&id).await.expect("get") {
        Some(Lookup::Live(recorded)) => {
            assert_eq!(recorded.offset, 0, "recorded before the sync ended")
        }
        other => panic!("no record: {other:?}"),
    }

    held.release();
    let info = append.await.expect("append");
    assert_eq!(info.offset, total as u64);
    let expected: Vec<u8> = (0..8).flat_map(|i| chunk(i).to_vec()).collect();
    assert_eq!(std::fs::read(data.path(&info)).expect("read"), expected);
}

/// A client whose connection drops while its bytes are being written
/// must not corrupt the next request's bytes: the next append waits for
/// the abandoned write before it reads the offset.
#[tokio::test]
async fn an_abandoned_appends_write_ends_before_the_next_append_reads_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(SledMetaStore::open(&dir.path().join("meta")).expect("meta"));
    let mut data = FileStore::open(dir.path().join("data")).expect("data");
    let mut held = data.hold_first_write();
    let data = Arc::new(data);
    let engine = Engine::new(meta, data.clone(), EngineConfig::default());
    let ctx = RequestInfo::default();
    let info = engine
        .create(
            NewUpload {
                length: Some(2 * BATCH as u64),
                ..NewUpload::default()
            },
            &ctx,
        )
        .await
        .expect("create");
    let id = info.id.clone();

    // The first request sends a batch, then its connection hangs.
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![b'o'; BATCH]))])
        .chain(stream::pending());
    let first = engine.append(&id, AppendRequest::default(), body, &ctx);
    tokio::select! {
        r = first => panic!("the first append ended: {r:?}"),
        _ = held.entered() => {}
    }
    // Its future is gone (the client disconnected); the write is not.

    let waited = engine.gates.waiting.notified();
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"nnnn"))]);
    let second = engine.append(&id, AppendRequest::default(), body, &ctx);
    tokio::pin!(second);
    tokio::select! {
        r = &mut second => panic!("the next append ran while the abandoned write was in flight: {r:?}"),
        _ = waited => {}
    }
    held.release();
    let info = second.await.expect("second append");
    assert_eq!(info.offset, 4);
    assert_eq!(
        std::fs::read(data.path(&info)).expect("read"),
        b"nnnn",
        "the abandoned write landed over the new bytes"
    );
}
