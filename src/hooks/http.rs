//! Delivering hooks over HTTP (`--hooks-http`).

use super::{HookError, HookEvent, HookRequest, HookResponse, HookType};
use backon::{ExponentialBuilder, Retryable};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Hook settings.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// Receiver URL; every event is POSTed there.
    pub url: String,
    pub enabled: BTreeSet<HookType>,
    /// Client request headers copied onto the hook request (e.g.
    /// Authorization), so the receiver can authenticate the user.
    pub forward_headers: Vec<String>,
    /// Timeout of one hook call.
    pub timeout: Duration,
    /// Attempts for post-hooks (pre-hooks are tried once: a client waits).
    pub post_attempts: usize,
    /// post-receive at most this often per upload.
    pub progress_interval: Duration,
}

/// The HTTP hook client.
pub struct Hooks {
    config: HookConfig,
    client: reqwest::Client,
}

impl Hooks {
    pub fn new(config: HookConfig) -> Result<Self, HookError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| HookError::Unreachable(e.to_string()))?;
        Ok(Hooks { config, client })
    }

    pub fn config(&self) -> &HookConfig {
        &self.config
    }

    pub fn enabled(&self, kind: HookType) -> bool {
        self.config.enabled.contains(&kind)
    }

    /// One attempt; the answer of a blocking (pre-) hook.
    pub async fn call(&self, kind: HookType, event: &HookEvent) -> Result<HookResponse, HookError> {
        let started = Instant::now();
        let result = self.send(kind, event).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(HookError::Unreachable(_)) => "unreachable",
            Err(HookError::Status { .. }) => "error_status",
            Err(HookError::InvalidResponse(_)) => "invalid_response",
        };
        metrics::counter!("tusker_hook_calls_total", "event" => kind.name(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("tusker_hook_call_seconds", "event" => kind.name())
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Delivers a notification (post-) hook, retrying with exponential
    /// backoff and jitter.
    pub async fn notify(
        &self,
        kind: HookType,
        event: &HookEvent,
    ) -> Result<HookResponse, HookError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.config.post_attempts.saturating_sub(1))
            .with_jitter();
        (|| self.call(kind, event))
            .retry(policy)
            .notify(|e, pause| {
                tracing::warn!(event = kind.name(), upload = %event.upload.id, error = %e, retry_in_ms = pause.as_millis() as u64, "hook delivery failed; retrying")
            })
            .await
    }

    async fn send(&self, kind: HookType, event: &HookEvent) -> Result<HookResponse, HookError> {
        let mut request = self
            .client
            .post(&self.config.url)
            .header("Idempotency-Key", event.key(kind))
            .json(&HookRequest {
                kind: kind.name(),
                event,
            });
        for name in &self.config.forward_headers {
            if let Some(values) = event.http_request.header.get(&name.to_ascii_lowercase()) {
                for v in values {
                    request = request.header(name.as_str(), v.as_str());
                }
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| HookError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| HookError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(HookError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(1024).collect(),
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(HookResponse::default());
        }
        serde_json::from_slice(&body).map_err(|e| HookError::InvalidResponse(e.to_string()))
    }
}
