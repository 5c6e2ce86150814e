//! The broker, as every part of the daemon meets it: the connection (`connect`, with the
//! frame limit), and the topology — intake's exchange, queue and dead-letter queue
//! (`declare_topology`, also shipped as deploy/rabbitmq/definitions.json) and the outcome
//! exchange (`declare_outcome_exchange`). Intake, the outcome publisher, `mailboxd publish`
//! and `mailboxd check` all connect here.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config;
use crate::event::ROUTING_KEYS;

/// Queue names derived from the configuration.
pub fn dead_letter_queue(cfg: &config::Amqp) -> String {
    format!("{}.dead", cfg.queue)
}

/// The largest AMQP frame mailboxd accepts (RabbitMQ's default). A message's properties
/// must fit one frame, and lapin decodes header tables by recursion: this bounds how deep a
/// sender can nest them whatever the broker allows (see `main`'s thread stack).
pub(crate) const FRAME_MAX: u32 = 128 * 1024;

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

/// Declares the exchange, the durable queue with its dead-letter exchange and queue, and
/// the bindings for both routing keys. Idempotent; also shipped as deploy/rabbitmq/definitions.json.
pub(crate) async fn declare_topology(ch: &Channel, cfg: &config::Amqp) -> Result<(), lapin::Error> {
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
    for key in ROUTING_KEYS {
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

/// Declares the durable topic exchange outcomes are published to (`outcomes.exchange`).
pub(crate) async fn declare_outcome_exchange(ch: &Channel, name: &str) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
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
        assert_eq!(keys, ROUTING_KEYS.to_vec());
        assert!(
            defs["queues"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == dead_letter_queue(&cfg).as_str())
        );
    }
}
