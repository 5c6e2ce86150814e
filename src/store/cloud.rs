//! Cloud watches (migration 0019): a joiner's wait for its Exchange Online mailbox after
//! its on-premises success. Written by `finish` in the statement that moved the job (see
//! `WatchPolicy`); claimed due with `FOR UPDATE SKIP LOCKED` and a lease, so replicas share
//! them and a replica killed mid-check gives its watches back when the lease ends; ended by
//! one transaction that marks the watch resolved and writes its second outcome row (and a
//! failure's alert).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::jobs::JOB_COLUMNS;
use super::outcomes::insert_outcomes;
use super::{Job, Store, StoreError, insert_job_alert, secs};
use crate::alert::NewAlert;
use crate::outcome::{CloudSourceName, OutcomeMessage};

/// What `finish` writes for a joiner's success when the cloud confirmation is on.
#[derive(Debug, Clone, Copy)]
pub struct WatchPolicy {
    pub source: CloudSourceName,
    /// From the success to the first check.
    pub first_check: Duration,
    /// From the success to the cloud failure.
    pub deadline: Duration,
}

/// A claimed watch and the job it confirms.
#[derive(Debug, Clone)]
pub struct Watch {
    pub job: Job,
    /// The sAMAccountName AD showed at the success.
    pub sam_account_name: String,
    pub object_guid: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// Checks so far, this one included.
    pub checks: i32,
    /// The database's clock is past the deadline.
    pub past_deadline: bool,
}

/// A watch that goes on: when to look again and what this check saw.
#[derive(Debug, Clone)]
pub struct WatchNext {
    pub job_id: Uuid,
    pub wait: Duration,
    pub seen: String,
    /// False for a wait Microsoft stated (throttling): the claim's check is given back.
    pub counted: bool,
}

/// A watch that ends with its second outcome (and, for a failure, its alert).
#[derive(Debug, Clone)]
pub struct WatchEnd<'a> {
    pub job: &'a Job,
    pub message: OutcomeMessage,
    pub alert: Option<NewAlert>,
}

/// The watches as the dashboard and `/metrics` count them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CloudWatchCounts {
    /// Unresolved, before their deadline.
    pub waiting: i64,
    /// Unresolved past their deadline (no replica has checked them since).
    pub overdue: i64,
    pub confirmed: i64,
    pub failed: i64,
    /// When the oldest unresolved watch started.
    pub oldest: Option<DateTime<Utc>>,
}

/// One watch row of a job, for the job page.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CloudWatchRow {
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    pub next_check_at: DateTime<Utc>,
    pub checks: i32,
    pub last_seen: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub result: Option<String>,
}

type ClaimedRow = (
    Uuid,
    String,
    Option<Uuid>,
    DateTime<Utc>,
    DateTime<Utc>,
    i32,
    bool,
);

impl Store {
    /// Claims up to `n` due watches for `replica` under a lease of `lease`.
    pub async fn claim_watches(
        &self,
        replica: &str,
        n: i64,
        lease: Duration,
    ) -> Result<Vec<Watch>, StoreError> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE cloud_watches w
                SET locked_by = $1, locked_until = now() + make_interval(secs => $3),
                    checks = w.checks + 1
               FROM (SELECT job_id FROM cloud_watches
                      WHERE resolved_at IS NULL AND next_check_at <= now()
                        AND (locked_until IS NULL OR locked_until < now())
                      ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED) d
              WHERE w.job_id = d.job_id
          RETURNING w.job_id, w.account, w.object_guid, w.created_at, w.deadline_at, w.checks,
                    now() >= w.deadline_at",
        )
        .bind(replica)
        .bind(n)
        .bind(secs(lease))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
        let jobs: Vec<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, sam, guid, created, deadline, checks, past)| {
                let job = jobs.iter().find(|j| j.id == id)?.clone();
                Some(Watch {
                    job,
                    sam_account_name: sam,
                    object_guid: guid,
                    created_at: created,
                    deadline_at: deadline,
                    checks,
                    past_deadline: past,
                })
            })
            .collect())
    }

    /// Gives watches back to be checked again after their wait (never later than their
    /// deadline, so the failure comes on time; a watch already past it is checked again
    /// after the wait), if `replica` still holds them.
    pub async fn watch_again(&self, replica: &str, next: &[WatchNext]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE cloud_watches w
                SET next_check_at = CASE WHEN w.deadline_at > now()
                                         THEN least(now() + make_interval(secs => u.wait), w.deadline_at)
                                         ELSE now() + make_interval(secs => u.wait) END,
                    last_seen = u.seen, locked_by = NULL, locked_until = NULL,
                    checks = w.checks - CASE WHEN u.counted THEN 0 ELSE 1 END
               FROM unnest($1::uuid[], $2::float8[], $3::text[], $5::bool[])
                    AS u(id, wait, seen, counted)
              WHERE w.job_id = u.id AND w.locked_by = $4 AND w.resolved_at IS NULL",
        )
        .bind(next.iter().map(|n| n.job_id).collect::<Vec<_>>())
        .bind(next.iter().map(|n| secs(n.wait)).collect::<Vec<_>>())
        .bind(next.iter().map(|n| n.seen.as_str()).collect::<Vec<_>>())
        .bind(replica)
        .bind(next.iter().map(|n| n.counted).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends watches `replica` still holds: each marked resolved with its outcome row (and
    /// alert) in one transaction. Returns how many it ended.
    pub async fn end_watches(
        &self,
        replica: &str,
        ends: &[WatchEnd<'_>],
    ) -> Result<usize, StoreError> {
        if ends.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let held: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE cloud_watches w
                SET resolved_at = now(), result = u.result, locked_by = NULL, locked_until = NULL
               FROM unnest($1::uuid[], $2::text[]) AS u(id, result)
              WHERE w.job_id = u.id AND w.locked_by = $3 AND w.resolved_at IS NULL
          RETURNING w.job_id",
        )
        .bind(ends.iter().map(|e| e.job.id).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.message.result).collect::<Vec<_>>())
        .bind(replica)
        .fetch_all(&mut *tx)
        .await?;
        let kept: Vec<&WatchEnd<'_>> = ends.iter().filter(|e| held.contains(&e.job.id)).collect();
        let rows: Vec<(&Job, OutcomeMessage)> =
            kept.iter().map(|e| (e.job, e.message.clone())).collect();
        insert_outcomes(&mut tx, &rows, self.channels).await?;
        for e in &kept {
            if let Some(alert) = &e.alert {
                insert_job_alert(&mut tx, e.job.id, alert).await?;
            }
        }
        tx.commit().await?;
        Ok(kept.len())
    }

    /// The watches counted for the dashboard and `/metrics`.
    pub async fn cloud_watch_counts(&self) -> Result<CloudWatchCounts, StoreError> {
        let (waiting, overdue, confirmed, failed, oldest): (
            i64,
            i64,
            i64,
            i64,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE resolved_at IS NULL AND deadline_at > now()),
                    count(*) FILTER (WHERE resolved_at IS NULL AND deadline_at <= now()),
                    count(*) FILTER (WHERE result = $1),
                    count(*) FILTER (WHERE result = $2),
                    min(created_at) FILTER (WHERE resolved_at IS NULL)
               FROM cloud_watches",
        )
        .bind(crate::outcome::OutcomeResult::CloudConfirmed)
        .bind(crate::outcome::OutcomeResult::CloudFailed)
        .fetch_one(&self.pool)
        .await?;
        Ok(CloudWatchCounts {
            waiting,
            overdue,
            confirmed,
            failed,
            oldest,
        })
    }

    /// The job's cloud watch, if it has one.
    pub async fn cloud_watch(&self, job_id: Uuid) -> Result<Option<CloudWatchRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT source, created_at, deadline_at, next_check_at, checks, last_seen,
                    resolved_at, result
               FROM cloud_watches WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?)
    }
}
