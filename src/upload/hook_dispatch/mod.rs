//! Hook dispatch from the engine: pre-hooks decide, post-hooks inform.
//!
//! Ordering per upload: post-receive events pass through a per-upload gate
//! that post-finish closes, so no post-receive is ever sent after the
//! post-finish of the same upload. post-finish is owed durably
//! (`finish_hook_pending` in the record, indexed by the meta store) and
//! re-delivered after a restart until the receiver accepts it.

use super::entry::{Entrance, Entry};
use super::{Engine, UploadError};
use crate::data::{BucketChoice, DataStore};
use crate::hooks::{
    FileInfo, HookEvent, HookHttpResponse, HookResponse, HookType, Hooks, RequestInfo,
};
use crate::meta::{Lookup, MetaStore};
use crate::model::{Concat, UploadInfo};
use crate::protocol::{Metadata, UploadId};
use crate::runtime::{SideRuntime, ThreadInit};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

/// How long a finishing upload waits for a post-receive being delivered
/// (retries included) before its pre-finish hook goes out regardless.
const PROGRESS_DRAIN: Duration = Duration::from_secs(2);

/// Per-upload ordering state for notifications.
struct Lane {
    /// Held while a post-receive or post-finish is being sent; true once
    /// the upload's progress ended (pre-finish or post-finish started).
    gate: Arc<tokio::sync::Mutex<bool>>,
    /// post-receive tasks spawned and not yet done.
    pending: usize,
    last_progress: Option<Instant>,
}

/// Hook state shared with background delivery tasks.
pub(crate) struct HookState {
    pub(crate) hooks: Arc<Hooks>,
    lanes: Mutex<HashMap<UploadId, Lane>>,
    /// Uploads a post-receive answer asked to stop (`StopUpload`).
    stop_requests: Mutex<HashSet<UploadId>>,
    /// Uploads whose post-finish delivery is under way.
    finishing: Mutex<HashSet<UploadId>>,
    /// Deliveries run on their own runtime so they outlive the HTTP
    /// workers at shutdown and can be drained.
    runtime: SideRuntime,
    tasks: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HookState {
    pub(crate) fn new(
        hooks: Arc<Hooks>,
        on_thread_start: Option<ThreadInit>,
    ) -> std::io::Result<Self> {
        let runtime = SideRuntime::start("tusker-hooks", 1, on_thread_start)?;
        Ok(HookState {
            hooks,
            lanes: Mutex::new(HashMap::new()),
            stop_requests: Mutex::new(HashSet::new()),
            finishing: Mutex::new(HashSet::new()),
            runtime,
            tasks: TaskTracker::new(),
        })
    }

    /// Runs a delivery in the background, tracked for draining.
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.tasks.spawn_on(task, self.runtime.handle());
    }

    fn gate(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<bool>> {
        lock(&self.lanes)
            .entry(id.clone())
            .or_insert_with(|| Lane {
                gate: Arc::new(tokio::sync::Mutex::new(false)),
                pending: 0,
                last_progress: None,
            })
            .gate
            .clone()
    }

    /// Forgets a lane once it is closed and nothing is queued on it.
    fn settle(&self, id: &UploadId, finished: bool) {
        let mut lanes = lock(&self.lanes);
        if let Some(lane) = lanes.get(id) {
            if lane.pending == 0 && finished {
                lanes.remove(id);
            }
        }
    }

    pub(crate) fn forget(&self, id: &UploadId) {
        lock(&self.lanes).remove(id);
        lock(&self.stop_requests).remove(id);
    }

    pub(crate) fn take_stop_request(&self, id: &UploadId) -> bool {
        lock(&self.stop_requests).remove(id)
    }
}

/// Checks a destination chosen by a hook: a relative path of safe
/// segments that cannot leave the storage root or hit tusker's own keys.
pub fn validate_destination(dest: &str) -> Result<String, UploadError> {
    let invalid = |why: &str| UploadError::InvalidDestination(format!("{dest:?}: {why}"));
    let dest = dest.trim();
    if dest.is_empty() || dest.len() > 1024 {
        return Err(invalid("must be 1 to 1024 bytes"));
    }
    if dest.starts_with('/') || dest.ends_with('/') {
        return Err(invalid("must be relative and name a file"));
    }
    for segment in dest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(invalid("empty, \".\" and \"..\" segments are not allowed"));
        }
        if segment.starts_with(".tusker") {
            return Err(invalid("reserved name"));
        }
        if segment.chars().any(|c| c.is_control() || c == '\\') {
            return Err(invalid(
                "control characters and backslashes are not allowed",
            ));
        }
    }
    Ok(dest.to_owned())
}

/// Applies what a pre-create hook's `ChangeFileInfo.Storage` chose besides
/// the destination: `Bucket` (one the data store may use), `ContentType`
/// (a media type), `ContentDisposition` and `CacheControl` (header text).
/// An empty value is no choice. Changes nothing when any value is refused.
pub(crate) fn apply_storage_choices(
    data: &dyn DataStore,
    info: &mut UploadInfo,
    storage: &HashMap<String, String>,
) -> Result<(), UploadError> {
    use crate::protocol::representation::{is_disposition, is_header_text, media_type};
    let value = |key: &str| {
        storage
            .get(key)
            .map(|v| v.trim_matches([' ', '\t']))
            .filter(|v| !v.is_empty())
    };
    let invalid = |what: &str, v: &str| {
        tracing::warn!(upload = %info.id, value = ?v, "pre-create hook set an invalid {what}");
        UploadError::InvalidStorageChoice(what.to_owned())
    };
    let mut chosen = info.representation.clone();
    if let Some(v) = value("ContentType") {
        chosen.content_type = Some(media_type(v).ok_or_else(|| invalid("ContentType", v))?);
    }
    if let Some(v) = value("ContentDisposition") {
        if !is_disposition(v) {
            return Err(invalid("ContentDisposition", v));
        }
        chosen.content_disposition = Some(v.to_owned());
    }
    if let Some(v) = value("CacheControl") {
        if !is_header_text(v) {
            return Err(invalid("CacheControl", v));
        }
        chosen.cache_control = Some(v.to_owned());
    }
    let bucket = match value("Bucket") {
        None => info.bucket.clone(),
        Some(name) => match data.choose_bucket(name) {
            BucketChoice::Default => None,
            BucketChoice::Other(name) => Some(name),
            BucketChoice::Refused => {
                tracing::warn!(upload = %info.id, bucket = name, "pre-create hook chose a bucket that is not allowed");
                return Err(UploadError::BucketNotAllowed(name.to_owned()));
            }
        },
    };
    info.representation = chosen;
    info.bucket = bucket;
    Ok(())
}

impl Engine {
    /// Enables hooks. `on_thread_start` runs on the delivery runtime's
    /// threads (e.g. to install the server's metrics recorder there).
    pub fn with_hooks(
        mut self,
        hooks: Arc<Hooks>,
        on_thread_start: Option<ThreadInit>,
    ) -> std::io::Result<Self> {
        self.hooks = Some(Arc::new(HookState::new(hooks, on_thread_start)?));
        Ok(self)
    }

    /// Waits (at most `limit`) for hook deliveries still under way; called
    /// at shutdown. Owed post-finish hooks not delivered by then are
    /// re-delivered at the next start.
    pub async fn drain_hooks(&self, limit: Duration) {
        let Some(state) = &self.hooks else { return };
        state.tasks.close();
        if tokio::time::timeout(limit, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = state.tasks.len(),
                "hook deliveries still under way at shutdown"
            );
        }
    }

    pub(crate) fn hook_enabled(&self, kind: HookType) -> bool {
        self.hooks.as_ref().is_some_and(|h| h.hooks.enabled(kind))
    }

    /// `Event.Upload` for an upload.
    pub(crate) fn file_info(&self, info: &UploadInfo) -> FileInfo {
        let meta_data = info
            .metadata
            .as_deref()
            .and_then(|raw| Metadata::parse(raw).ok())
            .map(|m| m.to_string_map())
            .unwrap_or_default();
        FileInfo {
            id: info.id.to_string(),
            size: info.length.unwrap_or(0),
            size_is_deferred: info.length.is_none() && !info.is_final(),
            offset: info.offset,
            meta_data,
            is_partial: info.concat == Concat::Partial,
            is_final: info.is_final(),
            partial_uploads: match &info.concat {
                Concat::Final { parts } => Some(parts.iter().map(|p| p.to_string()).collect()),
                _ => None,
            },
            storage: self.data.describe(info),
        }
    }

    pub(super) fn event(&self, info: &UploadInfo, ctx: &RequestInfo) -> HookEvent {
        HookEvent {
            upload: self.file_info(info),
            http_request: ctx.clone(),
            auth: ctx.auth.clone(),
        }
    }

    /// Runs a blocking hook. A rejection, or an unreachable receiver,
    /// becomes an error for the client.
    pub(crate) async fn pre_hook(
        &self,
        kind: HookType,
        info: &UploadInfo,
        ctx: &RequestInfo,
    ) -> Result<HookResponse, UploadError> {
        let Some(state) = self.hooks.as_ref().filter(|h| h.hooks.enabled(kind)) else {
            return Ok(HookResponse::default());
        };
        let response = state.hooks.call(kind, &self.event(info, ctx)).await.map_err(|e| {
            tracing::error!(event = kind.name(), upload = %info.id, error = %e, "pre-hook failed");
            UploadError::HookFailed(e.to_string())
        })?;
        let status = response.http_response.as_ref().and_then(|r| r.status_code);
        let rejected = match kind {
            HookType::PreTerminate => response.reject_termination,
            _ => response.reject_upload,
        } || status.is_some_and(|s| s >= 400);
        if rejected {
            tracing::info!(event = kind.name(), upload = %info.id, "rejected by hook");
            return Err(UploadError::HookRejected(
                response
                    .http_response
                    .clone()
                    .unwrap_or_else(HookHttpResponse::default),
            ));
        }
        Ok(response)
    }

    /// Sends a notification in the background (with retries).
    pub(crate) fn post_hook(&self, kind: HookType, info: &UploadInfo, ctx: &RequestInfo) {
        self.emit_event(kind, info, ctx);
        let Some(state) = self.hooks.clone().filter(|h| h.hooks.enabled(kind)) else {
            return;
        };
        let event = self.event(info, ctx);
        let runner = state.clone();
        runner.spawn(async move {
            if let Err(e) = state.hooks.notify(kind, &event).await {
                tracing::error!(event = kind.name(), upload = %event.upload.id, error = %e, "hook not delivered");
            }
        });
    }

    /// post-receive, at most every progress interval per upload.
    pub(crate) fn progress(&self, info: &UploadInfo, offset: u64, ctx: &RequestInfo) {
        self.emit_progress(info, offset, ctx);
        let Some(state) = self
            .hooks
            .clone()
            .filter(|h| h.hooks.enabled(HookType::PostReceive))
        else {
            return;
        };
        let interval = state.hooks.config().progress_interval;
        {
            let mut lanes = lock(&state.lanes);
            let lane = lanes.entry(info.id.clone()).or_insert_with(|| Lane {
                gate: Arc::new(tokio::sync::Mutex::new(false)),
                pending: 0,
                last_progress: None,
            });
            if lane.last_progress.is_some_and(|t| t.elapsed() < interval) {
                return;
            }
            lane.last_progress = Some(Instant::now());
            lane.pending += 1;
        }
        let mut event = self.event(info, ctx);
        event.upload.offset = offset;
        let (id, locker) = (info.id.clone(), self.locker.clone());
        let runner = state.clone();
        runner.spawn(async move {
            let gate = state.gate(&id);
            let closed = {
                let finished = gate.lock().await;
                if !*finished {
                    match state.hooks.notify(HookType::PostReceive, &event).await {
                        Ok(r) if r.stop_upload => {
                            tracing::info!(upload = %id, "post-receive hook asked to stop the upload");
                            lock(&state.stop_requests).insert(id.clone());
                            locker.signal_stop(&id);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(upload = %id, error = %e, "post-receive not delivered")
                        }
                    }
                }
                *finished
            };
            if let Some(lane) = lock(&state.lanes).get_mut(&id) {
                lane.pending = lane.pending.saturating_sub(1);
            }
            state.settle(&id, closed);
        });
    }

    /// Ends an upload's progress events before its pre-finish hook: one
    /// being sent is waited for (at most [`PROGRESS_DRAIN`]), those still
    /// queued are dropped, so the receiver sees every post-receive before
    /// pre-finish. No bytes arrive after this (the upload is complete).
    pub(crate) async fn end_progress(&self, id: &UploadId) {
        let Some(state) = self.hooks.as_ref() else {
            return;
        };
        let Some(gate) = lock(&state.lanes).get(id).map(|lane| lane.gate.clone()) else {
            return;
        };
        let drained = tokio::time::timeout(PROGRESS_DRAIN, gate.lock()).await;
        match drained {
            Ok(mut closed) => *closed = true,
            Err(_) => {
                tracing::warn!(upload = %id, "a post-receive still being delivered; pre-finish goes first")
            }
        }
    }

    /// Whether an upload finishing now owes a post-finish hook or event.
    pub(crate) fn owes_finish_hook(&self) -> bool {
        self.notifies(HookType::PostFinish)
    }

    /// Delivers an owed post-finish in the background; the debt is cleared
    /// in the meta store only once the receiver accepted it. Unless
    /// `claimed`, the delivery is first claimed in the meta store, so that
    /// one instance of several delivers it.
    pub(crate) fn deliver_finish_hook(&self, info: &UploadInfo, ctx: &RequestInfo, claimed: bool) {
        let Some(state) = self
            .hooks
            .clone()
            .filter(|h| h.hooks.enabled(HookType::PostFinish))
        else {
            self.deliver_finish_event(info, ctx, claimed);
            return;
        };
        if !info.finish_hook_pending || !lock(&state.finishing).insert(info.id.clone()) {
            return;
        }
        let event = self.event(info, ctx);
        let owed_event = self.finish_event(&info.id, &event);
        let (id, entrance) = (info.id.clone(), self.entrance());
        let runner = state.clone();
        runner.spawn(async move {
            if !claim(&*entrance.meta, &id, claimed).await {
                lock(&state.finishing).remove(&id);
                return;
            }
            let gate = state.gate(&id);
            let (delivered, published) = {
                let mut finished = gate.lock().await;
                *finished = true;
                tokio::join!(
                    state.hooks.notify(HookType::PostFinish, &event),
                    super::events::publish_owed(owed_event)
                )
            };
            match delivered {
                Ok(_) => {
                    state.settle(&id, true);
                    if !published {
                        tracing::error!(upload = %id, "post-finish event not confirmed by every broker; retried by the next sweep")
                    } else if let Err(e) = clear_finish_debt(&entrance, &id).await {
                        tracing::error!(upload = %id, error = %e, "recording post-finish delivery failed");
                    }
                }
                Err(e) => {
                    tracing::error!(upload = %id, error = %e, "post-finish not delivered; retried by the next sweep")
                }
            }
            lock(&state.finishing).remove(&id);
        });
    }

    /// Re-delivers post-finish hooks owed from before a restart (and, with
    /// a shared meta store, those a crashed instance left behind; each is
    /// claimed by one instance).
    pub async fn resume_finish_hooks(&self) -> Result<usize, UploadError> {
        let owed_events = self.resume_owed_events().await?;
        if self.hooks.is_none() && self.events.is_none() {
            return Ok(owed_events);
        }
        let ids = self.meta.pending_finish_hooks(10_000).await?;
        for id in &ids {
            if let Some(Lookup::Live(info)) = self.meta.get(id).await? {
                self.deliver_finish_hook(&info, &RequestInfo::default(), true);
            }
        }
        Ok(ids.len() + owed_events)
    }

    /// Access to an existing upload for HEAD, PATCH, GET and DELETE (and
    /// to each part of a new final upload), before any lock is taken and
    /// before anything is revealed or changed: see [`Engine::access`].
    pub async fn check_access(&self, id: &UploadId, ctx: &RequestInfo) -> Result<(), UploadError> {
        if !self.hook_enabled(HookType::PreAccess) && ctx.auth.is_none() {
            return Ok(());
        }
        let info = self.load(id).await?;
        self.access(&info, ctx).await
    }

    /// With JWT authorization, the request's subject must own `info` (an
    /// upload created without a token has no owner and is refused); then
    /// the pre-access hook, when enabled, decides.
    pub(crate) async fn access(
        &self,
        info: &UploadInfo,
        ctx: &RequestInfo,
    ) -> Result<(), UploadError> {
        if let Some(identity) = &ctx.auth {
            if info.owner.as_deref() != Some(identity.subject.as_str()) {
                tracing::info!(upload = %info.id, "refused: the token's subject does not own the upload");
                return Err(UploadError::Forbidden);
            }
        }
        if self.hook_enabled(HookType::PreAccess) {
            self.pre_hook(HookType::PreAccess, info, ctx).await?;
        }
        Ok(())
    }

    pub(crate) fn forget_hook_state(&self, id: &UploadId) {
        self.forget_event_state(id);
        if let Some(state) = &self.hooks {
            state.forget(id);
        }
    }

    pub(crate) fn take_stop_request(&self, id: &UploadId) -> bool {
        self.hooks.as_ref().is_some_and(|s| s.take_stop_request(id))
    }
}

/// Claims delivery of `id`'s owed post-finish unless `claimed` already:
/// false when another instance has it or the claim failed (retried later).
pub(super) async fn claim(meta: &dyn MetaStore, id: &UploadId, claimed: bool) -> bool {
    if claimed {
        return true;
    }
    match meta.claim_finish_hook(id).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(upload = %id, "post-finish delivery claimed elsewhere");
            false
        }
        Err(e) => {
            tracing::error!(upload = %id, error = %e, "claiming post-finish delivery failed; retried later");
            false
        }
    }
}

/// Records that `id`'s owed post-finish was delivered, entering the upload
/// like every path that changes its record; an upload removed meanwhile
/// owes nothing any more.
pub(super) async fn clear_finish_debt(
    entrance: &Entrance,
    id: &UploadId,
) -> Result<(), UploadError> {
    let mut entered = match entrance.enter(id, Entry::Settle).await {
        Ok(entered) => entered,
        Err(UploadError::NotFound | UploadError::Gone) => return Ok(()),
        Err(e) => return Err(e),
    };
    if entered.info.finish_hook_pending {
        entered.info.finish_hook_pending = false;
        entrance.meta.save(&mut entered.info).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
