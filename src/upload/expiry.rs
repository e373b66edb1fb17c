//! Background removal of expired unfinished uploads, and, once at start,
//! of what a crash left of creations that were never recorded.

use super::entry::{Entered, Entry};
use super::{Engine, UploadError};
use crate::model::now_secs;
use futures_util::StreamExt;
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
            let Entered { lock, permit, info } = match self.enter(&id, Entry::Sweep).await {
                Ok(entered) if entered.info.is_expired(now) => entered,
                // Renewed by a write since it was listed, or removed.
                Ok(_) | Err(UploadError::NotFound | UploadError::Gone) => continue,
                // Busy with a request, or with work a dropped request left
                // running: next sweep.
                Err(UploadError::Locked) => continue,
                Err(e) => return Err(e),
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

impl Engine {
    /// Removes what an earlier run stored for creations it never recorded
    /// (see [`crate::data::DataStore::unrecorded`]): an id with no record,
    /// or only a tombstone, was never acknowledged or is gone. Returns how
    /// many were removed. On a meta store error nothing is removed; the
    /// next start asks again.
    ///
    /// A crash leaves such bytes only for the creations in flight, while
    /// the uploads its run made have records. When the meta store knows
    /// fewer of the ids than it does not, it is more likely not the store
    /// these files were written with (a wrong `--meta`): nothing is
    /// removed then, and a warning says so.
    pub async fn remove_unrecorded(&self) -> Result<usize, UploadError> {
        let ids = self.data.unrecorded();
        if ids.is_empty() {
            return Ok(0);
        }
        let meta = &self.meta;
        let found: Vec<_> = futures_util::stream::iter(ids)
            .map(|id| async move { (meta.get(&id).await, id) })
            .buffer_unordered(LOOKUPS)
            .collect()
            .await;
        // Ids with no record at all, and the number the store knows.
        let (mut orphans, mut unknown, mut known) = (Vec::new(), 0usize, 0usize);
        for (lookup, id) in found {
            match lookup? {
                Some(crate::meta::Lookup::Live(_)) => known += 1,
                Some(crate::meta::Lookup::Gone) => {
                    known += 1;
                    orphans.push(id);
                }
                None => {
                    unknown += 1;
                    orphans.push(id);
                }
            }
        }
        if unknown > known {
            tracing::warn!(
                unknown,
                known,
                "most upload files with bytes an earlier run made have no record in the meta store; none removed, in case it is not the store this data directory was used with"
            );
            return Ok(0);
        }
        Ok(self.data.remove_unrecorded(&orphans).await?)
    }
}

/// Record lookups in flight while checking an earlier run's files.
const LOOKUPS: usize = 16;

/// Runs `sweep_expired` every `interval` until the task is dropped, after
/// removing what an earlier run left of creations it never recorded.
pub async fn run_sweeper(engine: Arc<Engine>, interval: Duration) {
    match engine.remove_unrecorded().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed the bytes of creations an earlier run never recorded"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "checking an earlier run's upload files failed; the next start checks again")
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataStore, FileStore};
    use crate::hooks::RequestInfo;
    use crate::meta::{MetaStore, SledMetaStore};
    use crate::protocol::UploadId;
    use crate::upload::{EngineConfig, NewUpload};

    /// An id the store made a file for ahead of use (its first batch is
    /// made in the background when it opens).
    async fn pooled(data: &FileStore) -> UploadId {
        for _ in 0..500 {
            if let Some(id) = data.fresh_id() {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no file made ahead of use");
    }

    /// The store at `root` opened again, once the earlier one has ended
    /// and its `files` with bytes are there to check (the earlier store's
    /// batch runs on the blocking pool and may hold its manifest a moment
    /// longer).
    async fn reopened(root: &std::path::Path, files: usize) -> Arc<FileStore> {
        for _ in 0..500 {
            let data = Arc::new(FileStore::open(root).expect("data"));
            if data.unrecorded().len() == files {
                return data;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the earlier run's files were never there to check");
    }

    /// Bytes a crash left in files made ahead of use go when their id has
    /// no record (never acknowledged) or only a tombstone; an upload's stay.
    #[tokio::test]
    async fn an_earlier_runs_unrecorded_bytes_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let meta = Arc::new(SledMetaStore::open(&dir.path().join("meta")).expect("meta"));
        let ctx = RequestInfo::default();
        let (recorded, orphan, removed) = {
            let data = Arc::new(FileStore::open(&root).expect("data"));
            let engine = Engine::new(meta.clone(), data.clone(), EngineConfig::default());
            let mut ids = Vec::new();
            for n in 0..3 {
                let id = pooled(&data).await;
                if n != 1 {
                    let new = NewUpload {
                        id: Some(id.clone()),
                        length: Some(100),
                        ..NewUpload::default()
                    };
                    engine.create(new, &ctx).await.expect("create");
                }
                std::fs::write(root.join(id.as_str()), b"bytes").expect("write");
                ids.push(id);
            }
            let Some(crate::meta::Lookup::Live(record)) = meta.get(&ids[2]).await.expect("get")
            else {
                panic!("no record");
            };
            meta.remove(&record).await.expect("remove");
            (ids[0].clone(), ids[1].clone(), ids[2].clone())
        };
        let data = reopened(&root, 3).await;
        let engine = Engine::new(meta.clone(), data, EngineConfig::default());
        assert_eq!(engine.remove_unrecorded().await.expect("sweep"), 2);
        assert!(root.join(recorded.as_str()).exists());
        assert!(!root.join(orphan.as_str()).exists());
        assert!(!root.join(removed.as_str()).exists());
        assert_eq!(engine.remove_unrecorded().await.expect("again"), 0);
    }

    /// Opened with a meta store that knows none of an earlier run's
    /// uploads (a wrong `--meta`), nothing is removed.
    #[tokio::test]
    async fn files_a_meta_store_does_not_know_are_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let ids = {
            let data = FileStore::open(&root).expect("data");
            let mut ids = Vec::new();
            for _ in 0..3 {
                let id = pooled(&data).await;
                std::fs::write(root.join(id.as_str()), b"bytes").expect("write");
                ids.push(id);
            }
            ids
        };
        let other = Arc::new(SledMetaStore::open(&dir.path().join("other")).expect("meta"));
        let data = reopened(&root, 3).await;
        let engine = Engine::new(other, data, EngineConfig::default());
        assert_eq!(engine.remove_unrecorded().await.expect("sweep"), 0);
        for id in &ids {
            assert!(root.join(id.as_str()).exists(), "{id} removed");
        }
    }
}
