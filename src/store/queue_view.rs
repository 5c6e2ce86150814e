//! What the dashboard's queue views read and do beyond single jobs: the rows a filter
//! matches (to group failures by error signature and to act on them), bulk actions on a
//! set of jobs recorded once with their count, and the queue's health at a glance
//! (oldest waiting work, throughput, time to done, the alert outbox).

use std::sync::LazyLock;

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
#[derive(Debug, Clone, Default)]
pub(crate) struct DoneMemo(std::sync::Arc<parking_lot::Mutex<MemoState>>);

#[derive(Debug, Default)]
pub(crate) struct MemoState {
    /// When the kept reading was taken, and the reading.
    kept: Option<(std::time::Instant, Vec<TimeToDone>)>,
    /// A background read is under way: no second one is started.
    refreshing: bool,
}

/// What a read of the time to done does with the memo.
enum Memo {
    /// Kept and current: answered from it.
    Fresh(Vec<TimeToDone>),
    /// Kept, past [`DoneMemo::KEPT_FOR`] but within [`DoneMemo::SERVED_FOR`]: answered
    /// from it, and (when `refresh`) this caller starts the one background read.
    Stale {
        rows: Vec<TimeToDone>,
        refresh: bool,
    },
    /// Nothing kept, or too old to show: read now.
    Read,
}

impl DoneMemo {
    /// A reading that took this long is kept… (a tenth of the overview's 250 ms: during a
    /// 100,000-joiner load the reading took 16 ms at the median and 82 ms at the 95th
    /// percentile, every time, when only readings of 100 ms were kept)
    pub(crate) const WORTH_KEEPING: std::time::Duration = std::time::Duration::from_millis(25);
    /// …for this long, then read again in the background while it is still shown…
    pub(crate) const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(15);
    /// …for at most this long (a background read that fails or hangs is not hidden).
    pub(crate) const SERVED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

    fn look(&self) -> Memo {
        let mut m = self.0.lock();
        let Some((at, rows)) = m.kept.as_ref() else {
            return Memo::Read;
        };
        let age = at.elapsed();
        if age < Self::KEPT_FOR {
            return Memo::Fresh(rows.clone());
        }
        if age >= Self::SERVED_FOR {
            return Memo::Read;
        }
        let rows = rows.clone();
        let refresh = !std::mem::replace(&mut m.refreshing, true);
        Memo::Stale { rows, refresh }
    }

    fn offer(&self, rows: &[TimeToDone], took: std::time::Duration) {
        let mut m = self.0.lock();
        m.kept = (took >= Self::WORTH_KEEPING).then(|| (std::time::Instant::now(), rows.to_vec()));
        m.refreshing = false;
    }

    fn refresh_failed(&self) {
        self.0.lock().refreshing = false;
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

/// [`Store::queue_ages`]'s statement, built once: the states in the text.
static QUEUE_AGES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT least((SELECT min(created_at) FROM jobs WHERE state = '{queued}'),
                      (SELECT min(created_at) FROM jobs WHERE state = '{retrying}'))
                    AS oldest_pending,
                (SELECT count(*) FROM jobs WHERE state = '{sync}') AS waiting_for_sync,
                (SELECT min(occurred_at) FROM jobs WHERE state = '{sync}') AS oldest_sync_event,
                (SELECT count(*) FROM alerts WHERE sent_at IS NULL AND folded_into IS NULL
                    AND NOT suppressed) AS alerts_pending,
                (SELECT count(*) FROM alerts WHERE sent_at IS NULL AND folded_into IS NULL
                    AND NOT suppressed AND last_error IS NOT NULL) AS alerts_failing",
        queued = JobState::Queued,
        retrying = JobState::Retrying,
        sync = JobState::WaitingForSync,
    )
});

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
    /// counts stay a few rows. Only the (state, hour) pairs with more than one row are
    /// rewritten: a month of history is about 2,800 rows (an hour × a finished state), and
    /// rewriting them all on every read (each `/metrics` scrape, each overview) took 15 ms
    /// and left as many dead rows each time. Concurrent folds are safe: each moves the rows
    /// it deleted. Reads fold; without any read for long, the first one pays for the rows
    /// since.
    async fn fold_job_counts(&self) -> Result<(), StoreError> {
        sqlx::query(
            "WITH split AS (
                SELECT state, hour FROM job_state_counts GROUP BY 1, 2 HAVING count(*) > 1)
             , moved AS (
                DELETE FROM job_state_counts c USING split
                 WHERE c.state = split.state AND c.hour IS NOT DISTINCT FROM split.hour
                RETURNING c.state, c.hour, c.n)
             INSERT INTO job_state_counts (state, hour, n)
             SELECT state, hour, sum(n) FROM moved GROUP BY 1, 2 HAVING sum(n) <> 0",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How old the waiting work is, and what waits in the alert outbox. The states are in
    /// the text, one per subquery: each then reads the first entry of its state in
    /// `jobs_state_created`. Bound as parameters, the cached generic plan counted the
    /// waiting joiners with a scan of the whole table (every finished job of the month).
    pub(crate) async fn queue_ages(&self) -> Result<QueueAges, StoreError> {
        Ok(sqlx::query_as(QUEUE_AGES.as_str())
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
        // From the per-hour counts the jobs table's triggers keep (migration 0018): a few
        // rows per hour of the span however many jobs finished in it. Summed, so folded or
        // not; the overview folds them once, reading the states first (`job_counts`).
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
    /// live refresh of every open dashboard does not sort them again; after that it is still
    /// shown (up to [`DoneMemo::SERVED_FOR`]) while one background read replaces it. A quick
    /// reading (a normal hour) is never kept: it is always current.
    pub async fn time_to_done(&self) -> Result<Vec<TimeToDone>, StoreError> {
        match self.done_memo.look() {
            Memo::Fresh(rows) => Ok(rows),
            Memo::Stale { rows, refresh } => {
                // The slow read runs beside the page, never in front of it: an operator's
                // refresh every few seconds during an initial load is never the one to wait.
                if refresh {
                    let store = self.clone();
                    tokio::spawn(async move {
                        if store.timed_read_of_done().await.is_err() {
                            store.done_memo.refresh_failed();
                        }
                    });
                }
                Ok(rows)
            }
            Memo::Read => self.timed_read_of_done().await,
        }
    }

    /// Reads the time to done and offers the reading to the memo with how long it took.
    async fn timed_read_of_done(&self) -> Result<Vec<TimeToDone>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn memo_read(ago: Duration) -> DoneMemo {
        let memo = DoneMemo::default();
        let at = Instant::now().checked_sub(ago).expect("the clock runs");
        memo.0.lock().kept = Some((at, Vec::new()));
        memo
    }

    #[test]
    fn a_slow_reading_is_shown_while_one_background_read_replaces_it() {
        assert!(matches!(DoneMemo::default().look(), Memo::Read));
        assert!(matches!(
            memo_read(Duration::from_secs(5)).look(),
            Memo::Fresh(_)
        ));

        let stale = memo_read(Duration::from_secs(20));
        assert!(matches!(stale.look(), Memo::Stale { refresh: true, .. }));
        // Every other page view meanwhile is answered from it and starts nothing.
        assert!(matches!(stale.look(), Memo::Stale { refresh: false, .. }));
        stale.refresh_failed();
        assert!(matches!(stale.look(), Memo::Stale { refresh: true, .. }));
        // The background read's answer replaces it and ends the refresh.
        stale.offer(&[], Duration::from_millis(150));
        assert!(matches!(stale.look(), Memo::Fresh(_)));
        assert!(!stale.0.lock().refreshing);

        // Never shown once older than a minute, and a quick reading is never kept.
        assert!(matches!(
            memo_read(Duration::from_secs(61)).look(),
            Memo::Read
        ));
        stale.offer(&[], Duration::from_millis(5));
        assert!(matches!(stale.look(), Memo::Read));
    }
}
