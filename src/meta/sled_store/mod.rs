//! `MetaStore` on sled 0.34: one tree per concern, JSON values, a flush
//! before every write returns. The writes every upload makes go without
//! transactions ([`writes`]), on the calling thread.

mod dump;
mod writes;

use super::group_commit::GroupCommit;
use super::{EventDebt, JobGuard, Lookup, MetaError, MetaStore};
use crate::model::{now_secs, UploadInfo};
use crate::protocol::UploadId;
use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Bumped when the on-disk layout changes incompatibly.
const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Sled-backed meta store (the embedded default).
///
/// After a failed write of its log (the disk filled up), sled 0.34 refuses
/// every later write of that database while its cache still answers reads,
/// with records that may never have reached the disk. So a write that
/// meets a full disk closes the database: requests get
/// [`MetaError::NoSpace`] until it opens again, recovered from what is on
/// disk (durable writes only), which the next request tries once
/// [`REOPEN_AFTER`] has passed.
#[derive(Clone)]
pub struct SledMetaStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    cache_bytes: u64,
    /// The open database, or since when it is closed.
    state: RwLock<State>,
    /// Held while opening again.
    reopening: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
enum State {
    Open(Arc<Open>),
    /// A write met a full disk at this time (or opening again failed).
    Closed(Instant),
}

/// One opening of the database.
pub(super) struct Open {
    db: sled::Db,
    /// sled's log file, synced after every flush (see [`SledMetaStore::flush`]).
    log: std::fs::File,
    /// Shares one flush between concurrent writers of this opening.
    commits: GroupCommit,
    /// id → UploadInfo (JSON)
    uploads: sled::Tree,
    /// expires_at (u64 BE) ++ id → ()
    expiry: sled::Tree,
    /// id → removal time (u64 BE)
    tombstones: sled::Tree,
    /// partial id ++ 0x00 ++ final id → ()
    waiters: sled::Tree,
    /// destination → id of the upload holding it
    destinations: sled::Tree,
    /// id → () for finished uploads whose post-finish hook is owed
    outbox: sled::Tree,
    /// event id → EventDebt (JSON): events owed after their record went
    event_outbox: sled::Tree,
}

/// Default of sled's page cache: room for the records of the uploads a
/// busy server is working on. sled's own default (1 GiB) let resident
/// memory grow with every upload created; sled's accounting runs well
/// below resident memory (64 MiB of it was still growing past 260 MiB
/// after 120,000 creations, 16 MiB levelled off near 120 MiB).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Free space below which the store is not ready: two of sled's log
/// segments.
const MIN_FREE: u64 = 1024 * 1024;

/// How long a store closed by a full disk waits between attempts to open
/// again (each recovers the database from disk).
pub const REOPEN_AFTER: Duration = Duration::from_secs(1);

impl SledMetaStore {
    /// Opens (or creates) the database in `dir` with the default cache.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database in `dir`, its page cache bounded
    /// by `cache_bytes` (sled's own accounting; resident memory runs
    /// somewhat above it).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, MetaError> {
        let open = Open::start(dir, cache_bytes)?;
        Ok(SledMetaStore {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                cache_bytes,
                state: RwLock::new(State::Open(Arc::new(open))),
                reopening: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The open database, opening it again if a full disk closed it at
    /// least [`REOPEN_AFTER`] ago.
    async fn current(&self) -> Result<Arc<Open>, MetaError> {
        let closed = || {
            MetaError::NoSpace(
                "the meta database is closed after its disk filled up; it opens again once there is space".into(),
            )
        };
        match self.state() {
            State::Open(open) => return Ok(open),
            State::Closed(at) if at.elapsed() < REOPEN_AFTER => return Err(closed()),
            State::Closed(_) => {}
        }
        let _reopening = self.shared.reopening.lock().await;
        match self.state() {
            State::Open(open) => return Ok(open), // opened while this one waited
            State::Closed(at) if at.elapsed() < REOPEN_AFTER => return Err(closed()),
            State::Closed(_) => {}
        }
        let (dir, cache) = (self.shared.dir.clone(), self.shared.cache_bytes);
        let opened = tokio::task::spawn_blocking(move || Open::start(&dir, cache))
            .await
            .map_err(|e| MetaError::Backend(crate::error::caused("blocking task failed", e)))?;
        match opened {
            Ok(open) => {
                let open = Arc::new(open);
                *self.write_state() = State::Open(open.clone());
                tracing::info!(dir = %self.shared.dir.display(), "meta database opened again after its disk filled up");
                Ok(open)
            }
            Err(e) => {
                *self.write_state() = State::Closed(Instant::now());
                tracing::warn!(error = %e, dir = %self.shared.dir.display(), "opening the meta database again failed");
                Err(e)
            }
        }
    }

    fn state(&self) -> State {
        self.shared
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // One value replaced in single statements: a panic elsewhere
        // cannot leave it half-changed.
        self.shared.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Passes on an operation's result; a full disk met through `open`
    /// closes that opening (see [`SledMetaStore`]).
    fn settle<T>(&self, open: &Arc<Open>, result: Result<T, MetaError>) -> Result<T, MetaError> {
        if let Err(e @ MetaError::NoSpace(_)) = &result {
            let mut state = self.write_state();
            if matches!(&*state, State::Open(current) if Arc::ptr_eq(current, open)) {
                tracing::warn!(error = %e, dir = %self.shared.dir.display(), "the meta database's disk is full: closed until it opens again");
                *state = State::Closed(Instant::now());
            }
        }
        result
    }

    /// Runs `op` on the open database and settles its result.
    async fn with<T, F, Fut>(&self, op: F) -> Result<T, MetaError>
    where
        F: FnOnce(Arc<Open>) -> Fut,
        Fut: Future<Output = Result<T, MetaError>>,
    {
        let open = self.current().await?;
        let result = op(open.clone()).await;
        self.settle(&open, result)
    }

    /// Waits until every write so far is on disk. Concurrent callers share
    /// flushes ([`GroupCommit`]).
    pub async fn flush(&self) -> Result<(), MetaError> {
        self.with(|s| async move { s.flush().await }).await
    }
}

impl Open {
    fn start(dir: &Path, cache_bytes: u64) -> Result<Open, MetaError> {
        let db = open_waiting_for_lock(dir, cache_bytes)?;
        match db.get(SCHEMA_KEY).map_err(sled_err)? {
            None => {
                db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(MetaError::Backend(
                    format!(
                "meta database at {} has schema version {:?}, this build expects {SCHEMA_VERSION}",
                dir.display(),
                v.as_ref()
            )
                    .into(),
                ))
            }
        }
        // sled keeps its log in `<dir>/db`; any descriptor of the file can
        // make it durable.
        let log = std::fs::File::open(dir.join("db")).map_err(|e| {
            MetaError::Backend(crate::error::caused("opening sled's log for syncing", e))
        })?;
        Ok(Open {
            log,
            commits: GroupCommit::default(),
            uploads: db.open_tree("uploads").map_err(sled_err)?,
            expiry: db.open_tree("expiry").map_err(sled_err)?,
            tombstones: db.open_tree("tombstones").map_err(sled_err)?,
            waiters: db.open_tree("waiters").map_err(sled_err)?,
            destinations: db.open_tree("destinations").map_err(sled_err)?,
            outbox: db.open_tree("outbox").map_err(sled_err)?,
            event_outbox: db.open_tree("event_outbox").map_err(sled_err)?,
            db,
        })
    }

    /// Waits until every write so far to this opening is on disk.
    async fn flush(self: &Arc<Self>) -> Result<(), MetaError> {
        // Not `flush_async`: in sled 0.34 concurrent `flush_async` futures
        // can miss their wake-up and hang forever (spacejam/sled#1308,
        // #1241; fixed only on sled's unreleased main). A blocking flush on
        // the blocking pool has the same durability and cannot hang.
        //
        // On Linux sled 0.34 makes its log durable with `sync_file_range`,
        // which neither records the file's new size nor flushes the disk's
        // write cache: a power loss could still take a "flushed" offset.
        // An `fdatasync` of the log after sled's flush closes that.
        self.commits
            .flush(|| {
                blocking(self.clone(), |s| {
                    s.db.flush().map_err(sled_err)?;
                    s.log.sync_data().map_err(|e| sled_err(sled::Error::Io(e)))
                })
            })
            .await
    }
}

/// Runs blocking sled work off the async executor.
async fn blocking<T, F>(open: Arc<Open>, f: F) -> Result<T, MetaError>
where
    T: Send + 'static,
    F: FnOnce(&Open) -> Result<T, MetaError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&open))
        .await
        .map_err(|e| MetaError::Backend(crate::error::caused("blocking task failed", e)))?
}

impl Open {
    /// Up to `limit` owed events, in key order.
    fn event_debts(&self, limit: usize) -> Result<Vec<EventDebt>, MetaError> {
        let mut out = Vec::new();
        for item in self.event_outbox.iter().take(limit) {
            let (k, v) = item.map_err(sled_err)?;
            out.push(serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }
}

/// How long `open` waits for a previous owner (a process or server still
/// shutting down) to release the database's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn open_waiting_for_lock(dir: &Path, cache_bytes: u64) -> Result<sled::Db, MetaError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an I/O error of kind Other.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tracing::debug!(dir = %dir.display(), "meta database is locked; waiting for its previous owner");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(sled_err(e)),
        }
    }
}

/// What [`SledMetaStore::change_waiters`] does.
#[derive(Clone, Copy)]
enum Waiters {
    Add,
    Remove,
}

impl SledMetaStore {
    /// Records (or forgets) that final upload `final_id` waits for each of
    /// `partials`, in one batch, flushed before returning.
    async fn change_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
        change: Waiters,
    ) -> Result<(), MetaError> {
        let (final_id, partials) = (final_id.clone(), partials.to_vec());
        self.with(|open| async move {
            blocking(open.clone(), move |s| {
                let mut batch = sled::Batch::default();
                for p in &partials {
                    let key = waiter_key(p, &final_id);
                    match change {
                        Waiters::Add => batch.insert(key, &[]),
                        Waiters::Remove => batch.remove(key),
                    }
                }
                s.waiters.apply_batch(batch).map_err(sled_err)
            })
            .await?;
            open.flush().await
        })
        .await
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> MetaError {
    MetaError::Backend(Box::new(e))
}

/// Sorts a sled error: a full disk (or quota) is [`MetaError::NoSpace`].
/// sled hands a failed log write to later callers as a copy that keeps
/// the I/O error's kind only.
fn sled_err(e: sled::Error) -> MetaError {
    use std::io::ErrorKind;
    match &e {
        sled::Error::Io(io)
            if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                || matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
        {
            MetaError::NoSpace(Box::new(e))
        }
        _ => backend(e),
    }
}

fn expiry_key(at: u64, id: &UploadId) -> Vec<u8> {
    let mut k = at.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn waiter_key(partial: &UploadId, final_id: &UploadId) -> Vec<u8> {
    let mut k = partial.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(final_id.as_str().as_bytes());
    k
}

fn decode(key: &[u8], value: &[u8]) -> Result<UploadInfo, MetaError> {
    serde_json::from_slice(value).map_err(|e| MetaError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode(info: &UploadInfo) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(info).map_err(backend)
}

/// Unwraps a sled transaction result whose abort type is `MetaError`.
fn tx<T>(r: Result<T, TransactionError<MetaError>>) -> Result<T, MetaError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => sled_err(e),
    })
}

#[async_trait]
impl MetaStore for SledMetaStore {
    async fn create(&self, info: &UploadInfo) -> Result<(), MetaError> {
        // On the calling thread: without a transaction this only appends
        // to sled's log buffer and cached pages, microseconds; a trip to
        // the blocking pool cost more (5-7 % of uploads/s with many small
        // uploads).
        // The flush, which waits for the disk, goes to the pool.
        self.with(|s| async move {
            s.insert_new(info)?;
            s.flush().await
        })
        .await
    }

    async fn create_deferred(&self, info: &UploadInfo) -> Result<(), MetaError> {
        // sled's log is recovered in order: the flush of a later save
        // covers this write too.
        self.with(|s| async move { s.insert_new(info) }).await
    }

    async fn sync(&self) -> Result<(), MetaError> {
        self.flush().await
    }

    async fn get(&self, id: &UploadId) -> Result<Option<Lookup>, MetaError> {
        // On the calling thread, as `create` and `save`: the record of an
        // upload in use is in sled's cache, a lookup of microseconds. On
        // the blocking pool a HEAD waited for a free thread and two
        // wake-ups, behind the file writes and syncs of the uploads.
        self.with(|s| async move {
            let key = id.as_str().as_bytes();
            if let Some(v) = s.uploads.get(key).map_err(sled_err)? {
                return Ok(Some(Lookup::Live(Box::new(decode(key, &v)?))));
            }
            if s.tombstones.get(key).map_err(sled_err)?.is_some() {
                return Ok(Some(Lookup::Gone));
            }
            Ok(None)
        })
        .await
    }

    async fn save(&self, info: &mut UploadInfo) -> Result<(), MetaError> {
        // On the calling thread, as `create`: the record was just loaded,
        // so its page is cached.
        let expected = info.version;
        info.version = expected.saturating_add(1);
        let mut replaced = false;
        let saved = self
            .with(|s| {
                let (info, replaced) = (&*info, &mut replaced);
                async move {
                    s.replace(info, expected)?;
                    *replaced = true;
                    s.flush().await
                }
            })
            .await;
        if !replaced {
            info.version = expected;
        }
        saved
    }

    async fn remove(&self, info: &UploadInfo) -> Result<(), MetaError> {
        let (id, expected) = (info.id.clone(), info.version);
        self.with(|open| async move {
            blocking(open.clone(), move |s| {
                let key = id.as_str().as_bytes().to_vec();
                let now = now_secs().to_be_bytes();
                tx((&s.uploads, &s.expiry, &s.tombstones).transaction(
                    |(uploads, expiry, tombs)| {
                        if let Some(old) = uploads.remove(key.as_slice())? {
                            let old =
                                decode(&key, &old).map_err(ConflictableTransactionError::Abort)?;
                            if old.version != expected {
                                return Err(ConflictableTransactionError::Abort(MetaError::Stale(
                                    id.clone(),
                                )));
                            }
                            if let Some(at) = old.expires_at {
                                expiry.remove(expiry_key(at, &id))?;
                            }
                        }
                        tombs.insert(key.as_slice(), &now)?;
                        Ok(())
                    },
                ))
            })
            .await?;
            open.flush().await
        })
        .await
    }

    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        self.with(|open| blocking(open, move |s| s.expired_ids(now, limit)))
            .await
    }

    async fn prune_tombstones(&self, before: u64) -> Result<usize, MetaError> {
        self.with(|open| async move {
            let n = blocking(open.clone(), move |s| {
                let mut n = 0;
                for item in s.tombstones.iter() {
                    let (k, v) = item.map_err(sled_err)?;
                    let at = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
                    if at < before {
                        s.tombstones.remove(k).map_err(sled_err)?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await?;
            if n > 0 {
                open.flush().await?;
            }
            Ok(n)
        })
        .await
    }

    async fn add_concat_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
    ) -> Result<(), MetaError> {
        self.change_waiters(final_id, partials, Waiters::Add).await
    }

    async fn concat_waiters(&self, partial: &UploadId) -> Result<Vec<UploadId>, MetaError> {
        let partial = partial.clone();
        self.with(|open| {
            blocking(open, move |s| {
                let mut prefix = partial.as_str().as_bytes().to_vec();
                prefix.push(0);
                let mut out = Vec::new();
                for item in s.waiters.scan_prefix(&prefix) {
                    let (k, _) = item.map_err(sled_err)?;
                    if let Some(id) = std::str::from_utf8(&k[prefix.len()..])
                        .ok()
                        .and_then(|s| UploadId::parse(s).ok())
                    {
                        out.push(id);
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn remove_concat_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
    ) -> Result<(), MetaError> {
        self.change_waiters(final_id, partials, Waiters::Remove)
            .await
    }

    async fn claim_destination(&self, destination: &str, id: &UploadId) -> Result<bool, MetaError> {
        let (destination, id) = (destination.to_owned(), id.clone());
        self.with(|open| async move {
            let claimed = blocking(open.clone(), move |s| {
                let won = s
                    .destinations
                    .compare_and_swap(
                        destination.as_bytes(),
                        None as Option<&[u8]>,
                        Some(id.as_str().as_bytes()),
                    )
                    .map_err(sled_err)?;
                Ok(match won {
                    Ok(()) => true,
                    // Claimed before by the same upload (a retried create).
                    Err(current) => current.current.as_deref() == Some(id.as_str().as_bytes()),
                })
            })
            .await?;
            open.flush().await?;
            Ok(claimed)
        })
        .await
    }

    async fn release_destination(&self, destination: &str, id: &UploadId) -> Result<(), MetaError> {
        let (destination, id) = (destination.to_owned(), id.clone());
        self.with(|open| async move {
            blocking(open.clone(), move |s| {
                // Only the holder may release.
                let _ = s
                    .destinations
                    .compare_and_swap(
                        destination.as_bytes(),
                        Some(id.as_str().as_bytes()),
                        None as Option<&[u8]>,
                    )
                    .map_err(sled_err)?;
                Ok(())
            })
            .await?;
            open.flush().await
        })
        .await
    }

    async fn pending_finish_hooks(&self, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        self.with(|open| {
            blocking(open, move |s| {
                let mut out = Vec::new();
                for item in s.outbox.iter().take(limit) {
                    let (k, _) = item.map_err(sled_err)?;
                    if let Some(id) = std::str::from_utf8(&k)
                        .ok()
                        .and_then(|s| UploadId::parse(s).ok())
                    {
                        out.push(id);
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn add_event_debt(&self, debt: &EventDebt) -> Result<(), MetaError> {
        let value = serde_json::to_vec(debt).map_err(backend)?;
        self.with(|s| async move {
            s.event_outbox
                .insert(debt.id.as_bytes(), value)
                .map_err(sled_err)?;
            s.flush().await
        })
        .await
    }

    async fn pending_event_debts(&self, limit: usize) -> Result<Vec<EventDebt>, MetaError> {
        self.with(|open| blocking(open, move |s| s.event_debts(limit)))
            .await
    }

    async fn clear_event_debt(&self, id: &str) -> Result<(), MetaError> {
        self.with(|s| async move {
            if s.event_outbox
                .remove(id.as_bytes())
                .map_err(sled_err)?
                .is_some()
            {
                s.flush().await?;
            }
            Ok(())
        })
        .await
    }

    async fn job_lock(&self, _job: &str) -> Result<Option<JobGuard>, MetaError> {
        // One process owns the database (sled's file lock).
        Ok(Some(JobGuard::local()))
    }

    async fn ping(&self) -> Result<(), MetaError> {
        let open = self.current().await?;
        let dir = self.shared.dir.clone();
        blocking(open, move |s| {
            s.db.get(SCHEMA_KEY).map_err(sled_err)?;
            // Reads go on while the disk is full; writes would not.
            match crate::sys::space(&dir) {
                Ok((free, _)) if free < MIN_FREE => Err(MetaError::NoSpace(
                    format!("{free} bytes free where the meta database is").into(),
                )),
                _ => Ok(()),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests;
