//! Consumes IAM events from RabbitMQ and turns each into a committed job.
//!
//! A delivery is acknowledged only after its job row is committed; one that cannot be
//! parsed is stored in `poison_messages` and rejected without requeue (so the broker's
//! dead-letter queue keeps a copy too). Connection loss: reconnect with capped, jittered
//! backoff; the broker redelivers what was unacked and the event id deduplicates it.

mod batch;
pub(crate) mod keep;
mod reply_to;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Connection;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker;
use crate::config;
use crate::event;
use crate::health::{Health, Task, supervise};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Deliveries gathered into one database transaction at most.
const BATCH_MAX: usize = 500;
/// How long a batch waits for more deliveries once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum IntakeError {
    #[error(
        "RabbitMQ: {0} (is the broker reachable at amqp.url, and may this user declare the topology?)"
    )]
    Amqp(#[from] lapin::Error),
    #[error("the broker closed the consumer (queue deleted or channel closed); reconnecting")]
    ConsumerClosed,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The intake's connection name: operators (and the reconnect test) find it by its queue.
pub(crate) fn connection_name(cfg: &config::Amqp) -> String {
    format!("mailboxd intake {} {}", cfg.queue, crate::replica_name())
}

/// What intake reports as it goes: whether it is connected to the broker, and how long its
/// deliveries wait for their commit (`/readyz`, the metrics).
#[derive(Clone)]
pub struct Reporting {
    pub connected: watch::Sender<bool>,
    pub health: Arc<Health>,
}

/// What intake needs: its `[amqp]` section, the store, the attempts each job gets, and
/// where it reports.
pub struct Deps {
    pub amqp: config::Amqp,
    pub store: Store,
    pub max_attempts: i32,
    pub report: Reporting,
}

/// Consumes until the daemon stops, supervised.
pub fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        amqp,
        store,
        max_attempts,
        report,
    } = deps;
    tokio::spawn(supervise(
        Task::one("intake"),
        report.health.clone(),
        shutdown.clone(),
        move || {
            // A restarted intake is not connected until it has connected again.
            report.connected.send_replace(false);
            run(
                amqp.clone(),
                store.clone(),
                max_attempts,
                shutdown.clone(),
                report.clone(),
            )
        },
    ))
}

/// Runs until the daemon stops, reconnecting as needed.
async fn run(
    cfg: config::Amqp,
    store: Store,
    max_attempts: i32,
    shutdown: Shutdown,
    report: Reporting,
) {
    let connected = &report.connected;
    let mut failures: u32 = 0;
    loop {
        if shutdown.is_stopping() {
            return;
        }
        let result = tokio::select! {
            r = consume(&cfg, &store, max_attempts, &report, &mut failures) => r,
            () = shutdown.stopped() => return,
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
            if !shutdown.pause(delay).await {
                return;
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
    let conn = broker::connect(&cfg.url, &connection_name(cfg)).await?;
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
    broker::declare_topology(&ch, cfg).await?;
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
        event: event_rules(cfg),
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

/// What an event must obey beyond its decoder, from `[amqp]`: the same for every
/// transport (the broker, the HTTP intake).
pub(crate) fn event_rules(cfg: &config::Amqp) -> event::IntakeRules {
    event::IntakeRules {
        iiq_applications: cfg.iiq_applications.clone(),
        allowed_routing_domains: cfg.allowed_routing_domains.clone(),
        midpoint: cfg.midpoint.clone(),
        // Identity Security Cloud posts over HTTP only; over AMQP no source is AD.
        isc: event::isc::IscRules::default(),
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
