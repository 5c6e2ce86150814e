//! Messages that could not become a job.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// Raw bytes kept per poison message at most.
pub(crate) const POISON_BODY_CAP: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct NewPoison {
    pub reason: String,
    pub routing_key: String,
    pub exchange: String,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PoisonMessage {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    pub routing_key: String,
    pub exchange: String,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    pub headers: Option<serde_json::Value>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub body_size: i32,
    pub truncated: bool,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl Store {
    pub(crate) async fn insert_poison(&self, p: &NewPoison) -> Result<i64, StoreError> {
        let truncated = p.body.len() > POISON_BODY_CAP;
        let body = &p.body[..p.body.len().min(POISON_BODY_CAP)];
        let id = sqlx::query_scalar(
            "INSERT INTO poison_messages
                (reason, routing_key, exchange, content_type, message_id, headers, body, body_size, truncated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&p.reason)
        .bind(&p.routing_key)
        .bind(&p.exchange)
        .bind(&p.content_type)
        .bind(&p.message_id)
        .bind(&p.headers)
        .bind(body)
        .bind(i32::try_from(p.body.len()).unwrap_or(i32::MAX))
        .bind(truncated)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub(crate) async fn count_poison(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM poison_messages")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn list_poison(&self, limit: i64) -> Result<Vec<PoisonMessage>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM poison_messages ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn get_poison(&self, id: i64) -> Result<Option<PoisonMessage>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM poison_messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

impl Store {
    pub(crate) async fn mark_poison_replayed(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE poison_messages SET replayed_at = now() WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
