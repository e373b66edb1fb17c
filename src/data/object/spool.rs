//! Local tail staging for one instance (`--s3-tail-staging local`): every
//! byte a request acknowledges is in an `fdatasync`'d file under the data
//! directory, so part uploads need not end before the request does. They
//! go on in the background, across requests, and the next request (or the
//! finish) collects their ETags.
//!
//! Layout: `SPOOL/ID/<part index>` holds the bytes of that part, exactly
//! `part_size` of them for a full part. A recorded state with `k` parts and
//! `tail` bytes names files `k ..` holding the bytes from `k × part_size`
//! on; files before `k` are garbage once that state is recorded. A file is
//! only ever written at or beyond what the recorded state says it holds, so
//! a crash at any point leaves the recorded bytes intact.
//!
//! Between requests an upload's part pipeline (its [`Core`]) waits in
//! [`Spool::cores`]; a writer takes it over when its durable state is the
//! record's, and otherwise rebuilds it from the record and the files.

use super::{convert, part_units, retry, ObjectData, State, MAX_PARTS};
use crate::data::{Checkpoint, DataError, Durable, IoPermit, UploadWriter};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::PutPayload;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{AbortHandle, JoinSet};

/// Part index, spawn generation, the upload's outcome.
type PartResult = (usize, u64, Result<PartId, object_store::Error>);

/// The spool directory and the pipelines parked between requests.
pub(crate) struct Spool {
    dir: PathBuf,
    cores: Mutex<HashMap<String, Core>>,
}

impl Spool {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Spool {
            dir,
            cores: Mutex::new(HashMap::new()),
        }
    }

    fn cores(&self) -> std::sync::MutexGuard<'_, HashMap<String, Core>> {
        self.cores.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn upload_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The parked pipeline of `id` (its background parts keep running).
    fn take(&self, id: &str) -> Option<Core> {
        self.cores().remove(id)
    }

    /// Stops the background parts of `id` and forgets its pipeline.
    pub(super) fn forget(&self, id: &str) {
        if let Some(mut core) = self.take(id) {
            core.inflight.abort_all();
        }
    }

    /// Removes the spool files of `id`.
    pub(super) async fn remove(&self, id: &str) {
        self.forget(id);
        let dir = self.upload_dir(id);
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(upload = id, error = %e, "removing spooled tail failed");
        }
    }

    /// For `finish`: the ETags `state` records, and those the parked
    /// pipeline of `id` holds once its parts in flight have ended, if it
    /// continues that state.
    pub(super) async fn collect(&self, id: &str, state: &State) -> BTreeMap<usize, String> {
        let mut etags: BTreeMap<usize, String> = state.parts.iter().cloned().enumerate().collect();
        let Some(mut core) = self.take(id) else {
            return etags;
        };
        if core.durable != *state {
            core.inflight.abort_all();
            return etags;
        }
        while let Some(joined) = core.inflight.join_next().await {
            // A failed part is uploaded again by the finish itself.
            if let Ok((idx, generation, Ok(part))) = joined {
                if core.live.get(&idx).is_some_and(|(g, _)| *g == generation) {
                    core.done.insert(idx, part.content_id);
                }
            }
        }
        etags.extend(core.done);
        etags
    }
}

/// Reads `len` bytes of part `idx` of an upload from its spool file.
pub(super) async fn read_part(dir: PathBuf, idx: usize, len: u64) -> Result<Bytes, DataError> {
    tokio::task::spawn_blocking(move || {
        let path = dir.join(idx.to_string());
        let file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        Ok::<_, std::io::Error>(Bytes::from(buf))
    })
    .await
    .map_err(|e| DataError::Backend(crate::error::caused("spool read task failed", e)))?
    .map_err(DataError::from)
}

/// One write into a part's spool file: cut the file to `at`, write there.
struct FileWrite {
    idx: usize,
    at: u64,
    bytes: Vec<Bytes>,
}

/// Writes `writes` into the spool files under `dir` and `fdatasync`s them;
/// a new file's directory entry is synced too.
fn write_durably(dir: &std::path::Path, writes: Vec<FileWrite>) -> std::io::Result<()> {
    let mut created = false;
    if !dir.exists() {
        // The spool directory itself may be new too.
        let spool = dir.parent();
        let new_spool = spool.is_some_and(|p| !p.exists());
        std::fs::create_dir_all(dir)?;
        let grandparent = spool.and_then(|p| p.parent()).filter(|_| new_spool);
        for parent in [spool, grandparent].into_iter().flatten() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    for w in writes {
        let path = dir.join(w.idx.to_string());
        created |= !path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.set_len(w.at)?;
        let mut at = w.at;
        for b in &w.bytes {
            file.write_all_at(b, at)?;
            at += b.len() as u64;
        }
        file.sync_data()?;
    }
    if created {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A part cut whose bytes are not in its spool file yet.
struct Unspooled {
    payload: PutPayload,
    /// Bytes at the start of the part that are in the file already.
    from: u64,
    /// The part's buffer memory, shared with its upload task.
    _memory: Arc<OwnedSemaphorePermit>,
}

/// An upload's part pipeline: what is durable, what is in flight.
pub(super) struct Core {
    /// The state the last `sync` (or checkpoint) made durable.
    durable: State,
    /// Index of the part being filled; parts before it are cut.
    next: usize,
    /// Bytes of part `next` in its spool file.
    filled: u64,
    /// ETags of finished parts not yet in `durable.parts`.
    done: BTreeMap<usize, String>,
    inflight: JoinSet<PartResult>,
    /// The live upload of each part in flight: its generation, to tell a
    /// replaced upload's late result from the live one's.
    live: HashMap<usize, (u64, AbortHandle)>,
    generation: u64,
    /// Parts cut since `spooled_upto` that are still uploading; a part
    /// that finished leaves (its memory goes back at once).
    unspooled: BTreeMap<usize, Unspooled>,
    /// Every cut part before this index is in its spool file or named by
    /// the durable state.
    spooled_upto: usize,
    /// Spool files before this one are deleted.
    first_file: usize,
}

impl Core {
    fn from_state(state: State) -> Core {
        let first_file = state.parts.len();
        let mut core = Core {
            durable: state,
            next: 0,
            filled: 0,
            done: BTreeMap::new(),
            inflight: JoinSet::new(),
            live: HashMap::new(),
            generation: 0,
            unspooled: BTreeMap::new(),
            spooled_upto: 0,
            first_file,
        };
        core.rewind();
        core
    }

    /// Back to the durable state: parts cut after it stop, the part being
    /// filled is the one the durable offset falls in.
    fn rewind(&mut self) {
        let part_size = self.durable.part_size;
        let offset = self.durable.offset();
        self.next = (offset / part_size) as usize;
        self.filled = offset % part_size;
        let next = self.next;
        self.live.retain(|idx, (_, abort)| {
            let keep = *idx < next;
            if !keep {
                abort.abort();
            }
            keep
        });
        self.done.retain(|idx, _| *idx < next);
        self.unspooled.retain(|idx, _| *idx < next);
        self.spooled_upto = next;
    }

    /// The durable parts followed by those finished since, in order.
    fn ordered(&self) -> Vec<String> {
        let mut parts = self.durable.parts.clone();
        while let Some(etag) = self.done.get(&parts.len()) {
            parts.push(etag.clone());
        }
        parts
    }

    fn reaped(
        &mut self,
        joined: Result<PartResult, tokio::task::JoinError>,
    ) -> Result<(), DataError> {
        let (idx, generation, result) = match joined {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => {
                return Err(DataError::Backend(crate::error::caused(
                    "part upload task failed",
                    e,
                )))
            }
        };
        if self.live.get(&idx).is_none_or(|(g, _)| *g != generation) {
            return Ok(()); // replaced or rewound
        }
        self.live.remove(&idx);
        let part = result.map_err(convert)?;
        self.done.insert(idx, part.content_id);
        // Its bytes are in the bucket: no need to hold them (nor their
        // memory) for the spool.
        self.unspooled.remove(&idx);
        Ok(())
    }

    fn reap_ready(&mut self) -> Result<(), DataError> {
        while let Some(joined) = self.inflight.try_join_next() {
            self.reaped(joined)?;
        }
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<(), DataError> {
        match self.inflight.join_next().await {
            Some(joined) => self.reaped(joined),
            None => Ok(()),
        }
    }
}

/// A request's writer on a spooled upload.
pub(super) struct SpoolWriter {
    data: ObjectData,
    spool: Arc<Spool>,
    id: String,
    dir: PathBuf,
    /// `None` only after a failure: the pipeline is then rebuilt from the
    /// record by the next writer.
    core: Option<Core>,
    length: Option<u64>,
    /// Bytes of part `core.next` from this request, not in its file yet.
    pending: Vec<Bytes>,
    pending_len: u64,
    /// Buffer memory for the part being filled (see the bucket writer).
    reserved: Option<OwnedSemaphorePermit>,
    permit: IoPermit,
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // Parked with its background parts; the next writer rewinds it to
        // its durable state if the record still is that state. A complete
        // upload's drained pipeline has nothing left for anyone.
        if let Some(core) = self.core.take() {
            let complete = self.length == Some(core.durable.offset()) && core.live.is_empty();
            if !complete {
                self.spool.cores().insert(self.id.clone(), core);
            }
        }
    }
}

impl SpoolWriter {
    pub(super) fn open(
        data: ObjectData,
        spool: Arc<Spool>,
        id: String,
        state: State,
        length: Option<u64>,
        permit: IoPermit,
    ) -> SpoolWriter {
        let dir = spool.upload_dir(&id);
        let core = match spool.take(&id) {
            Some(mut core) if core.durable == state => {
                core.rewind();
                core
            }
            other => {
                if let Some(mut stale) = other {
                    stale.inflight.abort_all();
                }
                Core::from_state(state)
            }
        };
        let mut writer = SpoolWriter {
            data,
            spool,
            id,
            dir,
            core: Some(core),
            length,
            pending: Vec::new(),
            pending_len: 0,
            reserved: None,
            permit,
        };
        writer.upload_spooled_parts();
        writer
    }

    fn core(&mut self) -> Result<&mut Core, DataError> {
        self.core
            .as_mut()
            .ok_or_else(|| DataError::Backend("spool writer used after a failure".into()))
    }

    /// Starts the upload of every cut part that is only in its spool file
    /// (after a restart, or a part whose upload was stopped).
    fn upload_spooled_parts(&mut self) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let part_size = core.durable.part_size;
        let first = core.durable.parts.len();
        for idx in first..core.next {
            if core.done.contains_key(&idx) || core.live.contains_key(&idx) {
                continue;
            }
            let (data, dir) = (self.data.clone(), self.dir.clone());
            let (path, id) = (
                Path::from(core.durable.key.as_str()),
                core.durable.multipart_id.clone(),
            );
            let units = part_units(&data.tuning, part_size);
            core.generation += 1;
            let generation = core.generation;
            let abort = core.inflight.spawn(async move {
                let memory = data.memory.clone().acquire_many_owned(units).await;
                let bytes = match read_part(dir, idx, part_size).await {
                    Ok(b) => b,
                    Err(e) => {
                        return (
                            idx,
                            generation,
                            Err(object_store::Error::Generic {
                                store: "spool",
                                source: Box::new(e),
                            }),
                        )
                    }
                };
                let payload = PutPayload::from(bytes);
                let result = retry(&data.tuning, "put part", || {
                    data.store.put_part(&path, &id, idx, payload.clone())
                })
                .await;
                drop(memory);
                (idx, generation, result)
            });
            core.live.insert(idx, (generation, abort));
        }
    }

    async fn reserve(&mut self) -> Result<(), DataError> {
        if self.reserved.is_none() {
            let part_size = self.core()?.durable.part_size;
            let units = part_units(&self.data.tuning, part_size);
            let permit = self
                .data
                .memory
                .clone()
                .acquire_many_owned(units)
                .await
                .map_err(|_| DataError::Backend("buffer memory semaphore closed".into()))?;
            self.reserved = Some(permit);
        }
        Ok(())
    }

    fn take_pending(&mut self, n: u64) -> Vec<Bytes> {
        super::writer::take_front(&mut self.pending, &mut self.pending_len, n)
    }

    /// Cuts part `core.next` (its spooled start + pending bytes) and
    /// starts its upload.
    async fn cut_part(&mut self) -> Result<(), DataError> {
        let concurrency = self.data.tuning.part_concurrency.max(1);
        let (idx, part_size, filled) = {
            let core = self.core()?;
            (core.next, core.durable.part_size, core.filled)
        };
        if idx as u64 >= MAX_PARTS {
            return Err(DataError::LimitExceeded(format!(
                "upload exceeds {MAX_PARTS} parts of {part_size} bytes"
            )));
        }
        while self.core()?.live.len() >= concurrency {
            self.core()?.reap_one().await?;
        }
        self.reserve().await?;
        let memory = Arc::new(
            self.reserved
                .take()
                .ok_or_else(|| DataError::Backend("part cut without buffer memory".into()))?,
        );
        let mut chunks = Vec::new();
        if filled > 0 {
            chunks.push(read_part(self.dir.clone(), idx, filled).await?);
        }
        chunks.extend(self.take_pending(part_size - filled));
        let payload = PutPayload::from_iter(chunks);
        debug_assert_eq!(payload.content_length() as u64, part_size);

        let data = self.data.clone();
        let core = self.core()?;
        let path = Path::from(core.durable.key.as_str());
        let id = core.durable.multipart_id.clone();
        core.generation += 1;
        let generation = core.generation;
        let (upload, held) = (payload.clone(), memory.clone());
        let abort = core.inflight.spawn(async move {
            let result = retry(&data.tuning, "put part", || {
                data.store.put_part(&path, &id, idx, upload.clone())
            })
            .await;
            drop(held);
            (idx, generation, result)
        });
        core.live.insert(idx, (generation, abort));
        core.unspooled.insert(
            idx,
            Unspooled {
                payload,
                from: filled,
                _memory: memory,
            },
        );
        core.next += 1;
        core.filled = 0;
        Ok(())
    }

    async fn sync_inner(&mut self) -> Result<Durable, DataError> {
        let pending = std::mem::take(&mut self.pending);
        let pending_len = std::mem::replace(&mut self.pending_len, 0);
        let length = self.length;
        let core = self.core()?;
        core.reap_ready()?;
        let part_size = core.durable.part_size;
        let position = core.next as u64 * part_size + core.filled + pending_len;
        if length == Some(position) {
            // The finish follows: it needs the parts uploaded, not spooled.
            while !core.inflight.is_empty() {
                core.reap_one().await?;
            }
        }
        // A part that finished after a part still uploading is no longer
        // in memory: the state can only name it once those before it end.
        loop {
            let parts = core.ordered().len();
            let gap = (core.spooled_upto.max(parts)..core.next)
                .any(|idx| !core.unspooled.contains_key(&idx));
            if !gap || core.inflight.is_empty() {
                break;
            }
            core.reap_one().await?;
        }
        let parts = core.ordered();
        let mut writes = Vec::new();
        for (&idx, u) in &core.unspooled {
            if idx >= parts.len() {
                let mut skip = u.from as usize;
                let mut bytes = Vec::new();
                for b in u.payload.iter() {
                    if skip >= b.len() {
                        skip -= b.len();
                        continue;
                    }
                    bytes.push(b.slice(skip..));
                    skip = 0;
                }
                writes.push(FileWrite {
                    idx,
                    at: u.from,
                    bytes,
                });
            }
        }
        if pending_len > 0 {
            writes.push(FileWrite {
                idx: core.next,
                at: core.filled,
                bytes: pending,
            });
        }
        if !writes.is_empty() {
            let dir = self.dir.clone();
            self.permit
                .run_detached(async move {
                    tokio::task::spawn_blocking(move || write_durably(&dir, writes)).await
                })
                .await
                .map_err(|e| {
                    DataError::Backend(crate::error::caused("spool write task failed", e))
                })?
                .map_err(|e| {
                    DataError::Backend(crate::error::caused("spool write task failed", e))
                })??;
        }
        let core = self.core()?;
        core.unspooled.clear();
        core.spooled_upto = core.next;
        core.filled += pending_len;
        let k = parts.len();
        core.done.retain(|idx, _| *idx >= k);
        core.durable = State {
            tail: position - k as u64 * part_size,
            parts,
            ..core.durable.clone()
        };
        // Only bytes the request holds in memory keep their reservation.
        self.reserved = None;
        let core = self.core()?;
        Ok(Durable {
            offset: core.durable.offset(),
            storage: core.durable.to_value(),
        })
    }
}

#[async_trait]
impl UploadWriter for SpoolWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DataError> {
        self.reserve().await?;
        self.pending_len += chunk.len() as u64;
        self.pending.push(chunk);
        loop {
            let pending_len = self.pending_len;
            let core = self.core()?;
            if core.filled + pending_len < core.durable.part_size {
                break;
            }
            if let Err(e) = self.cut_part().await {
                self.fail();
                return Err(e);
            }
            if self.pending_len > 0 {
                self.reserve().await?;
            }
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Durable, DataError> {
        let synced = self.sync_inner().await;
        if synced.is_err() {
            self.fail();
        }
        synced
    }

    /// The parts uploaded so far, named without spooling anything: a
    /// checkpoint that never waits for the pipeline (as on the bucket path).
    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, DataError> {
        let core = self.core()?;
        if let Err(e) = core.reap_ready() {
            self.fail();
            return Err(e);
        }
        let core = self.core()?;
        let parts = core.ordered();
        let uploaded = parts.len() as u64 * core.durable.part_size;
        if uploaded > core.durable.offset() {
            let k = parts.len();
            core.done.retain(|idx, _| *idx >= k);
            core.unspooled.retain(|idx, _| *idx >= k);
            core.durable = State {
                tail: 0,
                parts,
                ..core.durable.clone()
            };
        }
        let durable = Durable {
            offset: core.durable.offset(),
            storage: core.durable.to_value(),
        };
        Ok(Some(Box::pin(std::future::ready(Ok(durable)))))
    }

    async fn committed(&mut self) {
        // Files of parts the recorded state names by ETag are garbage.
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let recorded = core.durable.parts.len();
        if core.first_file >= recorded {
            return;
        }
        let (dir, from) = (self.dir.clone(), core.first_file);
        core.first_file = recorded;
        let removed = self
            .permit
            .run_detached(async move {
                tokio::task::spawn_blocking(move || {
                    for idx in from..recorded {
                        match std::fs::remove_file(dir.join(idx.to_string())) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                            _ => {}
                        }
                    }
                    Ok(())
                })
                .await
            })
            .await;
        if let Ok(Ok(Err(e))) = removed {
            tracing::warn!(upload = %self.id, error = %e, "deleting spooled parts failed");
        }
    }

    async fn discard(&mut self) -> Result<Durable, DataError> {
        self.pending.clear();
        self.pending_len = 0;
        self.reserved = None;
        let core = self.core()?;
        core.rewind();
        let durable = Durable {
            offset: core.durable.offset(),
            storage: core.durable.to_value(),
        };
        self.upload_spooled_parts();
        Ok(durable)
    }
}

impl SpoolWriter {
    /// After a failure the pipeline is not parked: the next writer
    /// rebuilds it from the record and the spool files.
    fn fail(&mut self) {
        if let Some(mut core) = self.core.take() {
            core.inflight.abort_all();
        }
        self.pending.clear();
        self.pending_len = 0;
        self.reserved = None;
    }
}

/// Finishes a spooled upload: every part, from the pipeline's ETags or
/// uploaded from its spool file, then the completion (or one PUT when the
/// upload is smaller than a part). Returns whether parts were completed.
pub(super) async fn upload_rest(
    data: &ObjectData,
    spool: &Spool,
    id: &str,
    state: &State,
    offset: u64,
) -> Result<Option<Vec<PartId>>, DataError> {
    let mut etags = spool.collect(id, state).await;
    let dir = spool.upload_dir(id);
    let part_size = state.part_size;
    if offset < part_size && etags.is_empty() {
        // Fits in one request: the caller PUTs it.
        return Ok(None);
    }
    let count = offset.div_ceil(part_size) as usize;
    let path = Path::from(state.key.as_str());
    let mut parts = Vec::with_capacity(count);
    for idx in 0..count {
        if let Some(etag) = etags.remove(&idx) {
            parts.push(PartId { content_id: etag });
            continue;
        }
        let len = part_size.min(offset - idx as u64 * part_size);
        let payload = PutPayload::from(read_part(dir.clone(), idx, len).await?);
        let id = state.multipart_id.clone();
        let part = retry(&data.tuning, "put part", || {
            data.store.put_part(&path, &id, idx, payload.clone())
        })
        .await
        .map_err(convert)?;
        parts.push(part);
    }
    Ok(Some(parts))
}
