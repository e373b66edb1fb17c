//! The upload engine: create, append, finish, terminate, concatenate and
//! expire uploads on top of a `MetaStore` and a `DataStore`. Knows nothing of
//! HTTP; the protocol front ends (tus 1.0, the IETF draft) translate to it.

mod append;
mod concat;
mod create;
mod entry;
mod events;
pub mod expiry;
mod hook_dispatch;
mod lock;
mod persist;
mod resume;

use crate::data::{DataError, DataStore, IoGates, IoPermit};
use crate::hooks::{HookHttpResponse, HookType, RequestInfo};
use crate::meta::{Lookup, MetaError, MetaStore};
use crate::model::{now_secs, Concat, UploadInfo};
use crate::protocol::UploadId;
use entry::{Entered, Entry};
use lock::{Contend, Locker};
use std::sync::Arc;
use std::time::Duration;

pub use crate::runtime::ThreadInit;
pub use append::AppendRequest;
pub(crate) use create::{Held, Hold};
pub use create::{NewConcat, NewUpload};
pub use hook_dispatch::validate_destination;

/// Final uploads assembled at once unless configured otherwise.
pub const DEFAULT_ASSEMBLIES: usize = 2;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest upload accepted; `None` for no limit.
    pub max_size: Option<u64>,
    /// Space kept free where a data store's bytes go (see
    /// [`Engine::reserve`]); `None` for 1 GiB or 5 % of the disk,
    /// whichever is smaller.
    pub min_free_space: Option<u64>,
    /// Unfinished uploads are removed this long after their last write.
    pub expire_after: Option<Duration>,
    /// Finished uploads are removed this long after they finished; `None`
    /// keeps them.
    pub expire_finished_after: Option<Duration>,
    /// Final uploads being assembled at once (each copies its parts).
    pub max_concurrent_assemblies: usize,
    /// How long a request waits for a busy upload before `Locked`.
    pub lock_timeout: Duration,
    /// A request body that sends nothing for this long is treated as broken.
    pub body_idle_timeout: Duration,
    /// Slowest body accepted, in bytes per second of waiting for the
    /// client, checked over each `body_idle_timeout` of waiting; `None`
    /// for no minimum.
    pub min_body_rate: Option<u64>,
    /// During a long PATCH, bytes are made durable (and the offset recorded)
    /// at least this often, so a crash loses little.
    pub checkpoint_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_size: None,
            min_free_space: None,
            expire_after: Some(Duration::from_secs(24 * 3600)),
            expire_finished_after: None,
            max_concurrent_assemblies: DEFAULT_ASSEMBLIES,
            lock_timeout: Duration::from_secs(3),
            body_idle_timeout: Duration::from_secs(60),
            min_body_rate: None,
            checkpoint_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Engine errors; the http layer maps each to a status and an error code.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload not found")]
    NotFound,
    #[error("upload is gone (terminated or expired)")]
    Gone,
    #[error("upload offset {requested} does not match current offset {current}")]
    OffsetMismatch { requested: u64, current: u64 },
    #[error("upload is busy with another request")]
    Locked,
    #[error("upload size exceeds the maximum of {max} bytes")]
    TooLarge { max: u64 },
    /// The upload cannot fit in what is free above the reserve.
    #[error("not enough free storage: {length} bytes asked, {available} available")]
    InsufficientStorage { length: u64, available: u64 },
    /// Free storage fell to the reserve (readiness).
    #[error("free storage ({free} bytes) is at or below the reserve")]
    BelowReserve { free: u64 },
    #[error("request body runs past the upload length {length}")]
    ExceedsLength { length: u64 },
    #[error("upload length is already set to {0} and cannot change")]
    LengthImmutable(u64),
    #[error("the request completes the upload at {declared} bytes, but its length is {length}")]
    InconsistentLength { length: u64, declared: u64 },
    #[error("upload length {length} is smaller than the current offset {offset}")]
    LengthBelowOffset { length: u64, offset: u64 },
    #[error("checksum mismatch: the chunk was discarded")]
    ChecksumMismatch,
    #[error("a final upload cannot be patched")]
    FinalNotPatchable,
    #[error("upload is not finished")]
    NotFinished,
    #[error("partial upload {0} not found")]
    PartNotFound(UploadId),
    #[error("upload {0} is not a partial upload")]
    PartNotPartial(UploadId),
    #[error("partial upload {0} is named more than once")]
    DuplicatePart(UploadId),
    #[error("access denied")]
    Forbidden,
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error("rejected by hook")]
    HookRejected(HookHttpResponse),
    #[error("hook receiver failed: {0}")]
    HookFailed(String),
    #[error("the upload was stopped by the application")]
    StoppedByHook,
    #[error("invalid destination {0}")]
    InvalidDestination(String),
    #[error("destination {0:?} is taken by another upload")]
    DestinationTaken(String),
    /// A pre-create hook named a bucket not among `--s3-allowed-buckets`
    /// (or any bucket with storage that has none).
    #[error("the pre-create hook chose bucket {0:?}, which is not allowed")]
    BucketNotAllowed(String),
    /// A pre-create hook set a storage value that is not a safe header
    /// value of its kind (`ContentType`, `ContentDisposition`, `CacheControl`).
    #[error("the pre-create hook set an invalid {0}")]
    InvalidStorageChoice(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Data(#[from] DataError),
}

impl From<lock::LockError> for UploadError {
    fn from(e: lock::LockError) -> Self {
        use crate::meta::LeaseError;
        match e {
            lock::LockError::Locked(_) => UploadError::Locked,
            lock::LockError::Lease(LeaseError::Unavailable(cause)) => {
                UploadError::Meta(MetaError::Unavailable(cause))
            }
            lock::LockError::Lease(e @ LeaseError::Backend(_)) => {
                UploadError::Meta(MetaError::Backend(Box::new(e)))
            }
        }
    }
}

/// The upload engine. Cheap to share behind an `Arc`.
pub struct Engine {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) data: Arc<dyn DataStore>,
    /// The per-upload locks, with cross-instance leases for a shared meta
    /// store.
    pub(crate) locker: Locker,
    pub(crate) config: EngineConfig,
    pub(crate) hooks: Option<Arc<hook_dispatch::HookState>>,
    /// Broker event sinks (`--events-*`).
    pub(crate) events: Option<Arc<events::EventState>>,
    /// Per-upload I/O gates: work left running by a dropped request ends
    /// before the next request reads the upload's state.
    pub(crate) gates: Arc<IoGates>,
    /// Slots for assembling final uploads (`max_concurrent_assemblies`).
    pub(crate) assemblies: Arc<tokio::sync::Semaphore>,
}

impl Engine {
    pub fn new(meta: Arc<dyn MetaStore>, data: Arc<dyn DataStore>, config: EngineConfig) -> Self {
        Engine {
            meta,
            data,
            locker: Locker::new(),
            hooks: None,
            events: None,
            gates: Arc::default(),
            assemblies: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_assemblies.max(1),
            )),
            config,
        }
    }

    /// Takes cross-instance leases on top of the in-process locks (for a
    /// meta store shared by several instances).
    pub fn with_leases(mut self, leases: Arc<dyn crate::meta::LeaseStore>) -> Self {
        self.locker = self.locker.with_leases(leases);
        self
    }

    /// Asks this instance's holder of `id`, if any, to stop (a request
    /// from another instance).
    pub fn signal_stop(&self, id: &UploadId) {
        self.locker.signal_stop(id);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    pub fn data(&self) -> &Arc<dyn DataStore> {
        &self.data
    }

    fn expiry_from_now(&self) -> Option<u64> {
        self.config
            .expire_after
            .map(|d| now_secs().saturating_add(d.as_secs().max(1)))
    }

    /// The expiry of an upload finishing now.
    fn finished_expiry(&self) -> Option<u64> {
        self.config
            .expire_finished_after
            .map(|d| now_secs().saturating_add(d.as_secs().max(1)))
    }

    /// The largest upload a request may make: `--max-size`, lowered by
    /// its token's `max_size` claim.
    pub(crate) fn size_limit(&self, ctx: &RequestInfo) -> Option<u64> {
        let claim = ctx.auth.as_ref().and_then(|a| a.max_size);
        match (self.config.max_size, claim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn check_size(&self, length: u64, ctx: &RequestInfo) -> Result<(), UploadError> {
        match self.size_limit(ctx) {
            Some(max) if length > max => Err(UploadError::TooLarge { max }),
            _ => Ok(()),
        }
    }

    /// Bytes to keep free on a disk of `total` bytes.
    pub fn reserve(&self, total: u64) -> u64 {
        self.config
            .min_free_space
            .unwrap_or_else(|| (total / 20).min(1 << 30))
    }

    /// Free space of the data store above the reserve, with the free
    /// space itself (also recorded as gauges); `None` when the store has
    /// no disk of its own.
    pub async fn space_above_reserve(&self) -> Result<Option<(u64, u64)>, UploadError> {
        Ok(self
            .space_and_reserve()
            .await?
            .map(|(space, reserve)| (space.free.saturating_sub(reserve), space.free)))
    }

    /// The data store's disk space and the reserve on it (also recorded
    /// as gauges); `None` when the store has no disk of its own.
    async fn space_and_reserve(&self) -> Result<Option<(crate::data::Space, u64)>, UploadError> {
        let Some(space) = self.data.space().await? else {
            return Ok(None);
        };
        let reserve = self.reserve(space.total);
        // metrics
        metrics::gauge!(crate::telemetry::STORAGE_FREE_BYTES).set(space.free as f64);
        metrics::gauge!(crate::telemetry::STORAGE_RESERVE_BYTES).set(reserve as f64);
        Ok(Some((space, reserve)))
    }

    /// Refuses a declared length that cannot fit on the data store's disk:
    /// 413 when it could not even on an empty disk, 507 when it does not
    /// fit in what is free now.
    async fn check_space(&self, length: u64) -> Result<(), UploadError> {
        if length == 0 {
            return Ok(());
        }
        let Some((space, reserve)) = self.space_and_reserve().await? else {
            return Ok(());
        };
        let most = space.total.saturating_sub(reserve);
        let available = space.free.saturating_sub(reserve);
        if length > most {
            Err(UploadError::TooLarge { max: most })
        } else if length > available {
            Err(UploadError::InsufficientStorage { length, available })
        } else {
            Ok(())
        }
    }

    /// Loads a live, unexpired upload.
    pub(crate) async fn load(&self, id: &UploadId) -> Result<UploadInfo, UploadError> {
        load_live(&*self.meta, id).await
    }

    /// The current state of an upload. A running PATCH on it is asked to
    /// stop first, so the answer reflects everything received so far.
    ///
    /// HEAD is what a client sends to learn where to resume, so it also
    /// finishes what an earlier request left short of its end (see
    /// `resume.rs`): an upload whose every byte arrived is sealed, and a
    /// final upload whose parts are all finished is assembled. The client
    /// has nothing left to send for either; nothing else would finish them.
    pub async fn head(&self, id: &UploadId, ctx: &RequestInfo) -> Result<UploadInfo, UploadError> {
        self.check_access(id, ctx).await?;
        let entered = self.enter(id, Entry::Request).await?;
        let info = self.resume_sealing(entered, ctx).await?;
        self.resume_assembly(info).await
    }

    /// The state of a finished upload, for download.
    pub async fn finished(
        &self,
        id: &UploadId,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        self.check_access(id, ctx).await?;
        let info = self.load(id).await?;
        if !info.finished {
            return Err(UploadError::NotFinished);
        }
        Ok(info)
    }

    /// Removes an upload, its bytes and any final upload waiting for it.
    pub async fn terminate(&self, id: &UploadId, ctx: &RequestInfo) -> Result<(), UploadError> {
        self.check_access(id, ctx).await?;
        let before = self.load(id).await?;
        // Asked before the lock is taken: a slow receiver holds up nobody.
        self.pre_hook(HookType::PreTerminate, &before, ctx).await?;
        let info = {
            // Work a dropped request left running (a write, a save, a
            // finish) ends first: none of it may land after the removal.
            let Entered {
                lock: _lock,
                permit,
                info,
            } = self.enter(id, Entry::Request).await?;
            let owed = self.owe_terminate_event(&info, ctx).await?;
            let removed = self.remove(&info, &permit).await;
            self.settle_terminate_event(owed, removed.is_ok()).await;
            removed?;
            info
        };
        tracing::info!(upload = %id, "upload terminated");
        self.post_hook(HookType::PostTerminate, &info, ctx);
        // metrics
        metrics::counter!(crate::telemetry::UPLOADS_TERMINATED).increment(1);
        self.cascade_removal(&info).await;
        Ok(())
    }

    /// Deletes bytes then state of an upload whose lock the caller holds.
    ///
    /// A fenced save of the record as read comes first: a remover whose
    /// view is stale (it stalled while another instance took the upload
    /// over and wrote) is refused there, before it touches a byte, and any
    /// other writer still holding the version read is refused from then on.
    ///
    /// The steps run in a task of their own, holding `permit`, so they all
    /// happen even if the request is dropped halfway (a client hanging up
    /// on its DELETE): cut between the bytes and the record, the record
    /// would outlive its bytes and every later PATCH would fail.
    pub(crate) async fn remove(
        &self,
        info: &UploadInfo,
        permit: &IoPermit,
    ) -> Result<(), UploadError> {
        let (data, meta) = (self.data.clone(), self.meta.clone());
        let mut info = info.clone();
        let id = info.id.clone();
        permit
            .run_detached(async move {
                meta.save(&mut info).await?;
                data.delete(&info).await?;
                meta.remove(&info).await?;
                if let Concat::Final { parts } = &info.concat {
                    meta.remove_concat_waiters(&info.id, parts).await?;
                }
                if let Some(claim) = info.destination_claim() {
                    meta.release_destination(&claim, &info.id).await?;
                }
                Ok::<_, UploadError>(())
            })
            .await
            .map_err(|e| MetaError::Backend(crate::error::caused("removal task failed", e)))??;
        self.forget_hook_state(&id);
        Ok(())
    }

    pub(crate) async fn lock(
        &self,
        id: &UploadId,
        contend: Contend,
    ) -> Result<lock::UploadLock<'_>, UploadError> {
        Ok(self
            .locker
            .acquire(id, self.config.lock_timeout, contend)
            .await?)
    }

    /// Called once an upload is finished: completes final uploads that
    /// were waiting for it.
    async fn on_finished(&self, info: &UploadInfo) {
        if info.concat == Concat::Partial {
            self.assemble_waiting_finals(&info.id).await;
        }
    }

    /// Server shutdown: asks every running append to stop and persist what
    /// it received (each answers with the offset it reached); appends that
    /// start afterwards stop at once.
    pub fn stop_all(&self) {
        self.locker.stop_all();
    }

    /// Whether [`Engine::stop_all`] was called.
    pub fn is_stopping(&self) -> bool {
        self.locker.is_stopping()
    }

    /// Readiness of both stores, and free space above the reserve.
    pub async fn ready(&self) -> Result<(), UploadError> {
        self.meta.ping().await?;
        self.data.ping().await?;
        if let Some((0, free)) = self.space_above_reserve().await? {
            return Err(UploadError::BelowReserve { free });
        }
        Ok(())
    }
}

/// Loads a live, unexpired upload from `meta`.
async fn load_live(meta: &dyn MetaStore, id: &UploadId) -> Result<UploadInfo, UploadError> {
    match meta.get(id).await? {
        Some(Lookup::Live(info)) if info.is_expired(now_secs()) => Err(UploadError::Gone),
        Some(Lookup::Live(info)) => Ok(*info),
        Some(Lookup::Gone) => Err(UploadError::Gone),
        None => Err(UploadError::NotFound),
    }
}

#[cfg(test)]
mod fencing_tests;

#[cfg(test)]
mod removal_tests;
