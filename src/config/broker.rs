//! `[database]` and `[amqp]`: where jobs are kept and where events come from.

use std::time::Duration;

use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Amqp {
    pub url: String,
    /// Topic exchange the IAM system publishes to.
    pub exchange: String,
    /// Durable queue mailboxd consumes from.
    pub queue: String,
    /// Dead-letter exchange; rejected (poison) messages land in `<queue>.dead`.
    pub dead_letter_exchange: String,
    /// Unacknowledged deliveries in flight at most.
    pub prefetch: u16,
    /// `quorum` (replicated, the default) or `classic`.
    pub queue_type: QueueType,
    /// Let the broker delete the queues when unused this long (demo and tests only).
    #[serde(default, with = "humantime_opt")]
    pub queue_expires: Option<Duration>,
    /// IdentityIQ XML: the application names whose AccountRequests are for mailboxd.
    pub iiq_applications: Vec<String>,
    /// Domains an event's remote routing address may use; empty: any.
    pub allowed_routing_domains: Vec<String>,
    /// Deliveries waiting this long for their commit make intake stalled (`/readyz` 503).
    #[serde(with = "humantime_secs")]
    pub stall_after: Duration,
    /// Queues an event's `reply_to` may name besides the broker-named ones (`amq.gen-…`,
    /// direct reply-to `amq.rabbitmq.reply-to…`): exact names, or prefixes ending in `*`.
    pub reply_to_allowed: Vec<String>,
    /// midPoint's asynchronous provisioning requests: what their attributes mean.
    pub midpoint: crate::event::midpoint::AttributeMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "postgres://postgres@127.0.0.1:5432/mailboxd".into(),
            max_connections: 10,
        }
    }
}

impl Default for Amqp {
    fn default() -> Self {
        Amqp {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "iam.events".into(),
            queue: "mailboxd.events".into(),
            dead_letter_exchange: "mailboxd.dead".into(),
            prefetch: 500,
            queue_type: QueueType::Quorum,
            queue_expires: None,
            iiq_applications: vec!["Active Directory".into()],
            allowed_routing_domains: Vec::new(),
            stall_after: Duration::from_secs(60),
            reply_to_allowed: Vec::new(),
            midpoint: crate::event::midpoint::AttributeMap::default(),
        }
    }
}
