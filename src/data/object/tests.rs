//! Tests of the object-storage data store against object_store's
//! in-memory backend: classifying errors, finishing again after a crash,
//! and cleaning up staged segments despite transient failures.

use super::*;
use crate::protocol::UploadId;
use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::MultipartUpload;
use object_store::{
    CopyOptions, GetResult, ListResult, ObjectMeta, PutMultipartOptions, PutOptions, PutResult,
};
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn statuses_in_messages() {
    let msg = "Generic S3 error: Error after 0 retries in 1ms, max_retries:0, retry_timeout:180s, source:Server returned non-2xx status code: 400 Bad Request: <Error><Code>EntityTooSmall</Code></Error>";
    assert_eq!(http_status(msg), Some(400));
    assert_eq!(
        http_status("Server returned non-2xx status code: 503 Service Unavailable"),
        Some(503)
    );
    assert_eq!(http_status("connection reset by peer"), None);
}

fn store(backend: &Arc<InMemory>) -> ObjectData {
    ObjectData::new(backend.clone(), "uploads", "memory", store_tuning())
}

/// `finish` assembled the object, then the process died before the
/// record was saved: after a restart, finishing again from the old
/// record must succeed (the staged tail is deleted and the multipart
/// upload completed by then) and the object must be intact.
#[tokio::test]
async fn finish_again_after_a_crash_before_the_record_was_saved() {
    let part = MIN_PART_SIZE as usize;
    // Single PUT; parts and a staged tail; parts only.
    for len in [1000, part + 1000, 2 * part] {
        let backend = Arc::new(InMemory::new());
        let data = store(&backend);
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
        info.storage = data.create(&info).await.unwrap();
        let mut writer = data.writer(&info, IoPermit::unshared()).await.unwrap();
        writer.write(Bytes::from(bytes.clone())).await.unwrap();
        let durable = writer.sync().await.unwrap();
        writer.committed().await;
        info.offset = durable.offset;
        info.storage = durable.storage;
        assert_eq!(info.offset, len as u64);

        data.finish(&info).await.unwrap();
        // The restart: a new process (empty tail cache), the old record.
        let restarted = store(&backend);
        let state = restarted
            .finish(&info)
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: finishing again failed: {e}"));
        let mut finished = info.clone();
        finished.storage = state;
        assert!(State::load(&finished).unwrap().completed, "{len} bytes");
        let got: Vec<u8> = restarted
            .read(&finished, 0, len as u64)
            .await
            .unwrap()
            .try_collect::<Vec<Bytes>>()
            .await
            .unwrap()
            .concat();
        assert!(got == bytes, "{len} bytes: object differs");
    }
}

/// A store (in memory unless told otherwise) whose next `failures`
/// listings and deletions fail as a busy S3 server's do (a 500), and
/// whose part uploads can be held.
#[derive(Debug)]
pub(crate) struct Flaky<B = InMemory> {
    pub(crate) inner: B,
    failures: AtomicUsize,
    /// Every part upload waits for this lock: a test holds it to keep
    /// parts in flight (or to make them land late).
    pub(crate) parts: tokio::sync::Mutex<()>,
    /// A part upload was called (and may be waiting for `parts`).
    pub(crate) part_called: tokio::sync::Notify,
}

impl Flaky {
    /// Fails nothing and holds no part until told to.
    fn new() -> Self {
        Flaky::over(InMemory::new())
    }
}

impl<B: Backend> Flaky<B> {
    /// `inner` behind the failures and the part hold.
    pub(crate) fn over(inner: B) -> Self {
        Flaky {
            inner,
            failures: AtomicUsize::new(0),
            parts: tokio::sync::Mutex::new(()),
            part_called: tokio::sync::Notify::new(),
        }
    }

    /// The staged segments of `info` in the bucket (listed past `fail`).
    async fn staged(&self, data: &ObjectData, info: &UploadInfo) -> Vec<ObjectMeta> {
        let staging = Path::from(data.staging_prefix(info).trim_end_matches('/'));
        self.inner.list(Some(&staging)).try_collect().await.unwrap()
    }

    fn fail(&self) -> Option<object_store::Error> {
        let left = self.failures.load(Ordering::SeqCst);
        (left > 0 && self.failures.fetch_sub(1, Ordering::SeqCst) > 0).then(|| {
            object_store::Error::Generic {
                store: "Flaky",
                source: "Server returned non-2xx status code: 500 Internal Server Error".into(),
            }
        })
    }
}

impl<B> std::fmt::Display for Flaky<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky")
    }
}

#[async_trait]
impl<B: Backend + std::fmt::Debug> ObjectStore for Flaky<B> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        match self.fail() {
            Some(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            None => self.inner.delete_stream(locations),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.fail() {
            Some(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            None => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait]
impl<B: Backend + std::fmt::Debug> MultipartStore for Flaky<B> {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<String> {
        self.inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &String,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.part_called.notify_one();
        let _held = self.parts.lock().await;
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &String,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &String) -> object_store::Result<()> {
        self.inner.abort_multipart(path, id).await
    }
}

/// A busy S3 server failed the listing (and a deletion) of the staged
/// segments when an upload finished: they were left in the bucket for
/// good. The torture test's soak found it; the cleanup now retries.
#[tokio::test]
async fn finishing_removes_staged_segments_despite_transient_failures() {
    let backend = Arc::new(Flaky::new());
    let tuning = ObjectTuning {
        part_size: MIN_PART_SIZE,
        retry_attempts: 4,
        retry_max_delay: Duration::from_millis(10),
        ..ObjectTuning::default()
    };
    let data = ObjectData::new(backend.clone(), "uploads", "flaky", tuning);
    let len = MIN_PART_SIZE as usize + 3000;
    let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
    info.storage = data.create(&info).await.unwrap();
    // Three PATCHes: each leaves a staged segment or consumes them.
    for piece in [1000, MIN_PART_SIZE as usize, 2000] {
        let mut writer = data.writer(&info, IoPermit::unshared()).await.unwrap();
        writer.write(Bytes::from(vec![7u8; piece])).await.unwrap();
        let durable = writer.sync().await.unwrap();
        writer.committed().await;
        info.offset = durable.offset;
        info.storage = durable.storage;
    }
    assert_eq!(info.offset, len as u64);
    let staged = backend.staged(&data, &info).await;
    assert!(!staged.is_empty(), "the test needs staged segments");

    backend.failures.store(2, Ordering::SeqCst);
    data.finish(&info).await.unwrap();
    let left = backend.staged(&data, &info).await;
    assert!(left.is_empty(), "staged segments left: {left:?}");
}

/// A checkpoint never drains the part pipeline: it names the parts already
/// uploaded and nothing else, keeps the staged segments a part still in
/// flight consumed, and what it names is enough to resume after a crash.
#[tokio::test]
async fn a_checkpoint_names_uploaded_parts_only_and_resumes() {
    let backend = Arc::new(Flaky::new());
    let data = ObjectData::new(backend.clone(), "uploads", "flaky", store_tuning());
    let part = MIN_PART_SIZE as usize;
    let len = 3 * part;
    let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
    info.storage = data.create(&info).await.unwrap();
    let record = |info: &mut UploadInfo, durable: crate::data::Durable| {
        info.offset = durable.offset;
        info.storage = durable.storage;
    };

    // A first PATCH leaves a staged segment.
    let mut w = data.writer(&info, IoPermit::unshared()).await.unwrap();
    w.write(Bytes::copy_from_slice(&bytes[..1000]))
        .await
        .unwrap();
    let d = w.sync().await.unwrap();
    w.committed().await;
    record(&mut info, d);
    assert_eq!(backend.staged(&data, &info).await.len(), 1);

    // The next one cuts part 0 from that segment; its upload is held.
    let held = backend.parts.lock().await;
    let mut w = data.writer(&info, IoPermit::unshared()).await.unwrap();
    w.write(Bytes::copy_from_slice(&bytes[1000..part + 2000]))
        .await
        .unwrap();
    let cp = w
        .checkpoint()
        .await
        .unwrap()
        .expect("object stores checkpoint");
    let d = cp.await.unwrap();
    assert_eq!(d.offset, 1000, "nothing new is uploaded: the old state");
    w.committed().await;
    assert_eq!(
        backend.staged(&data, &info).await.len(),
        1,
        "a segment the state names was deleted"
    );

    // Part 0 lands: the checkpoint moves to it (the bytes after it are
    // not staged), and the consumed segment may go.
    drop(held);
    let mut offset = 1000;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        let d = w
            .checkpoint()
            .await
            .unwrap()
            .expect("checkpoint")
            .await
            .unwrap();
        if d.offset != 1000 {
            offset = d.offset;
            record(&mut info, d);
            break;
        }
    }
    assert_eq!(offset, part as u64);
    w.committed().await;
    assert_eq!(
        backend.staged(&data, &info).await.len(),
        0,
        "the consumed segment was left"
    );

    // A crash: the writer and the tail cache are gone; the client resumes
    // from the checkpoint's offset.
    drop(w);
    let restarted = ObjectData::new(backend.clone(), "uploads", "flaky", store_tuning());
    let mut w = restarted.writer(&info, IoPermit::unshared()).await.unwrap();
    w.write(Bytes::copy_from_slice(&bytes[part..]))
        .await
        .unwrap();
    let d = w.sync().await.unwrap();
    w.committed().await;
    record(&mut info, d);
    assert_eq!(info.offset, len as u64);
    restarted.finish(&info).await.unwrap();
    let state = State::load(&info).unwrap();
    let got = backend
        .inner
        .get(&Path::from(state.key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == bytes, "the object differs from the bytes sent");
}

/// Two writers continuing one record (a holder that stalled, and the
/// instance that took the upload over) stage their tails under keys of
/// their own: the late one's segment never replaces the one the current
/// record names.
#[tokio::test]
async fn writers_continuing_one_record_never_share_a_segment_key() {
    let backend = Arc::new(InMemory::new());
    let data = store(&backend);
    let mut info = UploadInfo::new(UploadId::generate(), Some(10_000), 0);
    info.storage = data.create(&info).await.unwrap();
    let mut stalled = data.writer(&info, IoPermit::unshared()).await.unwrap();
    let mut current = data.writer(&info, IoPermit::unshared()).await.unwrap();
    current.write(Bytes::from(vec![b'c'; 700])).await.unwrap();
    let recorded = current.sync().await.unwrap();
    current.committed().await;
    // The stalled writer wakes up and stages its own bytes.
    stalled.write(Bytes::from(vec![b's'; 700])).await.unwrap();
    let late = stalled.sync().await.unwrap();
    assert_ne!(recorded.storage["segments"], late.storage["segments"]);

    let mut newest = info.clone();
    newest.offset = recorded.offset;
    newest.storage = recorded.storage;
    let state = State::load(&newest).unwrap();
    let fresh = store(&backend);
    let tail = fresh
        .read_segments(&fresh.staging_prefix(&newest), &state.segments)
        .await
        .unwrap()
        .concat();
    assert!(tail == vec![b'c'; 700], "the recorded segment was replaced");
}

/// Minimum-size parts, one attempt per request.
fn store_tuning() -> ObjectTuning {
    ObjectTuning {
        part_size: MIN_PART_SIZE,
        retry_attempts: 1,
        ..ObjectTuning::default()
    }
}

/// A store staging tails in `dir` (one instance's local spool).
fn spooled<B: Backend>(backend: Arc<B>, dir: &std::path::Path) -> ObjectData {
    let tuning = ObjectTuning {
        tail_dir: Some(dir.to_owned()),
        ..store_tuning()
    };
    ObjectData::new(backend, "uploads", "spooled", tuning)
}

/// One request as the engine runs it: write, sync, record, `committed`.
async fn spooled_append(data: &ObjectData, info: &mut UploadInfo, bytes: &[u8]) {
    let mut w = data.writer(info, IoPermit::unshared()).await.unwrap();
    w.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    let d = w.sync().await.unwrap();
    info.offset = d.offset;
    info.storage = d.storage;
    w.committed().await;
}

async fn read_all(data: &ObjectData, info: &UploadInfo) -> Vec<u8> {
    data.read(info, 0, info.offset)
        .await
        .unwrap()
        .try_collect::<Vec<Bytes>>()
        .await
        .unwrap()
        .concat()
}

/// With a local spool a request is acknowledged while its parts are still
/// in flight (nothing goes to the bucket but parts), and what it
/// acknowledged survives a crash that took every part in flight with it:
/// the restarted instance uploads those parts from the spool files.
#[tokio::test]
async fn spooled_requests_end_before_their_parts_and_survive_a_crash() {
    let backend = Arc::new(Flaky::new());
    let spool = tempfile::tempdir().unwrap();
    let data = spooled(backend.clone(), spool.path());
    let part = MIN_PART_SIZE as usize;
    let len = 3 * part + 1234;
    let bytes: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
    let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
    info.storage = data.create(&info).await.unwrap();

    // Part uploads are held: requests still end, their bytes spooled.
    let held = backend.parts.lock().await;
    let mut at = 0;
    for piece in [1 << 20, part, part + 7] {
        spooled_append(&data, &mut info, &bytes[at..at + piece]).await;
        at += piece;
        assert_eq!(info.offset, at as u64);
    }
    let state = State::load(&info).unwrap();
    assert!(state.local && state.parts.is_empty() && state.segments.is_empty());
    assert_eq!(state.tail, at as u64, "every byte is in the spool");
    assert!(
        backend.staged(&data, &info).await.is_empty(),
        "nothing is staged in the bucket"
    );

    // The crash: the pipeline and its held parts are gone.
    drop(data);
    drop(held);
    let data = spooled(backend.clone(), spool.path());
    spooled_append(&data, &mut info, &bytes[at..]).await;
    assert_eq!(info.offset, len as u64);
    info.storage = data.finish(&info).await.unwrap();
    assert!(read_all(&data, &info).await == bytes, "object differs");
    assert!(
        !spool.path().join(info.id.as_str()).exists(),
        "the spool of a finished upload was left"
    );
}

/// Parts finished in the background between requests are recorded by the
/// next request, and their spool files go once that record is saved.
#[tokio::test]
async fn background_parts_are_recorded_by_the_next_request() {
    let backend = Arc::new(InMemory::new());
    let spool = tempfile::tempdir().unwrap();
    let data = spooled(backend.clone(), spool.path());
    let part = MIN_PART_SIZE as usize;
    let len = 4 * part;
    let bytes: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
    let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
    info.storage = data.create(&info).await.unwrap();
    let dir = spool.path().join(info.id.as_str());

    spooled_append(&data, &mut info, &bytes[..2 * part + 10]).await;
    // Let the two parts land, then one more request.
    let mut recorded = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let at = info.offset as usize;
        spooled_append(&data, &mut info, &bytes[at..at + 10]).await;
        recorded = State::load(&info).unwrap().parts.len();
        if recorded == 2 {
            break;
        }
    }
    assert_eq!(recorded, 2, "the finished parts were never recorded");
    assert!(!dir.join("0").exists() && !dir.join("1").exists());
    assert!(dir.join("2").exists(), "the tail's file is needed");

    let start = info.offset as usize;
    spooled_append(&data, &mut info, &bytes[start..]).await;
    info.storage = data.finish(&info).await.unwrap();
    assert!(read_all(&data, &info).await == bytes, "object differs");
}

/// A discarded request (checksum mismatch) leaves the spool as the record
/// says, and the bytes sent again replace what it had cut.
#[tokio::test]
async fn a_discarded_spooled_request_keeps_the_durable_bytes() {
    let backend = Arc::new(InMemory::new());
    let spool = tempfile::tempdir().unwrap();
    let data = spooled(backend.clone(), spool.path());
    let part = MIN_PART_SIZE as usize;
    let len = 2 * part + 99;
    let bytes: Vec<u8> = (0..len).map(|i| (i % 239) as u8).collect();
    let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
    info.storage = data.create(&info).await.unwrap();
    spooled_append(&data, &mut info, &bytes[..3000]).await;

    let mut w = data.writer(&info, IoPermit::unshared()).await.unwrap();
    w.write(Bytes::from(vec![0xEE; part + 5000])).await.unwrap();
    let d = w.discard().await.unwrap();
    assert_eq!(d.offset, 3000);
    drop(w);

    spooled_append(&data, &mut info, &bytes[3000..]).await;
    assert_eq!(info.offset, len as u64);
    info.storage = data.finish(&info).await.unwrap();
    assert!(read_all(&data, &info).await == bytes, "object differs");
}

/// Smaller than a part: one PUT from the spool, and termination of another
/// upload removes its spool.
#[tokio::test]
async fn small_spooled_uploads_and_termination() {
    let backend = Arc::new(InMemory::new());
    let spool = tempfile::tempdir().unwrap();
    let data = spooled(backend.clone(), spool.path());
    let bytes: Vec<u8> = (0..5000).map(|i| (i % 233) as u8).collect();
    let mut info = UploadInfo::new(UploadId::generate(), Some(5000), 0);
    info.storage = data.create(&info).await.unwrap();
    spooled_append(&data, &mut info, &bytes[..2000]).await;
    spooled_append(&data, &mut info, &bytes[2000..]).await;
    info.storage = data.finish(&info).await.unwrap();
    assert!(read_all(&data, &info).await == bytes, "object differs");

    let mut gone = UploadInfo::new(UploadId::generate(), None, 0);
    gone.storage = data.create(&gone).await.unwrap();
    spooled_append(&data, &mut gone, &bytes).await;
    assert!(spool.path().join(gone.id.as_str()).exists());
    data.delete(&gone).await.unwrap();
    assert!(!spool.path().join(gone.id.as_str()).exists());
}

/// A store cutting unequal parts (`PartPolicy::Variable`) with parts of
/// `part_size`.
fn variable(backend: &Arc<InMemory>, part_size: u64) -> ObjectData {
    let tuning = ObjectTuning {
        part_size,
        part_policy: PartPolicy::Variable,
        ..store_tuning()
    };
    ObjectData::new(backend.clone(), "uploads", "memory", tuning)
}

/// Staged segment objects of `info`.
async fn segments_in_bucket(data: &ObjectData, info: &UploadInfo) -> usize {
    let prefix = Path::from(data.staging_prefix(info).as_str());
    data.store.list(Some(&prefix)).count().await
}

/// With unequal parts allowed, a request's rest of 5 MiB or more becomes a
/// part of its own and nothing is staged for it; a smaller rest is staged
/// and joins the next part. A restarted instance continues from the
/// recorded sizes, and the object holds every byte in order.
#[tokio::test]
async fn variable_parts_take_each_request_rest_of_5_mib_or_more() {
    const MIB: usize = 1 << 20;
    let backend = Arc::new(InMemory::new());
    let data = variable(&backend, 8 * MIB as u64);
    // Requests of 6, 1 (staged), 19 (with the 1: 8 + 8, and 4 staged),
    // 3 (after a restart; with the 4: a 7 MiB part), then 14 (8 + 6).
    let requests = [6, 1, 19, 3, 14].map(|m| m * MIB);
    let len: usize = requests.iter().sum();
    let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut info = UploadInfo::new(UploadId::generate(), Some(len as u64), 0);
    info.storage = data.create(&info).await.unwrap();
    let mut at = 0;
    let mut seen = Vec::new();
    for (n, size) in requests.iter().enumerate() {
        let data = if n == 3 {
            variable(&backend, 8 * MIB as u64)
        } else {
            data.clone()
        };
        spooled_append(&data, &mut info, &bytes[at..at + size]).await;
        at += size;
        assert_eq!(info.offset, at as u64);
        let state = State::load(&info).unwrap();
        assert_eq!(state.offset(), at as u64);
        seen.push((
            state
                .sizes
                .iter()
                .map(|s| s / MIB as u64)
                .collect::<Vec<_>>(),
            state.staged() / MIB as u64,
            segments_in_bucket(&data, &info).await,
        ));
    }
    assert_eq!(
        seen,
        vec![
            (vec![6], 0, 0),
            (vec![6], 1, 1),
            (vec![6, 8, 8], 4, 1),
            (vec![6, 8, 8, 7], 0, 0),
            (vec![6, 8, 8, 7, 8, 6], 0, 0),
        ],
        "(part sizes in MiB, staged MiB, segment objects) after each request"
    );
    let state = data.finish(&info).await.unwrap();
    info.storage = state;
    assert!(read_all(&data, &info).await == bytes, "object differs");
    assert_eq!(segments_in_bucket(&data, &info).await, 0);
}

/// No short part when the parts left could not hold the rest of the upload
/// at the full part size, nor for a small upload that finishes in one
/// request (it is one PUT), nor with equal parts.
#[tokio::test]
async fn short_parts_keep_the_part_budget_and_the_single_put() {
    const MIB: u64 = 1 << 20;
    let part = 8 * MIB;
    let cases: [(Option<u64>, PartPolicy, u64, bool); 5] = [
        (None, PartPolicy::Variable, 6 * MIB, true),
        (Some(MAX_PARTS * part), PartPolicy::Variable, 6 * MIB, false),
        (Some(100 * MIB), PartPolicy::Variable, 6 * MIB, true),
        (Some(6 * MIB), PartPolicy::Variable, 6 * MIB, false),
        (None, PartPolicy::Equal, 6 * MIB, false),
    ];
    for (length, policy, size, short) in cases {
        let backend = Arc::new(InMemory::new());
        let tuning = ObjectTuning {
            part_size: part,
            part_policy: policy,
            ..store_tuning()
        };
        let data = ObjectData::new(backend.clone(), "uploads", "memory", tuning);
        let mut info = UploadInfo::new(UploadId::generate(), length, 0);
        info.storage = data.create(&info).await.unwrap();
        let bytes = vec![7u8; size as usize];
        spooled_append(&data, &mut info, &bytes).await;
        let state = State::load(&info).unwrap();
        let case = format!("{length:?} {policy:?}");
        assert_eq!(state.parts.len() == 1, short, "{case}: a short part");
        assert_eq!(state.staged() == size, !short, "{case}: staged");
        if length == Some(size) {
            info.storage = data.finish(&info).await.unwrap();
            assert!(read_all(&data, &info).await == bytes, "{case}");
        }
    }
}
