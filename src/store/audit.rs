//! The audit trail (`audit_log`): one row per operator action, from every channel. Rows
//! are only inserted and read, never changed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// One action on record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub outcome: String,
    pub client: Option<String>,
}

/// What an action puts on record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub outcome: &'a str,
    pub client: Option<&'a str>,
}

impl Store {
    pub(crate) async fn insert_audit(&self, a: NewAudit<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (actor, action, subject, outcome, client)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(a.actor)
        .bind(a.action)
        .bind(a.subject)
        .bind(a.outcome)
        .bind(a.client)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` rows, optionally of one actor, newest first.
    pub(crate) async fn list_audit(
        &self,
        actor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, action, subject, outcome, client FROM audit_log
              WHERE $1::text IS NULL OR actor = $1
              ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(actor)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
