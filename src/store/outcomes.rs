//! The outcome outbox: one row per `mailboxd.outcome/v1` message (the contract is
//! `crate::outcome`), written in the transaction that moved the job, so an outcome is never
//! lost and never written twice. The publishers claim due rows with `FOR UPDATE SKIP
//! LOCKED` and a lease, oldest unsent row of an account first, and mark them sent only
//! after the broker (or IdentityIQ, or the HTTP callback) confirmed them. Each channel has
//! its own delivery columns (`OutcomeChannel`), set when the row is written.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::jobs::JOB_COLUMNS;
use super::{Job, Store, StoreError, secs};
use crate::outcome::{AnsweredJob, Ending, HttpDelivery, OutcomeMessage, OutcomeResult};

/// The job as its outcome message names it.
pub fn answered(job: &Job) -> AnsweredJob<'_> {
    AnsweredJob {
        id: job.id,
        // A later step answers its event, under the event's own id.
        event_id: if job.step.is_some() {
            &job.event.id
        } else {
            &job.event_id
        },
        kind: job.kind,
        event: &job.event,
        superseded_by: job.superseded_by,
        trace_parent: job.trace_parent.as_deref(),
    }
}

/// The outcome message of `job` ending as `ending`.
pub(super) fn message(job: &Job, ending: Ending<'_>) -> OutcomeMessage {
    crate::outcome::message(answered(job), ending)
}

/// An outcome row still due for IdentityIQ, as SQL: the state is in the text (rendered
/// from the enum) like every condition the claims build, so the partial index applies.
static IIQ_DUE: LazyLock<String> =
    LazyLock::new(|| format!("iiq_state = '{}'", HttpDelivery::Pending));
/// The same for the HTTP callback (migration 0026's `outcomes_callback_pending`).
static CALLBACK_DUE: LazyLock<String> =
    LazyLock::new(|| format!("callback_state = '{}'", HttpDelivery::Pending));

/// Outcomes not yet delivered on some channel, and those failing. Each channel's due
/// condition is in the text, as its partial index says it: bound as a parameter, the generic
/// plan could use none of them and read every outcome ever written (a month of history on
/// every overview and every `/metrics` scrape).
static OUTCOME_COUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT count(*),
                count(*) FILTER (WHERE (sent_at IS NULL AND last_error IS NOT NULL)
                                    OR ({iiq} AND iiq_last_error IS NOT NULL)
                                    OR ({callback} AND callback_last_error IS NOT NULL))
           FROM outcomes WHERE sent_at IS NULL OR {iiq} OR {callback}",
        iiq = IIQ_DUE.as_str(),
        callback = CALLBACK_DUE.as_str(),
    )
});

/// Which channels beside the broker an outcome is due on when it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeChannels {
    /// `[identityiq]`: every outcome.
    pub identityiq: bool,
    pub callback: CallbackDue,
}

/// Which outcomes the HTTP callback (`[outcome_callback]`) is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallbackDue {
    /// No callback configured.
    #[default]
    Off,
    /// Those of jobs whose event came over the HTTP intake (`jobs.http_intake`).
    HttpIntake,
    All,
}

impl OutcomeChannels {
    /// The binds of `CASE WHEN $all OR ($http AND jobs.http_intake) THEN 'pending' END`.
    pub(super) fn callback_binds(self) -> (bool, bool) {
        (
            self.callback == CallbackDue::All,
            self.callback == CallbackDue::HttpIntake,
        )
    }
}

/// Writes outcome rows in the caller's transaction. A job reports that it waits for the
/// sync once, not at every poll.
pub(super) async fn insert_outcomes(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&Job, OutcomeMessage)],
    channels: OutcomeChannels,
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
        "INSERT INTO outcomes (id, job_id, account, event_id, result, routing_key, reply_to, body,
                               iiq_state, callback_state)
         SELECT u.id, u.job_id, u.account, u.event_id, u.result, u.routing_key, u.reply_to, u.body,
                CASE WHEN $10 THEN $11 END, CASE WHEN $12 OR ($13 AND j.http_intake) THEN $11 END
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::jsonb[]) WITH ORDINALITY
                AS u(id, job_id, account, event_id, result, routing_key, reply_to, body, n)
           LEFT JOIN jobs j ON j.id = u.job_id
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
    // The event the message answers (a later step's job has an event id of its own).
    .bind(
        rows.iter()
            .map(|(_, m)| m.event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, m)| m.result).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, m)| m.routing_key())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(j, _)| j.reply_to.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(bodies)
    .bind(OutcomeResult::WaitingForSync)
    .bind(channels.identityiq)
    .bind(HttpDelivery::Pending)
    .bind(channels.callback_binds().0)
    .bind(channels.callback_binds().1)
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
    channels: OutcomeChannels,
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
        .map(|job| (job, message(job, Ending::moved(result, job.attempt))))
        .collect();
    insert_outcomes(tx, &rows, channels).await
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
    /// IdentityIQ: not for it (`None`), or where its delivery there stands.
    pub iiq_state: Option<HttpDelivery>,
    pub iiq_last_error: Option<String>,
    /// The HTTP callback: not for it (`None`), or where its delivery there stands.
    pub callback_state: Option<HttpDelivery>,
    pub callback_last_error: Option<String>,
}

/// Where an outcome goes: each is claimed, retried and marked on its own columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeChannel {
    /// `outcomes.exchange` and `reply_to`: `sent_at`, `attempts`, `locked_by`, …
    Amqp,
    /// An IdentityIQ workflow launch: `iiq_state`, `iiq_attempts`, `iiq_locked_by`, …
    IdentityIq,
    /// The HTTP callback: `callback_state`, `callback_attempts`, …
    Callback,
}

impl OutcomeChannel {
    /// The condition of a row still due on this channel.
    fn due(self) -> &'static str {
        match self {
            OutcomeChannel::Amqp => "sent_at IS NULL",
            OutcomeChannel::IdentityIq => IIQ_DUE.as_str(),
            OutcomeChannel::Callback => CALLBACK_DUE.as_str(),
        }
    }

    /// The prefix of this channel's attempts, next_attempt_at, locked_by, … columns.
    fn prefix(self) -> &'static str {
        match self {
            OutcomeChannel::Amqp => "",
            OutcomeChannel::IdentityIq => "iiq_",
            OutcomeChannel::Callback => "callback_",
        }
    }
}

const OUTCOME_COLUMNS: &str = "id, seq, job_id, account, event_id, result, routing_key, reply_to, body, \
    created_at, sent_at, attempts, next_attempt_at, last_error, delivered, iiq_state, iiq_last_error, \
    callback_state, callback_last_error";

/// Which outcomes `mailboxd outcomes list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    All,
    /// Not yet delivered everywhere it is due (the broker, IdentityIQ, the callback).
    Unsent,
    /// Unsent after at least one failed publish (or IdentityIQ launch, or callback POST).
    Failing,
    /// Refused for good by IdentityIQ or the callback (a lasting 4xx): an operator's case.
    Refused,
}

/// Counts for the metrics and the dashboard.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OutcomeCounts {
    /// Not yet delivered everywhere they are due.
    #[serde(rename = "pending")]
    pub unsent: i64,
    /// Of those, the ones whose last delivery failed.
    pub failing: i64,
}

impl Store {
    /// Leases up to `limit` outcomes due on `channel` to `replica`: of each account only
    /// its oldest one still due there, so an account's outcomes go out in order. Oldest
    /// first; `attempts`, `next_attempt_at` and `last_error` are the channel's.
    pub async fn claim_outcomes(
        &self,
        channel: OutcomeChannel,
        replica: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutcomeRow>, StoreError> {
        let (due, p) = (channel.due(), channel.prefix());
        let returning = OUTCOME_COLUMNS
            .split(", ")
            .map(|c| match c {
                "attempts" | "next_attempt_at" | "last_error" => {
                    format!("outcomes.{p}{c} AS {c}")
                }
                _ => format!("outcomes.{c}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        // The channel's column names and condition are constants of this file.
        let started = std::time::Instant::now();
        let mut rows: Vec<OutcomeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH due AS (
                SELECT o.id FROM outcomes o
                 WHERE o.{due} AND o.{p}next_attempt_at <= now()
                   AND (o.{p}locked_until IS NULL OR o.{p}locked_until < now())
                   AND NOT EXISTS (SELECT 1 FROM outcomes e
                                    WHERE e.account = o.account AND e.seq < o.seq AND e.{due})
                 ORDER BY o.seq LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             UPDATE outcomes SET {p}locked_by = $2, {p}locked_until = now() + make_interval(secs => $3),
                                 {p}attempts = outcomes.{p}attempts + 1
               FROM due WHERE outcomes.id = due.id
             RETURNING {returning}"
        )))
        .bind(limit)
        .bind(replica)
        .bind(secs(lease))
        .fetch_all(&self.pool)
        .await?;
        self.outcome_claim_took(started.elapsed());
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

    /// Gives outcomes back after a failed delivery on `channel`: due again at `next`, the
    /// error kept.
    pub(crate) async fn outcomes_failed(
        &self,
        channel: OutcomeChannel,
        replica: &str,
        ids: &[Uuid],
        error: &str,
        next: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let p = channel.prefix();
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outcomes SET {p}last_error = $3, {p}next_attempt_at = $4,
                                 {p}locked_by = NULL, {p}locked_until = NULL
              WHERE id = ANY($1) AND {p}locked_by = $2"
        )))
        .bind(ids)
        .bind(replica)
        .bind(error)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Ends an outcome's delivery on an HTTP `channel` (IdentityIQ, the callback): `sent`,
    /// or `refused` with the reason (a 4xx that retrying cannot change). Only while
    /// `replica` holds it; the broker's channel has no such state and is never ended here.
    pub async fn http_delivery_done(
        &self,
        channel: OutcomeChannel,
        replica: &str,
        id: Uuid,
        refused: Option<&str>,
    ) -> Result<bool, StoreError> {
        if channel == OutcomeChannel::Amqp {
            return Ok(false);
        }
        let p = channel.prefix();
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outcomes SET {p}state = CASE WHEN $3::text IS NULL THEN $4 ELSE $5 END,
                                 {p}last_error = $3, {p}locked_by = NULL, {p}locked_until = NULL
              WHERE id = $1 AND {p}locked_by = $2"
        )))
        .bind(id)
        .bind(replica)
        .bind(refused)
        .bind(HttpDelivery::Sent)
        .bind(HttpDelivery::Refused)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
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
              WHERE CASE $1
                    WHEN 'refused' THEN iiq_state = $6 OR callback_state = $6
                    WHEN 'all' THEN true
                    ELSE (sent_at IS NULL OR iiq_state = $5 OR callback_state = $5)
                    END
                AND (NOT $4 OR (sent_at IS NULL AND last_error IS NOT NULL)
                     OR (iiq_state = $5 AND iiq_last_error IS NOT NULL)
                     OR (callback_state = $5 AND callback_last_error IS NOT NULL))
                AND ($2::text IS NULL OR account = lower($2))
              ORDER BY seq DESC LIMIT $3"
        )))
        .bind(match filter {
            OutcomeFilter::All => "all",
            OutcomeFilter::Refused => "refused",
            OutcomeFilter::Unsent | OutcomeFilter::Failing => "unsent",
        })
        .bind(account)
        .bind(limit)
        .bind(filter == OutcomeFilter::Failing)
        .bind(HttpDelivery::Pending)
        .bind(HttpDelivery::Refused)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every answer a job gave, oldest first: its on-premises outcome and, with `[cloud]`,
    /// its cloud one.
    pub async fn job_outcomes(&self, job_id: Uuid) -> Result<Vec<OutcomeRow>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes WHERE job_id = $1 ORDER BY seq"
        )))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn outcome_counts(&self) -> Result<OutcomeCounts, StoreError> {
        let (unsent, failing): (i64, i64) = sqlx::query_as(OUTCOME_COUNTS.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(OutcomeCounts { unsent, failing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claims name each channel's due condition in their text so that the planner uses
    /// its partial index (migrations 0008 and 0026): the two must say the same.
    #[test]
    fn each_channels_due_condition_is_its_partial_index() {
        let iiq = include_str!("../../migrations/0008_outcomes.sql");
        let callback = include_str!("../../migrations/0026_outcome_callback.sql");
        assert!(iiq.contains(&format!("WHERE {};", IIQ_DUE.as_str())));
        assert!(callback.contains(&format!("WHERE {};", CALLBACK_DUE.as_str())));
    }
}
