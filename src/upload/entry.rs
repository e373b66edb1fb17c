//! The one way into an upload: its lock, then its I/O gate, then its
//! record. Every path that reads an upload's record to change it enters
//! this way, so no two paths take the steps in different orders.
//!
//! The lock makes this request the upload's only writer (across instances
//! with leases); the gate then waits for work a dropped request left
//! running on the upload (a write, a save, a removal), which no longer
//! holds the lock; only then is the record read, so it shows what that
//! work did.

use super::lock::{Contend, Locker, UploadLock};
use super::{load_live, Engine, UploadError};
use crate::data::{IoGates, IoPermit};
use crate::meta::{Lookup, MetaStore};
use crate::model::UploadInfo;
use crate::protocol::UploadId;
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Duration;

/// Who enters, which decides how long to wait and what a running holder
/// is asked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Entry {
    /// A client's request: a running request on the upload is asked to
    /// stop; lock and gate are each waited for up to `--lock-timeout`.
    Request,
    /// Work following another upload's change (assembling a final upload,
    /// removing one with its part): waits for a running request to end,
    /// up to `--lock-timeout` each.
    Follow,
    /// The expiry sweep: enters only an upload nobody is busy with, and
    /// reads its record even when it has expired.
    Sweep,
    /// Bookkeeping after work done for the upload (recording a delivered
    /// post-finish): waits like [`Entry::Follow`], and reads the record
    /// even when it has expired, as it stands until the sweep removes it.
    Settle,
}

/// An upload entered: held until dropped.
pub(crate) struct Entered<'a> {
    pub(crate) lock: UploadLock<'a>,
    pub(crate) permit: IoPermit,
    /// The record as read after the lock and the gate.
    pub(crate) info: UploadInfo,
}

/// What entering an upload takes, borrowed from the engine or from an
/// [`Entrance`].
struct Door<'a> {
    meta: &'a dyn MetaStore,
    locker: &'a Locker,
    gates: &'a IoGates,
    lock_timeout: Duration,
}

impl<'a> Door<'a> {
    async fn enter(self, id: &UploadId, entry: Entry) -> Result<Entered<'a>, UploadError> {
        let (wait, contend) = match entry {
            Entry::Request => (self.lock_timeout, Contend::StopHolder),
            Entry::Follow | Entry::Settle => (self.lock_timeout, Contend::Wait),
            Entry::Sweep => (Duration::ZERO, Contend::Wait),
        };
        let lock = self.locker.acquire(id, wait, contend).await?;
        let permit = match entry {
            Entry::Sweep => self
                .gates
                .acquire(id.as_str())
                .now_or_never()
                .ok_or(UploadError::Locked)?,
            _ => self.gate(id).await?,
        };
        let info = match entry {
            Entry::Sweep | Entry::Settle => match self.meta.get(id).await? {
                Some(Lookup::Live(info)) => *info,
                Some(Lookup::Gone) => return Err(UploadError::Gone),
                None => return Err(UploadError::NotFound),
            },
            _ => load_live(self.meta, id).await?,
        };
        Ok(Entered { lock, permit, info })
    }

    /// The upload's I/O gate, waited for up to the lock timeout.
    async fn gate(&self, id: &UploadId) -> Result<IoPermit, UploadError> {
        tokio::time::timeout(self.lock_timeout, self.gates.acquire(id.as_str()))
            .await
            .map_err(|_| UploadError::Locked)
    }
}

/// The engine's way into an upload, for work that outlives the request
/// that started it (recording a delivered post-finish in the background).
#[derive(Clone)]
pub(crate) struct Entrance {
    pub(crate) meta: Arc<dyn MetaStore>,
    locker: Locker,
    gates: Arc<IoGates>,
    lock_timeout: Duration,
}

impl Entrance {
    /// [`Engine::enter`].
    pub(crate) async fn enter(
        &self,
        id: &UploadId,
        entry: Entry,
    ) -> Result<Entered<'_>, UploadError> {
        Door {
            meta: &*self.meta,
            locker: &self.locker,
            gates: &self.gates,
            lock_timeout: self.lock_timeout,
        }
        .enter(id, entry)
        .await
    }
}

impl Engine {
    fn door(&self) -> Door<'_> {
        Door {
            meta: &*self.meta,
            locker: &self.locker,
            gates: &self.gates,
            lock_timeout: self.config.lock_timeout,
        }
    }

    /// The way into an upload for work that outlives this request.
    pub(crate) fn entrance(&self) -> Entrance {
        Entrance {
            meta: self.meta.clone(),
            locker: self.locker.clone(),
            gates: self.gates.clone(),
            lock_timeout: self.config.lock_timeout,
        }
    }

    /// Enters upload `id`: lock, I/O gate, record. `Locked` when the lock
    /// or the gate is not free in time; `NotFound` or `Gone` when there is
    /// no live record (for [`Entry::Sweep`] and [`Entry::Settle`], an
    /// expired one counts as live).
    pub(crate) async fn enter(
        &self,
        id: &UploadId,
        entry: Entry,
    ) -> Result<Entered<'_>, UploadError> {
        self.door().enter(id, entry).await
    }

    /// Enters an upload this request just created, holding the lock taken
    /// before its record was written: the gate, and the record in hand
    /// (nothing else can have changed it).
    pub(crate) async fn enter_created<'a>(
        &self,
        lock: UploadLock<'a>,
        info: UploadInfo,
    ) -> Result<Entered<'a>, UploadError> {
        let permit = self.io_gate(&info.id).await?;
        Ok(Entered { lock, permit, info })
    }

    /// Waits (up to the lock timeout) until work left running by an
    /// earlier request on `id` is over; the caller holds the upload's lock.
    pub(crate) async fn io_gate(&self, id: &UploadId) -> Result<IoPermit, UploadError> {
        self.door().gate(id).await
    }
}
