//! Upload state storage. `sled` is the embedded default; other backends
//! implement the same trait and pass the same contract tests.

#[cfg(test)]
pub(crate) mod contract;
mod group_commit;
pub mod lease;
pub mod postgres;
pub mod sled_store;

use crate::model::UploadInfo;
use crate::protocol::UploadId;
use async_trait::async_trait;

pub use lease::{Lease, LeaseError, LeaseStore};
pub use postgres::PgMetaStore;
pub use sled_store::SledMetaStore;

/// Errors of a meta store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("upload {0} already exists")]
    AlreadyExists(UploadId),
    #[error("upload {0} not found")]
    NotFound(UploadId),
    /// The record changed since the writer read it (another instance took
    /// the upload over, or a write of this one landed first): the write
    /// was refused and changed nothing.
    #[error("upload {0} was changed by another writer; this write was refused")]
    Stale(UploadId),
    #[error("corrupt record for {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("meta store backend: {0}")]
    Backend(#[source] BoxError),
    /// The disk (or the quota) holding the store is full: sled's ENOSPC
    /// or EDQUOT, PostgreSQL's class 53100. The write that met it was not
    /// recorded; the same request may succeed once space is back.
    #[error("meta store is out of space: {0}")]
    NoSpace(#[source] BoxError),
    /// The backend could not be reached or did not answer in time; the
    /// same request may succeed later.
    #[error("meta store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    #[error("meta store setting: {0}")]
    Config(String),
}

pub use crate::error::BoxError;

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
    /// [`MetaStore::create`] without waiting for durability: the record is
    /// durable once a later `save` or [`MetaStore::sync`] has succeeded
    /// (a crash before may take it). For a record nobody was told of yet.
    async fn create_deferred(&self, info: &UploadInfo) -> Result<(), MetaError> {
        self.create(info).await
    }
    /// Makes every write so far durable (for `create_deferred`).
    async fn sync(&self) -> Result<(), MetaError> {
        Ok(())
    }
    async fn get(&self, id: &UploadId) -> Result<Option<Lookup>, MetaError>;
    /// Replaces an existing record if it is still at `info.version` (a
    /// compare-and-set in one step) and advances `info.version` by one, to
    /// the version stored. `Stale`, changing nothing, if another write
    /// came first, or if the save would lower the offset or unfinish a
    /// finished upload; `NotFound` if it was removed.
    async fn save(&self, info: &mut UploadInfo) -> Result<(), MetaError>;
    /// Removes a record still at `info.version` and leaves a tombstone;
    /// `Stale`, changing nothing, if it moved on. Removing a record that
    /// is gone already only leaves the tombstone.
    async fn remove(&self, info: &UploadInfo) -> Result<(), MetaError>;
    /// Ids of uploads whose expiry is at or before `now`.
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
    /// Finished uploads whose post-finish hook is still owed and that this
    /// instance should deliver now. A store shared by several instances
    /// hands each one out to one instance at a time (a claim that lapses
    /// after a while, so a crashed instance's debts are taken over); a
    /// record saved with a new debt counts as claimed by its saver, which
    /// delivers it right away.
    async fn pending_finish_hooks(&self, limit: usize) -> Result<Vec<UploadId>, MetaError>;
    /// Claims delivery of `id`'s owed post-finish hook right after it was
    /// saved; false when another instance has it (or nothing is owed).
    async fn claim_finish_hook(&self, id: &UploadId) -> Result<bool, MetaError> {
        let _ = id;
        Ok(true)
    }
    /// Owes event `debt` (a post-terminate, whose upload record is about to
    /// go) until [`MetaStore::clear_event_debt`]. Adding it again replaces
    /// it (and drops its claim).
    async fn add_event_debt(&self, debt: &EventDebt) -> Result<(), MetaError>;
    /// Claims delivery of owed event `id` right after adding it; false when
    /// another instance has it (or nothing is owed).
    async fn claim_event_debt(&self, id: &str) -> Result<bool, MetaError> {
        let _ = id;
        Ok(true)
    }
    /// Owed events this instance should deliver now (at most `limit`); a
    /// shared store hands each to one instance at a time (the claim lapses
    /// as for [`MetaStore::pending_finish_hooks`]).
    async fn pending_event_debts(&self, limit: usize) -> Result<Vec<EventDebt>, MetaError>;
    /// Forgets an owed event (delivered, or its cause undone).
    async fn clear_event_debt(&self, id: &str) -> Result<(), MetaError>;
    /// Takes the cluster-wide lock of background job `job` (expiry sweep,
    /// outbox pass) if free: `None` when another instance runs it now.
    /// Dropping the guard releases it.
    async fn job_lock(&self, job: &str) -> Result<Option<JobGuard>, MetaError>;
    /// Checks the backend is usable (readiness).
    async fn ping(&self) -> Result<(), MetaError>;
}

/// An event owed to the event sinks after its upload's record is gone:
/// the message is kept whole, since nothing is left to rebuild it from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventDebt {
    /// The event's `Id` (unique; the key of the debt).
    pub id: String,
    /// The event type, e.g. `post-terminate`.
    pub kind: String,
    /// The message body (JSON).
    pub body: String,
}

/// Everything a meta store holds, for `tusker migrate-meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaDump {
    /// Upload records; the outbox is their `finish_hook_pending` flag.
    pub uploads: Vec<UploadInfo>,
    /// Removed ids with their removal time (unix seconds).
    pub tombstones: Vec<(UploadId, u64)>,
    /// (partial, final) pairs.
    pub waiters: Vec<(UploadId, UploadId)>,
    /// (destination, holder) pairs.
    pub destinations: Vec<(String, UploadId)>,
    /// Owed events whose record is gone (post-terminate).
    pub event_debts: Vec<EventDebt>,
}

/// Holds a background job's lock (see [`MetaStore::job_lock`]) until dropped.
pub struct JobGuard(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send>>);

impl JobGuard {
    /// A guard with nothing to release (a store used by one process).
    pub fn local() -> Self {
        JobGuard(None)
    }

    pub(crate) fn holding<T: Send + 'static>(held: T) -> Self {
        JobGuard(Some(Box::new(held)))
    }
}

/// The `--meta` setting: where upload state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaUrl {
    /// `sled:PATH`: embedded, one process.
    Sled(std::path::PathBuf),
    /// `postgres://…` or `postgresql://…`: shared by several instances.
    Postgres(String),
}

impl MetaUrl {
    /// Parses `sled:PATH` or a PostgreSQL URL; `None` is the default
    /// (`sled:DATA_DIR/meta`).
    pub fn parse(s: Option<&str>, data_dir: &std::path::Path) -> Result<MetaUrl, MetaError> {
        let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(MetaUrl::Sled(data_dir.join("meta")));
        };
        if let Some(path) = s.strip_prefix("sled:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(MetaError::Config(format!("{s:?}: sled: needs a path")));
            }
            return Ok(MetaUrl::Sled(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(MetaUrl::Postgres(s.to_owned()));
        }
        Err(MetaError::Config(format!(
            "{:?}: expected sled:PATH or postgres://...",
            crate::config::redact("meta", s)
        )))
    }
}

/// The meta store a `--meta` setting names, opened (and, for PostgreSQL,
/// migrated to this build's schema).
pub enum OpenedMeta {
    Sled(SledMetaStore),
    Postgres(PgMetaStore),
}

impl OpenedMeta {
    /// Opens the store. `query_timeout` bounds every PostgreSQL call of a
    /// request (see [`PgMetaStore::with_query_timeout`]); `sled_cache`
    /// bounds sled's page cache (`None`: [`sled_store::DEFAULT_CACHE_BYTES`]).
    pub async fn open(
        url: &MetaUrl,
        lease_ttl: std::time::Duration,
        query_timeout: std::time::Duration,
        sled_cache: Option<u64>,
    ) -> Result<OpenedMeta, MetaError> {
        Ok(match url {
            MetaUrl::Sled(path) => OpenedMeta::Sled(SledMetaStore::open_with_cache(
                path,
                sled_cache.unwrap_or(sled_store::DEFAULT_CACHE_BYTES),
            )?),
            MetaUrl::Postgres(url) => {
                let store = PgMetaStore::connect(url)
                    .await?
                    .with_timings(lease_ttl, postgres::DEFAULT_HOOK_CLAIM)
                    .with_query_timeout(query_timeout);
                store.migrate().await?;
                OpenedMeta::Postgres(store)
            }
        })
    }

    pub fn store(&self) -> std::sync::Arc<dyn MetaStore> {
        match self {
            OpenedMeta::Sled(s) => std::sync::Arc::new(s.clone()),
            OpenedMeta::Postgres(s) => std::sync::Arc::new(s.clone()),
        }
    }

    /// Cross-instance leases, when the store is shared.
    pub fn leases(&self) -> Option<std::sync::Arc<dyn LeaseStore>> {
        match self {
            OpenedMeta::Sled(_) => None,
            OpenedMeta::Postgres(s) => Some(std::sync::Arc::new(s.clone())),
        }
    }

    /// Makes every write so far durable (sled); PostgreSQL commits each.
    pub async fn flush(&self) -> Result<(), MetaError> {
        match self {
            OpenedMeta::Sled(s) => s.flush().await,
            OpenedMeta::Postgres(_) => Ok(()),
        }
    }
}

/// What `migrate-meta` copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub uploads: usize,
    pub tombstones: usize,
    pub waiters: usize,
    pub destinations: usize,
    /// Owed post-finish hooks (part of the upload records).
    pub outbox: usize,
    /// Owed events whose record is gone (post-terminate).
    pub event_debts: usize,
}

/// Copies everything in sled store `from` (`sled:PATH`) into PostgreSQL
/// store `to` (migrated first). Records already present in `to` are
/// overwritten, so the copy can be repeated.
pub async fn migrate_meta(from: &str, to: &str) -> Result<MigrateReport, MetaError> {
    let here = std::path::Path::new(".");
    let (MetaUrl::Sled(path), MetaUrl::Postgres(url)) = (
        MetaUrl::parse(Some(from), here)?,
        MetaUrl::parse(Some(to), here)?,
    ) else {
        return Err(MetaError::Config(
            "migrate-meta copies from sled:PATH to postgres://...".into(),
        ));
    };
    if !path.exists() {
        return Err(MetaError::Config(format!(
            "{}: no sled database there",
            path.display()
        )));
    }
    let source = SledMetaStore::open(&path)?;
    let dump = source.dump().await?;
    let target = PgMetaStore::connect(&url).await?;
    target.migrate().await?;
    target.import(&dump).await?;
    Ok(MigrateReport {
        uploads: dump.uploads.len(),
        tombstones: dump.tombstones.len(),
        waiters: dump.waiters.len(),
        destinations: dump.destinations.len(),
        outbox: dump
            .uploads
            .iter()
            .filter(|u| u.finish_hook_pending)
            .count(),
        event_debts: dump.event_debts.len(),
    })
}
