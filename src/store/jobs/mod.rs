//! Jobs: the row, claiming due jobs under a lease, the heartbeat that extends it, giving
//! jobs back at shutdown, retention, and the reads operators and metrics use. Inserting
//! jobs from events is in `insert`, recording an attempt's outcome in `finish`, re-keying a
//! job on the objectGUID its account turned out to have in `resolve`.

mod filter;
mod finish;
mod insert;
mod resolve;

pub use filter::JobFilter;
pub(crate) use filter::JobPage;
pub(in crate::store) use filter::Newest;
pub use insert::*;
pub use resolve::Resolved;

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Attempt, Store, StoreError, secs};
use crate::event::{Event, EventKind};
use crate::job::{AttemptEnd, ErrorClass, JobEffect, JobState, JobStep};
use crate::outcome::HttpDelivery;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub event_id: String,
    pub kind: EventKind,
    pub account: String,
    #[sqlx(rename = "payload", json)]
    pub event: Event,
    pub state: JobState,
    pub outcome: Option<JobEffect>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_class: Option<ErrorClass>,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The event's AMQP `reply_to`: its outcome goes there too.
    pub reply_to: Option<String>,
    /// A `reply_to` the event named that mailboxd refused to send to, and why.
    pub reply_to_refused: Option<String>,
    /// The newer job of the account that made this one moot.
    pub superseded_by: Option<Uuid>,
    /// The W3C `traceparent` the event came with (version-00 form, validated at intake).
    pub trace_parent: Option<String>,
    /// A later step of the event (a joiner's start date), not the event itself.
    pub step: Option<JobStep>,
    /// This attempt's span, set by the worker that claimed the job (`trace`); no column.
    #[sqlx(skip)]
    #[serde(skip)]
    pub(crate) span: crate::trace::JobSpan,
}

/// The columns a [`Job`] is read from.
pub(super) const JOB_COLUMNS: &str = "id, event_id, kind, account, payload, state, outcome, attempt, \
    max_attempts, next_attempt_at, locked_by, locked_until, last_error, last_error_class, occurred_at, \
    created_at, updated_at, started_at, finished_at, reply_to, reply_to_refused, superseded_by, \
    trace_parent, step";

/// The last error of a job whose lease ran out.
const LEASE_EXPIRED: &str = "lease expired: the replica running it stopped";

/// Jobs whose lease ran out (their replica died): the lost attempt recorded, due again now.
/// `state = 'running'` is in the text, rendered from the enum, so that the planner uses the
/// `jobs_expired_leases` partial index; a bound parameter could not match it.
static EXPIRE_LEASES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH expired AS (
            SELECT id FROM jobs
             WHERE state = '{running}' AND locked_until < now()
             FOR UPDATE SKIP LOCKED)
         , lost AS (
            INSERT INTO job_attempts (job_id, attempt, replica, started_at, outcome, error_class, error_message)
            SELECT j.id, j.attempt, coalesce(j.locked_by, '?'), coalesce(j.started_at, now()), $1, $2,
                   'replica ' || coalesce(j.locked_by, '?') || ' stopped before finishing (crash or lost database connection); the job runs again'
              FROM jobs j JOIN expired e ON e.id = j.id)
         UPDATE jobs SET state = $3, locked_by = NULL, locked_until = NULL,
                         next_attempt_at = now(), updated_at = now(),
                         last_error = $4, last_error_class = $2, error_signature = $5
           FROM expired WHERE jobs.id = expired.id",
        running = JobState::Running,
    )
});

/// Due jobs, at most one per account and none of an account that has one running, leased
/// to a replica. An account is its key (`coalesce(account_guid::text, account)`, migration
/// 0023: the objectGUID once known, else the name the event used) and, for
/// the index a replica of the previous version still relies on, its name (`account`); both
/// are unique among the running jobs. The states are in the text for the `jobs_claimable`,
/// `jobs_one_running_per_key` and `jobs_one_running_per_account` partial indexes (see
/// [`EXPIRE_LEASES`]). It locks no more
/// rows than it may take: rows locked and then left would be skipped by a concurrent claim
/// of another worker for nothing. It walks `jobs_claimable` in its own order and stops at
/// its batch. "No job of the account running" is `NOT IN` the running jobs' keys: the
/// planner reads the running jobs once per claim into a hash ("hashed SubPlan") and each job
/// walked is one probe. (Neither key can be NULL: `account` is `NOT NULL`; a NULL would make
/// `NOT IN` false for every job.) The two forms before it failed on statistics taken when
/// nothing ran (a burst's first `ANALYZE`, or a bench's fill): `NOT EXISTS` became an
/// anti-join comparing every job walked with every running one (76,000 comparisons, 160 ms
/// a claim), and a subquery per job walked read every running job through `state`'s index
/// rather than the unique key (50 × 200 index entries, 2.3 ms of a 6 ms claim with 4
/// workers). The locked rows carry what the later steps sort by, so no step reads them
/// again. (Pending jobs of one account are rare: a newer event supersedes them, so the
/// one-per-account step seldom leaves a batch short.)
static CLAIM_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS (
            SELECT j.id, j.account, coalesce(j.account_guid::text, j.account) AS key,
                   j.occurred_at, j.next_attempt_at, j.created_at
              FROM jobs j
             WHERE j.state IN {pending} AND j.next_attempt_at <= now()
               AND coalesce(j.account_guid::text, j.account) NOT IN
                   (SELECT coalesce(r.account_guid::text, r.account) FROM jobs r
                     WHERE r.state = '{running}')
               AND j.account NOT IN (SELECT r.account FROM jobs r WHERE r.state = '{running}')
             ORDER BY j.next_attempt_at, j.created_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         , one_per_key AS (
            SELECT DISTINCT ON (d.key) d.* FROM due d ORDER BY d.key, d.occurred_at DESC)
         , one_per_account AS (
            SELECT DISTINCT ON (k.account) k.* FROM one_per_key k
             ORDER BY k.account, k.occurred_at DESC)
         , picked AS (
            SELECT o.id FROM one_per_account o ORDER BY o.next_attempt_at, o.created_at)
         UPDATE jobs SET state = $4, locked_by = $2,
                         locked_until = now() + make_interval(secs => $3),
                         attempt = attempt + 1, started_at = now(), updated_at = now()
           FROM picked WHERE jobs.id = picked.id
         RETURNING {columns}",
        pending = super::columns::sql_list(&JobState::CLAIMABLE),
        running = JobState::Running,
        columns = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("jobs.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
});

static NEXT_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM jobs
          WHERE state IN {pending}",
        pending = super::columns::sql_list(&JobState::CLAIMABLE),
    )
});

impl Store {
    /// Claims up to `limit` due jobs for `replica`, at most one per account, in one
    /// statement (one round trip). Jobs whose lease expired are made due again by lease
    /// rescue (`worker::rescue`, [`Store::rescue_expired_leases`]), not here.
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

    /// How long until the earliest claimable job is due: zero when one is due now, `None`
    /// when none is queued. The partial index on claimable jobs answers it in one step.
    pub(crate) async fn next_due_in(&self) -> Result<Option<Duration>, StoreError> {
        let secs: Option<f64> = sqlx::query_scalar(NEXT_DUE.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    /// Makes jobs whose lease ran out (their replica died) due again at once, the lost
    /// attempt recorded. Returns how many.
    pub async fn rescue_expired_leases(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(EXPIRE_LEASES.as_str())
            .bind(AttemptEnd::LeaseExpired)
            .bind(ErrorClass::Transient)
            .bind(JobState::Retrying)
            .bind(LEASE_EXPIRED)
            .bind(crate::store::failures::error_signature(
                Some(LEASE_EXPIRED),
                "",
            ))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn try_claim(
        &self,
        replica: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        Ok(sqlx::query_as(CLAIM_DUE.as_str())
            .bind(limit)
            .bind(replica)
            .bind(secs(lease))
            .bind(JobState::Running)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Extends the lease of jobs this replica is still running.
    pub(crate) async fn heartbeat(
        &self,
        replica: &str,
        ids: &[Uuid],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET locked_until = now() + make_interval(secs => $3)
              WHERE id = ANY($1) AND locked_by = $2 AND state = $4",
        )
        .bind(ids)
        .bind(replica)
        .bind(secs(lease))
        .bind(JobState::Running)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Of the given (job, attempt) pairs, the jobs `replica` still runs in that attempt: what
    /// a batch that panicked left unfinished.
    pub(crate) async fn held_jobs(
        &self,
        replica: &str,
        attempts: &[(Uuid, i32)],
    ) -> Result<Vec<Job>, StoreError> {
        let (ids, tries): (Vec<Uuid>, Vec<i32>) = attempts.iter().copied().unzip();
        let columns = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("j.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM jobs j
               JOIN unnest($1::uuid[], $2::int4[]) AS k(id, attempt)
                 ON k.id = j.id AND k.attempt = j.attempt
              WHERE j.state = $3 AND j.locked_by = $4
              ORDER BY j.created_at"
        )))
        .bind(&ids)
        .bind(&tries)
        .bind(JobState::Running)
        .bind(replica)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Gives back the jobs `replica` is running (shutdown past its deadline): due again at
    /// once, the interrupted attempt recorded and not counted.
    pub(crate) async fn release_running(&self, replica: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "WITH mine AS (
                SELECT id FROM jobs WHERE state = $2 AND locked_by = $1 FOR UPDATE)
             , noted AS (
                INSERT INTO job_attempts (job_id, attempt, replica, started_at, outcome, error_class, error_message)
                SELECT j.id, j.attempt, $1, coalesce(j.started_at, now()), $3, $4,
                       'the replica shut down before the attempt finished; the job runs again'
                  FROM jobs j JOIN mine m ON m.id = j.id)
             UPDATE jobs SET state = $5, locked_by = NULL, locked_until = NULL,
                             next_attempt_at = now(), updated_at = now(),
                             attempt = greatest(attempt - 1, 0)
               FROM mine WHERE jobs.id = mine.id",
        )
        .bind(replica)
        .bind(JobState::Running)
        .bind(AttemptEnd::Released)
        .bind(ErrorClass::Transient)
        .bind(JobState::Retrying)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes finished jobs older than `age` (not failed ones: those wait for an operator;
    /// nor one whose outcome is still unsent or whose cloud watch still waits), with their sent outcomes, a bounded chunk per
    /// call so a large backlog never holds long locks.
    pub async fn prune(&self, age: Duration, chunk: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                 WHERE state = ANY($3)
                   AND finished_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job_id = jobs.id
                                     AND (o.sent_at IS NULL OR o.iiq_state = $4
                                          OR o.callback_state = $4))
                   AND NOT EXISTS (SELECT 1 FROM cloud_watches w WHERE w.job_id = jobs.id
                                     AND w.resolved_at IS NULL)
                 LIMIT $2)",
        )
        .bind(secs(age))
        .bind(chunk)
        .bind(&JobState::PRUNABLE[..])
        .bind(HttpDelivery::Pending)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// A job and its attempts, oldest first.
    pub async fn get_job(&self, id: Uuid) -> Result<Option<(Job, Vec<Attempt>)>, StoreError> {
        let job: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(job) = job else { return Ok(None) };
        let attempts = self.attempts(id).await?;
        Ok(Some((job, attempts)))
    }

    pub async fn job_by_event(&self, event_id: &str) -> Result<Option<Job>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE event_id = $1"
        )))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Job counts by state (every state present, zero where none).
    pub async fn count_by_state(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows: Vec<(JobState, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(JobState::ALL
            .into_iter()
            .map(|s| {
                let n = rows.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
                (s, n)
            })
            .collect())
    }
}
