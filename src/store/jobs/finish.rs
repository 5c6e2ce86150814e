//! The end of an attempt: the job moves on (succeeded, retried, failed, cancelled,
//! deferred), its attempt is recorded and a final failure's alert is written, all in one
//! transaction, and only while the replica still holds the job's lease.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::Job;
use crate::store::outcomes::{Ending, OutcomeMessage, insert_outcomes, message};
use crate::store::{
    AttemptOutcome, AttemptRecord, ErrorClass, JobOutcome, JobState, NewAlert, NewAttempt,
    OutcomeResult, Store, StoreError, insert_attempts, insert_job_alert,
};

/// What one attempt came to, as the worker decided.
#[derive(Debug, Clone)]
pub enum Resolution {
    Succeeded {
        outcome: JobOutcome,
    },
    Retry {
        class: ErrorClass,
        error: String,
        at: DateTime<Utc>,
    },
    Failed {
        class: ErrorClass,
        error: String,
        alert: Option<NewAlert>,
    },
    /// The directory says the job must not run (a leaver whose account is enabled again):
    /// cancelled with a note, no alert.
    Cancelled {
        note: String,
    },
    /// Not the job's fault (the Windows side is down: the circuit is open, or the account
    /// waits for the cloud sync). Retried at `at` without using up one of its attempts.
    Deferred {
        class: ErrorClass,
        error: String,
        at: DateTime<Utc>,
    },
}

/// What a resolution writes on the job row.
struct Transition<'a> {
    state: JobState,
    /// Kept as it was when `None`.
    outcome: Option<JobOutcome>,
    class: Option<ErrorClass>,
    error: Option<&'a str>,
    /// Kept as it was when `None`.
    next_at: Option<DateTime<Utc>>,
    /// The attempt does not count (it is given back).
    deferred: bool,
}

impl Transition<'_> {
    /// The outcome message the job's new state reports, if it reports one.
    fn message(&self, job: &Job, record: &AttemptRecord) -> Option<OutcomeMessage> {
        let ending = Ending {
            result: OutcomeResult::of(self.state)?,
            outcome: self.outcome,
            attempts: job.attempt - i32::from(self.deferred),
            error: self.class.zip(self.error),
            view: record.view.as_ref(),
        };
        Some(message(job, ending))
    }
}

impl Resolution {
    fn transition(&self) -> Transition<'_> {
        let to = |state| Transition {
            state,
            outcome: None,
            class: None,
            error: None,
            next_at: None,
            deferred: false,
        };
        let waiting = |class: &ErrorClass| match class {
            ErrorClass::NotSynced => JobState::WaitingForSync,
            _ => JobState::Retrying,
        };
        match self {
            Resolution::Succeeded { outcome } => Transition {
                outcome: Some(*outcome),
                ..to(JobState::Succeeded)
            },
            Resolution::Retry { class, error, at } | Resolution::Deferred { class, error, at } => {
                Transition {
                    class: Some(*class),
                    error: Some(error),
                    next_at: Some(*at),
                    deferred: matches!(self, Resolution::Deferred { .. }),
                    ..to(waiting(class))
                }
            }
            Resolution::Failed { class, error, .. } => Transition {
                class: Some(*class),
                error: Some(error),
                ..to(JobState::Failed)
            },
            Resolution::Cancelled { note } => Transition {
                outcome: Some(JobOutcome::Stale),
                error: Some(note),
                ..to(JobState::Cancelled)
            },
        }
    }

    /// What the attempt's record says it came to.
    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            Resolution::Succeeded { .. } => AttemptOutcome::Succeeded,
            Resolution::Retry {
                class: ErrorClass::NotSynced,
                ..
            } => AttemptOutcome::WaitingForSync,
            Resolution::Retry { .. } => AttemptOutcome::Retrying,
            Resolution::Failed { .. } => AttemptOutcome::Failed,
            Resolution::Cancelled { .. } => AttemptOutcome::Cancelled,
            Resolution::Deferred { .. } => AttemptOutcome::Deferred,
        }
    }

    /// The alert a final failure raises, if any.
    fn alert(&self) -> Option<&NewAlert> {
        match self {
            Resolution::Failed { alert, .. } => alert.as_ref(),
            _ => None,
        }
    }
}

/// One job's attempt as the worker hands it in.
pub type FinishedJob<'a> = (&'a Job, &'a AttemptRecord, &'a Resolution);

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

    /// `finish` for many jobs in one transaction (one commit, one WAL flush): a batch's
    /// outcomes land together. Returns, per job, whether this replica still held it.
    pub async fn finish_many(
        &self,
        replica: &str,
        outcomes: &[FinishedJob<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        let transitions: Vec<Transition<'_>> =
            outcomes.iter().map(|(_, _, r)| r.transition()).collect();
        let mut tx = self.pool.begin().await?;
        let held = move_jobs(&mut tx, replica, outcomes, &transitions).await?;
        let attempts: Vec<NewAttempt<'_>> = outcomes
            .iter()
            .zip(&transitions)
            .filter(|((job, _, _), _)| held.contains(&job.id))
            .map(|((job, record, resolution), t)| NewAttempt {
                job_id: job.id,
                attempt: job.attempt,
                outcome: resolution.attempt_outcome(),
                class: t.class,
                error: t.error,
                record,
            })
            .collect();
        insert_attempts(&mut tx, replica, &attempts).await?;
        let answers: Vec<(&Job, OutcomeMessage)> = outcomes
            .iter()
            .zip(&transitions)
            .filter(|((job, _, _), _)| held.contains(&job.id))
            .filter_map(|((job, record, _), t)| Some((*job, t.message(job, record)?)))
            .collect();
        insert_outcomes(&mut tx, &answers).await?;
        // Alerts last, so that they can list every attempt including this one.
        for (job, _, resolution) in outcomes {
            if let Some(alert) = resolution.alert()
                && held.contains(&job.id)
            {
                insert_job_alert(&mut tx, job.id, alert).await?;
            }
        }
        tx.commit().await?;
        Ok(outcomes
            .iter()
            .map(|(job, _, _)| held.contains(&job.id))
            .collect())
    }
}

/// One statement moves every job still leased to `replica`; returns the ones it moved.
async fn move_jobs(
    tx: &mut Transaction<'_, Postgres>,
    replica: &str,
    outcomes: &[FinishedJob<'_>],
    transitions: &[Transition<'_>],
) -> Result<HashSet<Uuid>, StoreError> {
    let held: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE jobs SET state = u.state, outcome = coalesce(u.outcome, jobs.outcome),
                last_error = u.error, last_error_class = u.class,
                next_attempt_at = coalesce(u.next_at, jobs.next_attempt_at),
                locked_by = NULL, locked_until = NULL, updated_at = now(),
                finished_at = CASE WHEN u.terminal THEN now() ELSE NULL END,
                attempt = jobs.attempt - CASE WHEN u.deferred THEN 1 ELSE 0 END
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::timestamptz[], $7::bool[], $8::bool[])
                AS u(id, state, outcome, error, class, next_at, terminal, deferred)
          WHERE jobs.id = u.id AND jobs.locked_by = $9 AND jobs.state = $10
         RETURNING jobs.id",
    )
    .bind(
        outcomes
            .iter()
            .map(|(job, _, _)| job.id)
            .collect::<Vec<_>>(),
    )
    .bind(transitions.iter().map(|t| t.state).collect::<Vec<_>>())
    .bind(transitions.iter().map(|t| t.outcome).collect::<Vec<_>>())
    .bind(transitions.iter().map(|t| t.error).collect::<Vec<_>>())
    .bind(transitions.iter().map(|t| t.class).collect::<Vec<_>>())
    .bind(transitions.iter().map(|t| t.next_at).collect::<Vec<_>>())
    .bind(
        transitions
            .iter()
            .map(|t| t.state.is_terminal())
            .collect::<Vec<_>>(),
    )
    .bind(transitions.iter().map(|t| t.deferred).collect::<Vec<_>>())
    .bind(replica)
    .bind(JobState::Running)
    .fetch_all(&mut **tx)
    .await?;
    Ok(held.into_iter().collect())
}
