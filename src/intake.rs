//! Consumes IAM events from RabbitMQ and turns each into a committed job.
//!
//! A delivery is acknowledged only after its job row is committed; one that cannot be
//! parsed is stored in `poison_messages` and rejected without requeue (so the broker's
//! dead-letter queue keeps a copy too). Connection loss: reconnect with capped, jittered
//! backoff; the broker redelivers what was unacked and the event id deduplicates it.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;

use crate::config;
use crate::event::{self, Event, ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER};
use crate::store::{NewPoison, Store};

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

/// Connects to the broker; `name` shows in the broker's connection list (who is this?).
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(
        url,
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

/// Runs until `shutdown` turns true, reconnecting as needed.
pub async fn run(
    cfg: config::Amqp,
    store: Store,
    max_attempts: i32,
    mut shutdown: watch::Receiver<bool>,
    connected: watch::Sender<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            r = consume(&cfg, &store, max_attempts, &connected, &mut failures) => r,
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
    connected: &watch::Sender<bool>,
    failures: &mut u32,
) -> Result<(), IntakeError> {
    let conn = connect(&cfg.url, &connection_name(cfg)).await?;
    let result = consume_on(&conn, cfg, store, max_attempts, connected, failures).await;
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
    connected: &watch::Sender<bool>,
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
    connected.send_replace(true);
    *failures = 0;
    let rules = event::IntakeRules {
        iiq_applications: cfg.iiq_applications.clone(),
        allowed_routing_domains: cfg.allowed_routing_domains.clone(),
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
        handle_batch(store, max_attempts, &rules, batch).await?;
    }
}

/// Retries a database write until it succeeds: the deliveries stay unacked meanwhile
/// (prefetch stops the flow), so a database outage delays events and loses none.
async fn with_db_retry<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let mut failures = 0u32;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = crate::backoff::full_jitter(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(30),
                );
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "intake cannot {what}; holding the deliveries and retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn handle_batch(
    store: &Store,
    max_attempts: i32,
    rules: &event::IntakeRules,
    batch: Vec<lapin::message::Delivery>,
) -> Result<(), IntakeError> {
    let mut good: Vec<(lapin::message::Delivery, Vec<Event>, Option<String>)> = Vec::new();
    for delivery in batch {
        let stored = read_delivery(
            &delivery.properties,
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
            &delivery.data,
            rules,
        );
        match stored {
            Stored::Events {
                decoded: d,
                reply_to,
            } => {
                if !d.credentials.is_empty() {
                    tracing::warn!(
                        attributes = ?d.credentials,
                        routing_key = %delivery.routing_key,
                        "an IdentityIQ plan carried credentials; they were dropped unread — the sender should stop sending them"
                    );
                }
                for why in &d.ignored {
                    tracing::info!(routing_key = %delivery.routing_key, "ignored: {why}");
                }
                good.push((delivery, d.events, reply_to));
            }
            Stored::Poison(poison) => {
                let id =
                    with_db_retry("store a poison message", || store.insert_poison(&poison)).await;
                metrics::counter!("mailboxd_poison_received_total").increment(1);
                tracing::warn!(poison_id = id, reason = %poison.reason, routing_key = %delivery.routing_key, "poison message stored and dead-lettered");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
            }
        }
    }
    if good.is_empty() {
        return Ok(());
    }
    let events: Vec<Event> = good
        .iter()
        .flat_map(|(_, e, _)| e.iter().cloned())
        .collect();
    // A sender that set reply_to asks for the outcome there as well.
    let reply_to: Vec<Option<String>> = good
        .iter()
        .flat_map(|(_, e, to)| std::iter::repeat_n(to.clone(), e.len()))
        .collect();
    if !events.is_empty() {
        let inserted = with_db_retry("store jobs", || {
            store.insert_deliveries(&events, &reply_to, max_attempts)
        })
        .await;
        for (ev, ins) in events.iter().zip(&inserted) {
            tracing::debug!(event_id = %ev.id, job_id = %ins.job_id(), outcome = ?ins, "event stored");
            let format = if ev.source.as_deref() == Some("identityiq") {
                "identityiq"
            } else {
                "json"
            };
            metrics::counter!("mailboxd_events_ingested_total", "format" => format).increment(1);
        }
    }
    failpoint("intake-after-commit");
    // One frame acks the whole batch: every delivery up to the last tag on this channel is
    // either in this batch (committed above) or was rejected already.
    if let Some((last, _, _)) = good.iter().max_by_key(|(d, _, _)| d.delivery_tag) {
        last.ack(BasicAckOptions { multiple: true }).await?;
    }
    Ok(())
}

/// What intake stores for one delivery, decided from its properties and body alone.
#[derive(Debug)]
pub enum Stored {
    /// Jobs for these events; their outcomes also go to `reply_to` when the sender set it.
    Events {
        decoded: event::Decoded,
        reply_to: Option<String>,
    },
    /// The row `poison_messages` keeps of a refused delivery.
    Poison(NewPoison),
}

/// Decodes one delivery into what intake stores: the events and their `reply_to`, or the
/// poison row with the properties (headers included) a refused one is kept with. No I/O,
/// so the fuzz target `amqp_delivery` runs exactly this on arbitrary properties and bodies.
pub fn read_delivery(
    props: &BasicProperties,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    rules: &event::IntakeRules,
) -> Stored {
    let content_type = props.content_type().as_ref().map(ShortString::as_str);
    let received = event::Delivery {
        body,
        content_type,
        message_id: props.message_id().as_ref().map(ShortString::as_str),
        routing_key,
    };
    match event::decode(&received, rules) {
        Ok(decoded) => Stored::Events {
            decoded,
            reply_to: props.reply_to().as_ref().map(|s| s.to_string()),
        },
        Err(reason) => Stored::Poison(NewPoison {
            reason: reason.to_string(),
            routing_key: routing_key.to_owned(),
            exchange: exchange.to_owned(),
            content_type: content_type.map(str::to_owned),
            message_id: props.message_id().as_ref().map(|s| s.to_string()),
            headers: props
                .headers()
                .as_ref()
                .map_or(serde_json::Value::Null, table_to_json),
            body: received.poison_body(),
        }),
    }
}

/// A crash hook for the tests that kill the daemon between commit and ack (and between an
/// outcome's confirm and its row marked sent: `outcomes-after-confirm`).
/// Set `MAILBOXD_FAILPOINT=intake-after-commit` to abort the process at that point.
pub(crate) fn failpoint(name: &str) {
    if std::env::var("MAILBOXD_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

fn table_to_json(t: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::json;
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => {
            serde_json::Value::Array(a.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        other => json!(format!("{other:?}")),
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
