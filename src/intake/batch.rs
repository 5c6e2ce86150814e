//! One batch of deliveries: decoded, the refused ones stored as poison and rejected, the
//! rest stored as jobs in one transaction and acknowledged with one frame.
//!
//! Everything stored is storable: the event's values passed the model's rules, and what
//! is kept beside them (AMQP headers, `message_id`, `content_type`, names) is cleaned of
//! what PostgreSQL refuses (NUL). Should PostgreSQL still refuse a batch's data (SQLSTATE
//! class 22), the batch is stored again one delivery at a time and only the delivery it
//! refuses becomes poison: data never holds up intake, an outage does (retried until it
//! ends).

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::IntakeError;
use super::keep::{self, Patience, storable};
use super::reply_to::ReplyToRule;
use crate::event::{self, Event};
use crate::health::Health;
use crate::store::{NewPoison, ReplyTo, Store, StoreError};
use crate::trace::{self, TraceParent};

/// What a delivery is checked against beyond decoding.
pub(crate) struct Rules {
    pub event: event::IntakeRules,
    pub reply_to: ReplyToRule,
}

/// A delivery that decoded, with its events and where their outcomes may go.
struct Accepted {
    delivery: Delivery,
    events: Vec<Event>,
    reply_to: ReplyTo,
    trace: Option<TraceParent>,
    /// Its intake's span, ended once the batch is stored and acknowledged.
    span: tracing::Span,
}

pub(super) async fn handle(
    store: &Store,
    health: &Health,
    max_attempts: i32,
    rules: &Rules,
    batch: Vec<Delivery>,
) -> Result<(), IntakeError> {
    let mut good = Vec::new();
    for delivery in batch {
        let trace = trace_parent(&delivery.properties, delivery.routing_key.as_str());
        let span = keep::intake_span("amqp", delivery.routing_key.as_str(), trace.as_ref());
        match decode(&delivery, &rules.event) {
            Ok(events) => {
                span.record("intake.events", events.len());
                span.record("intake.result", "stored");
                let reply_to = reply_to(&delivery, &rules.reply_to);
                good.push(Accepted {
                    delivery,
                    events,
                    reply_to,
                    trace,
                    span,
                });
            }
            Err(reason) => {
                span.record("intake.result", "poison");
                span.record("otel.status_code", "ERROR");
                poison(store, health, &delivery, reason).await?
            }
        }
    }
    store_accepted(store, health, max_attempts, good).await
}

/// The delivery's events, or why it is poison.
fn decode(delivery: &Delivery, rules: &event::IntakeRules) -> Result<Vec<Event>, String> {
    decode_body(
        &delivery.properties,
        delivery.routing_key.as_str(),
        &delivery.data,
        rules,
    )
}

/// A delivery's events from its properties and body, or why it is poison: the part of
/// intake that reads what the sender chose (fuzzed through `intake::read_delivery`).
pub(super) fn decode_body(
    props: &BasicProperties,
    routing_key: &str,
    body: &[u8],
    rules: &event::IntakeRules,
) -> Result<Vec<Event>, String> {
    let received = event::Delivery {
        body,
        content_type: props.content_type().as_ref().map(ShortString::as_str),
        message_id: props.message_id().as_ref().map(ShortString::as_str),
        routing_key,
        message_type: props.kind().as_ref().map(ShortString::as_str),
    };
    Ok(keep::decode(&received, rules, routing_key)?.events)
}

/// The delivery's `reply_to` if outcomes may go there; a refused one is dropped with a
/// warning and kept on the job (`reply_to_refused`), and the event is processed anyway.
fn reply_to(delivery: &Delivery, rule: &ReplyToRule) -> ReplyTo {
    let Some(queue) = delivery.properties.reply_to().as_ref() else {
        return ReplyTo::default();
    };
    match rule.check(queue.as_str()) {
        Ok(()) => ReplyTo {
            queue: Some(queue.to_string()),
            refused: None,
            ..ReplyTo::default()
        },
        Err(why) => {
            let refused = format!("{:?} not used: {why}", storable(queue.as_str()));
            tracing::warn!(routing_key = %delivery.routing_key, "reply_to {refused}; the outcome goes to the outcome exchange only");
            metrics::counter!("mailboxd_reply_to_refused_total").increment(1);
            ReplyTo {
                queue: None,
                refused: Some(refused),
                ..ReplyTo::default()
            }
        }
    }
}

/// Stores the accepted deliveries' jobs and acknowledges them; a delivery whose data
/// PostgreSQL refuses becomes poison instead.
async fn store_accepted(
    store: &Store,
    health: &Health,
    max_attempts: i32,
    good: Vec<Accepted>,
) -> Result<(), IntakeError> {
    if good.is_empty() {
        return Ok(());
    }
    let mut refused = Vec::new();
    if let Err(e) = insert(store, health, &good, max_attempts).await {
        tracing::warn!(error = %e, "PostgreSQL refused data in a batch; storing its deliveries one at a time");
        for (i, one) in good.iter().enumerate() {
            if let Err(e) = insert(store, health, std::slice::from_ref(one), max_attempts).await {
                refused.push((i, e));
            }
        }
    }
    crate::failpoint::abort_at("intake-after-commit");
    for (i, e) in &refused {
        good[*i].span.record("intake.result", "poison");
        good[*i].span.record("otel.status_code", "ERROR");
        let reason = format!("PostgreSQL refused to store this event: {e}");
        poison(store, health, &good[*i].delivery, reason).await?;
    }
    // One frame acks the whole batch: every delivery up to the last tag on this channel is
    // either in this batch (committed above) or was rejected already.
    let stored = good
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i));
    if let Some((_, last)) = stored.max_by_key(|(_, a)| a.delivery.delivery_tag) {
        last.delivery
            .ack(BasicAckOptions { multiple: true })
            .await?;
    }
    Ok(())
}

/// Inserts the jobs of `accepted` in one transaction, retrying while the database is
/// unreachable; `Err` only when PostgreSQL refused the data itself.
async fn insert(
    store: &Store,
    health: &Health,
    accepted: &[Accepted],
    max_attempts: i32,
) -> Result<(), StoreError> {
    let events: Vec<Event> = accepted
        .iter()
        .flat_map(|a| a.events.iter().cloned())
        .collect();
    let reply_to: Vec<ReplyTo> = accepted
        .iter()
        .flat_map(|a| std::iter::repeat_n(a.reply_to.clone(), a.events.len()))
        .collect();
    let traces: Vec<Option<TraceParent>> = accepted
        .iter()
        .flat_map(|a| std::iter::repeat_n(a.trace.clone(), a.events.len()))
        .collect();
    let patience = Patience::UntilStored(health);
    keep::store_events(store, patience, &events, (&reply_to, &traces), max_attempts).await?;
    Ok(())
}

/// The delivery's `traceparent` header (W3C Trace Context), if it sent a valid one.
fn trace_parent(props: &BasicProperties, routing_key: &str) -> Option<TraceParent> {
    let value = props.headers().as_ref()?.inner().get(trace::HEADER)?;
    let bytes = match value {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes(),
        _ => b"",
    };
    trace::accept(Some(bytes), routing_key)
}

/// Stores the delivery in the poison table and rejects it (to the dead-letter queue), which
/// keeps a copy should PostgreSQL refuse even the reduced row (`keep::store_poison`).
async fn poison(
    store: &Store,
    health: &Health,
    delivery: &Delivery,
    reason: String,
) -> Result<(), IntakeError> {
    let row = poison_row(
        &delivery.properties,
        delivery.exchange.as_str(),
        delivery.routing_key.as_str(),
        &delivery.data,
        &reason,
    );
    keep::store_poison(store, Patience::UntilStored(health), row).await?;
    delivery
        .reject(BasicRejectOptions { requeue: false })
        .await?;
    Ok(())
}

/// The row `poison_messages` keeps of a refused delivery: every value made storable, the
/// body only as `Delivery::poison_body` allows.
pub(super) fn poison_row(
    props: &BasicProperties,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    reason: &str,
) -> NewPoison {
    let received = event::Delivery {
        body,
        content_type: props.content_type().as_ref().map(ShortString::as_str),
        message_id: None,
        routing_key,
        message_type: props.kind().as_ref().map(ShortString::as_str),
    };
    NewPoison {
        reason: storable(reason),
        routing_key: storable(routing_key),
        exchange: storable(exchange),
        content_type: props.content_type().as_ref().map(|s| storable(s.as_str())),
        message_id: props.message_id().as_ref().map(|s| storable(s.as_str())),
        headers: props
            .headers()
            .as_ref()
            .map_or(serde_json::Value::Null, |t| table_to_json(t, 0)),
        body: keep::poison_copy(&received),
    }
}

/// How deep nested header tables and arrays are kept: the rest is summarised.
const MAX_HEADER_DEPTH: usize = 16;

fn table_to_json(t: &FieldTable, depth: usize) -> serde_json::Value {
    serde_json::Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (storable(k.as_str()), value_to_json(v, depth + 1)))
            .collect(),
    )
}

/// An AMQP header value as JSON, nested tables and arrays down to `MAX_HEADER_DEPTH`
/// levels (the sender chooses the depth; what is deeper is not kept).
fn value_to_json(v: &AMQPValue, depth: usize) -> serde_json::Value {
    use serde_json::json;
    if depth > MAX_HEADER_DEPTH {
        return json!(format!(
            "[nested deeper than {MAX_HEADER_DEPTH} levels: not kept]"
        ));
    }
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
        AMQPValue::ShortString(s) => json!(storable(s.as_str())),
        AMQPValue::LongString(s) => json!(storable(&String::from_utf8_lossy(s.as_bytes()))),
        AMQPValue::FieldArray(a) => serde_json::Value::Array(
            a.as_slice()
                .iter()
                .map(|v| value_to_json(v, depth + 1))
                .collect(),
        ),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t, depth),
        other => json!(storable(&format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_header_is_kept_and_a_hostile_one_is_not() {
        let with = |v: AMQPValue| {
            let mut t = FieldTable::default();
            t.insert("traceparent".into(), v);
            BasicProperties::default().with_headers(t)
        };
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let kept = trace_parent(&with(AMQPValue::LongString(good.into())), "k");
        assert_eq!(kept.map(|t| t.to_string()).as_deref(), Some(good));
        let short = trace_parent(&with(AMQPValue::ShortString(good.into())), "k");
        assert!(short.is_some());
        let hostile = format!("{good}\r\nX-Injected: 1");
        assert_eq!(
            trace_parent(&with(AMQPValue::LongString(hostile.as_str().into())), "k"),
            None
        );
        assert_eq!(trace_parent(&with(AMQPValue::LongInt(7)), "k"), None);
        assert_eq!(trace_parent(&BasicProperties::default(), "k"), None);
    }

    #[test]
    fn header_values_are_made_storable() {
        let mut t = FieldTable::default();
        t.insert("x-a\0".into(), AMQPValue::LongString("v\0w".into()));
        let mut inner = FieldTable::default();
        inner.insert("k".into(), AMQPValue::ShortString("\0".into()));
        t.insert("nested".into(), AMQPValue::FieldTable(inner));
        let json = table_to_json(&t, 0).to_string();
        assert!(!json.contains("\\u0000"), "{json}");
        assert!(json.contains("v\u{FFFD}w"), "{json}");
        let mut deep = AMQPValue::Boolean(true);
        for _ in 0..100 {
            let mut t = FieldTable::default();
            t.insert("d".into(), deep);
            deep = AMQPValue::FieldTable(t);
        }
        let json = value_to_json(&deep, 0).to_string();
        assert!(json.contains("not kept"), "{json}");
    }
}
