//! SQL of reconciliation: which accounts already have work pending, the one-replica-at-a-time
//! lock, and the record of each run.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use super::{Store, StoreError};
use crate::job::{JobState, JobStep};

/// Advisory lock key for "a reconciliation is running" (any stable number of our own).
const RECONCILE_LOCK: i64 = 0x6d62_7864_7263; // "mbxdrc"

/// Held while this replica reconciles; `release` gives the lock back.
pub(crate) struct ReconcileLock {
    conn: PoolConnection<Postgres>,
}

impl ReconcileLock {
    pub(crate) async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(RECONCILE_LOCK)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileRun {
    pub id: i64,
    pub replica: String,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub domain_controller: Option<String>,
    pub scanned: i32,
    pub differences: i32,
    pub by_kind: serde_json::Value,
    pub sample: serde_json::Value,
    pub jobs_created: i32,
    pub skipped_pending: i32,
    pub capped: bool,
    pub error: Option<String>,
}

/// What a finished run records.
pub(crate) struct RunRecord<'a> {
    pub domain_controller: Option<&'a str>,
    pub scanned: i32,
    pub differences: i32,
    pub by_kind: serde_json::Value,
    pub sample: serde_json::Value,
    pub jobs_created: i32,
    pub skipped_pending: i32,
    pub capped: bool,
    pub error: Option<&'a str>,
}

impl Store {
    /// Takes the reconcile lock if no other replica holds it.
    pub(crate) async fn try_reconcile_lock(&self) -> Result<Option<ReconcileLock>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RECONCILE_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(ReconcileLock { conn }))
    }

    /// The account keys among `keys` that have a job not yet finished. A job's key is
    /// `coalesce(account_guid::text, account)` (migration 0023, its `jobs_account_key`
    /// index): the objectGUID once known, else the lower-cased name its event used.
    pub(crate) async fn accounts_with_unfinished_jobs(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT coalesce(account_guid::text, account) FROM jobs
              WHERE coalesce(account_guid::text, account) = ANY($1) AND state = ANY($2)",
        )
        .bind(keys)
        .bind(&JobState::UNFINISHED[..])
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Start dates whose day has come and whose step did not make the mailbox visible: the
    /// account's step (`make_visible`) ended failed or cancelled, is past its start instant,
    /// and no other job of the account is newer or unfinished. Account key → the step's id.
    pub(crate) async fn overdue_start_steps(
        &self,
    ) -> Result<std::collections::HashMap<String, uuid::Uuid>, StoreError> {
        let rows: Vec<(String, uuid::Uuid)> = sqlx::query_as(
            "SELECT DISTINCT ON (s.account) s.account, s.id FROM jobs s
              WHERE s.step = $1 AND s.state = ANY($2) AND s.next_attempt_at <= now()
                AND NOT EXISTS (SELECT 1 FROM jobs n
                                 WHERE n.account = s.account AND n.id <> s.id
                                   AND (n.occurred_at > s.occurred_at OR n.state = ANY($3)))
              ORDER BY s.account, s.occurred_at DESC",
        )
        .bind(JobStep::MakeVisible)
        .bind([JobState::Failed, JobState::Cancelled])
        .bind(&JobState::UNFINISHED[..])
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    pub(crate) async fn start_reconcile_run(
        &self,
        replica: &str,
        dry_run: bool,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO reconcile_runs (replica, dry_run) VALUES ($1, $2) RETURNING id",
        )
        .bind(replica)
        .bind(dry_run)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) async fn finish_reconcile_run(
        &self,
        id: i64,
        r: &RunRecord<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reconcile_runs SET finished_at = now(), domain_controller = $2, scanned = $3,
                    differences = $4, by_kind = $5, sample = $6, jobs_created = $7,
                    skipped_pending = $8, capped = $9, error = $10
              WHERE id = $1",
        )
        .bind(id)
        .bind(r.domain_controller)
        .bind(r.scanned)
        .bind(r.differences)
        .bind(&r.by_kind)
        .bind(&r.sample)
        .bind(r.jobs_created)
        .bind(r.skipped_pending)
        .bind(r.capped)
        .bind(r.error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_reconcile_runs(&self, limit: i64) -> Result<Vec<ReconcileRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, replica, dry_run, started_at, finished_at, domain_controller, scanned,
                    differences, by_kind, sample, jobs_created, skipped_pending, capped, error
               FROM reconcile_runs ORDER BY started_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReconcileRun {
                    id: r.try_get("id")?,
                    replica: r.try_get("replica")?,
                    dry_run: r.try_get("dry_run")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    domain_controller: r.try_get("domain_controller")?,
                    scanned: r.try_get("scanned")?,
                    differences: r.try_get("differences")?,
                    by_kind: r.try_get("by_kind")?,
                    sample: r.try_get("sample")?,
                    jobs_created: r.try_get("jobs_created")?,
                    skipped_pending: r.try_get("skipped_pending")?,
                    capped: r.try_get("capped")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}
