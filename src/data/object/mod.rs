//! `DataStore` on object storage (S3, R2, MinIO, GCS, Azure) through
//! object_store's `MultipartStore`.
//!
//! Each upload is one multipart upload. The server cuts the incoming bytes
//! into parts of one fixed size per upload, whatever the PATCH sizes are
//! (S3 rejects small non-last parts, R2 wants equal ones). The remainder
//! smaller than a part is staged as small "segment" objects beside the
//! upload, so every instance can continue it; the next part consumes them.
//! The multipart id, every part's ETag and the segment list are returned as
//! store state, which the engine persists before acknowledging the bytes.
//!
//! With one instance (`ObjectTuning::tail_dir`), tails are staged in local
//! files instead and parts upload in the background across requests
//! (`spool`): an upload records which of the two it uses when created.

use super::{ByteStream, DataError, DataStore, IoPermit, UploadWriter};
use crate::model::UploadInfo;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use super::tail_cache::{SegmentId, TailCache};

mod attributes;
mod buckets;
mod spool;
mod writer;
pub use buckets::Buckets;
use spool::{Spool, SpoolWriter};
use writer::ObjectWriter;

/// Smallest non-last part S3 accepts.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Most parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// Granularity of the global buffer-memory semaphore.
const PERMIT_UNIT: u64 = 64 * 1024;

/// Anything that is both an object store and a multipart store.
pub trait Backend: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> Backend for T {}

/// Which part sizes a store accepts (`--s3-part-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartPolicy {
    /// Every part but the last one has the upload's part size (R2 demands
    /// this): a request's remainder smaller than a part is staged.
    #[default]
    Equal,
    /// Parts may differ, each but the last at least 5 MiB (S3, MinIO, GCS,
    /// Azure): a request's remainder of 5 MiB or more becomes a part of its
    /// own at the request's end, uploaded once, never staged.
    Variable,
}

/// Tuning of the object-storage data path.
#[derive(Debug, Clone)]
pub struct ObjectTuning {
    /// Preferred part size (raised to 5 MiB, and as needed to fit the
    /// declared length into 10,000 parts).
    pub part_size: u64,
    /// Parts of one upload in flight at once.
    pub part_concurrency: usize,
    /// Bytes of part buffers allowed across all uploads; when used up,
    /// request bodies are read more slowly (backpressure).
    pub buffer_memory: u64,
    /// Attempts per backend call (first try included).
    pub retry_attempts: usize,
    /// Longest pause between attempts.
    pub retry_max_delay: Duration,
    /// Where new uploads stage their tails: this local directory (one
    /// instance; acknowledged bytes are `fdatasync`'d files there and parts
    /// upload in the background), or, when `None`, segment objects in the
    /// bucket (visible to every instance).
    pub tail_dir: Option<std::path::PathBuf>,
    /// Which part sizes the store accepts (bucket staging only; local
    /// staging cuts equal parts).
    pub part_policy: PartPolicy,
}

impl Default for ObjectTuning {
    fn default() -> Self {
        ObjectTuning {
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
            buffer_memory: 512 * 1024 * 1024,
            retry_attempts: 6,
            retry_max_delay: Duration::from_secs(8),
            tail_dir: None,
            part_policy: PartPolicy::Equal,
        }
    }
}

/// Upload bytes in an object store.
#[derive(Clone)]
pub struct ObjectData {
    store: Arc<dyn Backend>,
    /// Key prefix, empty or ending with `/`.
    prefix: String,
    kind: &'static str,
    tuning: ObjectTuning,
    memory: Arc<Semaphore>,
    tails: Arc<TailCache>,
    /// Presigns download URLs (`--download-redirect`), where the backend can.
    signer: Option<Arc<dyn Signer>>,
    /// Local tail staging, when `tuning.tail_dir` is set.
    spool: Option<Arc<Spool>>,
}

/// Persisted per-upload state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Object key of the finished upload.
    key: String,
    multipart_id: String,
    part_size: u64,
    /// ETags of parts 0..n, each `part_size` bytes unless `sizes` says.
    parts: Vec<String>,
    /// The size of every part, once one is not `part_size` long (a short
    /// part cut at the end of a request, `PartPolicy::Variable`); empty
    /// while all are, and always for uploads staging locally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sizes: Vec<u64>,
    /// Staged bytes following the parts, in order.
    segments: Vec<Segment>,
    /// Next segment sequence number; with the writer's nonce in the key,
    /// keys are never reused.
    next_segment: u64,
    /// The multipart upload is completed (or replaced by a single PUT).
    completed: bool,
    /// Tails are staged in this instance's local spool, not in the bucket.
    #[serde(default)]
    local: bool,
    /// Bytes after `parts` in the local spool (`local` uploads only).
    #[serde(default)]
    tail: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    key: String,
    len: u64,
}

impl State {
    fn staged(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn segment_ids(&self) -> Vec<SegmentId> {
        self.segments
            .iter()
            .map(|s| (s.key.clone(), s.len))
            .collect()
    }

    /// Bytes in the parts.
    fn parted(&self) -> u64 {
        if self.sizes.is_empty() {
            self.parts.len() as u64 * self.part_size
        } else {
            self.sizes.iter().sum()
        }
    }

    fn offset(&self) -> u64 {
        self.parted() + self.staged() + self.tail
    }

    /// Appends part `etag` of `size` bytes.
    fn push_part(&mut self, etag: String, size: u64) {
        if self.sizes.is_empty() && size != self.part_size {
            self.sizes = vec![self.part_size; self.parts.len()];
            self.sizes.push(size);
        } else if !self.sizes.is_empty() {
            self.sizes.push(size);
        }
        self.parts.push(etag);
    }

    fn load(info: &UploadInfo) -> Result<State, DataError> {
        serde_json::from_value(info.storage.clone()).map_err(|e| {
            DataError::Backend(crate::error::caused(
                format!("bad object-store state of {}", info.id),
                e,
            ))
        })
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Classifies an object_store error: transient ones are retried and, when
/// retries are exhausted, answered with 503.
fn is_transient(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::JoinError { .. } => true,
        // object_store keeps the HTTP status of a failed request private;
        // its message carries it. A 4xx other than 408/429 is the request's
        // fault (EntityTooSmall, InvalidPart…): retrying cannot help.
        object_store::Error::Generic { .. } => {
            !matches!(http_status(&e.to_string()), Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
        }
        _ => false,
    }
}

/// The HTTP status in an object_store error message, if it names one.
fn http_status(message: &str) -> Option<u16> {
    let at = message.find("status code: ")? + "status code: ".len();
    message.get(at..at + 3)?.parse().ok()
}

fn convert(e: object_store::Error) -> DataError {
    match e {
        object_store::Error::NotFound { path, .. } => DataError::Missing(path),
        e if is_transient(&e) => DataError::Unavailable(Box::new(e)),
        e => DataError::Backend(Box::new(e)),
    }
}

/// Calls `f` with exponential backoff and jitter on transient errors.
async fn retry<T, F, Fut>(
    tuning: &ObjectTuning,
    what: &'static str,
    f: F,
) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(tuning.retry_max_delay)
        .with_max_times(tuning.retry_attempts.saturating_sub(1))
        .with_jitter();
    // metrics: one latency sample per attempt, labelled `put_part` style.
    let operation = what.replace(' ', "_");
    let mut f = f;
    let attempt = || {
        let started = std::time::Instant::now();
        let call = f();
        let operation = operation.clone();
        async move {
            let result = call.await;
            metrics::histogram!(crate::telemetry::STORAGE_CALL_SECONDS, "operation" => operation)
                .record(started.elapsed().as_secs_f64());
            result
        }
    };
    attempt
        .retry(policy)
        .when(is_transient)
        .notify(|e, pause| {
            // metrics
            metrics::counter!(crate::telemetry::STORAGE_RETRIES, "operation" => operation.clone())
                .increment(1);
            tracing::warn!(operation = what, error = %e, retry_in_ms = pause.as_millis() as u64, "storage call failed; retrying")
        })
        .await
}

/// `--buffer-memory` in semaphore units of `PERMIT_UNIT` bytes.
/// Permits of buffer memory for one part of `part_size`, capped by the budget.
fn part_units(tuning: &ObjectTuning, part_size: u64) -> u32 {
    part_size
        .div_ceil(PERMIT_UNIT)
        .min(u64::from(budget_units(tuning))) as u32
}

fn budget_units(tuning: &ObjectTuning) -> u32 {
    (tuning.buffer_memory / PERMIT_UNIT).clamp(1, Semaphore::MAX_PERMITS as u64) as u32
}

impl ObjectData {
    /// Wraps a store; `prefix` is prepended to every key.
    pub fn new(
        store: Arc<dyn Backend>,
        prefix: &str,
        kind: &'static str,
        tuning: ObjectTuning,
    ) -> Self {
        let prefix = prefix.trim_matches('/');
        let permits = budget_units(&tuning) as usize;
        ObjectData {
            store,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            kind,
            memory: Arc::new(Semaphore::new(permits)),
            tails: Arc::new(TailCache::new(tuning.buffer_memory / 4)),
            spool: tuning.tail_dir.clone().map(|dir| Arc::new(Spool::new(dir))),
            tuning,
            signer: None,
        }
    }

    /// Presigns download URLs with `signer` (the same backend's).
    pub fn with_signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The same store on another backend (another bucket), sharing the
    /// buffer-memory budget and the tail cache.
    pub fn on(&self, store: Arc<dyn Backend>, signer: Option<Arc<dyn Signer>>) -> Self {
        ObjectData {
            store,
            signer,
            ..self.clone()
        }
    }

    /// The object's attributes for `info` (headers and user metadata),
    /// logging the metadata keys that had to be left out.
    fn attributes(&self, info: &UploadInfo) -> object_store::Attributes {
        let (attributes, dropped) = attributes::attributes(info, self.kind);
        if !dropped.is_empty() {
            tracing::warn!(upload = %info.id, keys = ?dropped, "metadata keys not stored as object metadata (unsupported key or value, or past the 2 KiB limit)");
        }
        attributes
    }

    /// The part size for an upload of `length` bytes (or unknown length).
    pub fn part_size_for(&self, length: Option<u64>) -> u64 {
        let mut size = self.tuning.part_size.max(MIN_PART_SIZE);
        if let Some(length) = length {
            let needed = length.div_ceil(MAX_PARTS);
            if needed > size {
                // Round up to whole MiB.
                size = needed.div_ceil(1 << 20) << 20;
            }
        }
        size
    }

    fn staging_prefix(&self, info: &UploadInfo) -> String {
        format!("{}.tusker-staging/{}/", self.prefix, info.id)
    }

    /// The bytes of staged segments: from this instance's tail cache when it
    /// holds exactly these, else from the store.
    async fn read_segments(
        &self,
        upload: &str,
        segments: &[Segment],
    ) -> Result<Vec<Bytes>, DataError> {
        let ids: Vec<SegmentId> = segments.iter().map(|s| (s.key.clone(), s.len)).collect();
        if let Some(cached) = self.tails.get(upload, &ids) {
            return Ok(cached);
        }
        let mut out = Vec::with_capacity(segments.len());
        for s in segments {
            let path = Path::from(s.key.as_str());
            let bytes = retry(&self.tuning, "get segment", || async {
                self.store.get(&path).await?.bytes().await
            })
            .await
            .map_err(convert)?;
            if bytes.len() as u64 != s.len {
                return Err(DataError::Backend(
                    format!(
                        "staged segment {} has {} bytes, expected {}",
                        s.key,
                        bytes.len(),
                        s.len
                    )
                    .into(),
                ));
            }
            out.push(bytes);
        }
        Ok(out)
    }

    /// Deletes every object under the upload's staging prefix, retrying
    /// transient failures (a segment left here is never looked at again).
    async fn delete_staging(&self, info: &UploadInfo) {
        let prefix = Path::from(self.staging_prefix(info).trim_end_matches('/'));
        let listed = retry(&self.tuning, "list segments", || {
            self.store.list(Some(&prefix)).try_collect::<Vec<_>>()
        })
        .await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(upload = %info.id, error = %e, "listing staged segments failed");
                return;
            }
        };
        for meta in listed {
            if let Err(e) = self.delete_segment(&meta.location).await {
                tracing::warn!(upload = %info.id, key = %meta.location, error = %e, "deleting staged segment failed");
            }
        }
    }

    /// Deletes one staged segment, retrying transient failures.
    async fn delete_segment(&self, key: &Path) -> Result<(), object_store::Error> {
        match retry(&self.tuning, "delete segment", || self.store.delete(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the object at `path` exists with `len` bytes: only a
    /// `finish` of the upload owning the key puts it there.
    async fn assembled(&self, path: &Path, len: u64) -> Result<bool, DataError> {
        match retry(&self.tuning, "head object", || self.store.head(path)).await {
            Ok(meta) => Ok(meta.size == len),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(convert(e)),
        }
    }

    /// The local spool of a `local` upload.
    fn spool(&self, info: &UploadInfo) -> Result<Arc<Spool>, DataError> {
        self.spool.clone().ok_or_else(|| {
            DataError::Backend(format!(
                "upload {} stages its tail in a local spool, and this instance has none (--s3-tail-staging)",
                info.id
            ).into())
        })
    }

    /// `finish` of an upload staging its tail locally.
    async fn finish_local(
        &self,
        info: &UploadInfo,
        mut state: State,
    ) -> Result<serde_json::Value, DataError> {
        let spool = self.spool(info)?;
        let id = info.id.as_str();
        let path = Path::from(state.key.as_str());
        if self.assembled(&path, info.offset).await? {
            // Assembled before a restart, the record not yet saved.
            tracing::info!(upload = %info.id, "object already assembled before a restart");
            if info.offset < state.part_size {
                if let Err(e) = self.abort(&state).await {
                    tracing::warn!(upload = %info.id, error = %e, "aborting the multipart upload of an assembled object failed");
                }
            }
        } else {
            match spool::upload_rest(self, &spool, id, &state, info.offset).await? {
                None => {
                    let bytes = if info.offset == 0 {
                        Bytes::new()
                    } else {
                        spool::read_part(spool.upload_dir(id), 0, info.offset).await?
                    };
                    self.put_whole(info, &path, PutPayload::from(bytes)).await?;
                    self.abort(&state).await?;
                }
                Some(parts) => self.complete(info, &path, &state, parts).await?,
            }
        }
        spool.remove(id).await;
        state.completed = true;
        state.tail = 0;
        Ok(state.to_value())
    }

    /// Puts the whole object in one request, with the upload's headers and
    /// metadata (keys left out were logged at creation).
    async fn put_whole(
        &self,
        info: &UploadInfo,
        path: &Path,
        payload: PutPayload,
    ) -> Result<(), DataError> {
        let options = PutOptions {
            attributes: attributes::attributes(info, self.kind).0,
            ..PutOptions::default()
        };
        retry(&self.tuning, "put object", || {
            self.store.put_opts(path, payload.clone(), options.clone())
        })
        .await
        .map_err(convert)?;
        Ok(())
    }

    /// Completes the multipart upload from `parts`. A failure after which
    /// the object is there whole means it was completed before a crash,
    /// with the record not yet saved: that counts as done.
    async fn complete(
        &self,
        info: &UploadInfo,
        path: &Path,
        state: &State,
        parts: Vec<PartId>,
    ) -> Result<(), DataError> {
        let id = &state.multipart_id;
        let completed = retry(&self.tuning, "complete multipart", || {
            self.store.complete_multipart(path, id, parts.clone())
        })
        .await;
        if let Err(e) = completed {
            match self.store.head(path).await {
                Ok(meta) if meta.size == info.offset => {
                    tracing::info!(upload = %info.id, "multipart upload was already completed")
                }
                _ => return Err(convert(e)),
            }
        }
        Ok(())
    }

    async fn abort(&self, state: &State) -> Result<(), DataError> {
        let path = Path::from(state.key.as_str());
        let id = state.multipart_id.clone();
        match retry(&self.tuning, "abort multipart", || {
            self.store.abort_multipart(&path, &id)
        })
        .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            // S3 answers an abort of an upload already gone with 404
            // NoSuchUpload, which object_store does not map to NotFound.
            Err(e) if http_status(&e.to_string()) == Some(404) => Ok(()),
            Err(e) => Err(convert(e)),
        }
    }

    /// Builds `target`'s object from `parts`, each read from its own
    /// store (parts may sit in other buckets), by streaming them through a
    /// writer of the target: parts are cut and uploaded as usual, so
    /// memory stays bounded. Returns the sealed target's state.
    pub(super) async fn assemble(
        &self,
        target: &UploadInfo,
        parts: &[(&ObjectData, &UploadInfo)],
    ) -> Result<serde_json::Value, DataError> {
        let mut writer = self.writer(target, IoPermit::unshared()).await?;
        for (store, part) in parts {
            let mut stream = store.read(part, 0, part.offset).await?;
            while let Some(chunk) = stream.next().await {
                writer.write(chunk?).await?;
            }
        }
        let durable = writer.sync().await?;
        let mut sealed = target.clone();
        sealed.offset = durable.offset;
        sealed.storage = durable.storage;
        self.finish(&sealed).await
    }
}

#[async_trait]
impl DataStore for ObjectData {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn create(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        let key = match &info.destination {
            Some(dest) => format!("{}{dest}", self.prefix),
            None => format!("{}{}", self.prefix, info.id),
        };
        let path = Path::from(key.as_str());
        if info.destination.is_some() {
            match self.store.head(&path).await {
                Err(object_store::Error::NotFound { .. }) => {}
                Ok(_) => return Err(DataError::AlreadyExists(key)),
                Err(e) => return Err(convert(e)),
            }
        }
        let options = PutMultipartOptions {
            attributes: self.attributes(info),
            ..PutMultipartOptions::default()
        };
        let created = retry(&self.tuning, "create multipart", || {
            self.store.create_multipart_opts(&path, options.clone())
        })
        .await;
        let multipart_id = match created {
            Ok(id) => id,
            // Azure's multipart uploads take no attributes: the object
            // gets them only when it is written with one PUT (at finish).
            Err(object_store::Error::NotSupported { .. }) => {
                retry(&self.tuning, "create multipart", || {
                    self.store.create_multipart(&path)
                })
                .await
                .map_err(convert)?
            }
            Err(e) => return Err(convert(e)),
        };
        Ok(State {
            key,
            multipart_id,
            part_size: self.part_size_for(info.length),
            local: self.spool.is_some(),
            ..State::default()
        }
        .to_value())
    }

    async fn writer(
        &self,
        info: &UploadInfo,
        // Bucket staging: parts run in the writer's JoinSet, which aborts
        // them when the writer is dropped, so nothing outlives it that
        // needs the permit. Local staging: its file writes hold it; its
        // background parts touch no file a later request writes.
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError> {
        let state = State::load(info)?;
        if state.offset() != info.offset {
            return Err(DataError::Backend(
                format!(
                    "object-store state of {} covers {} bytes, the record says {}",
                    info.id,
                    state.offset(),
                    info.offset
                )
                .into(),
            ));
        }
        if state.local {
            return Ok(Box::new(SpoolWriter::open(
                self.clone(),
                self.spool(info)?,
                info.id.to_string(),
                state,
                info.length,
                permit,
            )));
        }
        let staging = self.staging_prefix(info);
        let tail = if state.segments.is_empty() {
            Some(Vec::new())
        } else {
            self.tails.get(&staging, &state.segment_ids())
        };
        Ok(Box::new(ObjectWriter::new(
            self.clone(),
            staging,
            state,
            info.length,
            tail,
        )))
    }

    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        let mut state = State::load(info)?;
        if state.completed {
            return Ok(state.to_value());
        }
        if state.local {
            return self.finish_local(info, state).await;
        }
        let path = Path::from(state.key.as_str());
        let staging = self.staging_prefix(info);
        if self.assembled(&path, info.offset).await? {
            // An earlier finish assembled the object, then the process died
            // before the record said so: its staged segments may be deleted
            // and its multipart upload completed, so neither is used again.
            tracing::info!(upload = %info.id, "object already assembled before a restart");
            self.tails.remove(&staging);
            if state.parts.is_empty() {
                // The single-PUT path aborts the multipart upload after the
                // PUT; the crash may have come in between, or after it. The
                // object is whole either way: a failure leaves garbage only.
                if let Err(e) = self.abort(&state).await {
                    tracing::warn!(upload = %info.id, error = %e, "aborting the multipart upload of an assembled object failed");
                }
            }
            state.completed = true;
            state.segments.clear();
            self.delete_staging(info).await;
            return Ok(state.to_value());
        }
        let tail = self.read_segments(&staging, &state.segments).await?;
        self.tails.remove(&staging);
        let tail = PutPayload::from_iter(tail);
        if state.parts.is_empty() {
            // Fits in one request: a plain PUT, and the multipart upload goes.
            self.put_whole(info, &path, tail).await?;
            self.abort(&state).await?;
        } else {
            let mut parts: Vec<PartId> = state
                .parts
                .iter()
                .map(|etag| PartId {
                    content_id: etag.clone(),
                })
                .collect();
            if tail.content_length() > 0 {
                let idx = parts.len();
                let id = state.multipart_id.clone();
                let part = retry(&self.tuning, "put last part", || {
                    self.store.put_part(&path, &id, idx, tail.clone())
                })
                .await
                .map_err(convert)?;
                parts.push(part);
            }
            self.complete(info, &path, &state, parts).await?;
        }
        state.completed = true;
        state.segments.clear();
        self.delete_staging(info).await;
        Ok(state.to_value())
    }

    async fn read(&self, info: &UploadInfo, start: u64, end: u64) -> Result<ByteStream, DataError> {
        let state = State::load(info)?;
        // S3 refuses an empty byte range; concatenating an empty part asks
        // for one.
        if start >= end {
            return Ok(futures_util::stream::empty().boxed());
        }
        let path = Path::from(state.key.as_str());
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        let result = retry(&self.tuning, "get object", || {
            self.store.get_opts(&path, options.clone())
        })
        .await
        .map_err(convert)?;
        Ok(result.into_stream().map_err(convert).boxed())
    }

    async fn delete(&self, info: &UploadInfo) -> Result<(), DataError> {
        let state = match State::load(info) {
            Ok(s) => s,
            // Never got as far as creating storage.
            Err(_) if info.storage.is_null() => return Ok(()),
            Err(e) => return Err(e),
        };
        self.tails.remove(&self.staging_prefix(info));
        if let Some(spool) = self.spool.as_ref().filter(|_| state.local) {
            spool.forget(info.id.as_str());
        }
        if !state.completed {
            self.abort(&state).await?;
        }
        if let Some(spool) = self.spool.as_ref().filter(|_| state.local) {
            spool.remove(info.id.as_str()).await;
        }
        self.delete_staging(info).await;
        let path = Path::from(state.key.as_str());
        match retry(&self.tuning, "delete object", || self.store.delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(convert(e)),
        }
    }

    async fn concatenate(
        &self,
        target: &UploadInfo,
        parts: &[UploadInfo],
    ) -> Result<serde_json::Value, DataError> {
        let parts: Vec<_> = parts.iter().map(|p| (self, p)).collect();
        self.assemble(target, &parts).await
    }

    fn describe(&self, info: &UploadInfo) -> std::collections::BTreeMap<String, String> {
        let mut out =
            std::collections::BTreeMap::from([("Type".to_owned(), format!("{}store", self.kind))]);
        if let Ok(state) = State::load(info) {
            out.insert("Key".to_owned(), state.key);
            out.insert("MultipartUpload".to_owned(), state.multipart_id);
        }
        out
    }

    async fn download_url(
        &self,
        info: &UploadInfo,
        ttl: Duration,
    ) -> Result<Option<String>, DataError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let state = State::load(info)?;
        if !state.completed {
            return Err(DataError::Backend(
                format!("upload {} is not assembled into an object yet", info.id).into(),
            ));
        }
        let path = Path::from(state.key.as_str());
        let url = signer
            .signed_url(object_store::signer::Method::GET, &path, ttl)
            .await
            .map_err(convert)?;
        Ok(Some(url.to_string()))
    }

    async fn ping(&self) -> Result<(), DataError> {
        let probe = Path::from(format!("{}.tusker-staging", self.prefix).as_str());
        match self.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(convert(e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
