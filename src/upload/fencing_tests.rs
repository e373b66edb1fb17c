//! Fenced writes across instances, engine against engine: two engines
//! (two instances) share one PostgreSQL meta store and one S3 bucket.
//! Instance A is frozen at a chosen point (its lease heartbeats and meta
//! writes stall, as in a paused VM), instance B takes the upload over and
//! finishes it, then A is thawed. Whatever A does afterwards, the record
//! stays as B left it, finished and exact, and A's request does not
//! succeed.
//!
//! Needs `TUSKER_TEST_POSTGRES_URL` and `TUSKER_TEST_S3_ENDPOINT` (plus
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION` for it).

use super::*;
use crate::data::object::tests::Flaky;
use crate::data::object::{ObjectData, ObjectTuning, MIN_PART_SIZE};
use crate::data::open::{open, StorageOptions};
use crate::meta::contract::pg_db::{admin_url, Db};
use crate::meta::lease::{Attempt, Lease, LeaseError, LeaseStore};
use crate::meta::{JobGuard, PgMetaStore};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, TryStreamExt};
use std::sync::Mutex;
use tokio::sync::{watch, Notify};

type Trigger = Box<dyn Fn(&UploadInfo) -> bool + Send>;

/// Freezes instance A: once frozen, its lease renewals and meta saves
/// wait until it is thawed.
struct Freezer {
    frozen: watch::Sender<bool>,
    /// Freezes A at the first save it matches, before the save is sent.
    trigger: Mutex<Option<Trigger>>,
    /// A save is waiting on the freeze.
    stalled: Notify,
}

impl Freezer {
    fn new() -> Arc<Freezer> {
        Arc::new(Freezer {
            frozen: watch::Sender::new(false),
            trigger: Mutex::new(None),
            stalled: Notify::new(),
        })
    }

    fn freeze_at(&self, trigger: impl Fn(&UploadInfo) -> bool + Send + 'static) {
        *self.trigger.lock().expect("trigger") = Some(Box::new(trigger));
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    async fn thawed(&self) {
        let mut rx = self.frozen.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|frozen| !*frozen).await;
    }

    async fn before_save(&self, info: &UploadInfo) {
        let hit = {
            let mut trigger = self.trigger.lock().expect("trigger");
            let hit = trigger.as_ref().is_some_and(|t| t(info));
            if hit {
                *trigger = None;
            }
            hit
        };
        if hit {
            self.freeze();
        }
        if *self.frozen.borrow() {
            self.stalled.notify_one();
            self.thawed().await;
        }
    }
}

/// Instance A's meta store: PostgreSQL behind the freezer.
struct FrozenMeta {
    inner: PgMetaStore,
    freezer: Arc<Freezer>,
}

#[async_trait]
impl MetaStore for FrozenMeta {
    async fn create(&self, info: &UploadInfo) -> Result<(), MetaError> {
        self.inner.create(info).await
    }
    async fn get(&self, id: &UploadId) -> Result<Option<Lookup>, MetaError> {
        self.inner.get(id).await
    }
    async fn save(&self, info: &mut UploadInfo) -> Result<(), MetaError> {
        self.freezer.before_save(info).await;
        self.inner.save(info).await
    }
    async fn remove(&self, info: &UploadInfo) -> Result<(), MetaError> {
        self.inner.remove(info).await
    }
    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        self.inner.expired(now, limit).await
    }
    async fn prune_tombstones(&self, before: u64) -> Result<usize, MetaError> {
        self.inner.prune_tombstones(before).await
    }
    async fn add_concat_waiters(&self, f: &UploadId, p: &[UploadId]) -> Result<(), MetaError> {
        self.inner.add_concat_waiters(f, p).await
    }
    async fn concat_waiters(&self, partial: &UploadId) -> Result<Vec<UploadId>, MetaError> {
        self.inner.concat_waiters(partial).await
    }
    async fn remove_concat_waiters(&self, f: &UploadId, p: &[UploadId]) -> Result<(), MetaError> {
        self.inner.remove_concat_waiters(f, p).await
    }
    async fn claim_destination(&self, d: &str, id: &UploadId) -> Result<bool, MetaError> {
        self.inner.claim_destination(d, id).await
    }
    async fn release_destination(&self, d: &str, id: &UploadId) -> Result<(), MetaError> {
        self.inner.release_destination(d, id).await
    }
    async fn pending_finish_hooks(&self, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        self.inner.pending_finish_hooks(limit).await
    }
    async fn add_event_debt(&self, debt: &crate::meta::EventDebt) -> Result<(), MetaError> {
        self.inner.add_event_debt(debt).await
    }
    async fn pending_event_debts(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::meta::EventDebt>, MetaError> {
        self.inner.pending_event_debts(limit).await
    }
    async fn clear_event_debt(&self, id: &str) -> Result<(), MetaError> {
        self.inner.clear_event_debt(id).await
    }
    async fn job_lock(&self, job: &str) -> Result<Option<JobGuard>, MetaError> {
        self.inner.job_lock(job).await
    }
    async fn ping(&self) -> Result<(), MetaError> {
        self.inner.ping().await
    }
}

/// Instance A's leases: a frozen instance sends no heartbeat.
struct FrozenLeases {
    inner: PgMetaStore,
    freezer: Arc<Freezer>,
}

#[async_trait]
impl LeaseStore for FrozenLeases {
    fn instance(&self) -> &str {
        self.inner.instance()
    }
    fn ttl(&self) -> Duration {
        self.inner.ttl()
    }
    async fn try_acquire(&self, upload: &UploadId) -> Result<Attempt, LeaseError> {
        self.inner.try_acquire(upload).await
    }
    async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.freezer.thawed().await;
        self.inner.renew(lease).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.inner.release(lease).await
    }
    async fn request_stop(&self, upload: &UploadId, holder: &str) -> Result<(), LeaseError> {
        self.inner.request_stop(upload, holder).await
    }
    async fn stop_requests(&self) -> Result<tokio::sync::mpsc::Receiver<UploadId>, LeaseError> {
        self.inner.stop_requests().await
    }
}

const PART: usize = MIN_PART_SIZE as usize;
/// Two parts and a staged tail.
const LEN: usize = 2 * PART + 1000;
/// What A receives before it freezes: a part and a staged tail.
const FIRST: usize = PART + 2 * 1024 * 1024;

fn content() -> Vec<u8> {
    (0..LEN).map(|i| (i % 251) as u8).collect()
}

/// The two instances, on a database and a bucket of their own.
struct Pair {
    a: Engine,
    b: Engine,
    freezer: Arc<Freezer>,
    bucket_a: Arc<Flaky<object_store::aws::AmazonS3>>,
    db: Db,
    _dir: tempfile::TempDir,
}

const NEEDS: &str = "set TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT (with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) to run the fencing tests";

impl Pair {
    async fn start() -> Pair {
        let endpoint = std::env::var("TUSKER_TEST_S3_ENDPOINT").expect(NEEDS);
        let db = Db::create(&admin_url()).await;
        let bucket = format!("t{}", uuid::Uuid::new_v4().simple());
        let made = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("create bucket");
        assert!(
            made.status().is_success(),
            "create bucket: {}",
            made.status()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StorageOptions {
            s3_endpoint: Some(endpoint.clone()),
            s3_region: Some("us-east-1".into()),
            tuning: ObjectTuning {
                part_size: MIN_PART_SIZE,
                retry_attempts: 2,
                retry_max_delay: Duration::from_millis(200),
                ..ObjectTuning::default()
            },
            ..StorageOptions::default()
        };
        let url = format!("s3://{bucket}/x");
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .build()
            .expect("s3 client");
        let freezer = Freezer::new();
        // Instance A's bucket: its part uploads can be held (sent before
        // it froze, they land after the thaw).
        let bucket_a = Arc::new(Flaky::over(s3));
        let config = EngineConfig {
            // Longer than the lease: B waits out a frozen A's lease.
            lock_timeout: Duration::from_secs(8),
            ..EngineConfig::default()
        };
        let store = || async {
            let s = PgMetaStore::connect(&db.url)
                .await
                .expect("connect")
                .with_timings(
                    Duration::from_secs(1),
                    crate::meta::postgres::DEFAULT_HOOK_CLAIM,
                );
            s.migrate().await.expect("migrate");
            s
        };
        let (pa, pb) = (store().await, store().await);
        let a = Engine::new(
            Arc::new(FrozenMeta {
                inner: pa.clone(),
                freezer: freezer.clone(),
            }),
            Arc::new(ObjectData::new(
                bucket_a.clone(),
                "x",
                "s3",
                options.tuning.clone(),
            )),
            config.clone(),
        )
        .with_leases(Arc::new(FrozenLeases {
            inner: pa,
            freezer: freezer.clone(),
        }));
        let b = Engine::new(
            Arc::new(pb.clone()),
            open(Some(&url), dir.path(), &options).expect("storage b"),
            config,
        )
        .with_leases(Arc::new(pb));
        Pair {
            a,
            b,
            freezer,
            bucket_a,
            db,
            _dir: dir,
        }
    }

    async fn create(&self) -> UploadId {
        let new = NewUpload {
            length: Some(LEN as u64),
            ..NewUpload::default()
        };
        let info = self
            .a
            .create(new, &RequestInfo::default())
            .await
            .expect("create");
        info.id
    }

    /// B takes the upload over (once A's lease lapsed) and sends the rest
    /// from the offset its HEAD reports: the upload ends finished.
    async fn finish_through_b(&self, id: &UploadId) {
        let ctx = RequestInfo::default();
        let head = self.b.head(id, &ctx).await.expect("head on b");
        if head.finished {
            return;
        }
        let bytes = content();
        let rest = Bytes::copy_from_slice(&bytes[head.offset as usize..]);
        let req = AppendRequest {
            offset: head.offset,
            content_length: Some(rest.len() as u64),
            ..AppendRequest::default()
        };
        let body = stream::iter([Ok::<_, std::io::Error>(rest)]);
        let done = self
            .b
            .append(id, req, body, &ctx)
            .await
            .expect("append on b");
        assert!(done.finished && done.offset == LEN as u64, "{done:?}");
    }

    /// The record is finished at the whole length on both instances and
    /// the object holds exactly the bytes sent.
    async fn assert_intact(&self, id: &UploadId) {
        let ctx = RequestInfo::default();
        for engine in [&self.b, &self.a] {
            let info = engine.head(id, &ctx).await.expect("head");
            assert!(
                info.finished,
                "the upload went back to unfinished: {info:?}"
            );
            assert_eq!(info.offset, LEN as u64, "the offset went down");
            let got: Vec<Bytes> = engine
                .data()
                .read(&info, 0, LEN as u64)
                .await
                .expect("read")
                .try_collect()
                .await
                .expect("read body");
            assert!(
                got.concat() == content(),
                "the object differs from the bytes sent"
            );
        }
        // Nothing A staged outlives its refused request.
        let staging = object_store::path::Path::from(format!("x/.tusker-staging/{id}"));
        let left: Vec<object_store::ObjectMeta> =
            object_store::ObjectStore::list(&self.bucket_a.inner, Some(&staging))
                .try_collect()
                .await
                .expect("list staging");
        assert!(left.is_empty(), "segments left in the bucket: {left:?}");
    }

    async fn end(self) {
        self.freezer.thaw();
        drop((self.a, self.b));
        self.db.drop().await;
    }
}

/// A future that must stay pending until `stalled` fires.
async fn until_stalled<F>(freezer: &Freezer, running: F) -> F
where
    F: std::future::Future + Unpin,
    F::Output: std::fmt::Debug,
{
    let mut running = running;
    tokio::select! {
        r = &mut running => panic!("A's request ended before it froze: {r:?}"),
        _ = freezer.stalled.notified() => {}
    }
    running
}

/// The finding: A frozen in the middle of a PATCH (a part
/// uploaded, the rest of the body not yet arrived), the client finishes
/// the upload through B, then A is thawed.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn a_holder_frozen_mid_patch_cannot_undo_the_finished_upload() {
    let pair = Pair::start().await;
    let id = pair.create().await;
    let bytes = content();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let ctx = RequestInfo::default();
    let req = AppendRequest {
        content_length: Some(LEN as u64),
        ..AppendRequest::default()
    };
    let mut a = Box::pin(pair.a.append(&id, req, body, &ctx));
    let sent = async {
        tx.send(Ok(Bytes::copy_from_slice(&bytes[..FIRST])))
            .await
            .expect("send");
        // Part 0 is cut and on its way once the next chunk is taken.
        tx.send(Ok(Bytes::copy_from_slice(&bytes[FIRST..FIRST + 10])))
            .await
            .expect("send");
    };
    tokio::select! {
        r = &mut a => panic!("A's request ended early: {r:?}"),
        _ = sent => {}
    }
    // A freezes: no heartbeat, no progress, while B takes over.
    pair.freezer.freeze();
    pair.finish_through_b(&id).await;
    pair.freezer.thaw();
    drop(tx);
    let late = a.await;
    assert!(
        late.is_err(),
        "A's request succeeded after B took over: {late:?}"
    );
    pair.assert_intact(&id).await;
    pair.end().await;
}

/// A request for the first `n` bytes, from offset 0, in one chunk.
fn first_bytes(
    n: usize,
) -> (
    AppendRequest,
    impl futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin,
) {
    let req = AppendRequest {
        content_length: Some(n as u64),
        ..AppendRequest::default()
    };
    let chunk = Bytes::copy_from_slice(&content()[..n]);
    (req, stream::iter([Ok(chunk)]))
}

/// A sends the first `n` bytes and freezes at the first save `at`
/// matches; B finishes the upload; A is thawed. A's save is refused and
/// the upload stays as B left it.
async fn frozen_at_a_save(n: usize, at: impl Fn(&UploadInfo) -> bool + Send + 'static) {
    let pair = Pair::start().await;
    let id = pair.create().await;
    pair.freezer.freeze_at(at);
    let ctx = RequestInfo::default();
    let (req, body) = first_bytes(n);
    let a = pair.a.append(&id, req, body, &ctx);
    let a = until_stalled(&pair.freezer, Box::pin(a)).await;
    pair.finish_through_b(&id).await;
    pair.freezer.thaw();
    let late = a.await;
    assert!(
        matches!(late, Err(UploadError::Meta(MetaError::Stale(_)))),
        "{late:?}"
    );
    pair.assert_intact(&id).await;
    pair.end().await;
}

/// A frozen during the save of its progress: the save is sent only after
/// B finished the upload.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn a_save_sent_by_a_thawed_holder_changes_nothing() {
    frozen_at_a_save(FIRST, |_| true).await;
}

/// A frozen between `complete_multipart` and the record saying finished:
/// B finds the object assembled and records the finish; A's late record
/// changes nothing.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn a_holder_frozen_after_completing_the_multipart_upload() {
    frozen_at_a_save(LEN, |info| info.finished).await;
}

/// A's upload of part 0, sent before it froze, lands after B uploaded the
/// same part and recorded it: the part holds the same bytes (the same
/// range of the same upload), so B's record and completion stay right;
/// A's save is refused.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn a_part_upload_landing_after_the_takeover_changes_nothing() {
    let pair = Pair::start().await;
    let id = pair.create().await;
    // A freezes with its part 0 on the way.
    pair.freezer.freeze();
    let held = pair.bucket_a.parts.lock().await;
    let ctx = RequestInfo::default();
    let (req, body) = first_bytes(FIRST);
    let mut a = Box::pin(pair.a.append(&id, req, body, &ctx));
    tokio::select! {
        r = &mut a => panic!("A's request ended before it froze: {r:?}"),
        _ = pair.bucket_a.part_called.notified() => {}
    }

    // B takes over and records part 0 and a staged tail of its own.
    let head = pair.b.head(&id, &ctx).await.expect("head on b");
    assert_eq!(head.offset, 0);
    let upto = PART + 1000;
    let (req, body) = first_bytes(upto);
    let recorded = pair.b.append(&id, req, body, &ctx).await.expect("b");
    assert_eq!(recorded.offset, upto as u64);

    // A's part 0 lands now, then its save is refused.
    drop(held);
    pair.freezer.thaw();
    let late = a.await;
    assert!(
        matches!(late, Err(UploadError::Meta(MetaError::Stale(_)))),
        "{late:?}"
    );
    pair.finish_through_b(&id).await;
    pair.assert_intact(&id).await;
    pair.end().await;
}
