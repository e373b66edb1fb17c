//! The concatenation extension: final uploads built from partial uploads,
//! possibly before those are finished (concatenation-unfinished).

use super::entry::{Entered, Entry};
use super::{Engine, UploadError};
use crate::hooks::RequestInfo;
use crate::model::{Concat, UploadInfo};
use crate::protocol::UploadId;

impl Engine {
    /// Creates a final upload from `parts`. It is assembled at once when
    /// every part is finished, else when the last one finishes.
    ///
    /// Each part may appear once, and the request must have access to every
    /// part as to any upload it reads (owner and pre-access hook): a final
    /// upload is a way to read its parts' bytes.
    pub(super) async fn create_final(
        &self,
        mut info: UploadInfo,
        parts: Vec<UploadId>,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        let mut seen = std::collections::HashSet::with_capacity(parts.len());
        if let Some(twice) = parts.iter().find(|p| !seen.insert(*p)) {
            return Err(UploadError::DuplicatePart(twice.clone()));
        }
        let loaded = self.load_parts(&parts).await?;
        for part in &loaded {
            self.access(part, ctx).await?;
        }
        let known: Option<u64> = loaded
            .iter()
            .try_fold(0u64, |sum, p| p.length.map(|l| sum.saturating_add(l)));
        if let Some(total) = known {
            self.check_size(total, ctx)?;
        }
        // With parts of deferred length the total is known only once they
        // finish: `--max-size` is checked again at assembly.
        info.length = known;
        info.concat = Concat::Final {
            parts: parts.clone(),
        };
        // A final upload lives as long as its parts: it is removed with them.
        info.expires_at = None;
        info.storage = self.data.create(&info).await?;
        self.meta.add_concat_waiters(&info.id, &parts).await?;
        self.meta.create(&info).await?;
        tracing::info!(upload = %info.id, parts = parts.len(), "final upload created");
        // Parts may have finished while the waiters were being recorded:
        // look again now that any later finish will find them.
        Ok(self.try_assemble(&info.id).await?.unwrap_or(info))
    }

    async fn load_parts(&self, parts: &[UploadId]) -> Result<Vec<UploadInfo>, UploadError> {
        let mut loaded = Vec::with_capacity(parts.len());
        for id in parts {
            let part = match self.load(id).await {
                Ok(p) => p,
                Err(UploadError::NotFound | UploadError::Gone) => {
                    return Err(UploadError::PartNotFound(id.clone()))
                }
                Err(e) => return Err(e),
            };
            if part.concat != Concat::Partial {
                return Err(UploadError::PartNotPartial(id.clone()));
            }
            loaded.push(part);
        }
        Ok(loaded)
    }

    /// Assembles final upload `id` if all its parts are finished. Returns
    /// the final's state when it is (now or already) finished.
    pub(super) async fn try_assemble(
        &self,
        id: &UploadId,
    ) -> Result<Option<UploadInfo>, UploadError> {
        // With the gate too: a removal a dropped DELETE left running on
        // this final upload ends before its record is read.
        let Entered {
            lock: _lock,
            permit: _permit,
            mut info,
        } = self.enter(id, Entry::Follow).await?;
        if info.finished {
            return Ok(Some(info));
        }
        let Concat::Final { parts } = info.concat.clone() else {
            return Ok(None);
        };
        let loaded = self.load_parts(&parts).await?;
        if !loaded.iter().all(|p| p.finished) {
            return Ok(None);
        }
        let total = loaded
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.offset));
        if let Some(max) = self.config.max_size.filter(|&max| total > max) {
            tracing::warn!(upload = %id, total, max, "final upload would exceed the size limit; not assembled");
            return Err(UploadError::TooLarge { max });
        }
        let mut complete = info.clone();
        complete.length = Some(total);
        complete.offset = total;
        // As for any upload: the application may veto the finish; a later
        // HEAD asks again.
        self.pre_hook(
            crate::hooks::HookType::PreFinish,
            &complete,
            &crate::hooks::RequestInfo::default(),
        )
        .await?;
        info.length = Some(total);
        // Copying the parts is the costly step: a bounded number at once.
        let _slot = self
            .assemblies
            .acquire()
            .await
            .map_err(|_| UploadError::Locked)?;
        info.storage = self.data.concatenate(&info, &loaded).await?;
        info.offset = total;
        // Moves the result to a hook-chosen destination where there is one.
        info.storage = self.data.finish(&info).await?;
        info.finished = true;
        info.expires_at = self.finished_expiry();
        info.finish_hook_pending = self.owes_finish_hook();
        self.meta.save(&mut info).await?;
        self.meta.remove_concat_waiters(&info.id, &parts).await?;
        tracing::info!(upload = %info.id, length = total, "final upload assembled");
        self.deliver_finish_hook(&info, &crate::hooks::RequestInfo::default(), false);
        // metrics
        metrics::counter!(crate::telemetry::UPLOADS_FINISHED).increment(1);
        Ok(Some(info))
    }

    /// After partial upload `partial` finished: assembles the finals that
    /// were waiting for it. Failures are logged; a later request retries.
    pub(super) async fn assemble_waiting_finals(&self, partial: &UploadId) {
        let finals = match self.meta.concat_waiters(partial).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(upload = %partial, error = %e, "listing waiting final uploads failed");
                return;
            }
        };
        for final_id in finals {
            if let Err(e) = self.try_assemble(&final_id).await {
                tracing::error!(upload = %final_id, error = %e, "assembling final upload failed");
            }
        }
    }

    /// After `removed` was terminated or expired: a final upload waiting
    /// for it can never complete, so it goes too.
    pub(crate) async fn cascade_removal(&self, removed: &UploadInfo) {
        if removed.concat != Concat::Partial {
            return;
        }
        let finals = match self.meta.concat_waiters(&removed.id).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(upload = %removed.id, error = %e, "listing waiting final uploads failed");
                return;
            }
        };
        for final_id in finals {
            let result = async {
                let entered = self.enter(&final_id, Entry::Follow).await?;
                if !entered.info.finished {
                    self.remove(&entered.info, &entered.permit).await?;
                }
                Ok::<_, UploadError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(upload = %final_id, part = %removed.id, "final upload removed with its part")
                }
                Err(e) => {
                    tracing::error!(upload = %final_id, error = %e, "removing final upload failed")
                }
            }
        }
    }
}
