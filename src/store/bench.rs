//! SQL for `mailboxd bench queue`: the reference loop that mailboxd's claim-and-finish is
//! measured against, and resetting the bench database between runs.

use super::{Store, StoreError};

impl Store {
    /// Empties the job tables (bench databases only).
    pub async fn bench_reset(&self) -> Result<(), StoreError> {
        sqlx::query("TRUNCATE jobs, job_attempts, alerts CASCADE")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts every job back to `queued`, for the reference loop to work through.
    pub async fn bench_requeue(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'queued', locked_by = NULL, locked_until = NULL,
                    finished_at = NULL, attempt = 0, next_attempt_at = now()",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The ceiling: the plainest Postgres queue step, `UPDATE … WHERE id IN (SELECT … FOR
    /// UPDATE SKIP LOCKED) RETURNING id`, completing up to `batch` jobs in one statement.
    pub async fn bench_plain_step(&self, batch: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', finished_at = now()
              WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'
                            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id",
        )
        .bind(batch)
        .fetch_all(&self.pool)
        .await?;
        Ok(r.len() as u64)
    }
}
