//! What every intake transport does with what it received, whichever transport it came by
//! (the broker's deliveries in `batch`, the HTTP intake's requests in `http_intake`): the
//! body decoded by `event::decode` with a decoder's panic caught, the events stored in one
//! transaction (one job per event id, a known id answered with its job, older pending
//! jobs of the account superseded: `Store::insert_deliveries`), and what cannot become a
//! job kept as a poison row. The transports differ only in how long they wait out an
//! unreachable database (`Patience`) and in how they answer the sender.

use std::time::Duration;

use crate::event::{self, Event};
use crate::health::Health;
use crate::store::{Inserted, NewPoison, ReplyTo, Store, StoreError};
use crate::trace::TraceParent;

/// How a store write meets an unreachable database.
#[derive(Clone, Copy)]
pub(crate) enum Patience<'a> {
    /// Retried until it is stored (the broker holds the deliveries unacked meanwhile); the
    /// wait is reported to `health`, and past `amqp.stall_after` the replica is not ready.
    UntilStored(&'a Health),
    /// One try: the caller answers its sender "try again later" (HTTP 503), and the sender
    /// keeps the event meanwhile.
    Once,
}

impl Patience<'_> {
    /// Runs the database write `op` with this patience. A data exception (SQLSTATE class
    /// 22) is returned at once either way: the same rows would fail forever.
    async fn run<T, F, Fut>(self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let health = match self {
            Patience::Once => return op().await,
            Patience::UntilStored(health) => health,
        };
        let waiting = health.intake_storing();
        let mut failures = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_data_exception() => return Err(e),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    waiting.failed(&e.to_string());
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
}

/// A received body's events (with what the log should say about it logged), or why it is
/// poison. `from` names the sender in the log (a routing key, an HTTP path).
pub(crate) fn decode(
    received: &event::Delivery<'_>,
    rules: &event::IntakeRules,
    from: &str,
) -> Result<event::Decoded, String> {
    let d = decode_caught(received, rules)?;
    if !d.credentials.is_empty() {
        tracing::warn!(
            attributes = ?d.credentials,
            from = %from,
            "an IdentityIQ plan carried credentials; they were dropped unread — the sender should stop sending them"
        );
    }
    for why in &d.ignored {
        tracing::info!(from = %from, "ignored: {why}");
    }
    Ok(d)
}

/// Decodes a body. A decoder that panics (a bug) makes the message poison, with the panic
/// in its reason: letting the panic end intake would only take the same message again,
/// and again, holding every delivery behind it.
fn decode_caught(
    received: &event::Delivery<'_>,
    rules: &event::IntakeRules,
) -> Result<event::Decoded, String> {
    let decode = || {
        crate::failpoint::panic_for_body(received.body);
        event::decode(received, rules)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(decoded) => decoded.map_err(|e| e.to_string()),
        Err(payload) => {
            let why = crate::health::panic_message(payload.as_ref());
            tracing::error!(panic = %why, "reading a message panicked (a bug in mailboxd); it is stored as poison");
            metrics::counter!("mailboxd_decode_panics_total").increment(1);
            Err(format!(
                "internal error: mailboxd panicked reading this message ({}); a bug in mailboxd, please report it",
                why.chars().take(300).collect::<String>()
            ))
        }
    }
}

/// What of a refused body is kept; nothing of it if even that panics.
pub(crate) fn poison_copy(received: &event::Delivery<'_>) -> Vec<u8> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| received.poison_body()))
        .unwrap_or_else(|_| b"[body withheld by mailboxd: reading it panicked]".to_vec())
}

/// The span of one message's intake (`transport`: `amqp`, `https`), continuing the sender's
/// trace; a sibling of the job's spans, which continue the same parent. Exported only with
/// `[telemetry]`.
pub(crate) fn intake_span(
    transport: &'static str,
    source: &str,
    parent: Option<&TraceParent>,
) -> tracing::Span {
    let kind = if transport == "amqp" {
        "consumer"
    } else {
        "server"
    };
    let span = tracing::info_span!(
        target: crate::trace::SPANS,
        parent: None,
        "intake",
        otel.name = %format_args!("intake {transport}"),
        otel.kind = kind,
        intake.transport = transport,
        intake.source = %source,
        intake.events = tracing::field::Empty,
        intake.result = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    crate::trace::continues(&span, parent);
    span
}

/// Stores `events` (each with its `reply_to` and `traceparent`, by index) as jobs in one transaction:
/// `Inserted` per event, in order. `Err` when PostgreSQL refused the data itself, or, with
/// `Patience::Once`, when it could not be reached.
pub(crate) async fn store_events(
    store: &Store,
    patience: Patience<'_>,
    events: &[Event],
    (reply_to, traces): (&[ReplyTo], &[Option<TraceParent>]),
    max_attempts: i32,
) -> Result<Vec<Inserted>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<Inserted> = patience
        .run("store jobs", || {
            store.insert_traced(events, reply_to, traces, max_attempts)
        })
        .await?;
    for (ev, ins) in events.iter().zip(&inserted) {
        tracing::debug!(event_id = %ev.id, job_id = %ins.job_id(), outcome = ?ins, "event stored");
        let format = match ev.source.as_deref() {
            Some("identityiq") => "identityiq",
            Some("midpoint") => "midpoint",
            _ => "json",
        };
        metrics::counter!("mailboxd_events_ingested_total", "format" => format).increment(1);
    }
    Ok(inserted)
}

/// Stores `row` in the poison table. If PostgreSQL refuses even the cleaned properties,
/// the row keeps the reason and the body alone; `Ok(None)` if it refuses that too (the
/// caller's transport is then what remains: the broker's dead-letter copy, the sender's).
/// `Err` only with `Patience::Once`, when the database could not be reached.
pub(crate) async fn store_poison(
    store: &Store,
    patience: Patience<'_>,
    mut row: NewPoison,
) -> Result<Option<i64>, StoreError> {
    let mut stored = patience
        .run("store a poison message", || store.insert_poison(&row))
        .await;
    if let Err(e) = &stored
        && !e.is_data_exception()
    {
        return stored.map(Some);
    }
    if let Err(e) = &stored {
        tracing::warn!(error = %e, "PostgreSQL refused a poison message's properties; keeping its reason and body only");
        row.reason = format!("{} (its properties could not be stored: {e})", row.reason);
        (row.content_type, row.message_id, row.headers) = (None, None, serde_json::Value::Null);
        stored = patience
            .run("store a poison message", || store.insert_poison(&row))
            .await;
    }
    metrics::counter!("mailboxd_poison_received_total").increment(1);
    match stored {
        Ok(id) => {
            tracing::warn!(poison_id = id, reason = %row.reason, routing_key = %row.routing_key, "poison message stored");
            Ok(Some(id))
        }
        Err(e) if e.is_data_exception() => {
            tracing::error!(error = %e, reason = %row.reason, "PostgreSQL refused the poison message; only the sender's copy remains");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Text PostgreSQL can store: a NUL (which neither `text` nor `jsonb` accepts) becomes
/// U+FFFD, the replacement character.
pub(crate) fn storable(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}
