//! Publishes the outcome outbox (`store::outcomes`) to the IAM system: each outcome to the
//! `outcomes.exchange` topic exchange with its routing key (`joiner.succeeded`, …) and to
//! the event's `reply_to`, with publisher confirms, `message_id` = the outcome's id (the same
//! on a resend) and `correlation_id` = the event id. A row is marked sent only after every
//! confirm came back; a failed round leaves it unsent, due again after a doubling wait.

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config;
use crate::health::{Health, Task, supervise};
use crate::outcome::OUTCOME_SCHEMA_V1;
use crate::shutdown::Shutdown;
use crate::store::{OutcomeChannel, OutcomeRow, Store};
use crate::{broker, outbox};

/// Why a round of outcomes was not published; its outcomes stay due and are sent again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotPublished {
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
    async fn open(amqp: &config::Amqp, cfg: &config::Outcomes) -> Result<Link, NotPublished> {
        let name = format!("mailboxd outcomes {}", crate::replica_name());
        let conn = broker::connect(&amqp.url, &name).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        if let Some(exchange) = &cfg.exchange {
            broker::declare_outcome_exchange(&ch, exchange).await?;
        }
        Ok(Link { _conn: conn, ch })
    }

    fn usable(&self) -> bool {
        self._conn.status().connected() && self.ch.status().connected()
    }
}

/// What the outcome publisher needs.
pub(crate) struct Deps {
    pub store: Store,
    pub amqp: config::Amqp,
    pub cfg: config::Outcomes,
    pub health: Arc<Health>,
}

/// Publishes outcomes until the daemon stops (every replica runs one; the lease keeps them
/// apart), supervised.
pub(crate) fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        store,
        amqp,
        cfg,
        health,
    } = deps;
    tokio::spawn(supervise(
        Task::one("outcome_publisher"),
        health,
        shutdown.clone(),
        move || {
            let publisher = Publisher {
                store: store.clone(),
                amqp: amqp.clone(),
                cfg: cfg.clone(),
                replica: crate::replica_name().to_owned(),
                link: None,
            };
            outbox::run(publisher, cfg.poll_interval, shutdown.clone())
        },
    ))
}

/// One replica's publisher: the outbox it reads and its broker link, kept between rounds.
struct Publisher {
    store: Store,
    amqp: config::Amqp,
    cfg: config::Outcomes,
    replica: String,
    link: Option<Link>,
}

impl outbox::Round for Publisher {
    async fn round(&mut self) -> usize {
        let Publisher {
            store,
            amqp,
            cfg,
            replica,
            link,
        } = self;
        round(store, amqp, cfg, replica, link)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "outcome publishing failed");
                0
            })
    }
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
    let rows = outbox::claim(store, OutcomeChannel::Amqp, replica, cfg).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    if !link.as_ref().is_some_and(Link::usable) {
        *link = None;
    }
    let spans: Vec<tracing::Span> = rows.iter().map(publish_span).collect();
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
            for span in &spans {
                span.record("otel.status_code", "ERROR");
            }
            metrics::counter!("mailboxd_outcome_publish_failures_total").increment(1);
            tracing::warn!(error = %e, outcomes = rows.len(), "outcomes not confirmed; they stay pending");
            for row in &rows {
                let next = outbox::next_try(row.attempts, cfg);
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
) -> Result<Vec<(Uuid, String)>, NotPublished> {
    let mut unconfirmed: Vec<(PublisherConfirm, Destination)> = Vec::new();
    let mut sent = Vec::with_capacity(rows.len());
    for row in rows {
        let body = row.body.to_string();
        let mut delivered = Vec::new();
        for to in destinations(cfg, row) {
            let confirm = send(ch, &to, row, body.as_bytes()).await?;
            delivered.push(to.describe());
            unconfirmed.push((confirm, to));
        }
        if delivered.is_empty() {
            delivered.push("nowhere: no outcomes.exchange configured and no reply_to".into());
        }
        sent.push((row.id, delivered.join("; ")));
    }
    // Confirmed well within the lease, or not at all: a resend by another replica after the
    // lease must not race this one.
    let wait = cfg.lease / 2;
    for (confirm, to) in unconfirmed {
        let confirmation = tokio::time::timeout(wait, confirm)
            .await
            .map_err(|_| NotPublished::Unconfirmed(wait))??;
        if !confirmation.is_ack() {
            return Err(NotPublished::Nacked);
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
) -> Result<PublisherConfirm, NotPublished> {
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
    let props = match trace_header(row) {
        Some(headers) => props.with_headers(headers),
        None => props,
    };
    let options = BasicPublishOptions {
        mandatory,
        ..BasicPublishOptions::default()
    };
    Ok(ch
        .basic_publish(exchange.into(), routing_key.into(), options, body, props)
        .await?)
}

/// The span of one outcome's publication (until the broker confirmed it), a child of the
/// span the outcome names in `trace_parent` (the job's, when spans are exported).
fn publish_span(row: &OutcomeRow) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::trace::SPANS,
        parent: None,
        "outcome publish",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.rabbitmq.destination.routing_key = %row.routing_key,
        outcome.id = %row.id,
        otel.status_code = tracing::field::Empty,
    );
    let parent = row
        .body
        .get("trace_parent")
        .and_then(|t| t.as_str())
        .and_then(|t| crate::trace::TraceParent::parse(t.as_bytes()).ok());
    crate::trace::continues(&span, parent.as_ref());
    span
}

/// The `traceparent` header of an outcome whose event came with one (W3C Trace Context):
/// the body's `trace_parent`, read again through its rules before it leaves.
fn trace_header(row: &OutcomeRow) -> Option<lapin::types::FieldTable> {
    let text = row.body.get("trace_parent")?.as_str()?;
    let trace = crate::trace::TraceParent::parse(text.as_bytes()).ok()?;
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        crate::trace::HEADER.into(),
        lapin::types::AMQPValue::LongString(trace.to_string().into()),
    );
    Some(headers)
}
