//! Group commit: concurrent callers waiting for durability share one flush.
//!
//! Every sled flush ends in an `fdatasync` of sled's log, a disk barrier.
//! With many uploads saving at once (32 clients creating small uploads,
//! 100 uploads checkpointing), each save used to run its own flush, one
//! after another, each covering little more than the previous one did.
//!
//! [`GroupCommit::flush`] gives each caller a ticket. One flush runs at a
//! time; it covers every ticket issued before it started, because those
//! callers' writes happened before their tickets. A caller whose ticket a
//! running flush does not cover waits for that flush to end; then one of the
//! waiters runs the next flush for all of them. So however many callers
//! arrive, at most two flushes stand between a caller and its answer.

use std::future::Future;
use std::sync::Mutex;
use tokio::sync::watch;

use super::MetaError;

#[derive(Default)]
struct State {
    /// Tickets issued so far.
    issued: u64,
    /// A flush is running.
    running: bool,
}

/// The last flush to end: the tickets it covered and how it went.
#[derive(Clone, Default)]
struct Outcome {
    covered: u64,
    error: Option<Failure>,
}

/// A failed flush, as told to the callers it covered besides its leader.
#[derive(Clone)]
enum Failure {
    /// [`MetaError::NoSpace`]: they wait for space as the leader does.
    NoSpace(String),
    Other(String),
}

impl Failure {
    fn of(e: &MetaError) -> Failure {
        match e {
            MetaError::NoSpace(_) => Failure::NoSpace(e.to_string()),
            _ => Failure::Other(e.to_string()),
        }
    }

    fn error(self) -> MetaError {
        match self {
            Failure::NoSpace(m) => MetaError::NoSpace(m.into()),
            Failure::Other(m) => MetaError::Backend(m.into()),
        }
    }
}

/// Shares flushes between concurrent callers (see the module docs).
pub struct GroupCommit {
    state: Mutex<State>,
    outcome: watch::Sender<Outcome>,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::new(State::default()),
            outcome: watch::Sender::new(Outcome::default()),
        }
    }
}

impl GroupCommit {
    /// Resolves once a flush that started after this call has succeeded, or
    /// with that flush's error. `flush` is called (at most once) only if
    /// this caller is the one to run the next flush.
    pub async fn flush<F, Fut>(&self, flush: F) -> Result<(), MetaError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), MetaError>>,
    {
        let ticket = {
            let mut state = self.lock();
            state.issued += 1;
            state.issued
        };
        loop {
            let mut outcome = self.outcome.subscribe();
            let target = {
                let mut state = self.lock();
                let last = outcome.borrow_and_update().clone();
                if last.covered >= ticket {
                    return match last.error {
                        None => Ok(()),
                        Some(e) => Err(e.error()),
                    };
                }
                if state.running {
                    None
                } else {
                    state.running = true;
                    Some(state.issued)
                }
            };
            if let Some(target) = target {
                return self.lead(target, flush).await;
            }
            // A flush is running: wait for it to end (or for its leader to
            // be cancelled), then look again.
            if outcome.changed().await.is_err() {
                return Err(MetaError::Backend("group commit closed".into()));
            }
        }
    }

    /// Runs one flush covering tickets up to `target` and publishes how it
    /// went.
    async fn lead<F, Fut>(&self, target: u64, flush: F) -> Result<(), MetaError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), MetaError>>,
    {
        let mut leading = Leading {
            group: self,
            done: false,
        };
        let result = flush().await;
        let error = result.as_ref().err().map(Failure::of);
        {
            let mut state = self.lock();
            state.running = false;
            self.outcome.send_replace(Outcome {
                covered: target,
                error,
            });
        }
        leading.done = true;
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two integers updated in single statements: a panic
        // elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running flush; if its caller is cancelled before it ends, the
/// waiters are woken so that one of them runs the next flush.
struct Leading<'a> {
    group: &'a GroupCommit,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.group.lock().running = false;
            self.group.outcome.send_modify(|_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::task::JoinHandle;

    /// Spawns a caller whose flush, if it runs one, counts itself in `runs`
    /// and then waits for `hold`.
    fn caller(
        group: &Arc<GroupCommit>,
        runs: &Arc<AtomicUsize>,
        hold: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<Result<(), MetaError>> {
        let (group, runs) = (group.clone(), runs.clone());
        tokio::spawn(async move {
            group
                .flush(|| async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    hold.await;
                    Ok(())
                })
                .await
        })
    }

    /// Waits until the first flush has started.
    async fn first_flush_started(runs: &AtomicUsize) {
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_lone_caller_flushes_every_time() {
        let group = Arc::new(GroupCommit::default());
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            caller(&group, &runs, async {}).await.unwrap().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn callers_arriving_during_a_flush_share_the_next_one() {
        let group = Arc::new(GroupCommit::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let first = caller(&group, &runs, async {
            let _ = hold.await;
        });
        first_flush_started(&runs).await;
        // Ten callers arrive while the first flush runs: it cannot cover
        // them, one more flush covers them all.
        let waiters: Vec<_> = (0..10).map(|_| caller(&group, &runs, async {})).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "nobody flushes while one runs"
        );
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_flush_fails_the_callers_it_covered_only() {
        let group = Arc::new(GroupCommit::default());
        let err = group
            .flush(|| async { Err(MetaError::Backend("disk full".into())) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        // The next caller is not covered by the failed flush: it runs its own.
        group.flush(|| async { Ok(()) }).await.unwrap();
    }

    /// Callers covered by a flush that met a full disk are told so, not
    /// of a backend failure.
    #[tokio::test]
    async fn a_full_disk_reaches_every_caller_it_covered() {
        let group = Arc::new(GroupCommit::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let first = caller(&group, &runs, async {
            let _ = hold.await;
        });
        first_flush_started(&runs).await;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move {
                    group
                        .flush(|| async { Err(MetaError::NoSpace("disk full".into())) })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for w in waiters {
            let e = w.await.unwrap().unwrap_err();
            assert!(matches!(e, MetaError::NoSpace(_)), "{e:?}");
        }
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let group = Arc::new(GroupCommit::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let leader = caller(&group, &runs, std::future::pending());
        first_flush_started(&runs).await;
        let waiter = caller(&group, &runs, async {});
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter took over")
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
