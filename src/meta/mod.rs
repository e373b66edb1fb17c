//! Upload state storage. `sled` is the embedded default; other backends
//! implement the same trait and pass the same contract tests.

pub mod sled_store;

use crate::model::UploadInfo;
use crate::protocol::UploadId;
use async_trait::async_trait;

pub use sled_store::SledMetaStore;

/// Errors of a meta store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("upload {0} already exists")]
    AlreadyExists(UploadId),
    #[error("upload {0} not found")]
    NotFound(UploadId),
    #[error("corrupt record for {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("meta store backend: {0}")]
    Backend(String),
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Live(Box<UploadInfo>),
    /// Terminated or expired; remembered for a while so clients get 410.
    Gone,
}

/// Durable upload records. Every write is durable when its future resolves.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Stores a new record; fails with `AlreadyExists` if the id is taken
    /// (or was recently removed).
    async fn create(&self, info: &UploadInfo) -> Result<(), MetaError>;
    async fn get(&self, id: &UploadId) -> Result<Option<Lookup>, MetaError>;
    /// Replaces an existing record; `NotFound` if it was removed.
    async fn save(&self, info: &UploadInfo) -> Result<(), MetaError>;
    /// Removes a record and leaves a tombstone.
    async fn remove(&self, id: &UploadId) -> Result<(), MetaError>;
    /// Ids of unfinished uploads whose expiry is at or before `now`.
    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadId>, MetaError>;
    /// Drops tombstones written before `before` (unix seconds).
    async fn prune_tombstones(&self, before: u64) -> Result<usize, MetaError>;
    /// Records that final upload `final_id` waits for each of `partials`.
    async fn add_concat_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
    ) -> Result<(), MetaError>;
    /// Final uploads waiting for `partial`.
    async fn concat_waiters(&self, partial: &UploadId) -> Result<Vec<UploadId>, MetaError>;
    async fn remove_concat_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
    ) -> Result<(), MetaError>;
    /// Reserves `destination` for upload `id`; false if another upload
    /// holds it.
    async fn claim_destination(&self, destination: &str, id: &UploadId) -> Result<bool, MetaError>;
    /// Frees a destination reserved by `id` (terminated or expired upload).
    async fn release_destination(&self, destination: &str, id: &UploadId) -> Result<(), MetaError>;
    /// Finished uploads whose post-finish hook is still owed.
    async fn pending_finish_hooks(&self, limit: usize) -> Result<Vec<UploadId>, MetaError>;
    /// Checks the backend is usable (readiness).
    async fn ping(&self) -> Result<(), MetaError>;
}
