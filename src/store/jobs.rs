//! Jobs: insert (idempotent on the event id, latest intent wins), claim, heartbeat, finish.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::event::{Event, EventKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    WaitingForSync,
    Succeeded,
    Failed,
    Cancelled,
    Superseded,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Superseded,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::WaitingForSync => "waiting_for_sync",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Superseded => "superseded",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Superseded
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why an attempt failed, which decides what happens next (design §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network, WinRM timeouts, throttling, replication lag: retry with backoff.
    Transient,
    /// The directory says wait for cloud sync.
    NotSynced,
    /// The account or request is wrong: retrying cannot help; alert support.
    Permanent,
    /// Authentication refused, host down for long: pause, alert operations once.
    Systemic,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::NotSynced => "not_synced",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Systemic => "systemic",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub event_id: String,
    pub kind: EventKind,
    pub account: String,
    pub event: Event,
    pub state: JobState,
    pub outcome: Option<String>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_class: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub attempt: i32,
    pub replica: String,
    pub host: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub transcript: Option<String>,
    /// The domain controller the attempt read and told Exchange to use.
    pub domain_controller: Option<String>,
    /// What the directory showed: `{"before": …, "after": …}`.
    pub directory: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new job; it may have superseded older ones of the same account.
    New(Uuid),
    /// The event id was already known (a redelivery): nothing was written.
    Duplicate(Uuid),
    /// A newer event for the account is already queued: recorded as superseded.
    Stale(Uuid),
}

impl Inserted {
    pub fn job_id(self) -> Uuid {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) | Inserted::Stale(id) => id,
        }
    }
}

/// What one attempt came to, as the worker decided.
#[derive(Debug, Clone)]
pub enum Resolution {
    Succeeded {
        outcome: String,
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

#[derive(Debug, Clone)]
pub struct NewAlert {
    pub kind: String,
    pub subject: String,
    pub body: String,
    /// Alerts with the same key within the digest window go out as one email.
    pub digest_key: Option<String>,
    pub account: Option<String>,
}

/// The record of one attempt, written with its resolution.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    pub host: Option<String>,
    pub transcript: Option<String>,
    pub domain_controller: Option<String>,
    pub directory: Option<serde_json::Value>,
}

impl AttemptRecord {
    pub fn new(started_at: DateTime<Utc>) -> AttemptRecord {
        AttemptRecord {
            started_at,
            host: None,
            transcript: None,
            domain_controller: None,
            directory: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub account: Option<String>,
    pub kind: Option<EventKind>,
    /// `transient`, `not_synced`, `permanent` or `systemic` (of the last error).
    pub error_class: Option<String>,
    /// Created at or after / before.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// Rows to skip (pagination; newest first).
    pub offset: i64,
}

const JOB_COLUMNS: &str = "id, event_id, kind, account, payload, state, outcome, attempt, max_attempts, \
    next_attempt_at, locked_by, locked_until, last_error, last_error_class, occurred_at, created_at, \
    updated_at, started_at, finished_at";

fn job_from_row(row: &sqlx::postgres::PgRow) -> Result<Job, StoreError> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let payload: serde_json::Value = row.try_get("payload")?;
    let event: Event = serde_json::from_value(payload)
        .map_err(|e| StoreError::Corrupt(format!("job payload: {e}")))?;
    Ok(Job {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("kind {kind}")))?,
        account: row.try_get("account")?,
        event,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
        outcome: row.try_get("outcome")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        locked_by: row.try_get("locked_by")?,
        locked_until: row.try_get("locked_until")?,
        last_error: row.try_get("last_error")?,
        last_error_class: row.try_get("last_error_class")?,
        occurred_at: row.try_get("occurred_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// What `finish` writes: new state, outcome, error class, error text, next attempt.
type Transition<'a> = (
    JobState,
    Option<&'a str>,
    Option<ErrorClass>,
    Option<&'a str>,
    Option<DateTime<Utc>>,
);

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A circuit that opens again within this long after a recovery alert is the same problem
/// (another replica noticing late, or a flapping host), not a new email.
pub const CIRCUIT_REOPEN_QUIET: Duration = Duration::from_secs(60);

impl Store {
    /// Inserts the jobs for a batch of events in one transaction. Idempotent on the event id;
    /// latest intent wins per account (within the batch and against what is stored). The
    /// work is set-based — a handful of statements per batch, not per event — so ingest
    /// keeps up with a burst.
    pub async fn insert_events(
        &self,
        events: &[Event],
        max_attempts: i32,
    ) -> Result<Vec<Inserted>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let keys: Vec<String> = events
            .iter()
            .map(|e| e.account.sam_account_name.key())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        // Serialise with other replicas' inserts for the same accounts (sorted: no deadlock).
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended(a, 7)) FROM unnest($1::text[]) AS a",
        )
        .bind(&sorted)
        .execute(&mut *tx)
        .await?;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let known: HashMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
            "SELECT event_id, id FROM jobs WHERE event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // The newest stored event per account, pending or already processed.
        let newest: HashMap<String, (DateTime<Utc>, Uuid)> = sqlx::query_as::<_, (String, DateTime<Utc>, Uuid)>(
            "SELECT DISTINCT ON (account) account, occurred_at, id FROM jobs
              WHERE account = ANY($1)
                AND state IN ('queued', 'retrying', 'waiting_for_sync', 'running', 'succeeded', 'failed')
              ORDER BY account, occurred_at DESC, created_at DESC",
        )
        .bind(&sorted)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(a, t, id)| (a, (t, id)))
        .collect();

        // Decide every event in Rust: duplicates, then the winner per account.
        let mut out: Vec<Option<Inserted>> = vec![None; events.len()];
        let mut fresh: HashMap<&str, Uuid> = HashMap::new();
        let mut new_ids = vec![Uuid::nil(); events.len()];
        for (i, e) in events.iter().enumerate() {
            if let Some(id) = known.get(&e.id).or(fresh.get(e.id.as_str())) {
                out[i] = Some(Inserted::Duplicate(*id));
                continue;
            }
            let id = Uuid::new_v4();
            fresh.insert(e.id.as_str(), id);
            new_ids[i] = id;
        }
        // Per account, the newest new event of the batch (a later one wins a tie).
        let mut winner: HashMap<&str, usize> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let w = winner.entry(keys[i].as_str()).or_insert(i);
            if e.occurred_at >= events[*w].occurred_at {
                *w = i;
            }
        }
        let mut rows: Vec<(usize, &str, Option<Uuid>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let w = winner[keys[i].as_str()];
            let stored_newer = newest
                .get(&keys[i])
                .filter(|(t, _)| *t > e.occurred_at)
                .map(|(_, id)| *id);
            let superseded_by = if let Some(id) = stored_newer {
                Some(id)
            } else if w != i {
                Some(new_ids[w])
            } else {
                None
            };
            out[i] = Some(match superseded_by {
                Some(_) => Inserted::Stale(new_ids[i]),
                None => Inserted::New(new_ids[i]),
            });
            rows.push((
                i,
                if superseded_by.is_some() {
                    "superseded"
                } else {
                    "queued"
                },
                superseded_by,
            ));
        }
        if !rows.is_empty() {
            let mut r_id = Vec::with_capacity(rows.len());
            let mut r_event = Vec::with_capacity(rows.len());
            let mut r_kind = Vec::with_capacity(rows.len());
            let mut r_account = Vec::with_capacity(rows.len());
            let mut r_payload = Vec::with_capacity(rows.len());
            let mut r_source = Vec::with_capacity(rows.len());
            let mut r_state = Vec::with_capacity(rows.len());
            let mut r_occurred = Vec::with_capacity(rows.len());
            let mut r_by = Vec::with_capacity(rows.len());
            for (i, state, by) in &rows {
                let e = &events[*i];
                r_id.push(new_ids[*i]);
                r_event.push(e.id.as_str());
                r_kind.push(e.kind.as_str());
                r_account.push(keys[*i].as_str());
                r_payload
                    .push(serde_json::to_value(e).map_err(|e| {
                        StoreError::Corrupt(format!("cannot serialise event: {e}"))
                    })?);
                r_source.push(e.source.as_deref());
                r_state.push(*state);
                r_occurred.push(e.occurred_at);
                r_by.push(*by);
            }
            sqlx::query(
                "INSERT INTO jobs (id, event_id, kind, account, payload, source, state, max_attempts,
                                   occurred_at, superseded_by, finished_at)
                 SELECT u.id, u.event_id, u.kind, u.account, u.payload, u.source, u.state, $10,
                        u.occurred_at, u.superseded_by,
                        CASE WHEN u.superseded_by IS NULL THEN NULL ELSE now() END
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[],
                               $7::text[], $8::timestamptz[], $9::uuid[])
                        AS u(id, event_id, kind, account, payload, source, state, occurred_at, superseded_by)",
            )
            .bind(&r_id)
            .bind(&r_event)
            .bind(&r_kind)
            .bind(&r_account)
            .bind(&r_payload)
            .bind(&r_source)
            .bind(&r_state)
            .bind(&r_occurred)
            .bind(&r_by)
            .bind(max_attempts)
            .execute(&mut *tx)
            .await?;
            // Latest intent wins: older pending jobs of each winning account are moot now.
            let (mut w_account, mut w_id, mut w_time) = (Vec::new(), Vec::new(), Vec::new());
            for (i, state, _) in &rows {
                // Only accounts with stored jobs can have older pending ones to supersede.
                if *state == "queued" && newest.contains_key(&keys[*i]) {
                    w_account.push(keys[*i].as_str());
                    w_id.push(new_ids[*i]);
                    w_time.push(events[*i].occurred_at);
                }
            }
            if !w_account.is_empty() {
                sqlx::query(
                "UPDATE jobs SET state = 'superseded', superseded_by = u.id, finished_at = now(), updated_at = now()
                   FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS u(account, id, occurred_at)
                  WHERE jobs.account = u.account AND jobs.id <> u.id
                    AND jobs.state IN ('queued', 'retrying', 'waiting_for_sync')
                    AND jobs.occurred_at <= u.occurred_at",
            )
            .bind(&w_account)
            .bind(&w_id)
            .bind(&w_time)
            .execute(&mut *tx)
            .await?;
            }
        }
        tx.commit().await?;
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(Inserted::Duplicate(Uuid::nil())))
            .collect())
    }

    /// Claims up to `limit` due jobs for `replica`, at most one per account.
    /// Also takes over jobs whose lease expired (their replica died).
    pub async fn claim(
        &self,
        replica: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        // A concurrent claim by another replica can race on the per-account unique
        // index; that statement then fails as a whole and is simply tried again.
        for _ in 0..5 {
            match self.try_claim(replica, limit, lease).await {
                Err(StoreError::Db(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("23505") =>
                {
                    continue;
                }
                other => return other,
            }
        }
        Ok(Vec::new())
    }

    async fn try_claim(
        &self,
        replica: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Jobs whose lease ran out: record the lost attempt, then make them due again.
        sqlx::query(
            "WITH expired AS (
                SELECT id FROM jobs
                 WHERE state = 'running' AND locked_until < now()
                 FOR UPDATE SKIP LOCKED)
             , lost AS (
                INSERT INTO job_attempts (job_id, attempt, replica, started_at, outcome, error_class, error_message)
                SELECT j.id, j.attempt, coalesce(j.locked_by, '?'), coalesce(j.started_at, now()), 'lease_expired', 'transient',
                       'replica ' || coalesce(j.locked_by, '?') || ' stopped before finishing (crash or lost database connection); the job runs again'
                  FROM jobs j JOIN expired e ON e.id = j.id)
             UPDATE jobs SET state = 'retrying', locked_by = NULL, locked_until = NULL,
                             next_attempt_at = now(), updated_at = now(),
                             last_error = 'lease expired: the replica running it stopped',
                             last_error_class = 'transient'
               FROM expired WHERE jobs.id = expired.id",
        )
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "WITH due AS (
                SELECT j.id FROM jobs j
                 WHERE j.state IN ('queued', 'retrying', 'waiting_for_sync') AND j.next_attempt_at <= now()
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.account = j.account AND r.state = 'running')
                 ORDER BY j.next_attempt_at, j.created_at
                 LIMIT $1 * 2
                 FOR UPDATE SKIP LOCKED)
             , one_per_account AS (
                SELECT DISTINCT ON (j.account) j.id FROM jobs j JOIN due d ON d.id = j.id
                 ORDER BY j.account, j.occurred_at DESC)
             , picked AS (
                SELECT o.id FROM one_per_account o JOIN jobs j ON j.id = o.id
                 ORDER BY j.next_attempt_at, j.created_at LIMIT $1)
             UPDATE jobs SET state = 'running', locked_by = $2,
                             locked_until = now() + make_interval(secs => $3),
                             attempt = attempt + 1, started_at = now(), updated_at = now()
               FROM picked WHERE jobs.id = picked.id
             RETURNING {}",
            JOB_COLUMNS
                .split(", ")
                .map(|c| format!("jobs.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .bind(replica)
            .bind(interval(lease))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Extends the lease of jobs this replica is still running.
    pub async fn heartbeat(
        &self,
        replica: &str,
        ids: &[Uuid],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET locked_until = now() + make_interval(secs => $3)
              WHERE id = ANY($1) AND locked_by = $2 AND state = 'running'",
        )
        .bind(ids)
        .bind(replica)
        .bind(interval(lease))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Records an attempt and moves the job on, in one transaction (with its alert, if any).
    /// Returns false if this replica no longer held the job (its lease was taken over).
    pub async fn finish(
        &self,
        job: &Job,
        replica: &str,
        record: &AttemptRecord,
        resolution: &Resolution,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let held = finish_in(&mut tx, job, replica, record, resolution).await?;
        if held {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(held)
    }

    /// `finish` for many jobs in one transaction (one commit, one WAL flush): a batch's
    /// outcomes land together. Returns, per job, whether this replica still held it.
    pub async fn finish_many(
        &self,
        replica: &str,
        outcomes: &[(&Job, &AttemptRecord, &Resolution)],
    ) -> Result<Vec<bool>, StoreError> {
        let n = outcomes.len();
        let (mut ids, mut states, mut results, mut errors, mut classes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut next_ats, mut terminals, mut deferreds) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (job, _, resolution) in outcomes {
            let (state, outcome, class, error, next_at) = transition(resolution);
            ids.push(job.id);
            states.push(state.as_str());
            results.push(outcome);
            errors.push(error);
            classes.push(class.map(ErrorClass::as_str));
            next_ats.push(next_at);
            terminals.push(state.is_terminal());
            deferreds.push(matches!(resolution, Resolution::Deferred { .. }));
        }
        let mut tx = self.pool.begin().await?;
        // One statement moves every job still leased to this replica.
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
              WHERE jobs.id = u.id AND jobs.locked_by = $9 AND jobs.state = 'running'
             RETURNING jobs.id",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&results)
        .bind(&errors)
        .bind(&classes)
        .bind(&next_ats)
        .bind(&terminals)
        .bind(&deferreds)
        .bind(replica)
        .fetch_all(&mut *tx)
        .await?;
        let held: std::collections::HashSet<Uuid> = held.into_iter().collect();
        let mut a_ids = Vec::new();
        let (mut a_attempt, mut a_host, mut a_started, mut a_outcome) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut a_class, mut a_error, mut a_transcript, mut a_dc, mut a_dir) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, (job, record, _)) in outcomes.iter().enumerate() {
            if !held.contains(&job.id) {
                continue;
            }
            a_ids.push(job.id);
            a_attempt.push(job.attempt);
            a_host.push(record.host.clone());
            a_started.push(record.started_at);
            a_outcome.push(if deferreds[i] { "deferred" } else { states[i] });
            a_class.push(classes[i]);
            a_error.push(errors[i]);
            a_transcript.push(record.transcript.clone());
            a_dc.push(record.domain_controller.clone());
            a_dir.push(record.directory.clone());
        }
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, replica, host, started_at, outcome, error_class,
                                       error_message, transcript, domain_controller, directory)
             SELECT u.job_id, u.attempt, $2, u.host, u.started_at, u.outcome, u.class, u.error,
                    u.transcript, u.dc, u.directory
               FROM unnest($1::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::text[],
                           $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[])
                    AS u(job_id, attempt, host, started_at, outcome, class, error, transcript, dc, directory)",
        )
        .bind(&a_ids)
        .bind(replica)
        .bind(&a_attempt)
        .bind(&a_host)
        .bind(&a_started)
        .bind(&a_outcome)
        .bind(&a_class)
        .bind(&a_error)
        .bind(&a_transcript)
        .bind(&a_dc)
        .bind(&a_dir)
        .execute(&mut *tx)
        .await?;
        // Alerts last, so that they can list every attempt including this one.
        for (job, _, resolution) in outcomes {
            if let Resolution::Failed {
                alert: Some(alert), ..
            } = resolution
                && held.contains(&job.id)
            {
                insert_alert(&mut tx, Some(job.id), alert).await?;
            }
        }
        tx.commit().await?;
        Ok(outcomes
            .iter()
            .map(|(j, _, _)| held.contains(&j.id))
            .collect())
    }
}

/// (attempt, started, outcome, class, error excerpt, host) for an alert's history.
type AttemptLine = (
    i32,
    DateTime<Utc>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn insert_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job_id: Option<Uuid>,
    alert: &NewAlert,
) -> Result<(), StoreError> {
    let mut body = alert.body.clone();
    if let Some(id) = job_id {
        // The attempts with their times: what support needs to see the history at a glance.
        let rows: Vec<AttemptLine> = sqlx::query_as(
            "SELECT attempt, started_at, outcome, error_class, left(error_message, 160), host
               FROM job_attempts WHERE job_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        if !rows.is_empty() {
            body.push_str("\nAttempts:\n");
            for (n, at, outcome, class, error, host) in rows {
                body.push_str(&format!(
                    "  #{n}  {}  {outcome}{}{}{}\n",
                    at.format("%Y-%m-%d %H:%M:%S UTC"),
                    class.map(|c| format!(" ({c})")).unwrap_or_default(),
                    host.map(|h| format!(" on {h}")).unwrap_or_default(),
                    error.map(|e| format!(": {e}")).unwrap_or_default(),
                ));
            }
        }
    }
    sqlx::query(
        "INSERT INTO alerts (job_id, kind, subject, body, digest_key, account)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job_id)
    .bind(&alert.kind)
    .bind(&alert.subject)
    .bind(&body)
    .bind(&alert.digest_key)
    .bind(&alert.account)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a resolution writes on the job row.
fn transition(resolution: &Resolution) -> Transition<'_> {
    let t: Transition<'_> = match resolution {
        Resolution::Succeeded { outcome } => (
            JobState::Succeeded,
            Some(outcome.as_str()),
            None,
            None,
            None,
        ),
        Resolution::Retry { class, error, at } => {
            let state = if *class == ErrorClass::NotSynced {
                JobState::WaitingForSync
            } else {
                JobState::Retrying
            };
            (state, None, Some(*class), Some(error.as_str()), Some(*at))
        }
        Resolution::Failed { class, error, .. } => (
            JobState::Failed,
            None,
            Some(*class),
            Some(error.as_str()),
            None,
        ),
        Resolution::Cancelled { note } => (
            JobState::Cancelled,
            Some("stale"),
            None,
            Some(note.as_str()),
            None,
        ),
        Resolution::Deferred { class, error, at } => (
            if *class == ErrorClass::NotSynced {
                JobState::WaitingForSync
            } else {
                JobState::Retrying
            },
            None,
            Some(*class),
            Some(error.as_str()),
            Some(*at),
        ),
    };
    t
}

/// One job's transition inside the caller's transaction; false (and nothing written) when
/// the job is no longer running under `replica`'s lease.
async fn finish_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: &Job,
    replica: &str,
    record: &AttemptRecord,
    resolution: &Resolution,
) -> Result<bool, StoreError> {
    let (state, outcome, class, error, next_at) = transition(resolution);
    let deferred = matches!(resolution, Resolution::Deferred { .. });
    let terminal = state.is_terminal();
    let updated = sqlx::query(
        "UPDATE jobs SET state = $3, outcome = coalesce($4, outcome),
                    last_error = $5, last_error_class = $6,
                    next_attempt_at = coalesce($7, next_attempt_at),
                    locked_by = NULL, locked_until = NULL, updated_at = now(),
                    finished_at = CASE WHEN $8 THEN now() ELSE NULL END,
                    attempt = attempt - CASE WHEN $9 THEN 1 ELSE 0 END
              WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(job.id)
    .bind(replica)
    .bind(state.as_str())
    .bind(outcome)
    .bind(error)
    .bind(class.map(ErrorClass::as_str))
    .bind(next_at)
    .bind(terminal)
    .bind(deferred)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, replica, host, started_at, outcome, error_class, error_message, transcript,
                                       domain_controller, directory)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(job.id)
        .bind(job.attempt)
        .bind(replica)
        .bind(&record.host)
        .bind(record.started_at)
        .bind(if deferred { "deferred" } else { state.as_str() })
        .bind(class.map(ErrorClass::as_str))
        .bind(error)
        .bind(&record.transcript)
        .bind(&record.domain_controller)
        .bind(&record.directory)
        .execute(&mut **tx)
        .await?;
    if let Resolution::Failed {
        alert: Some(alert), ..
    } = resolution
    {
        insert_alert(tx, Some(job.id), alert).await?;
    }
    Ok(true)
}

impl Store {
    /// Gives back the jobs `replica` is running (shutdown past its deadline): due again at
    /// once, the interrupted attempt recorded and not counted.
    pub async fn release_running(&self, replica: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "WITH mine AS (
                SELECT id FROM jobs WHERE state = 'running' AND locked_by = $1 FOR UPDATE)
             , noted AS (
                INSERT INTO job_attempts (job_id, attempt, replica, started_at, outcome, error_class, error_message)
                SELECT j.id, j.attempt, $1, coalesce(j.started_at, now()), 'released', 'transient',
                       'the replica shut down before the attempt finished; the job runs again'
                  FROM jobs j JOIN mine m ON m.id = j.id)
             UPDATE jobs SET state = 'retrying', locked_by = NULL, locked_until = NULL,
                             next_attempt_at = now(), updated_at = now(),
                             attempt = greatest(attempt - 1, 0)
               FROM mine WHERE jobs.id = mine.id",
        )
        .bind(replica)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes finished jobs older than `age` (not failed ones: those wait for an operator),
    /// a bounded chunk per call so a large backlog never holds long locks.
    pub async fn prune(&self, age: Duration, chunk: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                 WHERE state IN ('succeeded', 'cancelled', 'superseded')
                   AND finished_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
        )
        .bind(interval(age))
        .bind(chunk)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn get_job(&self, id: Uuid) -> Result<Option<(Job, Vec<Attempt>)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from_row(&row)?;
        let attempts = sqlx::query_as(
            "SELECT attempt, replica, host, started_at, finished_at, outcome, error_class, error_message, transcript,
                    domain_controller, directory
               FROM job_attempts WHERE job_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((job, attempts)))
    }

    pub async fn job_by_event(&self, event_id: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE event_id = $1"
        )))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs
              WHERE ($1::text IS NULL OR state = $1)
                AND ($2::text IS NULL OR account = lower($2))
                AND ($3::text IS NULL OR kind = $3)
                AND ($5::text IS NULL OR last_error_class = $5)
                AND ($6::timestamptz IS NULL OR created_at >= $6)
                AND ($7::timestamptz IS NULL OR created_at < $7)
              ORDER BY created_at DESC, id LIMIT $4 OFFSET $8"
        )))
        .bind(f.state.map(JobState::as_str))
        .bind(&f.account)
        .bind(f.kind.map(EventKind::as_str))
        .bind(if f.limit > 0 { f.limit } else { 100 })
        .bind(&f.error_class)
        .bind(f.since)
        .bind(f.until)
        .bind(f.offset.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Job counts by state (every state present, zero where none).
    pub async fn count_by_state(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(JobState::ALL
            .into_iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|(name, _)| name == s.as_str())
                    .map_or(0, |(_, n)| *n);
                (s, n)
            })
            .collect())
    }

    /// Jobs finished per hour over the last 24 hours: (hour, succeeded, failed).
    pub async fn finished_per_hour(&self) -> Result<Vec<(DateTime<Utc>, i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT h.hour,
                    count(j.id) FILTER (WHERE j.state = 'succeeded'),
                    count(j.id) FILTER (WHERE j.state = 'failed')
               FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                                    date_trunc('hour', now()), interval '1 hour') AS h(hour)
               LEFT JOIN jobs j ON j.finished_at >= h.hour AND j.finished_at < h.hour + interval '1 hour'
              GROUP BY h.hour ORDER BY h.hour",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Unsent alerts: (all pending, those whose last send failed).
    pub async fn alert_outbox_depth(&self) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE last_error IS NOT NULL)
               FROM alerts WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn count_unsent_alerts(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM alerts WHERE sent_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Alert {
    pub id: i64,
    pub job_id: Option<Uuid>,
    pub kind: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub digest_key: Option<String>,
    pub account: Option<String>,
    pub folded_into: Option<i64>,
    pub suppressed: bool,
}

/// Which jobs a bulk retry takes.
#[derive(Debug, Clone)]
pub struct BulkRetry {
    /// Failed and/or cancelled.
    pub states: Vec<JobState>,
    pub account: Option<String>,
    pub kind: Option<EventKind>,
    pub error_class: Option<String>,
    pub limit: i64,
}

/// One operator action on a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OperatorAction {
    pub action: String,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub detail: Option<String>,
}

/// How the alert outbox is emailed.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Alerts read per round.
    pub limit: i64,
    pub retry_base: Duration,
    /// Alerts of one problem within this window go out as one digest.
    pub digest_window: Duration,
    /// Emails per hour at most; the rest are kept, marked suppressed.
    pub hourly_cap: u32,
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRefused {
    NotFound,
    WrongState(JobState),
}

impl Store {
    /// Operator retry: a failed, cancelled, retrying or waiting job runs again now,
    /// with a fresh set of attempts.
    pub async fn retry_job(
        &self,
        id: Uuid,
        actor: &str,
    ) -> Result<Result<(), ActionRefused>, StoreError> {
        self.operator_update(
            id,
            actor,
            "retry",
            "UPDATE jobs SET state = 'queued', next_attempt_at = now(), attempt = 0,
                    finished_at = NULL, updated_at = now()
              WHERE id = $1 AND state IN ('failed', 'cancelled', 'retrying', 'waiting_for_sync')",
        )
        .await
    }

    /// Operator cancel: a job that has not run to its end stops here.
    pub async fn cancel_job(
        &self,
        id: Uuid,
        actor: &str,
    ) -> Result<Result<(), ActionRefused>, StoreError> {
        self.operator_update(
            id,
            actor,
            "cancel",
            "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
              WHERE id = $1 AND state IN ('queued', 'retrying', 'waiting_for_sync')",
        )
        .await
    }

    /// Bulk retry: every failed or cancelled job matching the filter is queued again (at
    /// most `filter.limit`), each one recorded as an operator action. Returns their ids.
    pub async fn retry_matching(
        &self,
        filter: &BulkRetry,
        actor: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "WITH picked AS (
                SELECT id FROM jobs
                 WHERE state = ANY($1)
                   AND ($2::text IS NULL OR account = lower($2))
                   AND ($3::text IS NULL OR kind = $3)
                   AND ($4::text IS NULL OR last_error_class = $4)
                 ORDER BY updated_at LIMIT $5 FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET state = 'queued', next_attempt_at = now(), attempt = 0,
                             finished_at = NULL, updated_at = now()
               FROM picked WHERE jobs.id = picked.id
             RETURNING jobs.id",
        )
        .bind(filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .bind(&filter.account)
        .bind(filter.kind.map(EventKind::as_str))
        .bind(&filter.error_class)
        .bind(filter.limit)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO operator_actions (job_id, action, actor, detail)
             SELECT id, 'retry', $2, 'bulk retry' FROM unnest($1::uuid[]) AS id",
        )
        .bind(&ids)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// What operators did to a job, oldest first.
    pub async fn job_actions(&self, id: Uuid) -> Result<Vec<OperatorAction>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT action, actor, at, detail FROM operator_actions WHERE job_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn operator_update(
        &self,
        id: Uuid,
        actor: &str,
        action: &str,
        sql: &'static str,
    ) -> Result<Result<(), ActionRefused>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            sqlx::query("INSERT INTO operator_actions (job_id, action, actor) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(action)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Ok(()));
        }
        tx.rollback().await?;
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Err(match state.as_deref().and_then(JobState::parse) {
            Some(s) => ActionRefused::WrongState(s),
            None => ActionRefused::NotFound,
        }))
    }

    /// An alert not tied to one job (e.g. the circuit opened), written unless the same
    /// subject was raised within `quiet`: one email per real problem, not a storm.
    pub async fn raise_alert(&self, alert: &NewAlert, quiet: Duration) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO alerts (kind, subject, body)
             SELECT $1, $2, $3
              WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE subject = $2
                                   AND created_at > now() - make_interval(secs => $4))",
        )
        .bind(&alert.kind)
        .bind(&alert.subject)
        .bind(&alert.body)
        .bind(interval(quiet))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A circuit alert, paired across replicas: `opened` is written unless the outage was
    /// announced already (the newest of the pair is an `opened`), `closed` only after an
    /// `opened` — so each outage is one alert and one recovery, whichever replica sees it
    /// first and however many see it.
    pub async fn raise_circuit_alert(
        &self,
        alert: &NewAlert,
        opened_subject: &str,
        closed_subject: &str,
        opening: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One decision at a time per endpoint, cluster-wide.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailboxd circuit alert ' || $1))")
            .bind(opened_subject)
            .execute(&mut *tx)
            .await?;
        let latest: Option<(String, bool)> = sqlx::query_as(
            "SELECT subject, created_at > now() - make_interval(secs => $3)
               FROM alerts WHERE subject = $1 OR subject = $2
              ORDER BY id DESC LIMIT 1",
        )
        .bind(opened_subject)
        .bind(closed_subject)
        .bind(interval(CIRCUIT_REOPEN_QUIET))
        .fetch_optional(&mut *tx)
        .await?;
        let write = match (&latest, opening) {
            // An outage is announced once; its recovery only after it was announced.
            (Some((subject, _)), true) if subject == opened_subject => false,
            // Another replica seeing the same outage late, or a host flapping: the recovery
            // just written stands for it.
            (Some((_, recent)), true) => !recent,
            (None, true) => true,
            (latest, false) => latest
                .as_ref()
                .is_some_and(|(subject, _)| subject == opened_subject),
        };
        if write {
            sqlx::query("INSERT INTO alerts (kind, subject, body) VALUES ($1, $2, $3)")
                .bind(&alert.kind)
                .bind(&alert.subject)
                .bind(&alert.body)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(write)
    }

    /// Delivers due alerts with `send`, at most `limit`, each marked sent or rescheduled with
    /// backoff in the same transaction that locked it — so two replicas never send one alert,
    /// and a crash between send and commit sends it again at most once (same Message-ID).
    pub async fn deliver_alerts<F, Fut>(
        &self,
        policy: &DeliveryPolicy,
        send: F,
    ) -> Result<(u32, u32), StoreError>
    where
        F: Fn(Vec<Alert>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut tx = self.pool.begin().await?;
        // Alerts of one problem wait out the digest window so a burst becomes one email.
        let due: Vec<Alert> = sqlx::query_as(
            "SELECT * FROM alerts WHERE sent_at IS NULL AND next_attempt_at <= now()
                AND (digest_key IS NULL OR digest_key IN (
                        SELECT digest_key FROM alerts
                         WHERE sent_at IS NULL AND digest_key IS NOT NULL
                           AND created_at <= now() - make_interval(secs => $2)))
              ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(policy.limit)
        .bind(interval(policy.digest_window))
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.commit().await?;
            return Ok((0, 0));
        }
        let sent_last_hour: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM alerts WHERE sent_at > now() - interval '1 hour'
                AND NOT suppressed AND folded_into IS NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut room = i64::from(policy.hourly_cap) - sent_last_hour;
        // One email per digest key (or per alert without one), oldest first.
        let mut groups: Vec<Vec<Alert>> = Vec::new();
        for alert in due {
            match alert.digest_key.as_ref().and_then(|k| {
                groups
                    .iter()
                    .position(|g| g[0].digest_key.as_ref() == Some(k))
            }) {
                Some(i) => groups[i].push(alert),
                None => groups.push(vec![alert]),
            }
        }
        let (mut sent, mut failed) = (0, 0);
        let total_groups = groups.len();
        for (gi, group) in groups.into_iter().enumerate() {
            let ids: Vec<i64> = group.iter().map(|a| a.id).collect();
            if room <= 0 {
                sqlx::query(
                    "UPDATE alerts SET sent_at = now(), suppressed = true,
                            last_error = 'not emailed: the hourly cap (smtp.hourly_cap) was reached'
                      WHERE id = ANY($1)",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            // The last email allowed this hour says how many are held back.
            let note = (room == 1 && gi + 1 < total_groups).then(|| {
                format!(
                    "{} more alert email(s) are suppressed this hour (smtp.hourly_cap = {}); see `mailboxd alerts list`.",
                    total_groups - gi - 1,
                    policy.hourly_cap
                )
            });
            let attempts = group[0].attempts;
            match send(group, note).await {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE alerts SET sent_at = now(), attempts = attempts + 1, last_error = NULL,
                                folded_into = CASE WHEN id = $2 THEN NULL ELSE $2 END
                          WHERE id = ANY($1)",
                    )
                    .bind(&ids)
                    .bind(ids[0])
                    .execute(&mut *tx)
                    .await?;
                    sent += 1;
                    room -= 1;
                }
                Err(e) => {
                    // base, 2·base, 4·base … up to 15 min between tries.
                    let tries = u32::try_from(attempts).unwrap_or(0).saturating_add(1);
                    let delay = crate::backoff::doubling(
                        tries,
                        policy.retry_base,
                        Duration::from_secs(900),
                    )
                    .as_secs_f64();
                    sqlx::query(
                        "UPDATE alerts SET attempts = attempts + 1, last_error = $2,
                                next_attempt_at = now() + make_interval(secs => $3) WHERE id = ANY($1)",
                    )
                    .bind(&ids)
                    .bind(e)
                    .bind(delay)
                    .execute(&mut *tx)
                    .await?;
                    failed += 1;
                }
            }
        }
        tx.commit().await?;
        Ok((sent, failed))
    }

    pub async fn list_alerts(&self, limit: i64) -> Result<Vec<Alert>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM alerts ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
