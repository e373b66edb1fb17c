//! One writer per upload, and the one lock type the engine sees.
//!
//! What keeps work on an upload apart, in the order it is taken:
//!
//! - **The lock.** [`Locker::acquire`] hands out an [`UploadLock`]: the
//!   upload's in-process lock and, when the meta store is shared by several
//!   instances, its lease (`meta::lease`) on top, renewed by a heartbeat
//!   while held, so the holder is unique across instances too. Within this
//!   process a second request for a busy upload may ask the holder to stop
//!   ([`Contend::StopHolder`]: it persists what it has and returns), then
//!   waits a bounded time; a holder on another instance is asked through
//!   the lease store. Both parts are private to this file; outside it there
//!   is only the `UploadLock`.
//! - **The I/O gate** (`data::gate`). The lock ends when a request's future
//!   is dropped, but work it left running (a write, a save, a removal) goes
//!   on; the gate opens once that work ended.
//! - **The record.** Read only after lock and gate, so it shows what that
//!   work did; its `version` fences every save, refusing a holder that
//!   stalled past its lease (`MetaError::Stale`).
//!
//! `Engine::enter` (`entry.rs`) takes the three in that order and is the
//! one way into an upload.
//!
//! Two other kinds of ordering are not upload locks: the hook deliveries of
//! one upload pass its `Lane` (`hook_dispatch`), so no post-receive goes
//! out after the post-finish; and a background job that must run on one
//! instance at a time (the expiry sweep) holds a `meta::JobGuard` from
//! `MetaStore::job_lock`.

use crate::meta::lease::{Attempt, Lease, LeaseError, LeaseStore};
use crate::protocol::UploadId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, OwnedMutexGuard};

/// The lock could not be taken within the wait.
#[derive(Debug, thiserror::Error)]
#[error("upload is locked by another request")]
pub struct Locked;

/// Why [`Locker::acquire`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Locked(#[from] Locked),
    /// The lease store failed (e.g. the database is unreachable): the
    /// request cannot know whether another instance writes the upload.
    #[error("taking the upload's lease failed: {0}")]
    Lease(#[source] LeaseError),
}

/// Whether to ask the current holder to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contend {
    /// Ask the holder to stop and persist (PATCH, HEAD, DELETE).
    StopHolder,
    /// Wait politely (background work such as expiry).
    Wait,
}

struct Slot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// Signal of the current holder.
    stop: Mutex<Arc<Notify>>,
}

/// The in-process per-upload locks.
struct Locks {
    slots: Mutex<HashMap<UploadId, Arc<Slot>>>,
    /// Set once the server shuts down: every holder, present and future,
    /// is asked to stop.
    closing: watch::Sender<bool>,
}

impl Default for Locks {
    fn default() -> Self {
        Locks {
            slots: Mutex::default(),
            closing: watch::Sender::new(false),
        }
    }
}

/// Holds an upload's in-process lock until dropped.
struct LockGuard<'a> {
    locks: &'a Locks,
    id: UploadId,
    slot: Arc<Slot>,
    guard: Option<OwnedMutexGuard<()>>,
    stop: Arc<Notify>,
    closing: watch::Receiver<bool>,
}

impl Locks {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Arc<Slot>>> {
        // A panic while holding this map lock cannot leave it inconsistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the lock of `id`, waiting at most `wait`.
    async fn acquire(
        &self,
        id: &UploadId,
        wait: Duration,
        contend: Contend,
    ) -> Result<LockGuard<'_>, Locked> {
        let slot = self
            .slots()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    mutex: Arc::new(tokio::sync::Mutex::new(())),
                    stop: Mutex::new(Arc::new(Notify::new())),
                })
            })
            .clone();
        let guard = match slot.mutex.clone().try_lock_owned() {
            Ok(g) => Ok(g),
            Err(_) => {
                if contend == Contend::StopHolder {
                    slot.stop
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .notify_one();
                }
                let waited = Instant::now();
                let got = tokio::time::timeout(wait, slot.mutex.clone().lock_owned())
                    .await
                    .map_err(|_| Locked);
                // metrics: only requests that had to wait are measured.
                metrics::histogram!(crate::telemetry::LOCK_WAIT_SECONDS)
                    .record(waited.elapsed().as_secs_f64());
                if got.is_err() {
                    metrics::counter!(crate::telemetry::LOCK_TIMEOUTS).increment(1);
                }
                got
            }
        };
        let guard = match guard {
            Ok(g) => g,
            Err(e) => {
                self.release_slot(id, &slot);
                return Err(e);
            }
        };
        let stop = Arc::new(Notify::new());
        *slot.stop.lock().unwrap_or_else(|p| p.into_inner()) = stop.clone();
        Ok(LockGuard {
            locks: self,
            id: id.clone(),
            slot,
            guard: Some(guard),
            stop,
            closing: self.closing.subscribe(),
        })
    }

    /// Forgets the slot when nobody else refers to it.
    fn release_slot(&self, id: &UploadId, slot: &Arc<Slot>) {
        let mut slots = self.slots();
        // One reference in the map, one held by the caller.
        if Arc::strong_count(slot) == 2 {
            slots.remove(id);
        }
    }

    /// Asks the current holder of `id`'s lock, if any, to stop.
    fn signal_stop(&self, id: &UploadId) {
        if let Some(slot) = self.slots().get(id) {
            slot.stop
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .notify_one();
        }
    }

    /// Asks every current holder, and every later one, to stop and persist
    /// what it has (server shutdown).
    fn stop_all(&self) {
        self.closing.send_replace(true);
    }

    /// Whether [`Locks::stop_all`] was called.
    fn is_stopping(&self) -> bool {
        *self.closing.borrow()
    }

    /// Number of uploads with a lock entry (held or awaited).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LockGuard<'_> {
    /// Resolves when another request asks this holder to stop, or the
    /// server shuts down.
    async fn stop_requested(&self) {
        let mut closing = self.closing.clone();
        tokio::select! {
            _ = self.stop.notified() => {}
            closed = closing.wait_for(|c| *c) => {
                if closed.is_err() {
                    // The sender lives in `Locks`, which outlives this guard;
                    // should it ever be gone, only a contender can stop us.
                    self.stop.notified().await
                }
            }
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.locks.release_slot(&self.id, &self.slot);
    }
}

/// Hands out [`UploadLock`]s: the in-process locks plus, for a shared meta
/// store, leases. Clones share the same locks.
#[derive(Clone, Default)]
pub struct Locker {
    local: Arc<Locks>,
    leases: Option<Arc<dyn LeaseStore>>,
}

/// A lease held for the life of an [`UploadLock`], renewed by a heartbeat.
struct HeldLease {
    leases: Arc<dyn LeaseStore>,
    lease: Option<Lease>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Becomes true when the heartbeat finds the lease lost.
    lost: watch::Receiver<bool>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.heartbeat.abort();
        let Some(lease) = self.lease.take() else {
            return;
        };
        let leases = self.leases.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = leases.release(&lease).await {
                        tracing::warn!(upload = %lease.upload, error = %e, "releasing a lease failed; it expires by itself");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(upload = %lease.upload, "no runtime to release a lease; it expires by itself")
            }
        }
    }
}

/// One writer's hold on an upload: the in-process lock, and the lease
/// when the meta store is shared. Released when dropped.
pub struct UploadLock<'a> {
    // Dropped first: the lease goes before the local lock.
    lease: Option<HeldLease>,
    local: LockGuard<'a>,
}

impl UploadLock<'_> {
    /// Resolves when another request (here or on another instance) asks
    /// this holder to stop, the server shuts down, or the lease was lost.
    pub async fn stop_requested(&self) {
        let Some(held) = &self.lease else {
            return self.local.stop_requested().await;
        };
        let mut lost = held.lost.clone();
        let lost = async move {
            if lost.wait_for(|l| *l).await.is_err() {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = self.local.stop_requested() => {}
            _ = lost => {
                tracing::warn!(upload = %self.local.id, "lease lost; stopping the request");
            }
        }
    }
}

/// First pause between two lease attempts, and the longest.
const LEASE_RETRY_MIN: Duration = Duration::from_millis(20);
const LEASE_RETRY_MAX: Duration = Duration::from_millis(200);

impl Locker {
    /// In-process locks only (a meta store used by one instance).
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a lease from `leases` on top of every in-process lock (a meta
    /// store shared by several instances).
    pub fn with_leases(self, leases: Arc<dyn LeaseStore>) -> Self {
        Locker {
            leases: Some(leases),
            ..self
        }
    }

    /// Asks this instance's holder of `id`'s lock, if any, to stop (a
    /// request from another instance, or a hook's answer).
    pub fn signal_stop(&self, id: &UploadId) {
        self.local.signal_stop(id);
    }

    /// Asks every current holder, and every later one, to stop and persist
    /// what it has (server shutdown).
    pub fn stop_all(&self) {
        self.local.stop_all();
    }

    /// Whether [`Locker::stop_all`] was called.
    pub fn is_stopping(&self) -> bool {
        self.local.is_stopping()
    }

    /// Takes the in-process lock of `id`, then its lease if any, waiting at
    /// most `wait` in all.
    pub async fn acquire(
        &self,
        id: &UploadId,
        wait: Duration,
        contend: Contend,
    ) -> Result<UploadLock<'_>, LockError> {
        let deadline = Instant::now() + wait;
        let local = self.local.acquire(id, wait, contend).await?;
        let Some(leases) = &self.leases else {
            return Ok(UploadLock { lease: None, local });
        };
        let mut asked = false;
        let mut pause = LEASE_RETRY_MIN;
        loop {
            match leases.try_acquire(id).await {
                Ok(Attempt::Acquired(lease)) => {
                    return Ok(UploadLock {
                        lease: Some(hold(leases.clone(), lease)),
                        local,
                    })
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if contend == Contend::StopHolder && !asked && !holder.is_empty() {
                        asked = true;
                        if let Err(e) = leases.request_stop(id, &holder).await {
                            tracing::warn!(upload = %id, error = %e, "asking the holder instance to stop failed");
                        }
                    }
                }
                // Each attempt is bounded by the store's query timeout; a
                // failure ends the request at once (503, the client retries)
                // rather than after the whole wait.
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "taking the upload's lease failed");
                    return Err(LockError::Lease(e));
                }
            }
            if Instant::now() + pause > deadline {
                metrics::counter!(crate::telemetry::LOCK_TIMEOUTS).increment(1);
                return Err(Locked.into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LEASE_RETRY_MAX);
        }
    }
}

/// Starts the heartbeat of a freshly acquired lease.
fn hold(leases: Arc<dyn LeaseStore>, lease: Lease) -> HeldLease {
    let (lost_tx, lost) = watch::channel(false);
    let every = (leases.ttl() / 3).max(Duration::from_millis(100));
    let (store, beat) = (leases.clone(), lease.clone());
    let ttl = leases.ttl();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut renewed = Instant::now();
        loop {
            tick.tick().await;
            match store.renew(&beat).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    lost_tx.send_replace(true);
                    return;
                }
                // Cut off from the database: once the lease may have
                // expired there, another instance may hold it; stop before.
                Err(e) if renewed.elapsed() + every >= ttl => {
                    tracing::warn!(upload = %beat.upload, error = %e, "lease could not be renewed in time");
                    lost_tx.send_replace(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(upload = %beat.upload, error = %e, "lease heartbeat failed");
                }
            }
        }
    });
    HeldLease {
        leases,
        lease: Some(lease),
        heartbeat,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_acquirer_stops_the_first() {
        let locks = Locks::default();
        let id = UploadId::generate();
        let first = locks
            .acquire(&id, Duration::from_secs(1), Contend::StopHolder)
            .await
            .unwrap();
        let holder = async {
            first.stop_requested().await;
            drop(first);
        };
        let second = locks.acquire(&id, Duration::from_secs(5), Contend::StopHolder);
        let (_, second) = tokio::join!(holder, second);
        assert!(second.is_ok());
        drop(second);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn stop_all_reaches_current_and_later_holders() {
        let locks = Locks::default();
        let first = locks
            .acquire(&UploadId::generate(), Duration::from_secs(1), Contend::Wait)
            .await
            .unwrap();
        assert!(!locks.is_stopping());
        let stopper = async {
            tokio::task::yield_now().await;
            locks.stop_all();
        };
        tokio::join!(first.stop_requested(), stopper);
        let later = locks
            .acquire(&UploadId::generate(), Duration::from_secs(1), Contend::Wait)
            .await
            .unwrap();
        later.stop_requested().await;
        assert!(locks.is_stopping());
    }

    #[tokio::test]
    async fn times_out_when_holder_does_not_stop() {
        let locks = Locks::default();
        let id = UploadId::generate();
        let _first = locks
            .acquire(&id, Duration::from_secs(1), Contend::Wait)
            .await
            .unwrap();
        assert!(locks
            .acquire(&id, Duration::from_millis(50), Contend::Wait)
            .await
            .is_err());
        assert_eq!(locks.len(), 1);
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;
    use crate::meta::lease::LeaseError;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Leases in memory: `foreign` makes every lease look held by
    /// instance "other"; `lose` makes renewals find the lease gone; `down`
    /// makes acquisitions fail as an unreachable database does.
    #[derive(Default)]
    struct FakeLeases {
        foreign: AtomicBool,
        down: AtomicBool,
        lose: AtomicBool,
        stops: AtomicUsize,
        released: AtomicUsize,
    }

    #[async_trait]
    impl LeaseStore for FakeLeases {
        fn instance(&self) -> &str {
            "me"
        }
        fn ttl(&self) -> Duration {
            Duration::from_millis(300)
        }
        async fn try_acquire(&self, upload: &UploadId) -> Result<Attempt, LeaseError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(LeaseError::Unavailable("connection refused".into()));
            }
            if self.foreign.load(Ordering::SeqCst) {
                return Ok(Attempt::HeldBy("other".into()));
            }
            Ok(Attempt::Acquired(Lease {
                upload: upload.clone(),
                token: uuid::Uuid::new_v4(),
            }))
        }
        async fn renew(&self, _: &Lease) -> Result<bool, LeaseError> {
            Ok(!self.lose.load(Ordering::SeqCst))
        }
        async fn release(&self, _: &Lease) -> Result<(), LeaseError> {
            self.released.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn request_stop(&self, _: &UploadId, holder: &str) -> Result<(), LeaseError> {
            assert_eq!(holder, "other");
            self.stops.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn stop_requests(&self) -> Result<tokio::sync::mpsc::Receiver<UploadId>, LeaseError> {
            Ok(tokio::sync::mpsc::channel(1).1)
        }
    }

    fn locker(fake: &Arc<FakeLeases>) -> Locker {
        Locker::new().with_leases(fake.clone())
    }

    #[tokio::test]
    async fn foreign_holder_is_asked_once_then_locked() {
        let fake = Arc::new(FakeLeases::default());
        fake.foreign.store(true, Ordering::SeqCst);
        let locker = locker(&fake);
        let id = UploadId::generate();
        let got = locker
            .acquire(&id, Duration::from_millis(300), Contend::StopHolder)
            .await;
        assert!(got.is_err());
        assert_eq!(fake.stops.load(Ordering::SeqCst), 1);
        // Background work does not disturb the holder.
        assert!(locker
            .acquire(&id, Duration::ZERO, Contend::Wait)
            .await
            .is_err());
        assert_eq!(fake.stops.load(Ordering::SeqCst), 1);
        // The in-process lock was let go.
        assert!(locker.local.is_empty());
    }

    #[tokio::test]
    async fn unreachable_lease_store_fails_at_once_not_as_locked() {
        let fake = Arc::new(FakeLeases::default());
        fake.down.store(true, Ordering::SeqCst);
        let locker = locker(&fake);
        let id = UploadId::generate();
        let got = locker
            .acquire(&id, Duration::from_secs(3600), Contend::StopHolder)
            .await;
        assert!(
            matches!(got, Err(LockError::Lease(LeaseError::Unavailable(_)))),
            "expected the lease store's failure"
        );
        assert!(locker.local.is_empty());
        fake.down.store(false, Ordering::SeqCst);
        assert!(locker
            .acquire(&id, Duration::from_secs(1), Contend::StopHolder)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn lost_lease_stops_the_holder_and_drop_releases() {
        let fake = Arc::new(FakeLeases::default());
        let locker = locker(&fake);
        let id = UploadId::generate();
        let held = locker
            .acquire(&id, Duration::from_secs(1), Contend::StopHolder)
            .await
            .unwrap();
        fake.lose.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), held.stop_requested())
            .await
            .expect("holder not stopped after losing its lease");
        drop(held);
        let mut released = false;
        for _ in 0..100 {
            if fake.released.load(Ordering::SeqCst) == 1 {
                released = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(released);
    }

    #[tokio::test]
    async fn local_contender_stops_a_lease_holder() {
        let fake = Arc::new(FakeLeases::default());
        let locker = locker(&fake);
        let id = UploadId::generate();
        let first = locker
            .acquire(&id, Duration::from_secs(1), Contend::StopHolder)
            .await
            .unwrap();
        let holder = async {
            first.stop_requested().await;
            drop(first);
        };
        let second = locker.acquire(&id, Duration::from_secs(5), Contend::StopHolder);
        let (_, second) = tokio::join!(holder, second);
        assert!(second.is_ok());
        // Same instance: no cross-instance stop request.
        assert_eq!(fake.stops.load(Ordering::SeqCst), 0);
    }
}
