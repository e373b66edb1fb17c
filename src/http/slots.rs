//! Admission of requests that stream into uploads, before their body is
//! read: the shutdown refusal, the declared body size, and the slots of
//! `--max-concurrent-uploads` and `--max-uploads-per-client`.

use super::body_limit::body_too_large;
use super::forwarded::client_ip;
use super::{code, ApiError, AppState};
use crate::telemetry;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::HttpRequest;
use std::net::IpAddr;
use std::sync::Arc;

/// A request streaming into an upload; counted in
/// `tusker_uploads_in_progress` and holding a concurrency slot (global and
/// per client) until dropped.
pub struct UploadSlot {
    _client: Option<ClientSlot>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Requests streaming into uploads per client address, each at most `max`.
/// Only clients with a request running have an entry, so the map stays as
/// small as the number of requests in flight.
#[derive(Debug)]
pub struct ClientSlots {
    max: usize,
    running: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One request's place in [`ClientSlots`]; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: IpAddr,
}

impl ClientSlots {
    /// At most `max` requests per client (at least one).
    pub fn new(max: usize) -> Self {
        ClientSlots {
            max: max.max(1),
            running: Default::default(),
        }
    }

    /// Takes a slot for `client`, or `None` when it already has `max`.
    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(client).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: self.clone(),
            client,
        })
    }

    /// Clients with at least one request running.
    pub fn clients(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.client);
            }
        }
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::UPLOADS_IN_PROGRESS).decrement(1.0);
    }
}

/// Admits a request that carries upload bytes, before its body is read:
/// 503 while shutting down or when `--max-concurrent-uploads` are running,
/// 429 when its client already runs `--max-uploads-per-client`, 413 when
/// its `Content-Length` exceeds `--max-body-size`.
pub fn begin_upload(state: &AppState, req: &HttpRequest) -> Result<UploadSlot, ApiError> {
    if state.engine.is_stopping() {
        return Err(
            ApiError::new(code::SHUTTING_DOWN, "server is shutting down; retry later")
                .with_header("retry-after", 5),
        );
    }
    if let Some(max) = state.settings.max_body_size {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(body_too_large(max));
        }
    }
    let client = match &state.client_slots {
        None => None,
        Some(slots) => match client_ip(req, &state.settings) {
            // No address (not a TCP peer): nothing to count it under.
            None => None,
            Some(ip) => Some(slots.acquire(ip).ok_or_else(|| {
                tracing::debug!(client = %ip, "per-client upload limit reached");
                ApiError::new(
                    code::TOO_MANY_UPLOADS_FROM_CLIENT,
                    "too many uploads in progress from this client; retry later",
                )
                .with_header("retry-after", 2)
            })?),
        },
    };
    let permit = match &state.upload_slots {
        None => None,
        Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                code::TOO_MANY_UPLOADS,
                "too many uploads in progress; retry later",
            )
            .with_header("retry-after", 2)
        })?),
    };
    metrics::gauge!(telemetry::UPLOADS_IN_PROGRESS).increment(1.0);
    Ok(UploadSlot {
        _client: client,
        _permit: permit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_slots_cap_each_client_and_forget_idle_ones() {
        let slots = Arc::new(ClientSlots::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let a1 = slots.acquire(a).unwrap();
        let a2 = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).is_none());
        let b1 = slots.acquire(b).unwrap();
        assert_eq!(slots.clients(), 2);
        drop(a1);
        let a3 = slots.acquire(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(slots.clients(), 0);
    }
}
