//! Prometheus metrics through the `metrics` facade.
//!
//! Code anywhere in the crate emits with `metrics::counter!(NAME)` and
//! friends. Each server gets its own recorder (so several servers in one
//! process, as in the tests, do not mix their numbers): it is installed as
//! the thread-local recorder of every actix worker thread, and background
//! tasks on the server's own thread are wrapped in [`WithRecorder`].
//! `GET /metrics` renders it.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// HTTP responses, by method and status (counter).
pub const HTTP_REQUESTS: &str = "tusker_http_requests_total";
/// Request body bytes accepted into uploads (counter).
pub const BYTES_RECEIVED: &str = "tusker_bytes_received_total";
/// Uploads created (counter).
pub const UPLOADS_CREATED: &str = "tusker_uploads_created_total";
/// Uploads that received their last byte and were sealed (counter).
pub const UPLOADS_FINISHED: &str = "tusker_uploads_finished_total";
/// Uploads removed by DELETE (counter).
pub const UPLOADS_TERMINATED: &str = "tusker_uploads_terminated_total";
/// Unfinished uploads removed by the expiry sweep (counter).
pub const UPLOADS_EXPIRED: &str = "tusker_uploads_expired_total";
/// Requests currently streaming a body into an upload (gauge).
pub const UPLOADS_IN_PROGRESS: &str = "tusker_uploads_in_progress";
/// Latency of one data-store call attempt, by operation (histogram).
pub const STORAGE_CALL_SECONDS: &str = "tusker_storage_call_seconds";
/// Data-store calls retried after a transient error, by operation (counter).
pub const STORAGE_RETRIES: &str = "tusker_storage_retries_total";
/// Hook calls by event and outcome (counter; emitted by the hooks module).
pub const HOOK_CALLS: &str = "tusker_hook_calls_total";
/// Hook call latency by event (histogram; emitted by the hooks module).
pub const HOOK_CALL_SECONDS: &str = "tusker_hook_call_seconds";
/// Time a request waited for a busy upload's lock (histogram).
pub const LOCK_WAIT_SECONDS: &str = "tusker_lock_wait_seconds";
/// Requests that gave up waiting for a busy upload (counter).
pub const LOCK_TIMEOUTS: &str = "tusker_lock_timeouts_total";
/// Gauge: free bytes on the disk of file storage.
pub const STORAGE_FREE_BYTES: &str = "tusker_storage_free_bytes";
/// Gauge: bytes kept free there (`--min-free-space`).
pub const STORAGE_RESERVE_BYTES: &str = "tusker_storage_reserve_bytes";
/// Counter: requests refused because descriptors ran out (EMFILE, ENFILE).
pub const DESCRIPTORS_EXHAUSTED: &str = "tusker_descriptors_exhausted_total";

/// Histogram buckets in seconds: from a fast local fsync to a slow part
/// upload of a large object.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The metrics of one server.
#[derive(Clone)]
pub struct Metrics {
    recorder: &'static PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    /// A fresh recorder with every metric described.
    ///
    /// The recorder lives as long as the process: worker threads keep a
    /// reference to it in thread-local storage. One server start costs one
    /// small recorder, which matters only to test processes that start many.
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        let builder = match builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        {
            Ok(b) => b,
            // Only an empty bucket list is refused, and ours is not empty.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder: &'static PrometheusRecorder = Box::leak(Box::new(builder.build_recorder()));
        let handle = recorder.handle();
        let metrics = Metrics { recorder, handle };
        metrics.scope(describe_all);
        metrics
    }

    /// Makes this recorder the current thread's recorder for good. Called on
    /// each worker thread as it starts.
    pub fn install_on_current_thread(&self) {
        // The guard would restore the previous recorder when dropped; this
        // thread belongs to the server, so the recorder stays.
        std::mem::forget(metrics::set_default_local_recorder(self.recorder));
    }

    /// Runs `f` with this recorder.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder, f)
    }

    /// Wraps a future so that everything it emits goes to this recorder,
    /// whichever thread-local recorder the polling thread has.
    pub fn instrument<F: Future>(&self, future: F) -> WithRecorder<F> {
        WithRecorder {
            recorder: self.recorder,
            future: Box::pin(future),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into their buckets so memory stays bounded
    /// between scrapes; run every few seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A future polled with a given recorder (see [`Metrics::instrument`]).
pub struct WithRecorder<F> {
    recorder: &'static PrometheusRecorder,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for WithRecorder<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let recorder = self.recorder;
        metrics::with_local_recorder(recorder, || self.future.as_mut().poll(cx))
    }
}

/// Describes every metric and shows the unlabelled counters at zero from
/// the start, so dashboards and alerts see them before the first event.
fn describe_all() {
    describe_counter!(HTTP_REQUESTS, "HTTP responses sent, by method and status");
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Request body bytes written into uploads"
    );
    describe_counter!(UPLOADS_CREATED, "Uploads created");
    describe_counter!(
        UPLOADS_FINISHED,
        "Uploads completed (every byte received and sealed)"
    );
    describe_counter!(UPLOADS_TERMINATED, "Uploads removed by the client (DELETE)");
    describe_counter!(UPLOADS_EXPIRED, "Unfinished uploads removed after expiring");
    describe_gauge!(
        UPLOADS_IN_PROGRESS,
        "Requests currently streaming a body into an upload"
    );
    describe_histogram!(
        STORAGE_CALL_SECONDS,
        Unit::Seconds,
        "Latency of one object-storage call attempt, by operation"
    );
    describe_counter!(
        STORAGE_RETRIES,
        "Object-storage calls retried after a transient error, by operation"
    );
    describe_counter!(HOOK_CALLS, "Hook calls, by event and outcome");
    describe_histogram!(
        HOOK_CALL_SECONDS,
        Unit::Seconds,
        "Hook call latency, by event"
    );
    describe_histogram!(
        LOCK_WAIT_SECONDS,
        Unit::Seconds,
        "Time a request waited for an upload busy with another request"
    );
    describe_counter!(
        LOCK_TIMEOUTS,
        "Requests answered 423 because the upload stayed busy"
    );
    describe_gauge!(
        STORAGE_FREE_BYTES,
        Unit::Bytes,
        "Free bytes on the disk of file storage (updated by /readyz and creations)"
    );
    describe_gauge!(
        STORAGE_RESERVE_BYTES,
        Unit::Bytes,
        "Bytes kept free on that disk (--min-free-space)"
    );
    describe_counter!(
        DESCRIPTORS_EXHAUSTED,
        "Requests answered 503 because file descriptors ran out"
    );
    for name in [
        BYTES_RECEIVED,
        UPLOADS_CREATED,
        UPLOADS_FINISHED,
        UPLOADS_TERMINATED,
        UPLOADS_EXPIRED,
        LOCK_TIMEOUTS,
        DESCRIPTORS_EXHAUSTED,
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!(UPLOADS_IN_PROGRESS).set(0.0);
}

/// A bounded label for an HTTP method.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::PUT => "PUT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_do_not_share_numbers() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.scope(|| metrics::counter!(UPLOADS_CREATED).increment(3));
        b.scope(|| metrics::counter!(UPLOADS_CREATED).increment(1));
        assert!(a.render().contains("tusker_uploads_created_total 3"));
        assert!(b.render().contains("tusker_uploads_created_total 1"));
    }

    #[test]
    fn seconds_are_histograms() {
        let m = Metrics::new();
        m.scope(|| metrics::histogram!(LOCK_WAIT_SECONDS).record(0.2));
        let text = m.render();
        assert!(
            text.contains("# TYPE tusker_lock_wait_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("tusker_lock_wait_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
    }
}
