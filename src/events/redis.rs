//! Redis Streams sink (`--events-redis`): `XADD <stream> MAXLEN ~ <n> *
//! type <event type> event <JSON>`; a publish succeeds once Redis answered
//! the entry's id (durable as Redis' own persistence settings make it).

use super::{shown, Event, EventSink, SinkError};
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::time::Duration;

/// Settings of the Redis sink.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host:6379[/db]` (`rediss://` for TLS).
    pub url: String,
    /// Stream key.
    pub stream: String,
    /// Approximate length the stream is trimmed to (`MAXLEN ~`).
    pub max_len: u64,
}

/// Appends to a Redis stream.
pub struct RedisSink {
    config: RedisConfig,
    client: redis::Client,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl RedisSink {
    pub fn new(config: RedisConfig, timeout: Duration) -> Result<Self, SinkError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            SinkError::Config(format!("--events-redis {:?}: {e}", shown(&config.url)))
        })?;
        if config.stream.is_empty() {
            return Err(SinkError::Config("--events-redis-stream: empty".into()));
        }
        Ok(RedisSink {
            config,
            client,
            timeout,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, SinkError> {
        let mut held = self.connection.lock().await;
        if let Some(c) = &*held {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| SinkError::Connect(e.to_string()))?;
        tracing::info!(url = %shown(&self.config.url), stream = %self.config.stream, "events: connected to Redis");
        *held = Some(c.clone());
        Ok(c)
    }
}

#[async_trait]
impl EventSink for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let mut connection = self.connection().await?;
        let added: Result<String, _> = redis::cmd("XADD")
            .arg(&self.config.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.max_len)
            .arg("*")
            .arg("type")
            .arg(event.kind.name())
            .arg("event")
            .arg(&*event.body)
            .query_async(&mut connection)
            .await;
        match added {
            Ok(_) => Ok(()),
            Err(e) => {
                // The next attempt starts from a fresh connection.
                *self.connection.lock().await = None;
                Err(SinkError::Publish(e.to_string()))
            }
        }
    }
}
