//! Consumes IAM events from RabbitMQ and turns each into a committed job.
//!
//! A delivery is acknowledged only after its job row is committed; one that cannot be
//! parsed is stored in `poison_messages` and rejected without requeue (so the broker's
//! dead-letter queue keeps a copy too). Connection loss: reconnect with capped, jittered
//! backoff; the broker redelivers what was unacked and the event id deduplicates it.

mod batch;
mod reply_to;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;

use crate::config;
use crate::event::{self, ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER};
use crate::health::Health;
use crate::store::Store;

/// Deliveries gathered into one database transaction at most.
const BATCH_MAX: usize = 500;
/// How long a batch waits for more deliveries once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(
        "RabbitMQ: {0} (is the broker reachable at amqp.url, and may this user declare the topology?)"
    )]
    Amqp(#[from] lapin::Error),
    #[error("the broker closed the consumer (queue deleted or channel closed); reconnecting")]
    ConsumerClosed,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Queue names derived from the configuration.
pub fn dead_letter_queue(cfg: &config::Amqp) -> String {
    format!("{}.dead", cfg.queue)
}

/// The largest AMQP frame mailboxd accepts (RabbitMQ's default). A message's properties
/// must fit one frame, and lapin decodes header tables by recursion: this bounds how deep a
/// sender can nest them whatever the broker allows (see `main`'s thread stack).
pub const FRAME_MAX: u32 = 128 * 1024;

/// Connects to the broker; `name` shows in the broker's connection list (who is this?).
/// The URL's `frame_max` is used when it is smaller than [`FRAME_MAX`], else `FRAME_MAX`.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| lapin::Error::from(std::io::Error::other(e)))?;
    // 0 would mean "no limit" in AMQP.
    let asked = uri.query.frame_max.filter(|f| *f != 0);
    uri.query.frame_max = Some(asked.unwrap_or(FRAME_MAX).min(FRAME_MAX));
    Connection::connect_uri(
        uri,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
}

/// The intake's connection name: operators (and the reconnect test) find it by its queue.
pub fn connection_name(cfg: &config::Amqp) -> String {
    format!("mailboxd intake {} {}", cfg.queue, crate::replica_name())
}

/// Declares the exchange, the durable queue with its dead-letter exchange and queue, and
/// the bindings for both routing keys. Idempotent; also shipped as deploy/rabbitmq/definitions.json.
pub async fn declare_topology(ch: &Channel, cfg: &config::Amqp) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        cfg.exchange.as_str().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        cfg.dead_letter_exchange.as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    // Both queues: the configured type, and a TTL only for throwaway queues (demo, tests).
    let base_args = || {
        let mut t = FieldTable::default();
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(cfg.queue_type.as_str().into()),
        );
        if let Some(expires) = cfg.queue_expires {
            let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            t.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        t
    };
    let dead_args = base_args();
    let mut args = base_args();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(cfg.dead_letter_exchange.as_str().into()),
    );
    let queue_opts = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let dead = dead_letter_queue(cfg);
    ch.queue_declare(dead.as_str().into(), queue_opts, dead_args)
        .await?;
    ch.queue_bind(
        dead.as_str().into(),
        cfg.dead_letter_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(cfg.queue.as_str().into(), queue_opts, args)
        .await?;
    for key in [ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER] {
        ch.queue_bind(
            cfg.queue.as_str().into(),
            cfg.exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// What intake reports as it goes: whether it is connected to the broker, and how long its
/// deliveries wait for their commit (`/readyz`, the metrics).
#[derive(Clone)]
pub struct Reporting {
    pub connected: watch::Sender<bool>,
    pub health: Arc<Health>,
}

/// Runs until `shutdown` turns true, reconnecting as needed.
pub async fn run(
    cfg: config::Amqp,
    store: Store,
    max_attempts: i32,
    mut shutdown: watch::Receiver<bool>,
    report: Reporting,
) {
    let connected = &report.connected;
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            r = consume(&cfg, &store, max_attempts, &report, &mut failures) => r,
            _ = shutdown.changed() => return,
        };
        connected.send_replace(false);
        if let Err(e) = result {
            failures = failures.saturating_add(1);
            let delay = crate::backoff::full_jitter(
                failures,
                Duration::from_millis(500),
                Duration::from_secs(30),
            );
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "intake lost RabbitMQ; reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn consume(
    cfg: &config::Amqp,
    store: &Store,
    max_attempts: i32,
    report: &Reporting,
    failures: &mut u32,
) -> Result<(), IntakeError> {
    let conn = connect(&cfg.url, &connection_name(cfg)).await?;
    let result = consume_on(&conn, cfg, store, max_attempts, report, failures).await;
    // Close explicitly so the broker requeues our unacked deliveries at once, instead of
    // holding them for a connection that lingers.
    let _ = conn.close(320, "mailboxd intake reconnecting".into()).await;
    result
}

async fn consume_on(
    conn: &Connection,
    cfg: &config::Amqp,
    store: &Store,
    max_attempts: i32,
    report: &Reporting,
    failures: &mut u32,
) -> Result<(), IntakeError> {
    let ch = conn.create_channel().await?;
    declare_topology(&ch, cfg).await?;
    ch.basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            cfg.queue.as_str().into(),
            format!("mailboxd-{}", crate::replica_name()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    report.connected.send_replace(true);
    *failures = 0;
    let rules = batch::Rules {
        event: event::IntakeRules {
            iiq_applications: cfg.iiq_applications.clone(),
            allowed_routing_domains: cfg.allowed_routing_domains.clone(),
        },
        reply_to: reply_to::ReplyToRule::new(cfg),
    };
    tracing::info!(queue = %cfg.queue, prefetch = cfg.prefetch, "intake consuming");
    loop {
        let Some(first) = consumer.next().await else {
            return Err(IntakeError::ConsumerClosed);
        };
        let mut batch = vec![first?];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => batch.push(d?),
                Ok(None) | Err(_) => break,
            }
        }
        batch::handle(store, &report.health, max_attempts, &rules, batch).await?;
    }
}

/// What intake keeps of one delivery, before any database: the events (and the reply_to
/// their outcomes may go to), or the poison row. The fuzz target `amqp_delivery` runs it.
#[derive(Debug)]
pub enum Stored {
    Events {
        events: Vec<event::Event>,
        reply_to: Option<String>,
    },
    Poison(crate::store::NewPoison),
}

/// A delivery's properties and body read the way intake reads them (`batch`), with the
/// reply_to rule of `cfg`.
pub fn read_delivery(
    props: &lapin::BasicProperties,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    rules: &event::IntakeRules,
    cfg: &config::Amqp,
) -> Stored {
    match batch::decode_body(props, routing_key, body, rules) {
        Ok(events) => Stored::Events {
            events,
            reply_to: props
                .reply_to()
                .as_ref()
                .filter(|q| reply_to::ReplyToRule::new(cfg).check(q.as_str()).is_ok())
                .map(|q| q.to_string()),
        },
        Err(reason) => Stored::Poison(batch::poison_row(
            props,
            exchange,
            routing_key,
            body,
            &reason,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped definitions must declare exactly what the daemon declares with its
    /// defaults, or the broker refuses the second declaration (PRECONDITION_FAILED).
    #[test]
    fn shipped_rabbitmq_definitions_match_the_default_topology() {
        let defs: serde_json::Value =
            serde_json::from_str(include_str!("../deploy/rabbitmq/definitions.json")).unwrap();
        let cfg = config::Amqp::default();
        let exchanges: Vec<(&str, &str)> = defs["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
            .collect();
        assert!(exchanges.contains(&(cfg.exchange.as_str(), "topic")));
        assert!(exchanges.contains(&(cfg.dead_letter_exchange.as_str(), "fanout")));
        let queue = defs["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == cfg.queue.as_str())
            .unwrap();
        assert_eq!(queue["durable"], true);
        assert_eq!(queue["arguments"]["x-queue-type"], cfg.queue_type.as_str());
        assert_eq!(
            queue["arguments"]["x-dead-letter-exchange"],
            cfg.dead_letter_exchange.as_str()
        );
        let keys: Vec<&str> = defs["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["destination"] == cfg.queue.as_str())
            .map(|b| b["routing_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, vec![ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER]);
        assert!(
            defs["queues"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == dead_letter_queue(&cfg).as_str())
        );
    }
}
