//! Background removal of expired unfinished uploads.

use super::lock::Contend;
use super::{Engine, UploadError};
use crate::model::now_secs;
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Duration;

/// Uploads examined per sweep batch.
const BATCH: usize = 256;
/// How long terminated/expired ids keep answering 410 before 404.
const TOMBSTONE_TTL: u64 = 7 * 24 * 3600;

impl Engine {
    /// Removes expired uploads (bytes, then state). Uploads busy with a
    /// request are left for the next sweep. Returns how many were removed.
    pub async fn sweep_expired(&self) -> Result<usize, UploadError> {
        // One sweeper at a time across instances sharing the meta store.
        let Some(_job) = self.meta.job_lock("expiry-sweep").await? else {
            return Ok(0);
        };
        let now = now_secs();
        let mut removed = 0;
        for id in self.meta.expired(now, BATCH).await? {
            let Ok(lock) = self
                .locker
                .acquire(&id, Duration::ZERO, Contend::Wait)
                .await
            else {
                continue;
            };
            // Work left running by a dropped request: next sweep.
            let Some(permit) = self.gates.acquire(id.as_str()).now_or_never() else {
                continue;
            };
            let info = match self.meta.get(&id).await? {
                Some(crate::meta::Lookup::Live(info)) if info.is_expired(now) => *info,
                _ => continue,
            };
            if let Err(e) = self.remove(&info, &permit).await {
                tracing::warn!(upload = %id, error = %e, "removing expired upload failed; retried next sweep");
                continue;
            }
            drop(lock);
            tracing::info!(upload = %id, "expired upload removed");
            // metrics
            metrics::counter!(crate::telemetry::UPLOADS_EXPIRED).increment(1);
            self.cascade_removal(&info).await;
            removed += 1;
        }
        self.meta
            .prune_tombstones(now.saturating_sub(TOMBSTONE_TTL))
            .await?;
        Ok(removed)
    }
}

/// Runs `sweep_expired` every `interval` until the task is dropped.
pub async fn run_sweeper(engine: Arc<Engine>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match engine.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expiry sweep"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
        // Post-finish hooks still owed (the receiver was down) are retried.
        if let Err(e) = engine.resume_finish_hooks().await {
            tracing::warn!(error = %e, "retrying owed post-finish hooks failed");
        }
    }
}
