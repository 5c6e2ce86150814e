//! Operator actions: retry or cancel one job, retry many, each recorded in
//! `operator_actions` (who did what, when) in the transaction that did it; a cancel's
//! outcome message too.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::outcomes::insert_outcomes_of;
use super::{JobFilter, Store, StoreError};
use crate::job::{ActionKind, JobState};
use crate::outcome::OutcomeResult;

/// One operator action on a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OperatorAction {
    pub action: ActionKind,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub detail: Option<String>,
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRefused {
    NotFound,
    WrongState(JobState),
}

/// What a retry writes on a job: due now, with a fresh set of attempts.
pub(super) const REQUEUE: &str =
    "state = $2, next_attempt_at = now(), attempt = 0, finished_at = NULL, updated_at = now()";

impl Store {
    /// Operator retry: a failed, cancelled, retrying or waiting job runs again now, with a
    /// fresh set of attempts; a scheduled step runs now, before its time.
    pub async fn retry_job(
        &self,
        id: Uuid,
        actor: &str,
    ) -> Result<Result<(), ActionRefused>, StoreError> {
        let sql = format!("UPDATE jobs SET {REQUEUE} WHERE id = $1 AND state = ANY($3)");
        self.operator_update(
            id,
            actor,
            ActionKind::Retry,
            &sql,
            JobState::Queued,
            &JobState::RUNNABLE_NOW,
        )
        .await
    }

    /// Operator cancel: a job that has not run to its end stops here.
    pub async fn cancel_job(
        &self,
        id: Uuid,
        actor: &str,
    ) -> Result<Result<(), ActionRefused>, StoreError> {
        let sql = "UPDATE jobs SET state = $2, finished_at = now(), updated_at = now()
                    WHERE id = $1 AND state = ANY($3)";
        self.operator_update(
            id,
            actor,
            ActionKind::Cancel,
            sql,
            JobState::Cancelled,
            &JobState::CLAIMABLE,
        )
        .await
    }

    /// Bulk retry: every failed or cancelled job matching the filter is queued again (at
    /// most `filter.limit`, the filter's states narrowed to those two), each one recorded
    /// as an operator action. Returns their ids.
    pub(crate) async fn retry_matching(
        &self,
        filter: &JobFilter,
        actor: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut q = sqlx::QueryBuilder::new("SELECT id FROM jobs");
        filter.push_where(&mut q);
        q.push(" AND state = ANY(")
            .push_bind(&[JobState::Failed, JobState::Cancelled][..])
            .push(") ORDER BY updated_at LIMIT ")
            .push_bind(filter.limit)
            .push(" FOR UPDATE SKIP LOCKED");
        let picked: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *tx).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET {REQUEUE} WHERE id = ANY($1) RETURNING id"
        )))
        .bind(&picked)
        .bind(JobState::Queued)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO operator_actions (job_id, action, actor, detail)
             SELECT id, $3, $2, 'bulk retry' FROM unnest($1::uuid[]) AS id",
        )
        .bind(&ids)
        .bind(actor)
        .bind(ActionKind::Retry)
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

    /// Runs `sql` (`$1` the job, `$2` its new state, `$3` the states it may be in) and
    /// records the action if it moved the job; otherwise says why not.
    async fn operator_update(
        &self,
        id: Uuid,
        actor: &str,
        action: ActionKind,
        sql: &str,
        to: JobState,
        from: &[JobState],
    ) -> Result<Result<(), ActionRefused>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(to)
            .bind(from)
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
            // A cancel answers the event: its outcome is written with it.
            if let Some(result) = OutcomeResult::of(to) {
                insert_outcomes_of(&mut tx, &[id], result, self.channels).await?;
            }
            tx.commit().await?;
            return Ok(Ok(()));
        }
        tx.rollback().await?;
        let state: Option<JobState> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Err(match state {
            Some(s) => ActionRefused::WrongState(s),
            None => ActionRefused::NotFound,
        }))
    }
}
