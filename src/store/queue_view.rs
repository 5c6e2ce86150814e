//! What the dashboard's queue views read and do beyond single jobs: the rows a filter
//! matches (to group failures by error signature and to act on them), bulk actions on a
//! set of jobs recorded once with their count, and the queue's health at a glance
//! (oldest waiting work, throughput, time to done, the alert outbox).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::jobs::Newest;
use super::operator::REQUEUE;
use super::{JobFilter, Store, StoreError};
use crate::event::EventKind;
use crate::job::{ActionKind, ErrorClass, JobState, JobStep};

/// A job as the queue views list it: enough to filter and group, without the event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct QueueRow {
    pub id: Uuid,
    pub account: String,
    pub kind: EventKind,
    pub state: JobState,
    pub attempt: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub last_error_class: Option<ErrorClass>,
    /// `alert::signature` of `last_error` as stored with it ('' for none, or for a job
    /// written before migration 0025 and not signed since).
    pub error_signature: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a claimable job is due: a scheduled step's time.
    pub next_attempt_at: DateTime<Utc>,
    pub step: Option<JobStep>,
}

impl QueueRow {
    /// What the list's detail column says: a scheduled step and when it is due, else the
    /// last error.
    pub(crate) fn detail(&self) -> String {
        match (self.state, self.step) {
            (JobState::Scheduled, Some(step)) => format!("{step} due {}", self.next_attempt_at),
            _ => self.last_error.clone().unwrap_or_default(),
        }
    }
}

/// One bulk action: who moved how many jobs matching which filter.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct BulkAction {
    pub id: i64,
    pub action: ActionKind,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub filter: String,
    pub jobs: i32,
}

/// The queue's waiting work at a glance.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub(crate) struct QueueAges {
    /// The oldest queued or retrying job's creation.
    pub oldest_pending: Option<DateTime<Utc>>,
    pub waiting_for_sync: i64,
    /// When the longest-waiting joiner's event occurred (its sync deadline counts from it).
    pub oldest_sync_event: Option<DateTime<Utc>>,
    /// Alerts not sent yet (and not folded or suppressed), and of those, failing to send.
    pub alerts_pending: i64,
    pub alerts_failing: i64,
}

/// Jobs finished in one hour or day: succeeded, failed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Throughput {
    pub bucket: DateTime<Utc>,
    pub succeeded: i64,
    pub failed: i64,
}

/// The time to done last read, kept while reading it is slow (see `Store::time_to_done`);
/// shared by the clones of a `Store`.
/// When a reading was kept, and the reading.
type Kept = Option<(std::time::Instant, Vec<TimeToDone>)>;

#[derive(Debug, Clone, Default)]
pub(crate) struct DoneMemo(std::sync::Arc<parking_lot::Mutex<Kept>>);

impl DoneMemo {
    /// A reading that took this long is kept…
    pub(crate) const WORTH_KEEPING: std::time::Duration = std::time::Duration::from_millis(100);
    /// …for this long.
    pub(crate) const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(15);

    fn fresh(&self) -> Option<Vec<TimeToDone>> {
        let kept = self.0.lock();
        kept.as_ref()
            .filter(|(at, _)| at.elapsed() < Self::KEPT_FOR)
            .map(|(_, rows)| rows.clone())
    }

    fn offer(&self, rows: &[TimeToDone], took: std::time::Duration) {
        *self.0.lock() =
            (took >= Self::WORTH_KEEPING).then(|| (std::time::Instant::now(), rows.to_vec()));
    }
}

/// Seconds from a job's creation to its success, per hour: median and 95th percentile.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TimeToDone {
    pub hour: DateTime<Utc>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// The bucket of a throughput series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    Hour,
    Day,
}

impl Store {
    /// The jobs `f` matches, most recently updated first, at most `f.limit` from
    /// `f.offset`.
    pub(crate) async fn queue_rows(&self, f: &JobFilter) -> Result<Vec<QueueRow>, StoreError> {
        let mut q = sqlx::QueryBuilder::new("");
        f.push_listing(
            &mut q,
            "id, account, kind, state, attempt, max_attempts, last_error, last_error_class, \
             error_signature, created_at, updated_at, next_attempt_at, step",
            Newest::Updated,
            (f.limit.max(1), f.offset.max(0)),
        );
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Retries or cancels the jobs among `ids` that may be (a retry takes failed, cancelled
    /// and waiting jobs, a cancel pending ones), in one transaction recorded once in
    /// `bulk_actions` with `filter` and the count, and per job in `operator_actions`.
    pub(crate) async fn bulk_act(
        &self,
        ids: &[Uuid],
        action: ActionKind,
        actor: &str,
        filter: &str,
    ) -> Result<BulkAction, StoreError> {
        let (set, from, to) = match action {
            ActionKind::Retry => (REQUEUE, &JobState::RETRYABLE[..], JobState::Queued),
            ActionKind::Cancel => (
                "state = $2, finished_at = now(), updated_at = now()",
                &JobState::CLAIMABLE[..],
                JobState::Cancelled,
            ),
        };
        let mut tx = self.pool.begin().await?;
        let moved: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET {set} WHERE id = ANY($1) AND state = ANY($3) RETURNING id"
        )))
        .bind(ids)
        .bind(to)
        .bind(from)
        .fetch_all(&mut *tx)
        .await?;
        let bulk: BulkAction = sqlx::query_as(
            "INSERT INTO bulk_actions (action, actor, filter, jobs) VALUES ($1, $2, $3, $4)
             RETURNING id, action, actor, at, filter, jobs",
        )
        .bind(action)
        .bind(actor)
        .bind(filter)
        .bind(i32::try_from(moved.len()).unwrap_or(i32::MAX))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO operator_actions (job_id, action, actor, detail)
             SELECT id, $2, $3, $4 FROM unnest($1::uuid[]) AS id",
        )
        .bind(&moved)
        .bind(action)
        .bind(actor)
        .bind(format!("bulk #{}: {filter}", bulk.id))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(bulk)
    }

    /// The latest bulk actions, newest first.
    pub(crate) async fn list_bulk_actions(
        &self,
        limit: i64,
    ) -> Result<Vec<BulkAction>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, action, actor, at, filter, jobs FROM bulk_actions ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Job counts by state (every state present, zero where none), from the counts the
    /// jobs table's triggers keep (migration 0018): a few rows however long the history.
    /// Folds the appended changes into one row per state first, so they stay few.
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        self.fold_job_counts().await?;
        let rows: Vec<(JobState, i64)> =
            sqlx::query_as("SELECT state, sum(n)::bigint FROM job_state_counts GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(JobState::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    rows.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n),
                )
            })
            .collect())
    }

    /// Folds the changes the triggers appended into one row per state and hour, so the
    /// counts stay a few rows. Concurrent folds are safe: each moves the rows it deleted.
    /// Reads fold; without any read for long, the first one pays for the rows since.
    async fn fold_job_counts(&self) -> Result<(), StoreError> {
        sqlx::query(
            "WITH moved AS (DELETE FROM job_state_counts RETURNING state, hour, n)
             INSERT INTO job_state_counts (state, hour, n)
             SELECT state, hour, sum(n) FROM moved GROUP BY 1, 2 HAVING sum(n) <> 0",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How old the waiting work is, and what waits in the alert outbox.
    pub(crate) async fn queue_ages(&self) -> Result<QueueAges, StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT min(created_at) FROM jobs WHERE state = ANY($1)) AS oldest_pending,
                    (SELECT count(*) FROM jobs WHERE state = $2) AS waiting_for_sync,
                    (SELECT min(occurred_at) FROM jobs WHERE state = $2) AS oldest_sync_event,
                    (SELECT count(*) FROM alerts WHERE sent_at IS NULL AND folded_into IS NULL
                        AND NOT suppressed) AS alerts_pending,
                    (SELECT count(*) FROM alerts WHERE sent_at IS NULL AND folded_into IS NULL
                        AND NOT suppressed AND last_error IS NOT NULL) AS alerts_failing",
        )
        .bind([JobState::Queued, JobState::Retrying])
        .bind(JobState::WaitingForSync)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Jobs finished per hour over the last 24 hours or per day over the last 30 days,
    /// oldest first, every bucket present.
    pub(crate) async fn throughput(&self, bucket: Bucket) -> Result<Vec<Throughput>, StoreError> {
        let (unit, span) = match bucket {
            Bucket::Hour => ("hour", "23 hours"),
            Bucket::Day => ("day", "29 days"),
        };
        self.fold_job_counts().await?;
        // From the per-hour counts the jobs table's triggers keep (migration 0018): a few
        // rows per hour of the span however many jobs finished in it.
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH done AS (
                SELECT date_trunc('{unit}', hour) AS bucket,
                       coalesce(sum(n) FILTER (WHERE state = $1), 0)::bigint AS succeeded,
                       coalesce(sum(n) FILTER (WHERE state = $2), 0)::bigint AS failed
                  FROM job_state_counts
                 WHERE hour >= date_trunc('{unit}', now()) - interval '{span}'
                 GROUP BY 1)
             SELECT b.bucket, coalesce(d.succeeded, 0) AS succeeded, coalesce(d.failed, 0) AS failed
               FROM generate_series(date_trunc('{unit}', now()) - interval '{span}',
                                    date_trunc('{unit}', now()), interval '1 {unit}') AS b(bucket)
               LEFT JOIN done d ON d.bucket = b.bucket
              ORDER BY b.bucket"
        )))
        .bind(JobState::Succeeded)
        .bind(JobState::Failed)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Time from creation to success per hour over the last 24 hours (hours without a
    /// success carry no figures). Hours that are over come from `job_done_hours`, computed
    /// once by the first read after they end; only the hour not settled yet (the current
    /// one, and the one before in the first minute of an hour) reads `jobs`.
    ///
    /// In an hour with many successes (an initial load: 100,000 in the hour) the current
    /// hour's percentiles sort every one of them (about 1 s per 100,000): a reading that took
    /// [`DoneMemo::WORTH_KEEPING`] or more is kept for [`DoneMemo::KEPT_FOR`], so that every
    /// live refresh of every open dashboard does not sort them again. A quick reading (a
    /// normal hour) is never kept: it is always current.
    pub async fn time_to_done(&self) -> Result<Vec<TimeToDone>, StoreError> {
        if let Some(kept) = self.done_memo.fresh() {
            return Ok(kept);
        }
        let started = std::time::Instant::now();
        let rows = self.read_time_to_done().await?;
        self.done_memo.offer(&rows, started.elapsed());
        Ok(rows)
    }

    async fn read_time_to_done(&self) -> Result<Vec<TimeToDone>, StoreError> {
        self.settle_done_hours().await?;
        Ok(sqlx::query_as(
            "WITH current AS (
                SELECT date_trunc('hour', finished_at) AS hour,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY secs)::float8 AS p50,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY secs)::float8 AS p95
                  FROM (SELECT finished_at, extract(epoch FROM finished_at - created_at) AS secs
                          FROM jobs WHERE state = $1
                           AND finished_at >= date_trunc('hour', now() - interval '1 minute')) d
                 GROUP BY 1)
             SELECT h.hour, coalesce(c.p50, d.p50) AS p50, coalesce(c.p95, d.p95) AS p95
               FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                                    date_trunc('hour', now()), interval '1 hour') AS h(hour)
               LEFT JOIN job_done_hours d ON d.hour = h.hour
               LEFT JOIN current c ON c.hour = h.hour
              ORDER BY h.hour",
        )
        .bind(JobState::Succeeded)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Computes the figures of the hours of the last day that ended over a minute ago and
    /// are not in `job_done_hours` yet (a minute: a finish committed just after the hour
    /// still counts in it), and forgets those older than two days.
    async fn settle_done_hours(&self) -> Result<(), StoreError> {
        sqlx::query(
            "WITH forgotten AS (DELETE FROM job_done_hours WHERE hour < now() - interval '2 days')
                , missing AS MATERIALIZED (
                    SELECT h.hour
                      FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                                           date_trunc('hour', now() - interval '1 minute')
                                               - interval '1 hour',
                                           interval '1 hour') AS h(hour)
                     WHERE NOT EXISTS (SELECT 1 FROM job_done_hours x WHERE x.hour = h.hour))
             INSERT INTO job_done_hours (hour, p50, p95)
             SELECT m.hour,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY d.secs)::float8,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY d.secs)::float8
               FROM missing m
               LEFT JOIN LATERAL (
                    SELECT extract(epoch FROM finished_at - created_at) AS secs
                      FROM jobs WHERE state = $1
                       AND finished_at >= m.hour AND finished_at < m.hour + interval '1 hour') d
                    ON true
              GROUP BY m.hour
             ON CONFLICT (hour) DO NOTHING",
        )
        .bind(JobState::Succeeded)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
