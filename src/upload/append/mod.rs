//! Appending a request body to an upload (PATCH, creation-with-upload).

use super::entry::{Entered, Entry};
use super::lock::UploadLock;
use super::persist::{checkpointed, Behind};
use super::{Engine, Held, Hold, NewUpload, UploadError};
use crate::data::{IoPermit, UploadWriter};
use crate::hooks::{HookType, RequestInfo};
use crate::meta::MetaError;
use crate::model::UploadInfo;
use crate::protocol::checksum::Hasher;
use crate::protocol::{Checksum, UploadId};
use bytes::Bytes;
use futures_util::future::OptionFuture;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::time::Duration;

/// Largest creation-with-upload body whose record is written without a
/// flush of its own ([`Hold::LockDeferred`]).
const DEFER_BODY_MAX: u64 = 1024 * 1024;

/// An append after header parsing.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    /// `Upload-Offset` of the request.
    pub offset: u64,
    /// `Upload-Length` sent with the PATCH, for deferred-length uploads.
    pub length: Option<u64>,
    /// `Upload-Checksum` of the body.
    pub checksum: Option<Checksum>,
    /// `Content-Length` of the body, when known.
    pub content_length: Option<u64>,
    /// The client says this body ends the upload (IETF `Upload-Complete: ?1`):
    /// the upload length becomes the offset after the body. With a known
    /// `content_length` it is fixed before the body is read, so a broken
    /// body cannot change it later. Conflicts with a known length give
    /// `InconsistentLength`.
    pub complete: bool,
}

/// The `min_body_rate` check of one request body.
struct SlowBody {
    rate: u64,
    window: Duration,
    /// Waiting for the client in the current window, and what it brought.
    waited: Duration,
    bytes: u64,
}

impl SlowBody {
    /// Counts `bytes` that took `waited` to arrive; an error once a whole
    /// window of waiting brought less than the rate asks for.
    fn arrived(&mut self, waited: Duration, bytes: u64) -> Result<(), String> {
        self.waited += waited;
        self.bytes += bytes;
        if self.waited < self.window {
            return Ok(());
        }
        let wanted = (self.rate as f64 * self.waited.as_secs_f64()) as u64;
        if self.bytes < wanted {
            return Err(format!(
                "body slower than {} bytes/s ({} bytes in {:.1}s)",
                self.rate,
                self.bytes,
                self.waited.as_secs_f64()
            ));
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }
}

/// Most bytes an upload may hold after an append.
struct Limit {
    /// Its length, else the size limit (`None`: no limit).
    bytes: Option<u64>,
    max_size: Option<u64>,
}

impl Limit {
    /// The error for a body that runs past [`Limit::bytes`].
    fn exceeded(&self, info: &UploadInfo) -> UploadError {
        match (info.length, self.max_size) {
            (Some(length), _) => UploadError::ExceedsLength { length },
            (None, Some(max)) => UploadError::TooLarge { max },
            (None, None) => UploadError::TooLarge { max: u64::MAX },
        }
    }
}

/// One append's body as it is written.
struct Chunks {
    limit: Limit,
    hasher: Option<Hasher>,
    writer: Option<Box<dyn UploadWriter>>,
    position: u64,
    /// Where a body of known length ends: no checkpoint there, the
    /// closing persist follows at once.
    body_end: Option<u64>,
    since_checkpoint: u64,
    /// A checkpoint running behind the body (its data sync, then its
    /// meta save), where the writer can sync while writing goes on.
    behind: Option<Behind>,
    /// The metrics handle, looked up once per request.
    received: metrics::Counter,
}

impl Chunks {
    fn new(info: &UploadInfo, req: &AppendRequest, limit: Limit) -> Self {
        Chunks {
            limit,
            hasher: req.checksum.as_ref().map(|c| c.algorithm.hasher()),
            writer: None,
            position: info.offset,
            body_end: req.content_length.map(|cl| info.offset.saturating_add(cl)),
            since_checkpoint: 0,
            behind: None,
            received: metrics::counter!(crate::telemetry::BYTES_RECEIVED),
        }
    }

    /// Waits for a checkpoint still running behind the body.
    async fn catch_up(&mut self, info: &mut UploadInfo) -> Result<(), UploadError> {
        if let Some(task) = self.behind.take() {
            checkpointed(info, task.await)?;
            if let Some(w) = self.writer.as_mut() {
                w.committed().await;
            }
        }
        Ok(())
    }

    async fn discard(&mut self) -> Result<(), UploadError> {
        if let Some(mut w) = self.writer.take() {
            w.discard().await?;
        }
        Ok(())
    }

    /// Drops what cannot count: a body past the limit, one that fails its
    /// checksum, or an unverifiable one (stopped or broken with a
    /// checksum). `Ok(false)`: stopped that way, nothing to record.
    async fn verify(
        &mut self,
        end: &End,
        info: &UploadInfo,
        req: &AppendRequest,
    ) -> Result<bool, UploadError> {
        match end {
            End::TooMuch => {
                self.discard().await?;
                Err(self.limit.exceeded(info))
            }
            End::Complete => {
                if let (Some(h), Some(expected)) = (self.hasher.take(), req.checksum.as_ref()) {
                    if h.finalize() != expected.digest {
                        self.discard().await?;
                        return Err(UploadError::ChecksumMismatch);
                    }
                }
                Ok(true)
            }
            End::Stopped | End::Broken(_) if self.hasher.is_some() => {
                // Bytes that cannot be verified never count.
                self.discard().await?;
                match end {
                    End::Broken(e) => Err(UploadError::Body(e.clone())),
                    _ => Ok(false),
                }
            }
            End::Stopped | End::Broken(_) => Ok(true),
        }
    }
}

/// How the body loop ended.
enum End {
    Complete,
    /// Another request asked this one to stop.
    Stopped,
    Broken(String),
    /// The body ran past the length (or the size limit when deferred).
    TooMuch,
}

impl Engine {
    /// Appends `body` to upload `id` at `req.offset`. Every byte reported in
    /// the returned offset is durable. When another request asks this one to
    /// stop, the bytes so far are kept and `Ok` reports the shorter offset.
    pub async fn append<S, E>(
        &self,
        id: &UploadId,
        req: AppendRequest,
        body: S,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.check_access(id, ctx).await?;
        let entered = self.enter(id, Entry::Request).await?;
        self.append_held(entered, req, body, ctx).await
    }

    /// Creates an upload and appends the creation request's body to it
    /// (creation-with-upload). Returns the created record, and how the
    /// append went: the upload exists either way.
    ///
    /// When the id is generated here, its lock is taken before the record
    /// is written and held through the append, so the record written is
    /// the one appended to: no read back in between (one trip to the meta
    /// store fewer per small upload).
    pub async fn create_with_body<S, E>(
        &self,
        new: NewUpload,
        req: AppendRequest,
        body: S,
        ctx: &RequestInfo,
    ) -> Result<(UploadInfo, Result<UploadInfo, UploadError>), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        // A crash between the body's sync and the save that flushes the
        // deferred record leaves the body's bytes without a record (never
        // acknowledged, never reached by expiry): deferring only small
        // bodies bounds what such a crash leaves on disk.
        let hold = match req.content_length {
            Some(len) if len <= DEFER_BODY_MAX => Hold::LockDeferred,
            _ => Hold::Lock,
        };
        let (info, held) = self.create_held(new, ctx, hold).await?;
        let Some(Held { lock, deferred }) = held else {
            let appended = self.append(&info.id, req, body, ctx).await;
            return Ok((info, appended));
        };
        let appended = async {
            self.check_access(&info.id, ctx).await?;
            let entered = self.enter_created(lock, info.clone()).await?;
            self.append_held(entered, req, body, ctx).await
        }
        .await;
        // An append that acknowledges bytes saved the record after it was
        // written, and that save's durability covers its creation.
        let saved = matches!(&appended, Ok(done) if done.offset > 0);
        if deferred && !saved {
            self.meta.sync().await?;
        }
        Ok((info, appended))
    }

    /// The rest of an append, the upload entered.
    async fn append_held<S, E>(
        &self,
        entered: Entered<'_>,
        req: AppendRequest,
        body: S,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let Entered { lock, permit, info } = entered;
        if self.take_stop_request(&info.id) {
            return self.stop_by_hook(&info, ctx, &permit).await;
        }
        let info = self
            .append_locked(&lock, &permit, info, req, body, ctx)
            .await?;
        drop(permit);
        drop(lock);
        if info.finished {
            self.on_finished(&info).await;
        }
        Ok(info)
    }

    /// An append with the upload entered, in the steps of a PATCH: check
    /// the request against the record, write the body chunk by chunk, then
    /// keep or drop what arrived, record it, and finish the upload if it is
    /// complete.
    async fn append_locked<S, E>(
        &self,
        lock: &UploadLock<'_>,
        permit: &IoPermit,
        mut info: UploadInfo,
        req: AppendRequest,
        mut body: S,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let limit = self.check_append(&mut info, &req, ctx)?;
        let mut chunks = Chunks::new(&info, &req, limit);
        let end = self
            .receive(lock, permit, &mut info, &mut chunks, &mut body, ctx)
            .await?;
        // Every later sync, discard and save comes after the checkpoint's.
        chunks.catch_up(&mut info).await?;
        if !chunks.verify(&end, &info, &req).await? {
            return Ok(info);
        }
        self.record_body(&end, &mut chunks, &mut info, &req, permit, ctx)
            .await?;
        self.finish_append(end, info, &req, permit, ctx).await
    }

    /// Checks the request against the record before any byte is read, and
    /// takes the length it sets: the offset, a length sent with a deferred
    /// upload, a completing body's length, and the size limits.
    fn check_append(
        &self,
        info: &mut UploadInfo,
        req: &AppendRequest,
        ctx: &RequestInfo,
    ) -> Result<Limit, UploadError> {
        if info.is_final() {
            return Err(UploadError::FinalNotPatchable);
        }
        if req.offset != info.offset {
            return Err(UploadError::OffsetMismatch {
                requested: req.offset,
                current: info.offset,
            });
        }
        if let Some(length) = req.length {
            match info.length {
                Some(current) if current != length => {
                    return Err(UploadError::LengthImmutable(current))
                }
                Some(_) => {}
                None => {
                    self.check_size(length, ctx)?;
                    if length < info.offset {
                        return Err(UploadError::LengthBelowOffset {
                            length,
                            offset: info.offset,
                        });
                    }
                    info.length = Some(length);
                }
            }
        }
        if req.complete {
            if let Some(cl) = req.content_length {
                let declared = info.offset.saturating_add(cl);
                match info.length {
                    Some(length) if length != declared => {
                        return Err(UploadError::InconsistentLength { length, declared })
                    }
                    Some(_) => {}
                    None => {
                        self.check_size(declared, ctx)?;
                        info.length = Some(declared);
                    }
                }
            }
        }
        let max_size = self.size_limit(ctx);
        let limit = Limit {
            bytes: info.length.or(max_size),
            max_size,
        };
        if let (Some(cl), Some(most)) = (req.content_length, limit.bytes) {
            if info.offset.saturating_add(cl) > most {
                return Err(limit.exceeded(info));
            }
        }
        Ok(limit)
    }

    /// Reads the body until it ends, breaks, stalls, runs too slowly or
    /// past the limit, or another request asks this one to stop. Finished
    /// background checkpoints are taken in as they end.
    async fn receive<S, E>(
        &self,
        lock: &UploadLock<'_>,
        permit: &IoPermit,
        info: &mut UploadInfo,
        chunks: &mut Chunks,
        body: &mut S,
        ctx: &RequestInfo,
    ) -> Result<End, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let idle = self.config.body_idle_timeout;
        // Set up once, not per chunk: the stop signal and the idle timer
        // (moved only when it fires, from the time of the last chunk).
        let stop = lock.stop_requested();
        tokio::pin!(stop);
        let mut last_data = tokio::time::Instant::now();
        let idle_timer = tokio::time::sleep_until(last_data + idle);
        tokio::pin!(idle_timer);
        // The slowest body allowed: time spent waiting for the client (not
        // for storage) and the bytes it brought, checked per idle timeout.
        let mut slow = self.config.min_body_rate.map(|rate| SlowBody {
            rate,
            window: idle.max(Duration::from_millis(100)),
            waited: Duration::ZERO,
            bytes: 0,
        });

        let mut waiting_since = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stop => return Ok(End::Stopped),
                // Before the body: a fast body would otherwise hide it.
                Some(done) = OptionFuture::from(chunks.behind.as_mut()), if chunks.behind.is_some() => {
                    chunks.behind = None;
                    checkpointed(info, done)?;
                    if let Some(w) = chunks.writer.as_mut() {
                        w.committed().await;
                    }
                    continue;
                }
                next = body.next() => next,
                _ = &mut idle_timer => {
                    let deadline = last_data + idle;
                    if deadline <= tokio::time::Instant::now() {
                        return Ok(End::Broken(format!("no data for {}s", idle.as_secs())));
                    }
                    idle_timer.as_mut().reset(deadline);
                    continue;
                }
            };
            let chunk = match next {
                None => return Ok(End::Complete),
                Some(Err(e)) => return Ok(End::Broken(e.to_string())),
                Some(Ok(chunk)) => chunk,
            };
            if let Some(slow) = slow.as_mut() {
                if let Err(e) = slow.arrived(waiting_since.elapsed(), chunk.len() as u64) {
                    return Ok(End::Broken(e));
                }
            }
            waiting_since = tokio::time::Instant::now();
            if chunk.is_empty() {
                continue;
            }
            let len = chunk.len() as u64;
            if chunks
                .limit
                .bytes
                .is_some_and(|most| chunks.position.saturating_add(len) > most)
            {
                return Ok(End::TooMuch);
            }
            self.write_chunk(info, chunks, chunk, permit, ctx).await?;
            // Idle time counts from here: a slow disk is not an idle client.
            last_data = tokio::time::Instant::now();
            waiting_since = last_data;
        }
    }

    /// Writes one chunk, and starts a checkpoint behind the body when
    /// enough bytes arrived since the last one. A write that fails keeps
    /// what landed whole where it can (a full disk).
    async fn write_chunk(
        &self,
        info: &mut UploadInfo,
        chunks: &mut Chunks,
        chunk: Bytes,
        permit: &IoPermit,
        ctx: &RequestInfo,
    ) -> Result<(), UploadError> {
        let len = chunk.len() as u64;
        if let Some(h) = chunks.hasher.as_mut() {
            h.update(&chunk);
        }
        let w = match chunks.writer.as_mut() {
            Some(w) => w,
            None => chunks
                .writer
                .insert(self.data.writer(info, permit.clone()).await?),
        };
        if let Err(e) = w.write(chunk).await {
            // The checkpoint may record bytes `discard` would cut off;
            // once saved, what it made redundant can go, as on the
            // other paths.
            if let Some(task) = chunks.behind.take() {
                checkpointed(info, task.await)?;
                w.committed().await;
            }
            let checksummed = chunks.hasher.is_some();
            return Err(self
                .keep_what_landed(info, w.as_mut(), permit, e.into(), checksummed)
                .await);
        }
        chunks.position += len;
        chunks.since_checkpoint += len;
        self.progress(info, chunks.position, ctx);
        chunks.received.increment(len);
        // One checkpoint at a time: a slow one defers the next.
        if chunks.hasher.is_none()
            && chunks.since_checkpoint >= self.config.checkpoint_bytes
            && chunks.behind.is_none()
            && chunks.body_end != Some(chunks.position)
        {
            chunks.since_checkpoint = 0;
            match w.checkpoint().await {
                Ok(Some(sync)) => chunks.behind = Some(self.save_behind(info, sync, permit)),
                Ok(None) => self.persist(info, w.as_mut(), permit).await?,
                Err(e) => {
                    return Err(self
                        .keep_what_landed(info, w.as_mut(), permit, e.into(), false)
                        .await)
                }
            }
        }
        Ok(())
    }

    /// Makes what the body brought durable and records it; the last bytes
    /// of an upload that seals in the meta store alone are sealed in the
    /// same save. A sync that fails because the disk filled up keeps what
    /// landed.
    async fn record_body(
        &self,
        end: &End,
        chunks: &mut Chunks,
        info: &mut UploadInfo,
        req: &AppendRequest,
        permit: &IoPermit,
        ctx: &RequestInfo,
    ) -> Result<(), UploadError> {
        if let Some(w) = chunks.writer.as_mut() {
            if let Err(e) = self.make_durable(info, w.as_mut()).await {
                return Err(self
                    .keep_what_landed(info, w.as_mut(), permit, e, false)
                    .await);
            }
        }
        let closing = match chunks.writer.as_mut() {
            Some(w) if matches!(end, End::Complete) && !req.complete => {
                async {
                    if info.is_complete() && !info.finished && self.seals_in_meta_only(info) {
                        // The last bytes, and sealing touches nothing but
                        // the meta store: one save records the offset and
                        // the seal.
                        self.seal(info, ctx, permit).await?;
                    } else {
                        self.save_progress(info, permit).await?;
                    }
                    w.committed().await;
                    Ok(())
                }
                .await
            }
            Some(w) => {
                async {
                    self.save_progress(info, permit).await?;
                    w.committed().await;
                    Ok(())
                }
                .await
            }
            None => self.save_progress(info, permit).await,
        };
        if let Err(e) = closing {
            if let (UploadError::Meta(MetaError::Stale(_)), Some(w)) = (&e, chunks.writer.as_mut())
            {
                // Another writer recorded first: what this one staged for
                // its refused state is nobody's.
                w.abandon().await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// After the body is recorded: a stop a hook asked for, the length a
    /// completing body fixes, the seal of a complete upload, and the answer
    /// for how the body ended.
    async fn finish_append(
        &self,
        end: End,
        mut info: UploadInfo,
        req: &AppendRequest,
        permit: &IoPermit,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        if matches!(end, End::Stopped) && self.take_stop_request(&info.id) {
            return self.stop_by_hook(&info, ctx, permit).await;
        }
        if req.complete && matches!(end, End::Complete) {
            match info.length {
                None => {
                    info.length = Some(info.offset);
                    self.save_progress(&mut info, permit).await?;
                }
                Some(length) if length != info.offset => {
                    // The body ended early: what arrived is kept.
                    return Err(UploadError::InconsistentLength {
                        length,
                        declared: info.offset,
                    });
                }
                Some(_) => {}
            }
        }
        if info.is_complete() && !info.finished {
            self.seal(&mut info, ctx, permit).await?;
        }
        tracing::debug!(upload = %info.id, offset = info.offset, "append persisted");
        match end {
            End::Broken(e) => {
                tracing::info!(upload = %info.id, offset = info.offset, error = %e, "request body broke off; received bytes kept");
                Err(UploadError::Body(e))
            }
            End::Stopped => {
                tracing::info!(upload = %info.id, offset = info.offset, "append stopped (a newer request or shutdown); received bytes kept");
                Ok(info)
            }
            _ => Ok(info),
        }
    }

    /// A post-receive answer said `StopUpload`: the upload is removed.
    async fn stop_by_hook(
        &self,
        info: &UploadInfo,
        ctx: &RequestInfo,
        permit: &IoPermit,
    ) -> Result<UploadInfo, UploadError> {
        let owed = self.owe_terminate_event(info, ctx).await?;
        let removed = self.remove(info, permit).await;
        self.settle_terminate_event(owed, removed.is_ok()).await;
        removed?;
        tracing::info!(upload = %info.id, "upload stopped and removed at the hook's request");
        self.post_hook(HookType::PostTerminate, info, ctx);
        Err(UploadError::StoppedByHook)
    }
}

#[cfg(test)]
mod tests;
