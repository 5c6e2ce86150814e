//! Publishing events with publisher confirms (for `mailboxd publish`, the demo, tests and
//! backfills). A message counts as published only when the broker confirmed it and it was
//! routed to a queue.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

use crate::broker;
use crate::config;
use crate::event::{EventKind, MailboxType, Rename, SCHEMA_V1};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("RabbitMQ: {0} (is the broker reachable at amqp.url?)")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack); nothing was queued — publish it again")]
    Nacked,
    #[error("no queue is bound for routing key {0}; the message was returned, not queued")]
    Unroutable(String),
}

pub struct Publisher {
    _conn: Connection,
    ch: Channel,
    exchange: String,
}

/// The fields of an event to publish; `to_json` fills in the contract's envelope.
#[derive(Debug, Clone)]
pub struct EventSpec {
    pub kind: EventKind,
    pub sam_account_name: String,
    pub id: String,
    pub object_guid: Option<String>,
    pub user_principal_name: Option<String>,
    pub remote_routing_address: Option<String>,
    pub alias: Option<String>,
    pub primary_smtp_address: Option<String>,
    pub created_on_server: Option<String>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub source: String,
    /// `mailbox.archive`: enable the cloud archive too.
    pub archive: bool,
    /// The identity in the IAM system (`identity`).
    pub identity: Option<String>,
    /// `mailbox.type`; absent (a person's mailbox) when `None`.
    pub mailbox_type: Option<MailboxType>,
    /// `mailbox.start_date` as sent: a day (`2027-01-04`) or an RFC 3339 date-time.
    pub start_date: Option<String>,
    /// A mover's new values (`rename`).
    pub rename: Option<Rename>,
}

impl EventSpec {
    pub fn new(kind: EventKind, sam: impl Into<String>) -> EventSpec {
        EventSpec {
            kind,
            sam_account_name: sam.into(),
            id: uuid::Uuid::new_v4().to_string(),
            object_guid: None,
            user_principal_name: None,
            remote_routing_address: None,
            alias: None,
            primary_smtp_address: None,
            created_on_server: None,
            occurred_at: chrono::Utc::now(),
            source: "mailboxd-publish".into(),
            archive: false,
            identity: None,
            mailbox_type: None,
            start_date: None,
            rename: None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut account = serde_json::json!({ "sam_account_name": self.sam_account_name });
        for (k, v) in [
            ("object_guid", &self.object_guid),
            ("user_principal_name", &self.user_principal_name),
            ("created_on_server", &self.created_on_server),
        ] {
            if let Some(v) = v {
                account[k] = serde_json::json!(v);
            }
        }
        let mut ev = serde_json::json!({
            "schema": SCHEMA_V1,
            "id": self.id,
            "type": self.kind.as_str(),
            "occurred_at": self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "account": account,
            "source": self.source,
        });
        if let Some(identity) = &self.identity {
            ev["identity"] = serde_json::json!(identity);
        }
        let mut mailbox = serde_json::Map::new();
        for (k, v) in [
            ("alias", &self.alias),
            ("remote_routing_address", &self.remote_routing_address),
            ("primary_smtp_address", &self.primary_smtp_address),
            ("start_date", &self.start_date),
        ] {
            if let Some(v) = v {
                mailbox.insert(k.into(), serde_json::json!(v));
            }
        }
        if self.archive {
            mailbox.insert("archive".into(), serde_json::json!(true));
        }
        if let Some(kind) = self.mailbox_type {
            mailbox.insert("type".into(), serde_json::json!(kind.as_str()));
        }
        if !mailbox.is_empty() {
            ev["mailbox"] = serde_json::Value::Object(mailbox);
        }
        if let Some(rename) = &self.rename {
            ev["rename"] = serde_json::json!(rename);
        }
        ev
    }
}

impl Publisher {
    /// Connects, declares the topology (so nothing published now can be dropped for want
    /// of a queue) and turns on publisher confirms.
    pub async fn connect(cfg: &config::Amqp) -> Result<Publisher, PublishError> {
        let conn = broker::connect(&cfg.url, "mailboxd publish").await?;
        let ch = conn.create_channel().await?;
        broker::declare_topology(&ch, cfg).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher {
            _conn: conn,
            ch,
            exchange: cfg.exchange.clone(),
        })
    }

    /// Publishes a persistent message and waits for the broker's confirm.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        content_type: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<(), PublishError> {
        let confirm = self
            .send(routing_key, body, properties(content_type, message_id))
            .await?;
        confirmed(confirm.await?, routing_key)
    }

    /// Publishes many messages at full speed: up to `window` unconfirmed at a time, then
    /// waits for their confirms (a nack or an unroutable message is an error).
    pub(crate) async fn publish_many(
        &self,
        messages: &[(&str, &[u8], Option<&str>)],
        window: usize,
    ) -> Result<usize, PublishError> {
        let mut done = 0;
        for chunk in messages.chunks(window.max(1)) {
            let mut pending = Vec::with_capacity(chunk.len());
            for (routing_key, body, message_id) in chunk {
                let props = properties(Some("application/json"), *message_id);
                pending.push((routing_key, self.send(routing_key, body, props).await?));
            }
            for (routing_key, confirm) in pending {
                confirmed(confirm.await?, routing_key)?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Sends one message, `mandatory` so that an unroutable one comes back rather than
    /// vanishing; the confirm is awaited by the caller.
    async fn send(
        &self,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<PublisherConfirm, PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        Ok(self
            .ch
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                options,
                body,
                props,
            )
            .await?)
    }

    pub async fn publish(&self, spec: &EventSpec) -> Result<(), PublishError> {
        let body = spec.to_json().to_string();
        self.publish_raw(
            spec.kind.routing_key(),
            body.as_bytes(),
            Some("application/json"),
            Some(&spec.id),
        )
        .await
    }
}

/// A persistent message with these properties.
fn properties(content_type: Option<&str>, message_id: Option<&str>) -> BasicProperties {
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(ct) = content_type {
        props = props.with_content_type(ct.into());
    }
    if let Some(id) = message_id {
        props = props.with_message_id(id.into());
    }
    props
}

/// Published means acked by the broker and routed to a queue (not returned).
fn confirmed(confirm: Confirmation, routing_key: &str) -> Result<(), PublishError> {
    if !confirm.is_ack() {
        return Err(PublishError::Nacked);
    }
    if confirm.take_message().is_some() {
        return Err(PublishError::Unroutable(routing_key.to_owned()));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("no poison message {0}")]
    NotFound(i64),
    #[error("poison message {0} was stored truncated; replay it with a corrected body")]
    Truncated(i64),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Publishes a poison message again (after the sender or mailboxd was fixed), with its
/// routing key, content type and message id, or with a corrected `body`; marks it replayed.
/// Returns the routing key used.
pub(crate) async fn replay_poison(
    store: &crate::store::Store,
    amqp: &config::Amqp,
    id: i64,
    body: Option<Vec<u8>>,
) -> Result<String, ReplayError> {
    let p = store
        .get_poison(id)
        .await?
        .ok_or(ReplayError::NotFound(id))?;
    if p.truncated && body.is_none() {
        return Err(ReplayError::Truncated(id));
    }
    let body = body.unwrap_or_else(|| p.body.clone());
    let publisher = Publisher::connect(amqp).await?;
    publisher
        .publish_raw(
            &p.routing_key,
            &body,
            p.content_type.as_deref(),
            p.message_id.as_deref(),
        )
        .await?;
    store.mark_poison_replayed(id).await?;
    Ok(p.routing_key)
}
