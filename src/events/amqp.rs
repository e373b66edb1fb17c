//! RabbitMQ sink (`--events-amqp`): a durable topic exchange declared when
//! missing, routing key = event type, persistent messages, and publisher
//! confirms (a publish succeeds once the broker confirmed it). The event
//! `Id` is the message's `message_id`.

use super::{shown, Event, EventSink, SinkError};
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// Settings of the AMQP sink.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:5672/%2f` (`amqps://` for TLS).
    pub url: String,
    /// Topic exchange (declared durable when missing).
    pub exchange: String,
}

/// Publishes to a RabbitMQ exchange.
pub struct AmqpSink {
    config: AmqpConfig,
    /// The connection and its confirming channel, once made.
    link: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

/// Delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

fn publish_error(e: impl std::fmt::Display) -> SinkError {
    SinkError::Publish(e.to_string())
}

impl AmqpSink {
    pub fn new(config: AmqpConfig) -> Result<Self, SinkError> {
        config.url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            SinkError::Config(format!("--events-amqp {:?}: {e}", shown(&config.url)))
        })?;
        if config.exchange.is_empty() || config.exchange.len() > 255 {
            return Err(SinkError::Config(
                "--events-amqp-exchange: 1 to 255 bytes".into(),
            ));
        }
        Ok(AmqpSink {
            config,
            link: tokio::sync::Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<(Connection, Channel), SinkError> {
        let connect = |e: lapin::Error| SinkError::Connect(e.to_string());
        let connection = Connection::connect(
            &self.config.url,
            ConnectionProperties::default().with_connection_name("tusker".into()),
        )
        .await
        .map_err(connect)?;
        let channel = connection.create_channel().await.map_err(connect)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(connect)?;
        channel
            .exchange_declare(
                self.config.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(connect)?;
        tracing::info!(url = %shown(&self.config.url), exchange = %self.config.exchange, "events: connected to RabbitMQ");
        Ok((connection, channel))
    }

    async fn channel(&self) -> Result<Channel, SinkError> {
        let mut link = self.link.lock().await;
        if let Some((connection, channel)) = &*link {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        // Gone or broken: a new connection (the old one is dropped).
        *link = None;
        let (connection, channel) = self.connect().await?;
        *link = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn send(&self, channel: &Channel, event: &Event) -> Result<(), SinkError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(event.id.as_str().into())
            .with_type(event.kind.name().into())
            .with_app_id("tusker".into());
        let confirmation = channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                event.kind.name().into(),
                BasicPublishOptions::default(),
                event.body.as_bytes(),
                properties,
            )
            .await
            .map_err(publish_error)?
            .await
            .map_err(publish_error)?;
        if confirmation.is_nack() {
            return Err(SinkError::Publish(
                "the broker refused the message (nack)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl EventSink for AmqpSink {
    fn name(&self) -> &'static str {
        "amqp"
    }

    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let channel = self.channel().await?;
        let result = self.send(&channel, event).await;
        if result.is_err() {
            // The next attempt starts from a fresh connection.
            *self.link.lock().await = None;
        }
        result
    }
}
