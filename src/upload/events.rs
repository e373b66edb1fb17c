//! Broker events from the engine ([`crate::events`]).
//!
//! post-create and post-receive (throttled like the HTTP hook) are put in
//! the sinks' queues, best effort. post-finish is owed through the same
//! outbox as the HTTP hook (`finish_hook_pending`, cleared once the hook
//! and every sink have it); post-terminate, whose record is removed, is
//! owed as an event debt in the meta store, written before the removal and
//! cleared once every sink confirmed it. Nothing here waits for a broker
//! on a request's path.

use super::{Engine, UploadError};
use crate::events::{Event, Events};
use crate::hooks::{HookEvent, HookType, RequestInfo};
use crate::model::UploadInfo;
use crate::protocol::UploadId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Event state shared with background deliveries.
pub(crate) struct EventState {
    events: Arc<Events>,
    /// When each upload's last post-receive event was queued.
    last_progress: Mutex<HashMap<UploadId, Instant>>,
    /// Owed deliveries under way: upload ids (post-finish) and event ids
    /// (event debts), so a sweep does not start a second one.
    delivering: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes an owed event; true when there is none or every sink has it.
pub(super) async fn publish_owed(owed: Option<(Arc<Events>, Event)>) -> bool {
    match owed {
        Some((events, event)) => events.deliver(event).await,
        None => true,
    }
}

impl Engine {
    /// Enables the event sinks.
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = Some(Arc::new(EventState {
            events,
            last_progress: Mutex::new(HashMap::new()),
            delivering: Mutex::new(HashSet::new()),
        }));
        self
    }

    /// Waits (at most `limit`) for queued events and owed deliveries under
    /// way; called at shutdown.
    pub async fn drain_events(&self, limit: Duration) {
        if let Some(state) = &self.events {
            state.events.drain(limit).await;
        }
    }

    fn sinks_for(&self, kind: HookType) -> Option<&Arc<EventState>> {
        self.events.as_ref().filter(|s| s.events.enabled(kind))
    }

    /// Whether anyone (a hook receiver or a broker) hears of `kind`.
    pub(crate) fn notifies(&self, kind: HookType) -> bool {
        self.hook_enabled(kind) || self.sinks_for(kind).is_some()
    }

    /// Queues a best-effort event (post-create); owed kinds go through
    /// their outbox instead.
    pub(crate) fn emit_event(&self, kind: HookType, info: &UploadInfo, ctx: &RequestInfo) {
        if matches!(kind, HookType::PostFinish | HookType::PostTerminate) {
            return;
        }
        if let Some(state) = self.sinks_for(kind) {
            state.events.emit(Event::new(kind, &self.event(info, ctx)));
        }
    }

    /// Queues a post-receive event, at most every progress interval per
    /// upload.
    pub(crate) fn emit_progress(&self, info: &UploadInfo, offset: u64, ctx: &RequestInfo) {
        let Some(state) = self.sinks_for(HookType::PostReceive) else {
            return;
        };
        {
            let mut last = lock(&state.last_progress);
            let now = Instant::now();
            if last
                .get(&info.id)
                .is_some_and(|t| now.duration_since(*t) < state.events.progress_interval())
            {
                return;
            }
            last.insert(info.id.clone(), now);
        }
        let mut event = self.event(info, ctx);
        event.upload.offset = offset;
        state.events.emit(Event::new(HookType::PostReceive, &event));
    }

    /// The post-finish event the sinks are owed for `event`, if they take it.
    pub(super) fn finish_event(
        &self,
        id: &UploadId,
        event: &HookEvent,
    ) -> Option<(Arc<Events>, Event)> {
        let state = self.sinks_for(HookType::PostFinish)?;
        lock(&state.last_progress).remove(id);
        Some((
            state.events.clone(),
            Event::new(HookType::PostFinish, event),
        ))
    }

    /// Delivers an owed post-finish when no HTTP hook takes it: to the
    /// sinks only, clearing the debt once all have it (or at once if
    /// nobody takes post-finish any more). Claimed first unless `claimed`,
    /// as for the HTTP hook.
    pub(super) fn deliver_finish_event(&self, info: &UploadInfo, ctx: &RequestInfo, claimed: bool) {
        if !info.finish_hook_pending {
            return;
        }
        let owed = self.finish_event(&info.id, &self.event(info, ctx));
        let (entrance, id) = (self.entrance(), info.id.clone());
        let Some(state) = self.events.clone() else {
            // Owed from a run that notified someone this one does not.
            tokio::spawn(async move {
                if claimed || matches!(entrance.meta.claim_finish_hook(&id).await, Ok(true)) {
                    if let Err(e) = super::hook_dispatch::clear_finish_debt(&entrance, &id).await {
                        tracing::error!(upload = %id, error = %e, "dropping an unwanted post-finish debt failed");
                    }
                }
            });
            return;
        };
        if !lock(&state.delivering).insert(id.to_string()) {
            return;
        }
        let runner = state.clone();
        runner.events.spawn(async move {
            if super::hook_dispatch::claim(&*entrance.meta, &id, claimed).await && publish_owed(owed).await {
                if let Err(e) = super::hook_dispatch::clear_finish_debt(&entrance, &id).await {
                    tracing::error!(upload = %id, error = %e, "recording post-finish delivery failed");
                }
            }
            lock(&state.delivering).remove(id.as_str());
        });
    }

    /// Owes the post-terminate event of an upload about to be removed; the
    /// debt is written before the removal, so neither a broker outage nor
    /// a crash loses it. `None` when no sink takes post-terminate.
    pub(crate) async fn owe_terminate_event(
        &self,
        info: &UploadInfo,
        ctx: &RequestInfo,
    ) -> Result<Option<Event>, UploadError> {
        if self.sinks_for(HookType::PostTerminate).is_none() {
            return Ok(None);
        }
        let event = Event::new(HookType::PostTerminate, &self.event(info, ctx));
        self.meta.add_event_debt(&event.to_debt()).await?;
        Ok(Some(event))
    }

    /// After the removal: delivers the owed post-terminate (or, when the
    /// removal failed, forgets it: nothing was terminated).
    pub(crate) async fn settle_terminate_event(&self, owed: Option<Event>, removed: bool) {
        let Some(event) = owed else { return };
        if removed {
            self.deliver_owed_event(event, false);
        } else if let Err(e) = self.meta.clear_event_debt(&event.id).await {
            tracing::error!(id = %event.id, error = %e, "forgetting the post-terminate of a failed removal failed; it may still be sent");
        }
    }

    /// Delivers an event debt in the background and clears it once every
    /// sink has it. Claimed first unless `claimed`.
    fn deliver_owed_event(&self, event: Event, claimed: bool) {
        let Some(state) = self.events.clone() else {
            return;
        };
        if !lock(&state.delivering).insert(event.id.clone()) {
            return;
        }
        let meta = self.meta.clone();
        let runner = state.clone();
        runner.events.spawn(async move {
            let id = event.id.clone();
            let mine = claimed || matches!(meta.claim_event_debt(&id).await, Ok(true));
            if mine && state.events.deliver(event).await {
                if let Err(e) = meta.clear_event_debt(&id).await {
                    tracing::error!(id = %id, error = %e, "recording an event's delivery failed; it may be sent again");
                }
            }
            lock(&state.delivering).remove(&id);
        });
    }

    /// Re-delivers event debts (after a restart, a broker outage, or a
    /// crashed instance's); each is claimed by one instance.
    pub(super) async fn resume_owed_events(&self) -> Result<usize, UploadError> {
        if self.events.is_none() {
            return Ok(0);
        }
        let debts = self.meta.pending_event_debts(10_000).await?;
        for debt in &debts {
            match Event::from_debt(debt) {
                Some(event) => self.deliver_owed_event(event, true),
                None => {
                    tracing::error!(id = %debt.id, kind = %debt.kind, "owed event of an unknown type; left alone")
                }
            }
        }
        Ok(debts.len())
    }

    pub(super) fn forget_event_state(&self, id: &UploadId) {
        if let Some(state) = &self.events {
            lock(&state.last_progress).remove(id);
        }
    }
}
