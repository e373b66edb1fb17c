//! Upload bytes. Local files are the embedded default; object storage
//! implements the same traits.

#[cfg(test)]
mod contract;
pub mod file;
pub mod gate;
pub mod object;
pub mod open;
pub mod tail_cache;

use crate::model::UploadInfo;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use crate::error::BoxError;
pub use file::FileStore;
pub use gate::{IoGates, IoPermit};

/// A stream of stored bytes (GET).
pub type ByteStream = BoxStream<'static, Result<Bytes, DataError>>;

/// Errors of a data store.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("storage I/O: {0}")]
    Io(#[source] std::io::Error),
    /// The disk (or the quota) is full: ENOSPC, EDQUOT.
    #[error("storage is full: {0}")]
    NoSpace(#[source] std::io::Error),
    /// The process or the system ran out of file descriptors: EMFILE,
    /// ENFILE. Transient: descriptors come back as requests end.
    #[error("out of file descriptors: {0}")]
    NoDescriptors(#[source] std::io::Error),
    #[error("stored data for upload {0} is missing")]
    Missing(String),
    /// A transient backend failure; the client should retry later.
    #[error("storage temporarily unavailable: {0}")]
    Unavailable(#[source] BoxError),
    #[error("storage backend: {0}")]
    Backend(#[source] BoxError),
    /// The upload outgrew what the backend can hold (e.g. 10,000 parts).
    #[error("storage limit exceeded: {0}")]
    LimitExceeded(String),
    /// The destination chosen for an upload is already occupied.
    #[error("{0} already exists in storage")]
    AlreadyExists(String),
}

impl From<std::io::Error> for DataError {
    /// Sorts out the I/O errors that call for an answer of their own.
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => DataError::NoSpace(e),
            Some(libc::EMFILE | libc::ENFILE) => DataError::NoDescriptors(e),
            _ if e.kind() == std::io::ErrorKind::StorageFull => DataError::NoSpace(e),
            _ => DataError::Io(e),
        }
    }
}

/// Space on the file system that holds a store's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    /// Size of the file system.
    pub total: u64,
}

/// A data store's answer to a bucket a pre-create hook chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketChoice {
    /// The bucket `--storage` names: the upload's record names none.
    Default,
    /// Another bucket the store may use (`--s3-allowed-buckets`).
    Other(String),
    /// Not a bucket this store may use.
    Refused,
}

/// What a writer has made durable: the upload's offset and the store state
/// that must be persisted with it before the offset is reported to anyone.
#[derive(Debug, Clone, PartialEq)]
pub struct Durable {
    pub offset: u64,
    pub storage: serde_json::Value,
}

/// Where the bytes of uploads live.
#[async_trait]
pub trait DataStore: Send + Sync + 'static {
    /// Short name used in logs and hook payloads (`file`, `s3`, …).
    fn kind(&self) -> &'static str;
    /// Prepares storage for a new upload; returns the initial store state.
    async fn create(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError>;
    /// An id for a new upload whose storage this store prepared ahead of
    /// time, if it keeps such ids (local files do, see `file::pool`); the
    /// caller generates one otherwise. Never blocks.
    fn fresh_id(&self) -> Option<crate::protocol::UploadId> {
        None
    }
    /// Gives back an id from [`DataStore::fresh_id`] that no upload got
    /// (creation was refused before its record was written).
    fn give_back(&self, _id: crate::protocol::UploadId) {}
    /// Ids whose storage an earlier run prepared ahead of time and that
    /// hold bytes: uploads, or a creation's bytes whose record a crash
    /// took before it was durable (so never acknowledged). The caller asks
    /// the meta store and passes those without a record to
    /// [`DataStore::remove_unrecorded`].
    fn unrecorded(&self) -> Vec<crate::protocol::UploadId> {
        Vec::new()
    }
    /// Removes the storage of `orphans`, ids from [`DataStore::unrecorded`]
    /// that have no record, and forgets the rest. Returns how many went.
    async fn remove_unrecorded(
        &self,
        _orphans: &[crate::protocol::UploadId],
    ) -> Result<usize, DataError> {
        Ok(0)
    }
    /// Opens a writer that appends at `info.offset`. Bytes stored beyond
    /// the offset by an earlier, unacknowledged write are discarded. The
    /// writer keeps a clone of `permit` in all work that may outlive it
    /// (see [`gate`]).
    async fn writer(
        &self,
        info: &UploadInfo,
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError>;
    /// Seals an upload whose every byte is stored; returns the new state.
    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError>;
    /// Streams bytes `start..end` of a finished upload.
    async fn read(&self, info: &UploadInfo, start: u64, end: u64) -> Result<ByteStream, DataError>;
    /// Removes everything stored for the upload. Idempotent.
    async fn delete(&self, info: &UploadInfo) -> Result<(), DataError>;
    /// Builds `target`'s bytes from the finished `parts`, in order, without
    /// holding them in memory; returns the target's store state.
    async fn concatenate(
        &self,
        target: &UploadInfo,
        parts: &[UploadInfo],
    ) -> Result<serde_json::Value, DataError>;
    /// A URL that serves the finished upload's bytes (Range included)
    /// straight from the backend for `ttl`, signed with the store's
    /// credentials (`--download-redirect`); `None` when the store cannot
    /// make one.
    async fn download_url(
        &self,
        _info: &UploadInfo,
        _ttl: std::time::Duration,
    ) -> Result<Option<String>, DataError> {
        Ok(None)
    }
    /// Where an upload goes when a pre-create hook names `bucket`
    /// (`Storage.Bucket`). Stores without buckets refuse every name.
    fn choose_bucket(&self, _bucket: &str) -> BucketChoice {
        BucketChoice::Refused
    }
    /// Checks the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), DataError>;
    /// Where the upload is stored, for hook payloads (`Event.Upload.Storage`).
    fn describe(&self, info: &UploadInfo) -> std::collections::BTreeMap<String, String>;
    /// Free and total space where the bytes go; `None` for stores without
    /// a disk of their own (object storage).
    async fn space(&self) -> Result<Option<Space>, DataError> {
        Ok(None)
    }
}

/// Appends one request's bytes to an upload.
#[async_trait]
pub trait UploadWriter: Send {
    /// Accepts the next bytes; they are not durable until `sync`.
    async fn write(&mut self, chunk: Bytes) -> Result<(), DataError>;
    /// Makes every byte written so far durable.
    async fn sync(&mut self) -> Result<Durable, DataError>;
    /// Forgets bytes written since the last `sync` (e.g. checksum mismatch).
    async fn discard(&mut self) -> Result<Durable, DataError>;
    /// After a failed `write` or `sync` (the disk filled up): makes durable
    /// every byte that reached storage whole before the failure, cuts off
    /// the rest, and reports the durable state, so the client keeps what
    /// arrived. Stores that cannot tell what landed forget it, as
    /// `discard` does.
    async fn salvage(&mut self) -> Result<Durable, DataError> {
        self.discard().await
    }
    /// Called after the state returned by `sync` has been persisted: the
    /// writer may now drop what that state no longer refers to.
    async fn committed(&mut self) {}
    /// Called when the meta store refused to record the state `sync`
    /// returned (another writer recorded first): what this writer staged
    /// for it and no record names may go.
    async fn abandon(&mut self) {}
    /// A checkpoint that does not stall the body: the returned future
    /// (borrowing nothing of the writer) ends with a durable state no older
    /// than the last one, while writing goes on. Local files sync every
    /// byte written so far; object storage names the parts already
    /// uploaded. `None` when the backend cannot (then use `sync`). The
    /// caller lets the future end, and persists its state, before `sync`
    /// or `discard`, and calls `committed` after persisting it.
    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, DataError> {
        Ok(None)
    }
}

/// A checkpoint running behind further writes; see [`UploadWriter::checkpoint`].
pub type Checkpoint = futures_util::future::BoxFuture<'static, Result<Durable, DataError>>;
