//! Small runtimes of their own, for work that must not depend on the HTTP
//! workers: hook deliveries and broker workers outlive them at shutdown to
//! be drained, and PostgreSQL's pooled connections never belong to
//! whichever worker happened to open them.

use std::sync::Arc;

/// Code run on each thread of such a runtime as it starts (e.g. installing
/// the server's metrics recorder there).
pub type ThreadInit = Arc<dyn Fn() + Send + Sync>;

/// A multi-threaded runtime that is shut down without blocking when
/// dropped: tasks still running on it are abandoned, not awaited.
pub(crate) struct SideRuntime {
    // Taken only when dropped.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl SideRuntime {
    /// Starts `threads` worker threads named `name`, each running
    /// `on_thread_start` first.
    pub(crate) fn start(
        name: &str,
        threads: usize,
        on_thread_start: Option<ThreadInit>,
    ) -> std::io::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads)
            .thread_name(name)
            .enable_all();
        if let Some(init) = on_thread_start {
            builder.on_thread_start(move || init());
        }
        let rt = builder.build()?;
        Ok(SideRuntime {
            handle: rt.handle().clone(),
            rt: Some(rt),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
