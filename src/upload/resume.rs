//! Finishing what an earlier request left short of its end: sealing an
//! upload whose every byte arrived but which was never sealed (a crash, a
//! backend that failed or a pre-finish hook that refused between the last
//! byte and the seal), and assembling a final upload whose assembly failed
//! or was interrupted. `Engine::head` takes these steps, as it is what a
//! client sends before resuming; for either upload it has nothing left to
//! send.

use super::entry::Entered;
use super::{Engine, UploadError};
use crate::hooks::RequestInfo;
use crate::meta::MetaError;
use crate::model::UploadInfo;

impl Engine {
    /// Seals the upload just entered if every byte arrived and it is not
    /// sealed yet; returns its record, sealed or as it was. The lock is let
    /// go before the finish's consequences (assembling the final uploads
    /// that waited for a part), which enter other uploads.
    pub(super) async fn resume_sealing(
        &self,
        entered: Entered<'_>,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        let Entered {
            lock,
            permit,
            mut info,
        } = entered;
        if !info.is_complete() || info.finished || info.is_final() {
            return Ok(info);
        }
        match self.seal(&mut info, ctx, &permit).await {
            // Another instance wrote first (this one's lease lapsed
            // meanwhile): what it recorded is the answer.
            Err(UploadError::Meta(MetaError::Stale(_))) => return self.load(&info.id).await,
            sealed => sealed?,
        }
        drop(permit);
        drop(lock);
        self.on_finished(&info).await;
        Ok(info)
    }

    /// Assembles final upload `info` if it is not finished and its parts
    /// all are; returns its record, assembled or as it was.
    pub(super) async fn resume_assembly(
        &self,
        info: UploadInfo,
    ) -> Result<UploadInfo, UploadError> {
        if !info.is_final() || info.finished {
            return Ok(info);
        }
        Ok(self.try_assemble(&info.id).await?.unwrap_or(info))
    }
}
