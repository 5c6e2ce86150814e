//! Failure groups: failed and retrying jobs by error class and error signature, as the jobs
//! table's triggers count them (migration 0025), with each group's details read through its
//! partial index. A view costs a few rows per group however much history the table holds.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::job::{ErrorClass, JobState};

/// Jobs a group's account list is read from (the newest), so that a group of 40,000 jobs
/// does not read them all to name a dozen accounts.
const ACCOUNT_SCAN: i64 = 60;

/// The jobs that fail the same way, as the store counts them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailureGroup {
    pub class: Option<ErrorClass>,
    /// `alert::signature` of the error: what differs between accounts left out.
    pub signature: String,
    pub failed: i64,
    pub retrying: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The newest job's error in full.
    pub example: String,
    /// The accounts of the group's newest jobs, newest first, at most the number asked for.
    pub accounts: Vec<String>,
}

/// The groups with their details. `class` and `signature` are '' where the job has none
/// (see the migration), so `=` and the index serve every group.
static GROUPS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH g AS (
            SELECT class, signature,
                   coalesce(sum(n) FILTER (WHERE state = '{failed}'), 0)::bigint AS failed,
                   coalesce(sum(n) FILTER (WHERE state = '{retrying}'), 0)::bigint AS retrying
              FROM failure_group_counts GROUP BY 1, 2 HAVING sum(n) > 0)
         SELECT nullif(g.class, '') AS class, g.signature, g.failed, g.retrying,
                oldest.updated_at AS first_seen, newest.updated_at AS last_seen,
                coalesce(newest.last_error, '') AS example,
                ARRAY(SELECT a.account
                        FROM (SELECT j.account, max(j.updated_at) AS at
                                FROM (SELECT j.account, j.updated_at FROM jobs j
                                       WHERE {member} ORDER BY {order} DESC LIMIT {scan}) j
                               GROUP BY j.account) a
                       ORDER BY a.at DESC, a.account LIMIT $1) AS accounts
           FROM g
           JOIN LATERAL (SELECT j.updated_at, j.last_error FROM jobs j
                          WHERE {member} ORDER BY {order} DESC LIMIT 1) newest ON true
           JOIN LATERAL (SELECT j.updated_at FROM jobs j
                          WHERE {member} ORDER BY {order} LIMIT 1) oldest ON true
          ORDER BY g.failed + g.retrying DESC, newest.updated_at DESC, g.signature",
        failed = JobState::Failed,
        retrying = JobState::Retrying,
        scan = ACCOUNT_SCAN,
        // The partial index's predicate and key, in its own words.
        member = format!(
            "j.state IN ('{}', '{}') AND coalesce(j.last_error_class, '') = g.class \
             AND j.error_signature = g.signature",
            JobState::Failed,
            JobState::Retrying
        ),
        order = "coalesce(j.last_error_class, ''), j.error_signature, j.updated_at",
    )
});

/// Failed or retrying jobs whose error was written without its signature (by a replica from
/// before migration 0025): signed a thousand at a time.
static UNSIGNED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT id, account, last_error FROM jobs
          WHERE state IN ('{}', '{}') AND error_signature = '' AND coalesce(last_error, '') <> ''
          LIMIT 1000",
        JobState::Failed,
        JobState::Retrying
    )
});

impl Store {
    /// Every failure group, the largest first (then the most recently seen), each naming
    /// the accounts of its newest jobs (at most `accounts`).
    pub async fn failure_groups(&self, accounts: i64) -> Result<Vec<FailureGroup>, StoreError> {
        self.fold_failure_groups().await?;
        Ok(sqlx::query_as(GROUPS.as_str())
            .bind(accounts)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Folds the changes the triggers appended into one row per group and state (as
    /// `fold_job_counts` does for the states).
    async fn fold_failure_groups(&self) -> Result<(), StoreError> {
        sqlx::query(
            "WITH moved AS (DELETE FROM failure_group_counts RETURNING class, signature, state, n)
             INSERT INTO failure_group_counts (class, signature, state, n)
             SELECT class, signature, state, sum(n) FROM moved GROUP BY 1, 2, 3
             HAVING sum(n) <> 0",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives the failed and retrying jobs whose error has no signature yet (written before
    /// migration 0025, or by an older replica during a rolling upgrade) theirs, so that they
    /// join their group. Returns how many. Run at start; cheap when there are none.
    pub async fn sign_failures(&self) -> Result<u64, StoreError> {
        let mut signed = 0;
        loop {
            let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(UNSIGNED.as_str())
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                return Ok(signed);
            }
            let (ids, signatures): (Vec<Uuid>, Vec<String>) = rows
                .iter()
                .map(|(id, account, error)| (*id, error_signature(error.as_deref(), account)))
                .filter(|(_, signature)| !signature.is_empty())
                .unzip();
            if ids.is_empty() {
                return Ok(signed);
            }
            let r = sqlx::query(
                "UPDATE jobs SET error_signature = u.signature
                   FROM unnest($1::uuid[], $2::text[]) AS u(id, signature)
                  WHERE jobs.id = u.id AND jobs.error_signature = ''",
            )
            .bind(&ids)
            .bind(&signatures)
            .execute(&self.pool)
            .await?;
            signed += r.rows_affected();
            if r.rows_affected() == 0 {
                // Someone else signed them meanwhile, or their error changed: done either way.
                return Ok(signed);
            }
        }
    }
}

/// What `jobs.error_signature` holds for a job's last error: '' for none.
pub(crate) fn error_signature(error: Option<&str>, account: &str) -> String {
    error.map_or_else(String::new, |e| crate::alert::signature(e, account))
}
