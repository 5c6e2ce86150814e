//! Publishes the outcome outbox (`store::outcomes`) to the IAM system: each outcome to the
//! `outcomes.exchange` topic exchange with its routing key (`joiner.succeeded`, …) and to
//! the event's `reply_to`, with publisher confirms, `message_id` = the outcome's id (the same
//! on a resend) and `correlation_id` = the event id. A row is marked sent only after every
//! confirm came back; a failed round leaves it pending, due again after a doubling wait.

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind, PublisherConfirm};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config;
use crate::outcome::OUTCOME_SCHEMA_V1;
use crate::store::{OutcomeChannel, OutcomeRow, Store};
use crate::{backoff, intake};

#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error(
        "RabbitMQ: {0} (is the broker reachable at amqp.url? the outcome stays pending and is published again)"
    )]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the outcome (nack); it stays pending and is published again")]
    Nacked,
    #[error(
        "the broker did not confirm within {0:?} (half of outcomes.lease); the outcome stays pending and is published again"
    )]
    Unconfirmed(std::time::Duration),
}

/// The broker side of one publisher: a connection, a confirm channel, the exchange declared.
struct Link {
    _conn: Connection,
    ch: Channel,
}

impl Link {
    async fn open(amqp: &config::Amqp, cfg: &config::Outcomes) -> Result<Link, OutcomeError> {
        let name = format!("mailboxd outcomes {}", crate::replica_name());
        let conn = intake::connect(&amqp.url, &name).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        if let Some(exchange) = &cfg.exchange {
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            ch.exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        }
        Ok(Link { _conn: conn, ch })
    }

    fn usable(&self) -> bool {
        self._conn.status().connected() && self.ch.status().connected()
    }
}

/// Publishes outcomes until shutdown (every replica runs one; the lease keeps them apart).
pub async fn run(
    store: Store,
    amqp: config::Amqp,
    cfg: config::Outcomes,
    mut shutdown: watch::Receiver<bool>,
) {
    let replica = crate::replica_name().to_owned();
    let mut link: Option<Link> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let sent = match round(&store, &amqp, &cfg, &replica, &mut link).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "outcome publishing failed");
                0
            }
        };
        if sent == 0 && !pause(cfg.poll_interval, &mut shutdown).await {
            return;
        }
    }
}

/// Waits `poll` after a round that found nothing; false when the daemon is stopping.
pub(crate) async fn pause(poll: std::time::Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(poll) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

/// A round's worth of outcomes due on `channel`, leased to `replica`.
pub(crate) async fn claim(
    store: &Store,
    channel: OutcomeChannel,
    replica: &str,
    cfg: &config::Outcomes,
) -> Result<Vec<OutcomeRow>, crate::store::StoreError> {
    let limit = i64::from(cfg.batch_size.max(1));
    store
        .claim_outcomes(channel, replica, limit, cfg.lease)
        .await
}

/// When an outcome that failed `attempts` times on a channel is due again.
pub(crate) fn next_try(attempts: i32, cfg: &config::Outcomes) -> chrono::DateTime<Utc> {
    let n = u32::try_from(attempts).unwrap_or(u32::MAX);
    let wait = backoff::doubling(n, cfg.retry_base, cfg.retry_cap);
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()
}

/// One round: claim due outcomes, publish them, record what the broker confirmed. Returns
/// how many were claimed (0: nothing due).
async fn round(
    store: &Store,
    amqp: &config::Amqp,
    cfg: &config::Outcomes,
    replica: &str,
    link: &mut Option<Link>,
) -> Result<usize, crate::store::StoreError> {
    let rows = claim(store, OutcomeChannel::Amqp, replica, cfg).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    if !link.as_ref().is_some_and(Link::usable) {
        *link = None;
    }
    let published = match link {
        Some(l) => publish(&l.ch, cfg, &rows).await,
        None => match Link::open(amqp, cfg).await {
            Ok(l) => {
                let r = publish(&l.ch, cfg, &rows).await;
                *link = Some(l);
                r
            }
            Err(e) => Err(e),
        },
    };
    match published {
        Ok(sent) => {
            crate::failpoint::abort_at("outcomes-after-confirm");
            store.outcomes_sent(replica, &sent).await?;
            metrics::counter!("mailboxd_outcomes_published_total").increment(sent.len() as u64);
        }
        Err(e) => {
            *link = None;
            metrics::counter!("mailboxd_outcome_publish_failures_total").increment(1);
            tracing::warn!(error = %e, outcomes = rows.len(), "outcomes not confirmed; they stay pending");
            for row in &rows {
                let next = next_try(row.attempts, cfg);
                store
                    .outcomes_failed(
                        OutcomeChannel::Amqp,
                        replica,
                        &[row.id],
                        &e.to_string(),
                        next,
                    )
                    .await?;
            }
        }
    }
    Ok(rows.len())
}

/// Sends every row to its destinations and waits for all confirms. Returns each row's id
/// with where it went.
async fn publish(
    ch: &Channel,
    cfg: &config::Outcomes,
    rows: &[OutcomeRow],
) -> Result<Vec<(Uuid, String)>, OutcomeError> {
    let mut pending: Vec<(PublisherConfirm, Destination)> = Vec::new();
    let mut sent = Vec::with_capacity(rows.len());
    for row in rows {
        let body = row.body.to_string();
        let mut delivered = Vec::new();
        for to in destinations(cfg, row) {
            let confirm = send(ch, &to, row, body.as_bytes()).await?;
            delivered.push(to.describe());
            pending.push((confirm, to));
        }
        if delivered.is_empty() {
            delivered.push("nowhere: no outcomes.exchange configured and no reply_to".into());
        }
        sent.push((row.id, delivered.join("; ")));
    }
    // Confirmed well within the lease, or not at all: a resend by another replica after the
    // lease must not race this one.
    let wait = cfg.lease / 2;
    for (confirm, to) in pending {
        let confirmation = tokio::time::timeout(wait, confirm)
            .await
            .map_err(|_| OutcomeError::Unconfirmed(wait))??;
        if !confirmation.is_ack() {
            return Err(OutcomeError::Nacked);
        }
        // A reply queue that is gone returns the message: the sender stopped listening,
        // and publishing again cannot help.
        if confirmation.take_message().is_some() {
            tracing::warn!(destination = %to.describe(), "an outcome was returned unroutable");
        }
    }
    Ok(sent)
}

/// Where one outcome goes.
#[derive(Debug, Clone)]
enum Destination {
    /// The configured topic exchange, with the outcome's routing key.
    Exchange { name: String, routing_key: String },
    /// The event's `reply_to` queue, through the default exchange.
    ReplyTo(String),
}

impl Destination {
    fn describe(&self) -> String {
        match self {
            Destination::Exchange { name, routing_key } => {
                format!("exchange {name} ({routing_key})")
            }
            Destination::ReplyTo(queue) => format!("reply_to {queue}"),
        }
    }
}

fn destinations(cfg: &config::Outcomes, row: &OutcomeRow) -> Vec<Destination> {
    let mut to = Vec::new();
    if let Some(name) = &cfg.exchange {
        to.push(Destination::Exchange {
            name: name.clone(),
            routing_key: row.routing_key.clone(),
        });
    }
    if let Some(queue) = row.reply_to.as_deref().filter(|q| !q.is_empty()) {
        to.push(Destination::ReplyTo(queue.to_owned()));
    }
    to
}

async fn send(
    ch: &Channel,
    to: &Destination,
    row: &OutcomeRow,
    body: &[u8],
) -> Result<PublisherConfirm, OutcomeError> {
    let (exchange, routing_key, mandatory) = match to {
        // Who listens on the outcome exchange is the consumers' business: no mandatory.
        Destination::Exchange { name, routing_key } => (name.as_str(), routing_key.as_str(), false),
        Destination::ReplyTo(queue) => ("", queue.as_str(), true),
    };
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(row.id.to_string().into())
        .with_correlation_id(row.event_id.clone().into())
        .with_type(OUTCOME_SCHEMA_V1.into())
        .with_timestamp(u64::try_from(row.created_at.timestamp()).unwrap_or_default());
    let options = BasicPublishOptions {
        mandatory,
        ..BasicPublishOptions::default()
    };
    Ok(ch
        .basic_publish(exchange.into(), routing_key.into(), options, body, props)
        .await?)
}
