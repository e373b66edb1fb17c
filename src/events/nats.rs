//! NATS JetStream sink (`--events-nats`): subject `<prefix>.<event type>`
//! in a stream created when missing; each publish waits for JetStream's
//! ack. The event `Id` goes as `Nats-Msg-Id`, so JetStream itself drops a
//! redelivery that arrives within the stream's duplicate window.

use super::{shown, Event, EventSink, SinkError};
use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use std::time::Duration;

/// Settings of the NATS sink.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URL(s), comma separated: `nats://[user:password@]host:4222`
    /// (`tls://` for TLS).
    pub url: String,
    /// Stream name (created when missing, on subjects `<subject>.>`).
    pub stream: String,
    /// Subject prefix.
    pub subject: String,
}

/// Publishes to JetStream.
pub struct NatsSink {
    config: NatsConfig,
    timeout: Duration,
    /// The JetStream context once connected and the stream is there.
    context: tokio::sync::Mutex<Option<jetstream::Context>>,
}

impl NatsSink {
    pub fn new(config: NatsConfig, timeout: Duration) -> Result<Self, SinkError> {
        let bad = |why: &str| SinkError::Config(format!("--events-nats-stream: {why}"));
        if config.stream.is_empty()
            || config
                .stream
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(bad("a name without spaces, '.', '*', '>', '/' or '\\'"));
        }
        if config.subject.is_empty()
            || config.subject.split('.').any(|t| {
                t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
            })
        {
            return Err(SinkError::Config(
                "--events-nats-subject: dot-separated tokens without spaces or wildcards".into(),
            ));
        }
        let servers: Vec<&str> = config.url.split(',').map(str::trim).collect();
        for s in &servers {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| SinkError::Config(format!("--events-nats {:?}: {e}", shown(s))))?;
        }
        Ok(NatsSink {
            config,
            timeout,
            context: tokio::sync::Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<jetstream::Context, SinkError> {
        let servers: Vec<&str> = self.config.url.split(',').map(str::trim).collect();
        let client = async_nats::ConnectOptions::new()
            .name("tusker")
            .connection_timeout(self.timeout)
            .connect(servers)
            .await
            .map_err(|e| SinkError::Connect(e.to_string()))?;
        let mut context = jetstream::new(client);
        context.set_timeout(self.timeout);
        context
            .get_or_create_stream(jetstream::stream::Config {
                name: self.config.stream.clone(),
                subjects: vec![format!("{}.>", self.config.subject)],
                ..Default::default()
            })
            .await
            .map_err(|e| SinkError::Connect(format!("stream {}: {e}", self.config.stream)))?;
        tracing::info!(url = %shown(&self.config.url), stream = %self.config.stream, "events: connected to NATS JetStream");
        Ok(context)
    }
}

#[async_trait]
impl EventSink for NatsSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let context = {
            let mut held = self.context.lock().await;
            match &*held {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect().await?;
                    *held = Some(c.clone());
                    c
                }
            }
        };
        let subject = format!("{}.{}", self.config.subject, event.kind.name());
        let message = PublishMessage::build()
            .payload(event.body.as_bytes().to_vec().into())
            .message_id(&event.id);
        // The client reconnects by itself; a publish while it is away
        // times out waiting for its ack.
        context
            .send_publish(subject, message)
            .await
            .map_err(|e| SinkError::Publish(e.to_string()))?
            .await
            .map_err(|e| SinkError::Publish(e.to_string()))?;
        Ok(())
    }
}
