//! Making an append's bytes durable and recording them: the save after a
//! sync, the checkpoint saved behind a running body, and the seal of a
//! complete upload. Saves and finishes run in tasks holding the upload's
//! I/O permit, so one left running by a dropped request ends before the
//! next request reads the record.

use super::{Engine, UploadError};
use crate::data::{Checkpoint, DataError, IoPermit, UploadWriter};
use crate::hooks::{HookType, RequestInfo};
use crate::meta::MetaError;
use crate::model::UploadInfo;

/// A checkpoint's task: the record as saved once its bytes were durable.
pub(super) type Behind = tokio::task::JoinHandle<Result<UploadInfo, UploadError>>;

/// Takes the offset a finished checkpoint recorded.
pub(super) fn checkpointed(
    info: &mut UploadInfo,
    done: Result<Result<UploadInfo, UploadError>, tokio::task::JoinError>,
) -> Result<(), UploadError> {
    let saved =
        done.map_err(|e| DataError::Backend(crate::error::caused("checkpoint task failed", e)))??;
    info.offset = saved.offset;
    info.storage = saved.storage;
    info.expires_at = saved.expires_at;
    info.version = saved.version;
    Ok(())
}

impl Engine {
    /// Makes the writer's bytes durable, then records the new offset.
    pub(super) async fn persist(
        &self,
        info: &mut UploadInfo,
        writer: &mut dyn UploadWriter,
        permit: &IoPermit,
    ) -> Result<(), UploadError> {
        self.make_durable(info, writer).await?;
        self.save_progress(info, permit).await?;
        writer.committed().await;
        Ok(())
    }

    /// Records the offset `sync` reaches once it ends, in a task holding
    /// `permit` (like [`Self::save_gated`]), while the body goes on.
    pub(super) fn save_behind(
        &self,
        info: &UploadInfo,
        sync: Checkpoint,
        permit: &IoPermit,
    ) -> Behind {
        let (meta, mut info) = (self.meta.clone(), info.clone());
        if !info.finished {
            info.expires_at = self.expiry_from_now();
        }
        permit.spawn_detached(async move {
            let durable = sync.await?;
            if durable.offset == info.offset && durable.storage == info.storage {
                return Ok(info); // nothing new is durable yet
            }
            info.offset = durable.offset;
            info.storage = durable.storage;
            meta.save(&mut info).await?;
            Ok(info)
        })
    }

    /// Ends an append whose `write` or `sync` failed with `error`. When the
    /// disk filled up, the bytes that reached it whole before the failure
    /// are made durable and recorded (unless a checksum must cover the
    /// whole body), so the client resumes after them; otherwise what
    /// followed the last durable point is forgotten. Returns the error
    /// to answer.
    pub(super) async fn keep_what_landed(
        &self,
        info: &mut UploadInfo,
        writer: &mut dyn UploadWriter,
        permit: &IoPermit,
        error: UploadError,
        checksummed: bool,
    ) -> UploadError {
        if !matches!(error, UploadError::Data(DataError::NoSpace(_))) || checksummed {
            let _ = writer.discard().await;
            return error;
        }
        match writer.salvage().await {
            Ok(durable) if durable.offset > info.offset => {
                let before = info.offset;
                info.offset = durable.offset;
                info.storage = durable.storage;
                match self.save_progress(info, permit).await {
                    Ok(()) => {
                        writer.committed().await;
                        tracing::warn!(upload = %info.id, from = before, offset = info.offset, "storage full; the bytes that landed are kept");
                    }
                    // Not recorded: the next writer cuts the file back to
                    // the recorded offset.
                    Err(e) => {
                        tracing::warn!(upload = %info.id, error = %e, "storage full, and recording the bytes that landed failed")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(upload = %info.id, error = %e, "storage full; salvaging failed")
            }
        }
        error
    }

    /// Makes the writer's bytes durable; the caller records the offset.
    pub(super) async fn make_durable(
        &self,
        info: &mut UploadInfo,
        writer: &mut dyn UploadWriter,
    ) -> Result<(), UploadError> {
        let durable = writer.sync().await?;
        info.offset = durable.offset;
        info.storage = durable.storage;
        Ok(())
    }

    /// Whether sealing `info` needs nothing but a meta store save: local
    /// files staying where they are, and no pre-finish hook that could
    /// reject. Then the final offset can be recorded by the seal's save
    /// alone; should that save fail, nothing was acknowledged and the
    /// unrecorded bytes are cut off by the next writer.
    pub(super) fn seals_in_meta_only(&self, info: &UploadInfo) -> bool {
        self.data.kind() == "file"
            && info.destination.is_none()
            && !self.hook_enabled(HookType::PreFinish)
    }

    pub(super) async fn save_progress(
        &self,
        info: &mut UploadInfo,
        permit: &IoPermit,
    ) -> Result<(), UploadError> {
        if !info.finished {
            info.expires_at = self.expiry_from_now();
        }
        self.save_gated(info, permit).await
    }

    /// Finishes the stored bytes (e.g. moves a file to its destination) in
    /// a task of its own holding `permit`, for the reason
    /// [`Self::save_gated`] gives: a finish left running by a dropped
    /// request must end before the next request seals or removes.
    pub(super) async fn finish_gated(
        &self,
        info: &UploadInfo,
        permit: &IoPermit,
    ) -> Result<serde_json::Value, UploadError> {
        let (data, info) = (self.data.clone(), info.clone());
        let storage = permit
            .run_detached(async move { data.finish(&info).await })
            .await
            .map_err(|e| DataError::Backend(crate::error::caused("finish task failed", e)))??;
        Ok(storage)
    }

    /// Saves `info` in a task of its own holding `permit`: if this request
    /// is dropped mid-save, the save still ends before the next request on
    /// the upload reads the record (and, being fenced by the record's
    /// version, a save landing later than that could change nothing).
    pub(super) async fn save_gated(
        &self,
        info: &mut UploadInfo,
        permit: &IoPermit,
    ) -> Result<(), UploadError> {
        let (meta, mut saved) = (self.meta.clone(), info.clone());
        info.version = permit
            .run_detached(async move { meta.save(&mut saved).await.map(|()| saved.version) })
            .await
            .map_err(|e| MetaError::Backend(crate::error::caused("meta save task failed", e)))??;
        Ok(())
    }

    /// Seals a complete upload in the data store, then records it finished.
    /// The pre-finish hook runs first; if it rejects or fails, the upload
    /// stays complete but unsealed and a later HEAD or PATCH tries again.
    pub(crate) async fn seal(
        &self,
        info: &mut UploadInfo,
        ctx: &RequestInfo,
        permit: &IoPermit,
    ) -> Result<(), UploadError> {
        if self.hook_enabled(HookType::PreFinish) {
            self.end_progress(&info.id).await;
        }
        self.pre_hook(HookType::PreFinish, info, ctx).await?;
        info.storage = self.finish_gated(info, permit).await?;
        info.finished = true;
        info.expires_at = self.finished_expiry();
        info.finish_hook_pending = self.owes_finish_hook();
        self.save_gated(info, permit).await?;
        tracing::info!(upload = %info.id, length = info.offset, "upload finished");
        self.deliver_finish_hook(info, ctx, false);
        // metrics
        metrics::counter!(crate::telemetry::UPLOADS_FINISHED).increment(1);
        Ok(())
    }
}
