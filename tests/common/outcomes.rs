//! The IAM system's side of outcome messages: a queue bound to the test's outcome exchange
//! (or a reply queue named in `reply_to`), read with `basic_get` so a test sees exactly what
//! the broker holds. The queue and the exchange are deleted when the guard is dropped.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use mailboxd::store::{OutcomeFilter, Store};
use serde_json::Value;

use super::scratch::run_detached_to_end;

/// One outcome message as the IAM system receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub kind: Option<String>,
    /// The AMQP header `traceparent`, when the outcome carries one.
    pub traceparent: Option<String>,
    pub body: Value,
}

pub struct OutcomeQueue {
    url: String,
    pub queue: String,
    exchange: Option<String>,
    _conn: Connection,
    ch: Channel,
}

impl OutcomeQueue {
    /// A queue bound with `#` to the topic exchange `exchange` (declared as mailboxd does).
    pub async fn bound_to(url: &str, exchange: &str) -> OutcomeQueue {
        let mut q = OutcomeQueue::declare(url, &format!("{exchange}.iam")).await;
        q.bind(exchange).await;
        q.exchange = Some(exchange.to_owned());
        q
    }

    /// Deletes the exchange (its bindings go with it): the broker refuses what is
    /// published to it until it is declared again.
    pub async fn delete_exchange(&self) {
        let exchange = self.exchange.as_deref().expect("bound to an exchange");
        self.ch
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await
            .expect("exchange.delete");
    }

    /// Declares the exchange again and binds the queue to it, as `bound_to` did.
    pub async fn restore_exchange(&self) {
        let exchange = self.exchange.as_deref().expect("bound to an exchange");
        self.bind(exchange).await;
    }

    async fn bind(&self, exchange: &str) {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.ch
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .expect("the outcome exchange");
        self.ch
            .queue_bind(
                self.queue.as_str().into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("binding the IAM queue");
    }

    /// A queue the sender names in `reply_to`.
    pub async fn declare(url: &str, name: &str) -> OutcomeQueue {
        let conn = mailboxd::broker::connect(url, "test IAM system")
            .await
            .expect("RabbitMQ answers");
        let ch = conn.create_channel().await.expect("a channel");
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongUInt(300_000));
        ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
            .await
            .expect("the IAM queue");
        OutcomeQueue {
            url: url.to_owned(),
            queue: name.to_owned(),
            exchange: None,
            _conn: conn,
            ch,
        }
    }

    /// A new connection to the same queue, after the broker dropped every connection.
    pub async fn reconnect(&mut self) {
        let conn = mailboxd::broker::connect(&self.url, "test IAM system")
            .await
            .expect("RabbitMQ answers");
        self.ch = conn.create_channel().await.expect("a channel");
        self._conn = conn;
    }

    /// Everything in the queue now, in order (acked: read once).
    pub async fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let get = BasicGetOptions { no_ack: true };
        while let Some(m) = self
            .ch
            .basic_get(self.queue.as_str().into(), get)
            .await
            .expect("basic.get")
        {
            let p = &m.delivery.properties;
            let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.to_string());
            out.push(Received {
                routing_key: m.delivery.routing_key.to_string(),
                message_id: text(p.message_id()),
                correlation_id: text(p.correlation_id()),
                kind: text(p.kind()),
                traceparent: p
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get("traceparent"))
                    .and_then(|v| v.as_long_string())
                    .map(|s| s.to_string()),
                body: serde_json::from_slice(&m.delivery.data).expect("an outcome is JSON"),
            });
        }
        out
    }
}

impl Drop for OutcomeQueue {
    fn drop(&mut self) {
        let (url, queue, exchange) = (self.url.clone(), self.queue.clone(), self.exchange.clone());
        run_detached_to_end(async move {
            let Ok(conn) = mailboxd::broker::connect(&url, "test cleanup").await else {
                return;
            };
            let Ok(ch) = conn.create_channel().await else {
                return;
            };
            let _ = ch
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            if let Some(e) = exchange {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, "test cleanup done".into()).await;
        });
    }
}

/// Waits (bounded) until at least `n` outcomes are stored and none is left unsent: then
/// everything mailboxd will publish is in the broker.
pub async fn wait_all_sent(store: &Store, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = store
            .list_outcomes(OutcomeFilter::All, None, 10_000)
            .await
            .expect("outcomes");
        let unsent = all.iter().filter(|o| o.sent_at.is_none()).count();
        if all.len() >= n && unsent == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} outcomes stored, {unsent} unsent after 30 s (want {n}): {all:#?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
