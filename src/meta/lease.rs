//! Per-upload leases shared by several server instances: one writer per
//! upload across the cluster. The in-process lock (`upload::lock`) stays
//! the fast path; a lease is taken on top of it when the meta store is
//! shared.

use crate::protocol::UploadId;
use async_trait::async_trait;
use std::time::Duration;

/// Errors of a lease backend.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease backend: {0}")]
    Backend(#[source] super::BoxError),
    /// The backend could not be reached or did not answer in time.
    #[error("lease store unavailable: {0}")]
    Unavailable(#[source] super::BoxError),
}

/// A lease this instance holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub upload: UploadId,
    /// Unique per acquisition; renewal and release touch only this lease.
    pub token: uuid::Uuid,
}

/// Outcome of one acquisition attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Acquired(Lease),
    /// Another instance holds an unexpired lease.
    HeldBy(String),
}

/// Leases with expiry, renewal by heartbeat and a stop request channel.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// This instance's id (random per process start).
    fn instance(&self) -> &str;
    /// How long a lease lives without a heartbeat.
    fn ttl(&self) -> Duration;
    /// Takes the lease of `upload` if it is free, expired, or a stale one
    /// of this instance (the in-process lock already excludes a live one).
    async fn try_acquire(&self, upload: &UploadId) -> Result<Attempt, LeaseError>;
    /// Extends a held lease; false when it was lost (expired and taken).
    async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError>;
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError>;
    /// Asks instance `holder` to stop its request on `upload`.
    async fn request_stop(&self, upload: &UploadId, holder: &str) -> Result<(), LeaseError>;
    /// Stop requests addressed to this instance, as they arrive. Called
    /// once at start.
    async fn stop_requests(&self) -> Result<tokio::sync::mpsc::Receiver<UploadId>, LeaseError>;
}
