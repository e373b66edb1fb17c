//! Upload events on message brokers (`--events-nats`, `--events-amqp`,
//! `--events-redis`): the notifications an HTTP hook receiver gets, for
//! pipelines that consume a broker.
//!
//! Each broker is an [`EventSink`] with a bounded queue and one worker
//! task, on a small runtime of its own: the request path only ever puts an
//! event in a queue ([`Events::emit`]) and never waits for a broker. An
//! event goes out in queue order, so a sink sees an upload's post-receive
//! events before its post-finish. Owed events (post-finish, post-terminate;
//! the engine keeps them in the meta store's outbox) go through
//! [`Events::deliver`], which resolves once every sink confirmed it.

pub mod amqp;
pub mod nats;
pub mod redis;

use crate::hooks::{HookEvent, HookRequest, HookType};
use crate::runtime::{SideRuntime, ThreadInit};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Events published per broker (counter; label `broker`).
pub const PUBLISHED: &str = "tusker_events_published_total";
/// Publish attempts repeated after a failure, per broker (counter).
pub const RETRIED: &str = "tusker_events_retried_total";
/// Best-effort events given up (queue full or attempts used up), per
/// broker (counter). Owed events are never dropped: they stay owed.
pub const DROPPED: &str = "tusker_events_dropped_total";

/// The events a sink can carry (notifications only: nothing waits for a
/// broker's answer).
pub const EVENT_TYPES: [HookType; 4] = [
    HookType::PostCreate,
    HookType::PostReceive,
    HookType::PostFinish,
    HookType::PostTerminate,
];

/// Settings of the event sinks.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    pub nats: Option<nats::NatsConfig>,
    pub amqp: Option<amqp::AmqpConfig>,
    pub redis: Option<redis::RedisConfig>,
    /// Event types published (a subset of [`EVENT_TYPES`]).
    pub enabled: BTreeSet<HookType>,
    /// Events waiting per sink; best-effort events beyond it are dropped.
    pub queue: usize,
    /// Limit of one publish, connecting included.
    pub timeout: Duration,
    /// Attempts per event before a best-effort one is dropped, or an owed
    /// one is left to the next outbox pass.
    pub attempts: usize,
    /// post-receive at most this often per upload.
    pub progress_interval: Duration,
}

/// Errors of a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("no confirmation within {0:?}")]
    Timeout(Duration),
    #[error("invalid setting: {0}")]
    Config(String),
}

/// One event as published: the tusd hook request JSON plus `Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stable across redeliveries of the same event (for deduplication).
    pub id: String,
    pub kind: HookType,
    /// The message body (JSON).
    pub body: Arc<str>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "Id")]
    id: &'a str,
    #[serde(flatten)]
    request: HookRequest<'a>,
}

impl Event {
    pub fn new(kind: HookType, event: &HookEvent) -> Event {
        let id = event.key(kind);
        let body = serde_json::to_string(&Body {
            id: &id,
            request: HookRequest {
                kind: kind.name(),
                event,
            },
        })
        // Strings and numbers only: serializing cannot fail.
        .unwrap_or_default();
        Event {
            id,
            kind,
            body: body.into(),
        }
    }

    /// The event kept as a debt in the meta store.
    pub fn to_debt(&self) -> crate::meta::EventDebt {
        crate::meta::EventDebt {
            id: self.id.clone(),
            kind: self.kind.name().to_owned(),
            body: self.body.to_string(),
        }
    }

    /// An owed event read back; `None` for an unknown type.
    pub fn from_debt(debt: &crate::meta::EventDebt) -> Option<Event> {
        Some(Event {
            id: debt.id.clone(),
            kind: HookType::parse(&debt.kind)?,
            body: debt.body.as_str().into(),
        })
    }
}

/// A broker that events are published to.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Label in metrics and logs (`nats`, `amqp`, `redis`).
    fn name(&self) -> &'static str;
    /// Publishes one event; resolves once the broker has it durably (its
    /// ack or confirm). Connects, or reconnects, as needed.
    async fn publish(&self, event: &Event) -> Result<(), SinkError>;
}

/// A queued publish; `done` reports the outcome of an owed event.
struct Job {
    event: Arc<Event>,
    done: Option<oneshot::Sender<bool>>,
}

struct Lane {
    name: &'static str,
    queue: mpsc::Sender<Job>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The dispatcher over every configured sink.
pub struct Events {
    enabled: BTreeSet<HookType>,
    progress_interval: Duration,
    lanes: Vec<Lane>,
    /// Owed events some sinks confirmed and others not yet (bit per lane),
    /// so a redelivery goes to the missing ones only.
    confirmed: Mutex<HashMap<String, u64>>,
    tasks: TaskTracker,
    /// The sink workers' runtime.
    runtime: SideRuntime,
}

impl Events {
    /// Starts a worker per sink in `config` (connections are made on first
    /// use, so a broker that is down does not stop the server starting).
    pub fn start(
        config: &EventsConfig,
        on_thread_start: Option<ThreadInit>,
    ) -> Result<Events, SinkError> {
        let mut sinks: Vec<Arc<dyn EventSink>> = Vec::new();
        if let Some(c) = &config.nats {
            sinks.push(Arc::new(nats::NatsSink::new(c.clone(), config.timeout)?));
        }
        if let Some(c) = &config.amqp {
            sinks.push(Arc::new(amqp::AmqpSink::new(c.clone())?));
        }
        if let Some(c) = &config.redis {
            sinks.push(Arc::new(redis::RedisSink::new(c.clone(), config.timeout)?));
        }
        Self::with_sinks(sinks, config, on_thread_start)
    }

    /// A dispatcher over given sinks.
    pub fn with_sinks(
        sinks: Vec<Arc<dyn EventSink>>,
        config: &EventsConfig,
        on_thread_start: Option<ThreadInit>,
    ) -> Result<Events, SinkError> {
        if sinks.len() > 64 {
            return Err(SinkError::Config("at most 64 sinks".into()));
        }
        let runtime = SideRuntime::start("tusker-events", 1, on_thread_start)
            .map_err(|e| SinkError::Config(format!("event runtime: {e}")))?;
        let tasks = TaskTracker::new();
        let retry = Retry {
            attempts: config.attempts.max(1),
            timeout: config.timeout,
        };
        let lanes = sinks
            .into_iter()
            .map(|sink| {
                let (tx, rx) = mpsc::channel(config.queue.max(1));
                let name = sink.name();
                tasks.spawn_on(work(sink, rx, retry), runtime.handle());
                Lane { name, queue: tx }
            })
            .collect();
        Ok(Events {
            enabled: config.enabled.clone(),
            progress_interval: config.progress_interval,
            lanes,
            confirmed: Mutex::new(HashMap::new()),
            tasks,
            runtime,
        })
    }

    pub fn enabled(&self, kind: HookType) -> bool {
        self.enabled.contains(&kind)
    }

    pub fn progress_interval(&self) -> Duration {
        self.progress_interval
    }

    /// Queues a best-effort event on every sink, without waiting; a full
    /// queue drops it (counted).
    pub fn emit(&self, event: Event) {
        let event = Arc::new(event);
        for lane in &self.lanes {
            let job = Job {
                event: event.clone(),
                done: None,
            };
            if lane.queue.try_send(job).is_err() {
                metrics::counter!(DROPPED, "broker" => lane.name).increment(1);
                tracing::warn!(broker = lane.name, event = event.kind.name(), id = %event.id, "event queue full; event dropped");
            }
        }
    }

    /// Publishes an owed event on every sink that has not confirmed it
    /// yet; true once all have. Waits for queue space, so call it from a
    /// background task only.
    pub async fn deliver(&self, event: Event) -> bool {
        let event = Arc::new(event);
        let before = lock(&self.confirmed).get(&event.id).copied();
        let mut waiting = Vec::new();
        for (i, lane) in self.lanes.iter().enumerate() {
            let bit = 1u64 << i;
            if before.is_some_and(|mask| mask & bit != 0) {
                continue;
            }
            if before.is_some() {
                metrics::counter!(RETRIED, "broker" => lane.name).increment(1);
            }
            let (tx, rx) = oneshot::channel();
            let job = Job {
                event: event.clone(),
                done: Some(tx),
            };
            if lane.queue.send(job).await.is_ok() {
                waiting.push((bit, rx));
            }
        }
        let mut mask = before.unwrap_or(0);
        for (bit, rx) in waiting {
            if rx.await.unwrap_or(false) {
                mask |= bit;
            }
        }
        let all = if self.lanes.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.lanes.len()) - 1
        };
        let mut confirmed = lock(&self.confirmed);
        if mask == all {
            confirmed.remove(&event.id);
            true
        } else {
            confirmed.insert(event.id.clone(), mask);
            false
        }
    }

    /// Runs a delivery task on the sinks' runtime, tracked for draining.
    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.tasks.spawn_on(task, self.runtime.handle());
    }

    /// At shutdown: waits (at most `limit`) until the queues are empty and
    /// delivery tasks are done. Owed events not delivered by then stay
    /// owed for the next start.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let empty = || {
            self.lanes
                .iter()
                .all(|l| l.queue.capacity() == l.queue.max_capacity())
        };
        // The workers run as long as their queues exist: wait for the
        // queues and the delivery tasks (every tracked task but the
        // workers).
        while tokio::time::Instant::now() < deadline
            && (!empty() || self.tasks.len() > self.lanes.len())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !empty() {
            tracing::warn!("events still queued at shutdown; best-effort ones are lost");
        }
    }
}

#[derive(Clone, Copy)]
struct Retry {
    attempts: usize,
    timeout: Duration,
}

/// A sink's worker: publishes queued events in order, each with retries.
async fn work(sink: Arc<dyn EventSink>, mut queue: mpsc::Receiver<Job>, retry: Retry) {
    let name = sink.name();
    // Shown at zero from the start (this runs with the server's recorder).
    for counter in [PUBLISHED, RETRIED, DROPPED] {
        metrics::counter!(counter, "broker" => name).absolute(0);
    }
    while let Some(job) = queue.recv().await {
        let event = &job.event;
        let mut pause = Duration::from_millis(200);
        let mut ok = false;
        for attempt in 1..=retry.attempts {
            let result = match tokio::time::timeout(retry.timeout, sink.publish(event)).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::Timeout(retry.timeout)),
            };
            match result {
                Ok(()) => {
                    metrics::counter!(PUBLISHED, "broker" => name).increment(1);
                    ok = true;
                    break;
                }
                Err(e) if attempt < retry.attempts => {
                    metrics::counter!(RETRIED, "broker" => name).increment(1);
                    tracing::warn!(broker = name, event = event.kind.name(), id = %event.id, error = %e, retry_in_ms = pause.as_millis() as u64, "publishing an event failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(broker = name, event = event.kind.name(), id = %event.id, error = %e, "event not published");
                }
            }
        }
        match job.done {
            Some(done) => {
                let _ = done.send(ok);
            }
            None if !ok => metrics::counter!(DROPPED, "broker" => name).increment(1),
            None => {}
        }
    }
}

/// The value of a sink's URL setting with any password hidden, for logs.
pub(crate) fn shown(url: &str) -> String {
    crate::config::redact("events", url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::{FileInfo, RequestInfo};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hook_event(offset: u64) -> HookEvent {
        HookEvent {
            upload: FileInfo {
                id: "abc".into(),
                size: 10,
                offset,
                ..FileInfo::default()
            },
            http_request: RequestInfo {
                method: "PATCH".into(),
                uri: "/files/abc".into(),
                ..RequestInfo::default()
            },
            auth: None,
        }
    }

    #[test]
    fn body_is_the_hook_request_with_an_id() {
        let e = Event::new(HookType::PostFinish, &hook_event(10));
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["Id"], "abc-post-finish");
        assert_eq!(v["Type"], "post-finish");
        assert_eq!(v["Event"]["Upload"]["ID"], "abc");
        assert_eq!(v["Event"]["Upload"]["Offset"], 10);
        assert_eq!(v["Event"]["HTTPRequest"]["Method"], "PATCH");
        // The same event again has the same Id; progress events differ.
        assert_eq!(Event::new(HookType::PostFinish, &hook_event(10)).id, e.id);
        let (p1, p2) = (
            Event::new(HookType::PostReceive, &hook_event(1)),
            Event::new(HookType::PostReceive, &hook_event(2)),
        );
        assert_ne!(p1.id, p2.id);
        assert_eq!(Event::from_debt(&e.to_debt()), Some(e));
    }

    /// A sink that fails its first `failures` publishes.
    struct Flaky {
        failures: AtomicUsize,
        published: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl EventSink for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn publish(&self, event: &Event) -> Result<(), SinkError> {
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::Publish("down".into()));
            }
            lock(&self.published).push(event.id.clone());
            Ok(())
        }
    }

    fn config(attempts: usize, queue: usize) -> EventsConfig {
        EventsConfig {
            nats: None,
            amqp: None,
            redis: None,
            enabled: EVENT_TYPES.into_iter().collect(),
            queue,
            timeout: Duration::from_secs(5),
            attempts,
            progress_interval: Duration::from_secs(1),
        }
    }

    /// Owed events report failure until each sink confirmed them, and a
    /// redelivery goes to the sinks still missing them only.
    #[tokio::test]
    async fn owed_events_are_confirmed_by_every_sink() {
        let good = Arc::new(Flaky {
            failures: AtomicUsize::new(0),
            published: Mutex::default(),
        });
        let down = Arc::new(Flaky {
            failures: AtomicUsize::new(2),
            published: Mutex::default(),
        });
        let events =
            Events::with_sinks(vec![good.clone(), down.clone()], &config(2, 8), None).unwrap();
        let e = Event::new(HookType::PostFinish, &hook_event(10));
        assert!(!events.deliver(e.clone()).await);
        assert!(events.deliver(e.clone()).await);
        assert_eq!(*lock(&good.published), vec![e.id.clone()]);
        assert_eq!(*lock(&down.published), vec![e.id.clone()]);
    }

    /// Best-effort events keep their order per sink and are retried.
    #[tokio::test]
    async fn emitted_events_keep_their_order() {
        let sink = Arc::new(Flaky {
            failures: AtomicUsize::new(1),
            published: Mutex::default(),
        });
        let events = Events::with_sinks(vec![sink.clone()], &config(3, 8), None).unwrap();
        let ids: Vec<String> = (1..=3)
            .map(|o| {
                let e = Event::new(HookType::PostReceive, &hook_event(o));
                let id = e.id.clone();
                events.emit(e);
                id
            })
            .collect();
        events.drain(Duration::from_secs(10)).await;
        for _ in 0..200 {
            if lock(&sink.published).len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*lock(&sink.published), ids);
    }
}
