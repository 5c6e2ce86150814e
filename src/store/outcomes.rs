//! The outcome outbox: one `mailboxd.outcome/v1` message per job that reached a final state
//! or started waiting for the cloud sync, written in the transaction that moved the job, so
//! an outcome is never lost and never written twice. The publisher (`crate::outcomes`)
//! claims due rows with `FOR UPDATE SKIP LOCKED` and a lease, oldest unsent row of an
//! account first, and marks them sent only after the broker confirmed them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::jobs::JOB_COLUMNS;
use super::{ErrorClass, Job, JobOutcome, OutcomeResult, Store, StoreError, secs};
use crate::event::EventKind;

/// The `schema` of every outcome message.
pub const OUTCOME_SCHEMA_V1: &str = "mailboxd.outcome/v1";

/// The account as the outcome names it: what AD showed, else what the event said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeAccount {
    pub sam_account_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_guid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinguished_name: Option<String>,
}

/// A recipient's addresses as AD shows them (Exchange's address policy usually decided
/// the primary one, not the event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxAddresses {
    /// `mail`, or the `SMTP:` proxy address when `mail` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_smtp_address: Option<String>,
    pub proxy_addresses: Vec<String>,
    /// `targetAddress` without its `SMTP:` prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_routing_address: Option<String>,
    /// `remote_mailbox`, `onprem_mailbox`, `mail_user`, `other` or `none`.
    pub recipient_type: String,
    pub hidden: bool,
}

/// The account and its mailbox as a domain controller showed them during the attempt:
/// after the change when the worker read it again to verify, else before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryView {
    pub account: OutcomeAccount,
    pub mailbox: MailboxAddresses,
}

/// A failure as the IAM system is told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeError {
    pub message: String,
    pub class: ErrorClass,
    pub what_to_do: &'static str,
}

/// The `mailboxd.outcome/v1` message (docs/events.md, docs/outcome.schema.json).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeMessage {
    pub schema: &'static str,
    /// The outcome's own id: the AMQP `message_id`, the same on a resend.
    pub id: Uuid,
    /// The event it answers: also the AMQP `correlation_id`.
    pub event_id: String,
    pub job_id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub result: OutcomeResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobOutcome>,
    pub at: DateTime<Utc>,
    pub attempts: i32,
    pub account: OutcomeAccount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxAddresses>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<Uuid>,
}

/// What the IAM system can do about a failure of this class.
pub fn what_to_do(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Permanent => {
            "correct the account or the event (the error names what Exchange refused) and send the event again, or ask operations to retry the job"
        }
        ErrorClass::NotSynced => {
            "the account did not reach Entra ID in time: have the identity team check Entra Connect's sync scope, then ask operations to retry the job"
        }
        ErrorClass::Transient | ErrorClass::Systemic => {
            "nothing on the identity: mailboxd's operators were alerted and will retry the job once the Windows side works again"
        }
    }
}

/// How a job ended (or that it waits), for its outcome message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ending<'a> {
    pub result: OutcomeResult,
    pub outcome: Option<JobOutcome>,
    /// Attempts used (a deferral gives its attempt back).
    pub attempts: i32,
    pub error: Option<(ErrorClass, &'a str)>,
    pub view: Option<&'a DirectoryView>,
}

/// The outcome message of `job` ending as `ending`.
pub(super) fn message(job: &Job, ending: Ending<'_>) -> OutcomeMessage {
    let account = match ending.view {
        Some(v) => v.account.clone(),
        None => OutcomeAccount {
            sam_account_name: job.event.account.sam_account_name.to_string(),
            object_guid: job.event.account.object_guid,
            user_principal_name: job.event.account.user_principal_name.clone(),
            distinguished_name: job.event.account.distinguished_name.clone(),
        },
    };
    OutcomeMessage {
        schema: OUTCOME_SCHEMA_V1,
        id: Uuid::new_v4(),
        event_id: job.event_id.clone(),
        job_id: job.id,
        kind: job.kind,
        result: ending.result,
        outcome: ending.outcome,
        at: Utc::now(),
        attempts: ending.attempts,
        account,
        mailbox: ending.view.map(|v| v.mailbox.clone()),
        error: ending.error.map(|(class, message)| OutcomeError {
            message: message.to_owned(),
            class,
            what_to_do: what_to_do(class),
        }),
        superseded_by: job.superseded_by,
    }
}

/// `joiner.succeeded`, `leaver.failed`, `joiner.waiting_for_sync`, …
pub fn routing_key(kind: EventKind, result: OutcomeResult) -> String {
    format!("{kind}.{result}")
}

/// Writes outcome rows in the caller's transaction. A job reports that it waits for the
/// sync once, not at every poll.
pub(super) async fn insert_outcomes(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&Job, OutcomeMessage)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let bodies = rows
        .iter()
        .map(|(_, m)| serde_json::to_value(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(format!("cannot serialise an outcome: {e}")))?;
    sqlx::query(
        "INSERT INTO outcomes (id, job_id, account, event_id, result, routing_key, reply_to, body)
         SELECT u.id, u.job_id, u.account, u.event_id, u.result, u.routing_key, u.reply_to, u.body
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::jsonb[]) WITH ORDINALITY
                AS u(id, job_id, account, event_id, result, routing_key, reply_to, body, n)
          WHERE u.result <> $9
             OR NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job_id = u.job_id AND o.result = $9)
          ORDER BY u.n",
    )
    .bind(rows.iter().map(|(_, m)| m.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(j, _)| j.id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(j, _)| j.account.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(j, _)| j.event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, m)| m.result).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, m)| routing_key(m.kind, m.result))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(j, _)| j.reply_to.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(bodies)
    .bind(OutcomeResult::WaitingForSync)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The outcomes of jobs an operator cancelled or a newer event superseded (no attempt, no
/// directory read): read back in the transaction that moved them.
pub(super) async fn insert_outcomes_of(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
    result: OutcomeResult,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let jobs: Vec<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1) ORDER BY occurred_at, created_at"
    )))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let rows: Vec<(&Job, OutcomeMessage)> = jobs
        .iter()
        .map(|job| {
            let ending = Ending {
                result,
                outcome: None,
                attempts: job.attempt,
                error: None,
                view: None,
            };
            (job, message(job, ending))
        })
        .collect();
    insert_outcomes(tx, &rows).await
}

/// An outcome row as the publisher and `mailboxd outcomes list` see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OutcomeRow {
    pub id: Uuid,
    pub seq: i64,
    pub job_id: Uuid,
    pub account: String,
    pub event_id: String,
    pub result: OutcomeResult,
    pub routing_key: String,
    pub reply_to: Option<String>,
    pub body: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered: Option<String>,
}

const OUTCOME_COLUMNS: &str = "id, seq, job_id, account, event_id, result, routing_key, reply_to, body, \
    created_at, sent_at, attempts, next_attempt_at, last_error, delivered";

/// Which outcomes `mailboxd outcomes list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    All,
    Unsent,
    /// Unsent after at least one failed publish.
    Failing,
}

/// Counts for the metrics and the dashboard.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OutcomeCounts {
    pub pending: i64,
    pub failing: i64,
}

impl Store {
    /// Leases up to `limit` due outcomes to `replica`: of each account only its oldest
    /// unsent one, so an account's outcomes go out in order. Oldest first.
    pub async fn claim_outcomes(
        &self,
        replica: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutcomeRow>, StoreError> {
        let mut rows: Vec<OutcomeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH due AS (
                SELECT o.id FROM outcomes o
                 WHERE o.sent_at IS NULL AND o.next_attempt_at <= now()
                   AND (o.locked_until IS NULL OR o.locked_until < now())
                   AND NOT EXISTS (SELECT 1 FROM outcomes e
                                    WHERE e.account = o.account AND e.seq < o.seq AND e.sent_at IS NULL)
                 ORDER BY o.seq LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             UPDATE outcomes SET locked_by = $2, locked_until = now() + make_interval(secs => $3),
                                 attempts = outcomes.attempts + 1
               FROM due WHERE outcomes.id = due.id
             RETURNING {}",
            OUTCOME_COLUMNS
                .split(", ")
                .map(|c| format!("outcomes.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(limit)
        .bind(replica)
        .bind(secs(lease))
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Marks outcomes sent (confirmed by the broker), each with where it went.
    pub async fn outcomes_sent(
        &self,
        replica: &str,
        sent: &[(Uuid, String)],
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET sent_at = now(), delivered = u.delivered, last_error = NULL,
                                 locked_by = NULL, locked_until = NULL
               FROM unnest($1::uuid[], $2::text[]) AS u(id, delivered)
              WHERE outcomes.id = u.id AND outcomes.locked_by = $3",
        )
        .bind(sent.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(sent.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>())
        .bind(replica)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Gives outcomes back after a failed publish: due again at `next`, the error kept.
    pub async fn outcomes_failed(
        &self,
        replica: &str,
        ids: &[Uuid],
        error: &str,
        next: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET last_error = $3, next_attempt_at = $4,
                                 locked_by = NULL, locked_until = NULL
              WHERE id = ANY($1) AND locked_by = $2",
        )
        .bind(ids)
        .bind(replica)
        .bind(error)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Outcomes, newest first.
    pub async fn list_outcomes(
        &self,
        filter: OutcomeFilter,
        account: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutcomeRow>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes
              WHERE ($1 = 'all' OR sent_at IS NULL)
                AND ($1 <> 'failing' OR last_error IS NOT NULL)
                AND ($2::text IS NULL OR account = lower($2))
              ORDER BY seq DESC LIMIT $3"
        )))
        .bind(match filter {
            OutcomeFilter::All => "all",
            OutcomeFilter::Unsent => "unsent",
            OutcomeFilter::Failing => "failing",
        })
        .bind(account)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn outcome_counts(&self) -> Result<OutcomeCounts, StoreError> {
        let (pending, failing): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE last_error IS NOT NULL)
               FROM outcomes WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutcomeCounts { pending, failing })
    }
}
