//! Upload events against real brokers on loopback: private `nats-server`
//! and `redis-server` instances stopped while an upload finishes (the
//! event arrives after a tusker restart), and a RabbitMQ publish that
//! counts only once confirmed and routed.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tusker::config::Config;
use tusker::events::{amqp::AmqpConfig, nats::NatsConfig, redis::RedisConfig, EventsConfig};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("set {var} to run this test"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A broker process of the test's own, killed when dropped.
struct Broker(Child);

impl Broker {
    fn start(program: &str, args: &[String], port: u16) -> Broker {
        let broker = Broker(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program} must be installed: {e}")),
        );
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{program} did not listen on {port}");
    }

    fn stop(mut self) {
        // SIGTERM: both servers persist their data on the way out.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..200 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(port: u16, store: &Path) -> Broker {
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-js",
        "-sd",
        &store.display().to_string(),
    ]
    .map(String::from);
    Broker::start("nats-server", &args, port)
}

fn redis_server(port: u16, dir: &Path) -> Broker {
    let args = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    .map(String::from);
    Broker::start("redis-server", &args, port)
}

fn events_config() -> EventsConfig {
    EventsConfig {
        nats: None,
        amqp: None,
        redis: None,
        enabled: tusker::events::EVENT_TYPES.into_iter().collect(),
        queue: 100,
        timeout: Duration::from_secs(1),
        attempts: 2,
        progress_interval: Duration::from_secs(1),
    }
}

fn with_events(dir: &Path, events: EventsConfig) -> Config {
    let mut c = config(dir);
    c.events = Some(events);
    // Owed events are retried by every sweep.
    c.sweep_interval = Duration::from_secs(1);
    c
}

/// Uploads `data` whole into a new upload; returns its URL.
async fn upload(c: &reqwest::Client, endpoint: &str, data: &[u8]) -> String {
    let url = create(c, endpoint, data.len() as u64).await;
    let res = patch(c, &url, 0, data.to_vec()).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    url
}

fn upload_id(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Every message of the JetStream stream `stream`, as (subject, Nats-Msg-Id, body).
async fn nats_messages(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    let Ok(client) = async_nats::connect(url).await else {
        return Vec::new();
    };
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let last = s.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await {
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((
                m.subject.to_string(),
                id,
                serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
            ));
        }
    }
    out
}

/// A NATS server down while an upload finishes: the post-finish is owed,
/// survives a tusker restart, and arrives once the server is back, exactly
/// once (JetStream drops a repeat by its Nats-Msg-Id).
#[tokio::test]
#[ignore = "needs TUSKER_TEST_NATS_URL"]
async fn nats_post_finish_survives_an_outage_and_a_restart() {
    env("TUSKER_TEST_NATS_URL");
    let (dir, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let broker = nats_server(port, store.path());
    let mut events = events_config();
    events.nats = Some(NatsConfig {
        url: url.clone(),
        stream: "TUSKER".into(),
        subject: "tusker".into(),
    });
    let cfg = with_events(dir.path(), events);
    let c = client();

    let server = TestServer::start(cfg.clone());
    let url_1 = create(&c, &server.endpoint, 4).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            nats_messages(&url, "TUSKER")
                .await
                .iter()
                .any(|(s, _, _)| s == "tusker.post-create")
        })
        .await,
        "post-create never reached the stream"
    );
    broker.stop();
    let res = patch(&c, &url_1, 0, b"data".to_vec()).await;
    assert_eq!(res.status(), 204, "a broker that is down fails no upload");
    let base = format!("http://{}", server.addr);
    let ready = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "readiness does not depend on brokers");
    server.stop().await;

    let _broker = nats_server(port, store.path());
    let server = TestServer::start(cfg);
    let id = upload_id(&url_1);
    let finished = |m: &Vec<(String, String, Value)>| {
        m.iter()
            .filter(|(s, _, _)| s == "tusker.post-finish")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            !finished(&nats_messages(&url, "TUSKER").await).is_empty()
        })
        .await,
        "owed post-finish never arrived"
    );
    // A sweep or two more: nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = finished(&nats_messages(&url, "TUSKER").await);
    assert_eq!(got.len(), 1, "{got:?}");
    let (_, msg_id, body) = &got[0];
    assert_eq!(msg_id, &format!("{id}-post-finish"));
    assert_eq!(body["Id"], msg_id.as_str());
    assert_eq!(body["Type"], "post-finish");
    assert_eq!(body["Event"]["Upload"]["ID"], id.as_str());
    assert_eq!(body["Event"]["Upload"]["Offset"], 4);
    let base = format!("http://{}", server.addr);
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"tusker_events_published_total{broker="nats"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tusker_events_dropped_total{broker="nats"} 0"#),
        "{metrics}"
    );
    server.stop().await;
}

/// Entries of a Redis stream as (type, event JSON).
async fn redis_entries(url: &str, stream: &str) -> Vec<(String, Value)> {
    let Ok(client) = redis::Client::open(url) else {
        return Vec::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|(_, fields)| {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .and_then(|kv| kv.get(1).cloned())
            };
            Some((field("type")?, serde_json::from_str(&field("event")?).ok()?))
        })
        .collect()
}

/// A Redis server down while one upload finishes and another is
/// terminated: both events are owed (the terminated upload's record is
/// gone), survive a tusker restart, and arrive with their stable Ids.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_REDIS_URL"]
async fn redis_owed_events_survive_an_outage_and_a_restart() {
    env("TUSKER_TEST_REDIS_URL");
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let broker = redis_server(port, data.path());
    let mut events = events_config();
    events.redis = Some(RedisConfig {
        url: url.clone(),
        stream: "tusker:events".into(),
        max_len: 1000,
    });
    let cfg = with_events(dir.path(), events);
    let c = client();

    let server = TestServer::start(cfg.clone());
    let finishing = create(&c, &server.endpoint, 4).await;
    let terminated = create(&c, &server.endpoint, 4).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            redis_entries(&url, "tusker:events")
                .await
                .iter()
                .filter(|(t, _)| t == "post-create")
                .count()
                == 2
        })
        .await,
        "post-create never reached the stream"
    );
    broker.stop();
    let res = patch(&c, &finishing, 0, b"data".to_vec()).await;
    assert_eq!(res.status(), 204, "a broker that is down fails no upload");
    let res = c
        .delete(&terminated)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    server.stop().await;

    let _broker = redis_server(port, data.path());
    let server = TestServer::start(cfg);
    let owed = |entries: &[(String, Value)], kind: &str| {
        entries
            .iter()
            .filter(|(t, _)| t == kind)
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            let all = redis_entries(&url, "tusker:events").await;
            !owed(&all, "post-finish").is_empty() && !owed(&all, "post-terminate").is_empty()
        })
        .await,
        "owed events never arrived"
    );
    let all = redis_entries(&url, "tusker:events").await;
    for (kind, upload) in [("post-finish", &finishing), ("post-terminate", &terminated)] {
        let id = upload_id(upload);
        let got = owed(&all, kind);
        // At least once, always with the same Id.
        for e in &got {
            assert_eq!(e["Id"], format!("{id}-{kind}"), "{e}");
            assert_eq!(e["Type"], kind);
            assert_eq!(e["Event"]["Upload"]["ID"], id.as_str());
        }
    }
    server.stop().await;
}

/// The next delivery with routing key `key` (others are skipped).
async fn next_with_key(consumer: &mut lapin::Consumer, key: &str) -> lapin::message::Delivery {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = consumer
                .next()
                .await
                .expect("consumer open")
                .expect("delivery");
            if d.routing_key.as_str() == key {
                return d;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {key} event arrived"))
}

/// RabbitMQ: events arrive through a queue bound to tusker's durable topic
/// exchange, persistent and with their Id, each published with a
/// publisher confirm; post-terminate follows the removal.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_AMQP_URL"]
async fn amqp_events_are_confirmed_and_consumed() {
    use lapin::options::*;
    use lapin::types::FieldTable;

    let amqp = env("TUSKER_TEST_AMQP_URL");
    let dir = tempfile::tempdir().unwrap();
    let exchange = format!("tusker-test-{}", uuid::Uuid::new_v4().simple());
    let conn = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = conn.create_channel().await.unwrap();
    // The exchange as tusker declares it (durable topic), so the queue can
    // be bound before the first event.
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let mut events = events_config();
    events.amqp = Some(AmqpConfig {
        url: amqp.clone(),
        exchange: exchange.clone(),
    });
    let server = TestServer::start(with_events(dir.path(), events));
    let c = client();
    let url = upload(&c, &server.endpoint, b"data").await;
    let id = upload_id(&url);

    let delivery = next_with_key(&mut consumer, "post-finish").await;
    let body: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["Id"], format!("{id}-post-finish"));
    assert_eq!(body["Event"]["Upload"]["Size"], 4);
    assert_eq!(*delivery.properties.delivery_mode(), Some(2));
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some(format!("{id}-post-finish").as_str())
    );

    // Termination: the post-terminate follows.
    let res = c.delete(&url).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let delivery = next_with_key(&mut consumer, "post-terminate").await;
    let body: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["Id"], format!("{id}-post-terminate"));
    server.stop().await;
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}
