//! The end of an attempt: the job moves on (succeeded, retried, failed, cancelled,
//! deferred), its attempt is recorded, a final failure's alert and the outcome message of a
//! final state (or of a first wait for the sync) are written, all in one transaction, and
//! only while the replica still holds the job's lease.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use uuid::Uuid;

use super::Job;
use crate::event::EventKind;
use crate::job::{AttemptEnd, ErrorClass, JobEffect, JobState, JobStep, Resolution};
use crate::outcome::{Ending, HttpDelivery, OutcomeMessage, OutcomeResult};
use crate::store::failures::error_signature;
use crate::store::outcomes::message;
use crate::store::{
    AttemptRecord, OutcomeChannels, Store, StoreError, WatchPolicy, insert_job_alert,
};

/// What a resolution writes on the job row.
struct Transition<'a> {
    state: JobState,
    /// Kept as it was when `None`.
    outcome: Option<JobEffect>,
    class: Option<ErrorClass>,
    error: Option<&'a str>,
    /// Seconds from the write (`now()`) to the next try; kept as it was when `None`.
    retry_in: Option<f64>,
    /// The attempt does not count (it is given back).
    deferred: bool,
}

impl Transition<'_> {
    /// The outcome message the job's new state reports, if it reports one.
    fn message(&self, job: &Job, record: &AttemptRecord) -> Option<OutcomeMessage> {
        let ending = Ending {
            result: OutcomeResult::of_step(self.state, job.step)?,
            outcome: self.outcome,
            attempts: job.attempt - i32::from(self.deferred),
            error: self.class.zip(self.error),
            view: record.view.as_ref(),
            before: record.view_before.as_ref(),
            stays_on_premises: record.stays_on_premises,
            hidden_until: record
                .hidden_until
                .filter(|_| self.state == JobState::Succeeded),
        };
        Some(message(job, ending))
    }
}

/// What a resolution writes on the job row.
fn transition(resolution: &Resolution) -> Transition<'_> {
    let to = Transition {
        state: resolution.state(),
        outcome: None,
        class: None,
        error: None,
        retry_in: None,
        deferred: false,
    };
    match resolution {
        Resolution::Succeeded { outcome } => Transition {
            outcome: Some(*outcome),
            ..to
        },
        Resolution::Retry {
            class,
            error,
            after,
        }
        | Resolution::Deferred {
            class,
            error,
            after,
        } => Transition {
            class: Some(*class),
            error: Some(error),
            retry_in: Some(after.as_secs_f64()),
            deferred: matches!(resolution, Resolution::Deferred { .. }),
            ..to
        },
        Resolution::Failed { class, error, .. } => Transition {
            class: Some(*class),
            error: Some(error),
            ..to
        },
        Resolution::Cancelled { note } => Transition {
            outcome: Some(JobEffect::Stale),
            error: Some(note),
            ..to
        },
    }
}

/// One job's attempt as the worker hands it in.
pub(crate) type FinishedJob<'a> = (&'a Job, &'a AttemptRecord, &'a Resolution);

impl Store {
    /// Records an attempt and moves the job on (see the module doc). Returns false, and
    /// writes nothing, if this replica no longer held the job (its lease was taken over).
    pub async fn finish(
        &self,
        job: &Job,
        replica: &str,
        record: &AttemptRecord,
        resolution: &Resolution,
    ) -> Result<bool, StoreError> {
        let held = self
            .finish_many(replica, &[(job, record, resolution)])
            .await?;
        Ok(held.first().copied().unwrap_or(false))
    }

    /// `finish` for many jobs at once: one statement moves the jobs and writes their
    /// attempt and outcome rows (one round trip, one commit); only a final failure's alert
    /// needs a transaction around it. Returns, per job, whether this replica still held it.
    pub(crate) async fn finish_many(
        &self,
        replica: &str,
        outcomes: &[FinishedJob<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let transitions: Vec<Transition<'_>> =
            outcomes.iter().map(|(_, _, r)| transition(r)).collect();
        let rows = FinishRows::new(outcomes, &transitions)?;
        let alerts = outcomes.iter().any(|(_, _, r)| r.alert().is_some());
        let held = if alerts {
            let mut tx = self.pool.begin().await?;
            let held = rows.write(&mut *tx, replica, self.outboxes()).await?;
            // Alerts last, so that they can list every attempt including this one.
            for (job, _, resolution) in outcomes {
                if let Some(alert) = resolution.alert()
                    && held.contains(&job.id)
                {
                    insert_job_alert(&mut tx, job.id, alert).await?;
                }
            }
            tx.commit().await?;
            held
        } else {
            rows.write(&self.pool, replica, self.outboxes()).await?
        };
        Ok(outcomes
            .iter()
            .map(|(job, _, _)| held.contains(&job.id))
            .collect())
    }
}

/// Moves every job still leased to the replica ($20), writes the attempt row of each one it
/// moved, the outcome row of those that report one, when the cloud confirmation is on
/// ($25 its source) the cloud watch of a joiner's success and, for a joiner that succeeded
/// hidden until its start date ($30), the step that makes it visible (`steps`: a job of the
/// account in state $31, due then, unless a newer event of the account is stored already,
/// which decides instead); returns the ones it moved. The inserts read the `UPDATE`'s
/// `RETURNING`, so a job taken over meanwhile writes nothing.
///
/// Each array parameter holds one entry per job, in the order of `$1`: a job's values are
/// read by its position `n` (`($2::text[])[n]`), so only the ids are joined to `jobs`. The
/// values joined as one wide row per job (an `unnest` of every array) were rescanned for
/// each job the `UPDATE` matched and again by each insert: 50 × 50 wide rows for a batch of
/// 50, a third of the statement. The `UPDATE` names the ids outright (`= ANY($1)`) so that it
/// reads them by primary key: joined only to the ids, the planner estimated one running job
/// of the replica and rescanned the ids for every running job of the table (0.18 s for a
/// batch of 100 during an initial load).
const FINISH: &str = "WITH k AS (
        SELECT id, n FROM unnest($1::uuid[]) WITH ORDINALITY AS k(id, n))
    , moved AS (
        UPDATE jobs SET state = ($2::text[])[k.n],
               outcome = coalesce(($3::text[])[k.n], jobs.outcome),
               last_error = ($4::text[])[k.n], last_error_class = ($5::text[])[k.n],
               error_signature = ($34::text[])[k.n],
               next_attempt_at = coalesce(now() + make_interval(secs => ($6::float8[])[k.n]),
                                         jobs.next_attempt_at),
               locked_by = NULL, locked_until = NULL, updated_at = now(),
               finished_at = CASE WHEN ($7::bool[])[k.n] THEN now() ELSE NULL END,
               attempt = jobs.attempt - CASE WHEN ($8::bool[])[k.n] THEN 1 ELSE 0 END
          FROM k
         WHERE jobs.id = ANY($1::uuid[]) AND jobs.id = k.id AND jobs.locked_by = $20
           AND jobs.state = $21
        RETURNING jobs.id, jobs.account, jobs.event_id, jobs.kind, jobs.reply_to, jobs.step,
                  jobs.http_intake, jobs.state AS new_state, k.n,
                  ($18::jsonb[])[k.n] AS body, ($16::uuid[])[k.n] AS outcome_id,
                  ($17::text[])[k.n] AS result)
    , attempts AS (
        INSERT INTO job_attempts (job_id, attempt, replica, host, started_at, outcome,
                                  error_class, error_message, transcript, domain_controller,
                                  directory)
        SELECT m.id, ($9::int[])[m.n], $20, ($10::text[])[m.n], ($11::timestamptz[])[m.n],
               ($12::text[])[m.n], ($5::text[])[m.n], ($4::text[])[m.n], ($13::text[])[m.n],
               ($14::text[])[m.n], ($15::jsonb[])[m.n]
          FROM moved m ORDER BY m.n)
    , answers AS (
        INSERT INTO outcomes (id, job_id, account, event_id, result, routing_key, reply_to, body,
                              iiq_state, callback_state)
        SELECT m.outcome_id, m.id, m.account, coalesce(m.body->>'event_id', m.event_id),
               m.result, ($19::text[])[m.n], m.reply_to, m.body, CASE WHEN $23 THEN $24 END,
               CASE WHEN $35 OR ($36 AND m.http_intake) THEN $24 END
          FROM moved m
         WHERE m.outcome_id IS NOT NULL
           AND (m.result <> $22
                OR NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job_id = m.id AND o.result = $22))
         ORDER BY m.n)
    , watches AS (
        INSERT INTO cloud_watches (job_id, account, object_guid, source, deadline_at,
                                   next_check_at)
        SELECT m.id, coalesce(m.body->'account'->>'sam_account_name', m.account),
               (m.body->'account'->>'object_guid')::uuid, $25,
               now() + make_interval(secs => $26), now() + make_interval(secs => $27)
          FROM moved m
         WHERE $25::text IS NOT NULL AND m.new_state = $28 AND m.kind = $29
           AND m.body IS NOT NULL AND m.step IS NULL
        ON CONFLICT (job_id) DO NOTHING)
    , steps AS (
        INSERT INTO jobs (id, event_id, kind, account, account_guid, payload, source, state,
                          max_attempts, next_attempt_at, occurred_at, reply_to, step,
                          trace_parent, http_intake)
        SELECT gen_random_uuid(), j.event_id || '/' || $32, j.kind, j.account, j.account_guid,
               j.payload, j.source, $31, j.max_attempts, ($30::timestamptz[])[m.n],
               j.occurred_at, j.reply_to, $32, j.trace_parent, j.http_intake
          FROM moved m
          JOIN jobs j ON j.id = m.id
         WHERE ($30::timestamptz[])[m.n] IS NOT NULL AND m.new_state = $28 AND m.kind = $29
           AND m.step IS NULL
           AND NOT EXISTS (SELECT 1 FROM jobs n
                            WHERE n.account = j.account AND n.id <> j.id
                              AND n.occurred_at > j.occurred_at AND n.state = ANY($33))
        ON CONFLICT (event_id) DO NOTHING)
    SELECT id FROM moved";

/// The columns of [`FINISH`], one entry per job.
struct FinishRows<'a> {
    ids: Vec<Uuid>,
    transitions: &'a [Transition<'a>],
    attempts: Vec<i32>,
    hosts: Vec<Option<&'a str>>,
    started: Vec<DateTime<Utc>>,
    attempt_outcomes: Vec<AttemptEnd>,
    transcripts: Vec<Option<&'a str>>,
    dcs: Vec<Option<&'a str>>,
    directories: Vec<Option<&'a serde_json::Value>>,
    outcome_ids: Vec<Option<Uuid>>,
    results: Vec<Option<OutcomeResult>>,
    bodies: Vec<Option<serde_json::Value>>,
    routing_keys: Vec<Option<String>>,
    /// `jobs.error_signature` of each job's new last error (the failure groups' key).
    signatures: Vec<String>,
    /// A joiner left hidden until its start date: when its step is due.
    visible_at: Vec<Option<DateTime<Utc>>>,
}

impl<'a> FinishRows<'a> {
    fn new(
        outcomes: &'a [FinishedJob<'a>],
        transitions: &'a [Transition<'a>],
    ) -> Result<FinishRows<'a>, StoreError> {
        let messages: Vec<Option<OutcomeMessage>> = outcomes
            .iter()
            .zip(transitions)
            .map(|((job, record, _), t)| t.message(job, record))
            .collect();
        let bodies = messages
            .iter()
            .map(|m| m.as_ref().map(serde_json::to_value).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("cannot serialise an outcome: {e}")))?;
        Ok(FinishRows {
            ids: outcomes.iter().map(|(j, _, _)| j.id).collect(),
            transitions,
            attempts: outcomes.iter().map(|(j, _, _)| j.attempt).collect(),
            hosts: outcomes.iter().map(|(_, r, _)| r.host.as_deref()).collect(),
            started: outcomes.iter().map(|(_, r, _)| r.started_at).collect(),
            attempt_outcomes: outcomes
                .iter()
                .map(|(_, _, r)| r.attempt_outcome())
                .collect(),
            transcripts: outcomes
                .iter()
                .map(|(_, r, _)| r.transcript.as_deref())
                .collect(),
            dcs: outcomes
                .iter()
                .map(|(_, r, _)| r.domain_controller.as_deref())
                .collect(),
            directories: outcomes
                .iter()
                .map(|(_, r, _)| r.directory.as_ref())
                .collect(),
            outcome_ids: messages.iter().map(|m| m.as_ref().map(|m| m.id)).collect(),
            results: messages
                .iter()
                .map(|m| m.as_ref().map(|m| m.result))
                .collect(),
            bodies,
            routing_keys: messages
                .iter()
                .map(|m| m.as_ref().map(OutcomeMessage::routing_key))
                .collect(),
            signatures: outcomes
                .iter()
                .zip(transitions)
                .map(|((job, _, _), t)| error_signature(t.error, &job.account))
                .collect(),
            visible_at: outcomes.iter().map(|(_, r, _)| r.hidden_until).collect(),
        })
    }

    /// Runs [`FINISH`]; returns the jobs it moved.
    async fn write<'e, E>(
        &self,
        on: E,
        replica: &str,
        (channels, watch): (OutcomeChannels, Option<WatchPolicy>),
    ) -> Result<HashSet<Uuid>, StoreError>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        let t = self.transitions;
        let held: Vec<Uuid> = sqlx::query_scalar(FINISH)
            .bind(&self.ids)
            .bind(t.iter().map(|t| t.state).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.outcome).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.error).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.class).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.retry_in).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.state.is_terminal()).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.deferred).collect::<Vec<_>>())
            .bind(&self.attempts)
            .bind(&self.hosts)
            .bind(&self.started)
            .bind(&self.attempt_outcomes)
            .bind(&self.transcripts)
            .bind(&self.dcs)
            .bind(&self.directories)
            .bind(&self.outcome_ids)
            .bind(&self.results)
            .bind(&self.bodies)
            .bind(&self.routing_keys)
            .bind(replica)
            .bind(JobState::Running)
            .bind(OutcomeResult::WaitingForSync)
            .bind(channels.identityiq)
            .bind(HttpDelivery::Pending)
            .bind(watch.map(|w| w.source))
            .bind(watch.map_or(0.0, |w| w.deadline.as_secs_f64()))
            .bind(watch.map_or(0.0, |w| w.first_check.as_secs_f64()))
            .bind(JobState::Succeeded)
            .bind(EventKind::Joiner)
            .bind(&self.visible_at)
            .bind(JobState::Scheduled)
            .bind(JobStep::MakeVisible)
            .bind(&JobState::INTENDED[..])
            .bind(&self.signatures)
            .bind(channels.callback_binds().0)
            .bind(channels.callback_binds().1)
            .fetch_all(on)
            .await?;
        Ok(held.into_iter().collect())
    }
}
