//! Attempts: one `job_attempts` row per try of a job, with the host and domain controller
//! it used, what the directory showed before and after, and an excerpt of the transcript.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::job::{AttemptEnd, ErrorClass};
use crate::outcome::DirectoryView;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub attempt: i32,
    pub replica: String,
    pub host: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptEnd,
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    pub transcript: Option<String>,
    /// The domain controller the attempt read and told Exchange to use.
    pub domain_controller: Option<String>,
    /// What the directory showed: `{"before": …, "after": …}`.
    pub directory: Option<serde_json::Value>,
}

/// The record of one attempt, written with its resolution.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    pub host: Option<String>,
    pub transcript: Option<String>,
    pub domain_controller: Option<String>,
    pub directory: Option<serde_json::Value>,
    /// The account and its addresses as the attempt last read them: the outcome reports it.
    pub view: Option<DirectoryView>,
    /// The account as the attempt first read it, before any change: a mover's outcome
    /// reports it beside `view`.
    pub view_before: Option<DirectoryView>,
    /// What the attempt changed on premises stays there (`leaver.exchange_attributes =
    /// "cloud"`): the outcome says so.
    pub stays_on_premises: bool,
    /// A joiner with a start date still ahead: its mailbox was left hidden until this
    /// instant, when the step that makes it visible is due (written with the success).
    pub hidden_until: Option<DateTime<Utc>>,
}

impl AttemptRecord {
    pub fn new(started_at: DateTime<Utc>) -> AttemptRecord {
        AttemptRecord {
            started_at,
            host: None,
            transcript: None,
            domain_controller: None,
            directory: None,
            view: None,
            view_before: None,
            stays_on_premises: false,
            hidden_until: None,
        }
    }
}

/// One line of a job's history for its alert: the try, when, how it ended, the error's
/// class and the first 160 characters of its text, and the host.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct HistoryLine {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub outcome: AttemptEnd,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    pub host: Option<String>,
}

impl Store {
    /// A job's attempts, oldest first.
    pub async fn attempts(&self, job_id: Uuid) -> Result<Vec<Attempt>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT attempt, replica, host, started_at, finished_at, outcome, error_class, error_message, transcript,
                    domain_controller, directory
               FROM job_attempts WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A job's attempts so far, for the history in its alert.
pub(super) async fn history(
    tx: &mut Transaction<'_, Postgres>,
    job_id: Uuid,
) -> Result<Vec<HistoryLine>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT attempt, started_at, outcome, error_class, left(error_message, 160) AS error, host
           FROM job_attempts WHERE job_id = $1 ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(&mut **tx)
    .await?)
}
