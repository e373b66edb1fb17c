//! The upload engine: create, append, finish, terminate, concatenate and
//! expire uploads on top of a `MetaStore` and a `DataStore`. Knows nothing of
//! HTTP; the protocol front ends (tus 1.0, the IETF draft) translate to it.

mod append;
mod concat;
mod entry;
mod events;
pub mod expiry;
mod hook_dispatch;
pub mod lock;
mod persist;

use crate::data::{DataError, DataStore, IoGates, IoPermit};
use crate::hooks::{HookHttpResponse, HookType, RequestInfo};
use crate::meta::{Lookup, MetaError, MetaStore};
use crate::model::{now_secs, Concat, UploadInfo};
use crate::protocol::UploadId;
use entry::{Entered, Entry};
use lock::{Contend, Locker, Locks};
use std::sync::Arc;
use std::time::Duration;

pub use append::AppendRequest;
pub use hook_dispatch::{validate_destination, ThreadInit};

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

/// A creation request after header parsing.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    /// An id reserved by the caller (e.g. already announced to the client
    /// in an interim response); `None` generates one.
    pub id: Option<UploadId>,
    /// `None` means deferred length.
    pub length: Option<u64>,
    /// Raw `Upload-Metadata` as sent (already validated).
    pub metadata: Option<String>,
    pub concat: NewConcat,
}

/// Concatenation role requested at creation.
#[derive(Debug, Clone, Default)]
pub enum NewConcat {
    #[default]
    None,
    Partial,
    Final(Vec<UploadId>),
}

/// The upload engine. Cheap to share behind an `Arc`.
pub struct Engine {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) data: Arc<dyn DataStore>,
    pub(crate) locks: Arc<Locks>,
    /// The in-process locks plus cross-instance leases (shared meta store).
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
        let locks = Arc::new(Locks::new());
        Engine {
            meta,
            data,
            locker: Locker::new(locks.clone(), None),
            locks,
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
        self.locker = Locker::new(self.locks.clone(), Some(leases));
        self
    }

    /// Asks this instance's holder of `id`, if any, to stop (a request
    /// from another instance).
    pub fn signal_stop(&self, id: &UploadId) {
        self.locks.signal_stop(id);
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

    /// Creates an upload (the bytes, if any, follow through `append`).
    /// The pre-create hook may reject it, or change its id, metadata and
    /// destination.
    pub async fn create(
        &self,
        new: NewUpload,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        let (info, _) = self.create_held(new, ctx, Hold::No).await?;
        Ok(info)
    }

    /// [`Engine::create`]; unless `hold` is [`Hold::No`], the upload's lock
    /// is also returned when its id was generated here, taken before its
    /// record was written: nothing else can have changed the record since,
    /// so the caller may append to the record in hand without reading it
    /// back.
    pub(crate) async fn create_held(
        &self,
        new: NewUpload,
        ctx: &RequestInfo,
        hold: Hold,
    ) -> Result<(UploadInfo, Option<Held<'_>>), UploadError> {
        if let Some(length) = new.length {
            self.check_size(length, ctx)?;
            self.check_space(length).await?;
        }
        // An id whose storage the data store prepared ahead of time goes
        // back to it if creation stops before the record is written.
        let mut lent = Lent {
            data: self.data.as_ref(),
            id: new.id.is_none().then(|| self.data.fresh_id()).flatten(),
        };
        let mut info = UploadInfo {
            metadata: new.metadata,
            concat: match &new.concat {
                NewConcat::None => Concat::None,
                NewConcat::Partial => Concat::Partial,
                NewConcat::Final(parts) => Concat::Final {
                    parts: parts.clone(),
                },
            },
            expires_at: self.expiry_from_now(),
            owner: ctx.auth.as_ref().map(|a| a.subject.clone()),
            ..UploadInfo::new(
                new.id
                    .clone()
                    .or_else(|| lent.id.clone())
                    .unwrap_or_else(UploadId::generate),
                new.length,
                now_secs(),
            )
        };
        // A random id made here for this request (122 random bits) cannot
        // be taken; one announced earlier or chosen by the hook can.
        let id_changed = self.pre_create(&mut info, new.id.is_some(), ctx).await?;
        let fresh_id = new.id.is_none() && !id_changed;
        // Storage is prepared before the record is written: make sure an id
        // that may be taken is free first, so a reused id never touches
        // another upload's bytes. (The record's insert checks every id.)
        let taken = match fresh_id {
            true => Ok(None),
            false => self.meta.get(&info.id).await,
        };
        // Nobody else knows a generated id yet: its lock is free.
        let held = match hold != Hold::No && fresh_id {
            true => Some(Held {
                lock: self.lock(&info.id, Contend::Wait).await?,
                // Nobody hears of the upload before the caller answers
                // (unless a post-create hook is sent), and an upload that
                // is not finished at once is saved again by the append.
                deferred: hold == Hold::LockDeferred
                    && !self.notifies(HookType::PostCreate)
                    && info.length != Some(0)
                    && matches!(new.concat, NewConcat::None | NewConcat::Partial),
            }),
            false => None,
        };
        let deferred = held.as_ref().is_some_and(|h| h.deferred);
        if matches!(taken, Ok(None)) {
            // From here on the record may be written: the id is spent.
            lent.id.take_if(|id| *id == info.id);
        }
        let result = match taken {
            Ok(Some(_)) => Err(UploadError::Meta(MetaError::AlreadyExists(info.id.clone()))),
            Err(e) => Err(e.into()),
            Ok(None) => match new.concat {
                NewConcat::Final(parts) => self.create_final(info.clone(), parts, ctx).await,
                _ => self.create_plain(info.clone(), deferred).await,
            },
        };
        let created = self.created(result, &info, ctx).await?;
        Ok((created, held))
    }

    /// The pre-create hook's say on `info`: it may reject the upload, or
    /// change its id (unless `announced`: the URL was already sent), its
    /// metadata and its destination (claimed here). True when it changed
    /// the id.
    async fn pre_create(
        &self,
        info: &mut UploadInfo,
        announced: bool,
        ctx: &RequestInfo,
    ) -> Result<bool, UploadError> {
        let answer = self.pre_hook(HookType::PreCreate, info, ctx).await?;
        let Some(change) = answer.change_file_info else {
            return Ok(false);
        };
        let mut id_changed = false;
        if let Some(id) = change.id.filter(|i| !i.is_empty()) {
            if announced {
                // The URL was already announced (IETF 104 interim
                // response): it cannot change any more.
                tracing::warn!(upload = %info.id, requested = %id, "pre-create hook's ID change ignored: the upload URL was already sent");
            } else {
                info.id = UploadId::parse(&id).map_err(|_| {
                    UploadError::HookFailed(format!("hook chose an invalid upload id {id:?}"))
                })?;
                id_changed = true;
            }
        }
        if let Some(pairs) = change.meta_data {
            info.metadata = Some(crate::protocol::Metadata::from_pairs(pairs).encode())
                .filter(|m| !m.is_empty());
        }
        if let Some(storage) = change.storage {
            // Everything is checked before the destination is claimed.
            hook_dispatch::apply_storage_choices(self.data.as_ref(), info, &storage)?;
            if let Some(dest) = storage.get("Key").or_else(|| storage.get("Path")) {
                info.destination = Some(validate_destination(dest)?);
                if let Some(claim) = info.destination_claim() {
                    if !self.meta.claim_destination(&claim, &info.id).await? {
                        return Err(UploadError::DestinationTaken(claim));
                    }
                }
            }
        }
        Ok(id_changed)
    }

    /// After a creation: its post-create (and, for an empty upload,
    /// post-finish) hooks; or, when it failed, the destination it claimed
    /// goes back.
    async fn created(
        &self,
        result: Result<UploadInfo, UploadError>,
        info: &UploadInfo,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        match result {
            Ok(created) => {
                // metrics
                metrics::counter!(crate::telemetry::UPLOADS_CREATED).increment(1);
                self.post_hook(HookType::PostCreate, &created, ctx);
                if created.finished {
                    self.deliver_finish_hook(&created, ctx, false);
                }
                Ok(created)
            }
            Err(e) => {
                if let Some(claim) = info.destination_claim() {
                    if let Err(release) = self.meta.release_destination(&claim, &info.id).await {
                        tracing::warn!(error = %release, "releasing destination failed");
                    }
                }
                Err(e)
            }
        }
    }

    /// Prepares storage and writes the record; `deferred`, without waiting
    /// for it to be durable (see [`Held::deferred`]).
    async fn create_plain(
        &self,
        mut info: UploadInfo,
        deferred: bool,
    ) -> Result<UploadInfo, UploadError> {
        info.storage = self.data.create(&info).await?;
        if info.length == Some(0) {
            info.storage = self.data.finish(&info).await?;
            info.finished = true;
            info.expires_at = self.finished_expiry();
            info.finish_hook_pending = self.owes_finish_hook();
        }
        let recorded = match deferred {
            true => self.meta.create_deferred(&info).await,
            false => self.meta.create(&info).await,
        };
        match recorded {
            Ok(()) => {}
            // The id belongs to another upload: its storage is not ours.
            Err(e @ MetaError::AlreadyExists(_)) => return Err(e.into()),
            Err(e) => {
                // No record (meta store unreachable): nothing would ever
                // abort the multipart upload just begun, so abort it now.
                // Were the record written after all, its upload fails later
                // and expires; the client was answered 5xx and knows no URL.
                if let Err(undo) = self.data.delete(&info).await {
                    tracing::warn!(upload = %info.id, error = %undo, "removing the storage of an unrecorded upload failed");
                }
                return Err(e.into());
            }
        }
        tracing::info!(upload = %info.id, length = ?info.length, "upload created");
        if info.finished {
            // metrics
            metrics::counter!(crate::telemetry::UPLOADS_FINISHED).increment(1);
            self.on_finished(&info).await;
        }
        Ok(info)
    }

    /// The current state of an upload. A running PATCH on it is asked to
    /// stop first, so the answer reflects everything received so far.
    pub async fn head(&self, id: &UploadId, ctx: &RequestInfo) -> Result<UploadInfo, UploadError> {
        self.check_access(id, ctx).await?;
        let (info, sealed) = {
            let Entered {
                lock: _lock,
                permit,
                mut info,
            } = self.enter(id, Entry::Request).await?;
            let unsealed = info.is_complete() && !info.finished && !info.is_final();
            if unsealed {
                // Every byte arrived but sealing did not happen (a crash, or
                // the backend failed): finish it now.
                match self.seal(&mut info, ctx, &permit).await {
                    // Another instance wrote first (this one's lease lapsed
                    // meanwhile): what it recorded is the answer.
                    Err(UploadError::Meta(MetaError::Stale(_))) => {
                        return self.load(id).await;
                    }
                    sealed => sealed?,
                }
            }
            (info, unsealed)
        };
        if sealed {
            self.on_finished(&info).await;
        }
        if info.is_final() && !info.finished {
            // Assembly may have failed or been interrupted: try again.
            if let Some(assembled) = self.try_assemble(id).await? {
                return Ok(assembled);
            }
        }
        Ok(info)
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
        self.locks.stop_all();
    }

    /// Whether [`Engine::stop_all`] was called.
    pub fn is_stopping(&self) -> bool {
        self.locks.is_stopping()
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

/// What [`Engine::create_held`] returns besides the record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Hold {
    /// Nothing.
    No,
    /// The upload's lock, when its id was generated here.
    Lock,
    /// The lock, and the record written without waiting for durability
    /// where nobody else hears of the upload (see [`Held::deferred`]).
    LockDeferred,
}

/// The lock of an upload [`Engine::create_held`] just created.
pub(crate) struct Held<'a> {
    pub(crate) lock: lock::UploadLock<'a>,
    /// Its record was written without waiting for durability
    /// ([`MetaStore::create_deferred`]): before answering, the caller saves
    /// it or calls [`MetaStore::sync`].
    pub(crate) deferred: bool,
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

/// An id lent by the data store for a new upload (see
/// [`DataStore::fresh_id`]): given back when dropped still holding it.
struct Lent<'a> {
    data: &'a dyn DataStore,
    id: Option<UploadId>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.data.give_back(id);
        }
    }
}

#[cfg(test)]
mod fencing_tests;

#[cfg(test)]
mod removal_tests;
