//! Tests of the file store's writer: every byte in place through direct and
//! cached writes, dropped writers, checkpoints behind
//! the body, files lost before their first byte; and the hooks that hold a
//! write or a checkpoint on the blocking pool for tests elsewhere.

use super::*;
use crate::data::IoGates;
use crate::protocol::UploadId;
use bytes::Bytes;
use futures_util::FutureExt;
use std::sync::atomic::Ordering;

/// What a writer takes before its first write starts.
const FIRST_WRITE: usize = 512 * 1024;

/// Code run on the blocking pool before a batch is written.
#[derive(Clone)]
pub(crate) struct Hook(pub(crate) Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// The first batch write of a store, held on the blocking pool.
pub(crate) struct HeldWrite {
    entered: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl HeldWrite {
    /// Returns once the held write is running (and waiting).
    pub(crate) async fn entered(&mut self) {
        self.entered.recv().await.expect("hook gone");
    }

    /// Lets the held write go on.
    pub(crate) fn release(&self) {
        self.release.send(()).expect("hook gone");
    }
}

/// A hook that holds its first call until released.
fn hold_first() -> (Hook, HeldWrite) {
    let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    let hook = Hook(Arc::new(move || {
        let first = release_rx.lock().expect("hook lock").take();
        if let Some(rx) = first {
            let _ = entered_tx.send(());
            let _ = rx.recv();
        }
    }));
    (hook, HeldWrite { entered, release })
}

impl FileStore {
    /// Holds this store's first batch write until released.
    pub(crate) fn hold_first_write(&mut self) -> HeldWrite {
        let (hook, held) = hold_first();
        self.before_write = Some(hook);
        held
    }

    /// Holds the `fdatasync` of this store's first checkpoint.
    pub(crate) fn hold_first_checkpoint(&mut self) -> HeldWrite {
        let (hook, held) = hold_first();
        self.before_checkpoint = Some(hook);
        held
    }
}

#[tokio::test]
async fn a_checkpoint_covers_what_was_written_before_it_and_writing_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = FileStore::open(dir.path()).expect("store");
    let mut held = store.hold_first_checkpoint();
    let info = info(&UploadId::generate());
    store.create(&info).await.expect("create");
    let mut w = store
        .writer(&info, IoPermit::unshared())
        .await
        .expect("writer");
    // Less than a batch: checkpoint must write it out itself.
    w.write(Bytes::from_static(b"first")).await.expect("write");
    let behind = w
        .checkpoint()
        .await
        .expect("checkpoint")
        .expect("files checkpoint behind the body");
    held.entered().await;
    // The fdatasync is held; more bytes go in meanwhile, batches too.
    w.write(Bytes::from(vec![b'x'; FIRST_WRITE]))
        .await
        .expect("write");
    w.write(Bytes::from_static(b"tail")).await.expect("write");
    held.release();
    assert_eq!(behind.await.expect("synced").offset, 5);
    // Discarding keeps what the checkpoint made durable, no less.
    assert_eq!(w.discard().await.expect("discard").offset, 5);
    w.write(Bytes::from_static(b" again")).await.expect("write");
    assert_eq!(w.sync().await.expect("sync").offset, 11);
    drop(w);
    assert_eq!(
        std::fs::read(store.path(&info)).expect("read"),
        b"first again"
    );
}

#[test]
fn writeback_ramps_up_to_its_interval() {
    let steps: Vec<u64> = (0..6).map(writeback_step).collect();
    let mib = 1024 * 1024;
    assert_eq!(steps, [mib, 2 * mib, 4 * mib, 8 * mib, 8 * mib, 8 * mib]);
    assert_eq!(writeback_step(u32::MAX), WRITEBACK);
}

#[test]
fn writes_grow_with_the_request_within_the_budget() {
    let (kib, mib) = (1024, 1024 * 1024);
    let table: &[(u64, usize, usize, usize)] = &[
        // (bytes taken, writers alive, chunks written at, runs written at)
        (0, 1, 512 * kib, 512 * kib),
        (4 * mib as u64 - 1, 1, 512 * kib, 512 * kib),
        (4 * mib as u64, 1, mib, mib),
        (16 * mib as u64, 1, 2 * mib, 2 * mib),
        (u64::MAX, 1, 2 * mib, 2 * mib),
        (u64::MAX, 8, 2 * mib, 2 * mib),
        (u64::MAX, 16, 2 * mib, mib),
        (u64::MAX, 32, mib, 512 * kib),
        (0, 32, 512 * kib, 512 * kib),
        (u64::MAX, 100, 512 * kib, 160 * kib),
        (u64::MAX, 10_000, 512 * kib, 128 * kib),
        (u64::MAX, 0, 2 * mib, 2 * mib),
    ];
    for &(taken, writers, chunks, runs) in table {
        let case = format!("{taken} taken, {writers} writers");
        assert_eq!(pending::CHUNKS.target(taken, writers), chunks, "{case}");
        assert_eq!(pending::RUNS.target(taken, writers), runs, "{case}");
    }
}

#[tokio::test]
async fn writers_count_while_they_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("open");
    let gates = IoGates::default();
    let id = UploadId::generate();
    let info = info(&id);
    let first = store
        .writer(&info, gates.acquire(id.as_str()).await)
        .await
        .expect("writer");
    assert_eq!(store.writers.load(Ordering::Relaxed), 1);
    drop(first);
    assert_eq!(store.writers.load(Ordering::Relaxed), 0);
}

fn info(id: &UploadId) -> UploadInfo {
    UploadInfo::new(id.clone(), None, 0)
}

#[tokio::test]
async fn a_write_left_running_by_a_dropped_writer_ends_before_the_next_writer_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = FileStore::open(dir.path()).expect("store");
    let mut held = store.hold_first_write();
    let gates = IoGates::default();
    let id = UploadId::generate();
    let info = info(&id);
    store.create(&info).await.expect("create");

    let mut old = store
        .writer(&info, gates.acquire(id.as_str()).await)
        .await
        .expect("writer");
    // A full batch: its write starts on the blocking pool and is held.
    old.write(Bytes::from(vec![b'o'; FIRST_WRITE]))
        .await
        .expect("write");
    held.entered().await;
    // The request went away; its write goes on.
    drop(old);

    let mut next = Box::pin(gates.acquire(id.as_str()));
    assert!(
        (&mut next).now_or_never().is_none(),
        "the next writer may not start while the old write runs"
    );
    held.release();
    let mut new = store.writer(&info, next.await).await.expect("writer");
    new.write(Bytes::from_static(b"new bytes"))
        .await
        .expect("write");
    assert_eq!(new.sync().await.expect("sync").offset, 9);
    drop(new);
    assert_eq!(
        std::fs::read(store.path(&info)).expect("read"),
        b"new bytes",
        "the old write landed over the new bytes"
    );
}

#[tokio::test]
async fn a_file_lost_before_its_first_byte_counts_as_empty() {
    // `create` does not make the file: until a byte is acknowledged
    // a missing file is an empty upload, not a missing one.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("store");
    let mut info = info(&UploadId::generate());
    store.create(&info).await.expect("create");
    assert!(!store.path(&info).exists(), "create made the file");
    let mut w = store
        .writer(&info, IoPermit::unshared())
        .await
        .expect("writer at offset 0");
    w.write(Bytes::from_static(b"abc")).await.expect("write");
    assert_eq!(w.sync().await.expect("sync").offset, 3);
    drop(w);
    assert_eq!(std::fs::read(store.path(&info)).expect("read"), b"abc");

    // Past offset 0 a missing file is an error: acknowledged bytes are gone.
    info.offset = 3;
    std::fs::remove_file(store.path(&info)).expect("remove");
    assert!(matches!(
        store.writer(&info, IoPermit::unshared()).await.err(),
        Some(DataError::Missing(_))
    ));

    // An upload sealed with no bytes gets its (durable) empty file.
    let mut empty = self::info(&UploadId::generate());
    empty.length = Some(0);
    store.create(&empty).await.expect("create");
    store.finish(&empty).await.expect("finish");
    assert_eq!(std::fs::read(store.path(&empty)).expect("read"), b"");
}

/// An id from the store's prepared files, once its first batch is made.
async fn prepared_id(store: &FileStore) -> UploadId {
    for _ in 0..500 {
        if let Some(id) = store.fresh_id() {
            return id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no batch of prepared files was made");
}

/// Writes `bytes` at offset 0 through a new writer and syncs them.
async fn write_all(store: &FileStore, info: &UploadInfo, bytes: &'static [u8]) {
    let mut w = store
        .writer(info, IoPermit::unshared())
        .await
        .expect("writer");
    w.write(Bytes::from_static(bytes)).await.expect("write");
    assert_eq!(w.sync().await.expect("sync").offset, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_made_ahead_of_use_take_bytes_and_only_empty_ones_go_at_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("store");

    // The first writer of a prepared id gets the file open.
    let open = info(&prepared_id(&store).await);
    assert_eq!(std::fs::metadata(store.path(&open)).expect("made").len(), 0);
    write_all(&store, &open, b"open").await;

    // More handed out than keep their file open: opened by path.
    let mut handed = Vec::new();
    for _ in 0..super::prepared::OPEN_HANDED + 2 {
        handed.push(info(&prepared_id(&store).await));
    }
    write_all(&store, &handed[0], b"by path").await;

    // A prepared file removed behind the store's back is made again.
    std::fs::remove_file(store.path(&handed[1])).expect("remove");
    write_all(&store, &handed[1], b"made again").await;

    // An upload sealed with no bytes keeps its empty file.
    let mut empty = info(&prepared_id(&store).await);
    empty.length = Some(0);
    store.finish(&empty).await.expect("finish");

    // Given back: ready for the next creation, and empty.
    let back = prepared_id(&store).await;
    store.give_back(back.clone());
    assert_eq!(store.fresh_id().as_ref(), Some(&back));
    store.give_back(back.clone());
    // A batch being made holds the prepared files, and so its manifest's lock.
    for _ in 0..500 {
        if !store.prepared.refilling() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(store);

    let store = FileStore::open(dir.path()).expect("reopen");
    let read = |i: &UploadInfo| std::fs::read(store.path(i)).ok();
    assert_eq!(read(&open).as_deref(), Some(&b"open"[..]));
    assert_eq!(read(&handed[0]).as_deref(), Some(&b"by path"[..]));
    assert_eq!(read(&handed[1]).as_deref(), Some(&b"made again"[..]));
    assert_eq!(read(&empty).as_deref(), Some(&b""[..]), "kept");
    assert_eq!(read(&info(&back)), None, "never used");
    assert_eq!(read(&handed[2]), None, "handed out, never written");
}

/// A xorshift generator: the same operations on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

/// The byte at `pos` of the `generation`th bytes written there: bytes
/// written again after a discard differ from the ones they replace.
fn pattern(pos: usize, generation: u8) -> u8 {
    ((pos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ generation
}

/// Writes, checkpoints, syncs, discards and new requests (dropped writers,
/// new writers at unaligned offsets) in a seeded order, checking the file
/// against what was acknowledged after each step that acknowledges bytes.
async fn replay(direct: bool, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path())
        .expect("store")
        .direct_io(direct);
    let mut info = info(&UploadId::generate());
    store.create(&info).await.expect("create");
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let (mut model, mut durable, mut generation) = (Vec::<u8>::new(), 0, 0u8);
    let mut w = store
        .writer(&info, IoPermit::unshared())
        .await
        .expect("writer");
    let case = format!("direct {direct}, seed {seed}");
    for _ in 0..48 {
        match rng.below(12) {
            0..=6 => {
                let len = match rng.below(20) {
                    0..=9 => rng.below(5_000) + 1,
                    10..=16 => rng.below(600_000) + 1,
                    _ => rng.below(3 * 1024 * 1024) + 1,
                } as usize;
                let at = model.len();
                model.extend((at..at + len).map(|pos| pattern(pos, generation)));
                w.write(Bytes::copy_from_slice(&model[at..]))
                    .await
                    .expect("write");
                continue;
            }
            7 => {
                let behind = w.checkpoint().await.expect("checkpoint").expect("files");
                durable = behind.await.expect("checkpoint ends").offset as usize;
            }
            8 => durable = w.sync().await.expect("sync").offset as usize,
            9 => {
                assert_eq!(w.discard().await.expect("discard").offset as usize, durable);
                model.truncate(durable);
                generation = generation.wrapping_add(1);
            }
            _ => {
                // The request ends without a sync; the next one resumes at
                // the acknowledged offset, wherever it falls in a block.
                drop(w);
                model.truncate(durable);
                generation = generation.wrapping_add(1);
                info.offset = durable as u64;
                w = store
                    .writer(&info, IoPermit::unshared())
                    .await
                    .expect("writer");
            }
        }
        assert_eq!(durable, model.len(), "{case}: acknowledged less than taken");
        let file = std::fs::read(store.path(&info)).expect("read");
        assert!(
            file.len() >= durable && file[..durable] == model[..durable],
            "{case}: the file differs from the acknowledged bytes"
        );
    }
    assert_eq!(w.sync().await.expect("sync").offset as usize, model.len());
    drop(w);
    let file = std::fs::read(store.path(&info)).expect("read");
    assert!(
        file == model,
        "{case}: the file differs from what was written"
    );
}

#[tokio::test]
async fn every_byte_lands_in_place_through_direct_and_cached_writes() {
    for seed in 1..=3 {
        replay(true, seed).await;
        replay(false, seed).await;
    }
}
