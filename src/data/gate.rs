//! Per-upload I/O gates.
//!
//! The upload lock ends when a request's future is dropped (the client went
//! away), but work that request started on the blocking pool — a file write,
//! an `fdatasync`, a meta store save — cannot be cancelled and keeps running.
//! The next request for the same upload must not read the offset, truncate
//! or write until that work is over. A request takes the upload's gate
//! ([`IoGates::acquire`]) and every piece of detached work holds a clone of
//! the [`IoPermit`]; the gate opens when the last clone is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

type Gate = Arc<tokio::sync::Mutex<()>>;

/// One gate per upload id, created on demand and forgotten when unused.
#[derive(Default)]
pub struct IoGates {
    gates: Arc<Mutex<HashMap<String, Gate>>>,
    /// Told each time an acquire has to wait (tests observe the ordering).
    #[cfg(test)]
    pub(crate) waiting: tokio::sync::Notify,
}

impl std::fmt::Debug for IoGates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoGates").finish_non_exhaustive()
    }
}

impl IoGates {
    /// Waits until no earlier work on upload `id` is running, then returns
    /// the permit that keeps later requests out while it (or a clone) lives.
    pub async fn acquire(&self, id: &str) -> IoPermit {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            gates.entry(id.to_owned()).or_default().clone()
        };
        let guard = match gate.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                #[cfg(test)]
                self.waiting.notify_one();
                gate.clone().lock_owned().await
            }
        };
        drop(gate);
        IoPermit {
            _held: Some(Arc::new(Held {
                guard: Some(guard),
                id: id.to_owned(),
                gates: Arc::downgrade(&self.gates),
            })),
        }
    }
}

/// Keeps an upload's gate closed while any clone lives. Move a clone into
/// every piece of work that may outlive the request.
#[derive(Clone, Debug)]
pub struct IoPermit {
    /// Only dropped: the last clone opens the gate.
    _held: Option<Arc<Held>>,
}

impl IoPermit {
    /// Runs `work` in a task of its own holding a clone of this permit: the
    /// work ends even if the caller is dropped (a client hanging up), and
    /// the upload's next request waits for it at the gate.
    pub async fn run_detached<F>(&self, work: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_detached(work).await
    }

    /// Like [`Self::run_detached`], but returns the task's handle at once,
    /// for work the caller goes on beside (a checkpoint behind a body).
    pub fn spawn_detached<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let permit = self.clone();
        tokio::spawn(async move {
            let out = work.await;
            drop(permit);
            out
        })
    }

    /// A permit that guards nothing, for writers no request can race
    /// (e.g. assembling a new final upload) and for benchmarks.
    pub fn unshared() -> Self {
        IoPermit { _held: None }
    }
}

#[derive(Debug)]
struct Held {
    guard: Option<OwnedMutexGuard<()>>,
    id: String,
    gates: std::sync::Weak<Mutex<HashMap<String, Gate>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(gates) = self.gates.upgrade() else {
            return;
        };
        let mut gates = gates.lock().unwrap_or_else(|p| p.into_inner());
        // Opened under the map's lock: a request that found the gate in the
        // map holds a reference to it, so the entry is removed only when
        // nobody waits.
        drop(self.guard.take());
        if let Some(gate) = gates.get(&self.id) {
            if Arc::strong_count(gate) == 1 {
                gates.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_gate_opens_when_the_last_clone_of_its_permit_is_dropped() {
        let gates = IoGates::default();
        let first = gates.acquire("a").await;
        let clone = first.clone();
        // Another upload is not affected.
        let other = gates.acquire("b").now_or_never();
        assert!(other.is_some(), "upload b must not wait for upload a");
        drop(other);

        let mut next = Box::pin(gates.acquire("a"));
        assert!((&mut next).now_or_never().is_none(), "gate open while held");
        drop(first);
        assert!((&mut next).now_or_never().is_none(), "a clone still runs");
        drop(clone);
        let permit = next.await;
        drop(permit);
        assert!(
            gates.gates.lock().unwrap().is_empty(),
            "unused gates are forgotten"
        );
    }

    #[tokio::test]
    async fn an_unshared_permit_guards_nothing() {
        let gates = IoGates::default();
        let _free = IoPermit::unshared();
        assert!(gates.acquire("a").now_or_never().is_some());
    }
}
