//! A job re-keyed on its account's objectGUID once the worker has read the account in AD
//! (docs/decisions.md, "One account, whichever name the event uses"). Intake keys a job on
//! what the event gives — the objectGUID, or else the name it used — without asking AD, so
//! intake never waits for a domain controller; the first read tells the worker which account
//! the name stands for, and from then on the job is keyed on that objectGUID. Re-keying joins
//! it to the account's other jobs, and the rules of an insert hold again in that moment:
//! latest intent wins (it is superseded by a newer job of the account, or supersedes the
//! older pending ones), and at most one job of the account runs (it waits for the running
//! one, without using an attempt).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::insert::lock_accounts;
use crate::job::{AttemptEnd, ErrorClass, JobState};
use crate::outcome::OutcomeResult;
use crate::store::outcomes::insert_outcomes_of;
use crate::store::{Store, StoreError};

/// What re-keying a running job on its account's objectGUID came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Keyed on the objectGUID (or it was already): the job goes on.
    Keyed,
    /// A newer job of the account (under any name) is stored: this one is superseded by it,
    /// with its outcome, and the attempt is not counted.
    Superseded(Uuid),
    /// Another job of the account is running: this one waits for it (retrying, due at once,
    /// claimed when that one has ended), the attempt recorded as deferred and not counted.
    Busy,
    /// The job is no longer this replica's (its lease was rescued): nothing was changed.
    NotHeld,
}

/// Why a job was given back to wait for another job of its account.
const BUSY: &str = "another job of the same account (named differently by its event) is running; this one runs after it";

/// The jobs of a batch that the worker's first read keyed on an objectGUID, where nothing
/// else of that account is pending, running or newer: keyed in one statement. The rest go
/// through [`Store::resolve_account`], one transaction each. `$5` the running state,
/// `$6` the intended states, `$7` the claimable ones. The running state is also in the
/// text where a running job of a name is looked for: with a parameter there, the cached
/// generic plan cannot use the partial index on running jobs (`jobs_one_running_per_account`)
/// and read every `jobs_state` entry ever written for `running` instead, dead ones
/// included — 27,000 per account, 0.3 s a batch, in an initial load. `held` names the ids
/// outright (`= ANY($1)`), read by primary key, for the reason `FINISH` does.
static KEY_QUIET: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS i(id, guid, name))
    , held AS (
        SELECT j.id, j.occurred_at, j.account_guid, i.guid, i.name FROM jobs j JOIN input i ON i.id = j.id
         WHERE j.id = ANY($1::uuid[]) AND j.state = $5 AND j.locked_by = $4
           AND (j.account_guid IS NULL OR j.account_guid = i.guid))
    , quiet AS (
        SELECT h.id, h.guid, h.name FROM held h
         WHERE h.account_guid IS NULL
           AND NOT EXISTS (
                SELECT 1 FROM jobs o
                 WHERE coalesce(o.account_guid::text, o.account) = h.guid::text AND o.id <> h.id
                   AND ((o.state = ANY($6) AND o.occurred_at > h.occurred_at)
                        OR o.state = ANY($7) OR o.state = $5))
           AND NOT EXISTS (
                SELECT 1 FROM jobs o WHERE o.account = h.name AND o.id <> h.id AND o.state = '{running}')
           AND (SELECT count(*) FROM input i WHERE i.guid = h.guid) = 1)
    , keyed AS (
        UPDATE jobs SET account_guid = q.guid, account = q.name, updated_at = now()
          FROM quiet q WHERE jobs.id = q.id
        RETURNING jobs.id)
    SELECT id FROM keyed
    UNION ALL
    SELECT id FROM held WHERE account_guid = guid",
        running = JobState::Running
    )
});

impl Store {
    /// [`Store::resolve_account`] for a batch, `(job, objectGUID, sAMAccountName)` each: the
    /// jobs it keyed (or that were keyed already) in one transaction with intake's inserts
    /// of those keys held off. The others (another job of the account pending, running or
    /// newer; two jobs of the batch on one account; a lease lost) are left to
    /// `resolve_account`, which decides each by the rules of an insert. A batch of joiners
    /// named by sAMAccountName alone, the common case, costs one transaction here instead of
    /// one per job.
    pub async fn key_quiet_accounts(
        &self,
        replica: &str,
        jobs: &[(Uuid, Uuid, &str)],
    ) -> Result<Vec<Uuid>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.0).collect();
        let guids: Vec<Uuid> = jobs.iter().map(|j| j.1).collect();
        let names: Vec<String> = jobs.iter().map(|j| j.2.to_lowercase()).collect();
        let keys: Vec<String> = guids.iter().map(Uuid::to_string).collect();
        let mut tx = self.pool.begin().await?;
        lock_accounts(&mut tx, &keys).await?;
        let keyed = sqlx::query_scalar(KEY_QUIET.as_str())
            .bind(&ids)
            .bind(&guids)
            .bind(&names)
            .bind(replica)
            .bind(JobState::Running)
            .bind(&JobState::INTENDED[..])
            .bind(&JobState::CLAIMABLE[..])
            .fetch_all(&mut *tx)
            .await;
        match keyed {
            Ok(keyed) => {
                tx.commit().await?;
                Ok(keyed)
            }
            // A claim elsewhere took a job of one of these names meanwhile (the unique index
            // on running jobs): leave them all to `resolve_account`, which sees it.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys `job`, running under `replica`'s lease, on `guid`, the objectGUID AD showed for
    /// the account its event named, and shows it under `sam` (AD's sAMAccountName) from
    /// then on. One transaction, serialised with intake's inserts for the same key.
    pub async fn resolve_account(
        &self,
        job: Uuid,
        replica: &str,
        guid: Uuid,
        sam: &str,
    ) -> Result<Resolved, StoreError> {
        // A claim by another replica may take a job of the account between the check and
        // the update (the unique index on running jobs refuses the update): then again,
        // and the check sees it.
        for _ in 0..3 {
            match self.try_resolve(job, replica, guid, sam).await {
                Err(StoreError::Db(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("23505") =>
                {
                    continue;
                }
                other => return other,
            }
        }
        self.try_resolve(job, replica, guid, sam).await
    }

    async fn try_resolve(
        &self,
        job: Uuid,
        replica: &str,
        guid: Uuid,
        sam: &str,
    ) -> Result<Resolved, StoreError> {
        let key = guid.to_string();
        let mut tx = self.pool.begin().await?;
        lock_accounts(&mut tx, std::slice::from_ref(&key)).await?;
        let held: Option<(DateTime<Utc>, Option<Uuid>)> = sqlx::query_as(
            "SELECT occurred_at, account_guid FROM jobs
              WHERE id = $1 AND state = $2 AND locked_by = $3 FOR UPDATE",
        )
        .bind(job)
        .bind(JobState::Running)
        .bind(replica)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((occurred_at, known)) = held else {
            return Ok(Resolved::NotHeld);
        };
        if known == Some(guid) {
            return Ok(Resolved::Keyed);
        }
        let answer = match newer_job(&mut tx, &key, job, occurred_at).await? {
            Some(newer) => {
                superseded(&mut tx, job, newer, guid, sam).await?;
                insert_outcomes_of(&mut tx, &[job], OutcomeResult::Superseded, self.channels)
                    .await?;
                Resolved::Superseded(newer)
            }
            None => {
                let moot = supersede_older(&mut tx, &key, job, occurred_at).await?;
                insert_outcomes_of(&mut tx, &moot, OutcomeResult::Superseded, self.channels)
                    .await?;
                rekey(&mut tx, job, replica, guid, sam).await?
            }
        };
        tx.commit().await?;
        Ok(answer)
    }
}

/// The newest job of the account `key` that carries a later intent than `occurred_at`.
async fn newer_job(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    job: Uuid,
    occurred_at: DateTime<Utc>,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM jobs
          WHERE coalesce(account_guid::text, account) = $1 AND id <> $2 AND state = ANY($3)
            AND occurred_at > $4
          ORDER BY occurred_at DESC, created_at DESC LIMIT 1",
    )
    .bind(key)
    .bind(job)
    .bind(&JobState::INTENDED[..])
    .bind(occurred_at)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The job ends superseded by `newer`, keyed on the account it turned out to be and shown
/// under AD's `sam`.
async fn superseded(
    tx: &mut Transaction<'_, Postgres>,
    job: Uuid,
    newer: Uuid,
    guid: Uuid,
    sam: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET state = $2, superseded_by = $3, account_guid = $4, account = $5,
                        locked_by = NULL, locked_until = NULL, attempt = greatest(attempt - 1, 0),
                        finished_at = now(), updated_at = now()
          WHERE id = $1",
    )
    .bind(job)
    .bind(JobState::Superseded)
    .bind(newer)
    .bind(guid)
    .bind(sam.to_lowercase())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The account's pending jobs no newer than this one are moot now (as at an insert).
async fn supersede_older(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    job: Uuid,
    occurred_at: DateTime<Utc>,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET state = $5, superseded_by = $2, finished_at = now(), updated_at = now()
          WHERE coalesce(account_guid::text, account) = $1 AND id <> $2 AND state = ANY($3)
            AND occurred_at <= $4
         RETURNING id",
    )
    .bind(key)
    .bind(job)
    .bind(&JobState::CLAIMABLE[..])
    .bind(occurred_at)
    .bind(JobState::Superseded)
    .fetch_all(&mut **tx)
    .await?)
}

/// Whether another job of the account runs. The state is in the text, for the partial
/// indexes on running jobs (see `KEY_QUIET`).
static KEY_BUSY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM jobs
                         WHERE (coalesce(account_guid::text, account) = $1 OR account = $2)
                           AND id <> $3 AND state = '{}')",
        JobState::Running
    )
});

/// Keys the job on `guid` and shows it under AD's `sam` (unless a running job holds that
/// name), running on, or given back to wait when another job of the account is running.
async fn rekey(
    tx: &mut Transaction<'_, Postgres>,
    job: Uuid,
    replica: &str,
    guid: Uuid,
    sam: &str,
) -> Result<Resolved, StoreError> {
    let name = sam.to_lowercase();
    let busy: bool = sqlx::query_scalar(KEY_BUSY.as_str())
        .bind(guid.to_string())
        .bind(&name)
        .bind(job)
        .fetch_one(&mut **tx)
        .await?;
    if !busy {
        sqlx::query(
            "UPDATE jobs SET account_guid = $2, account = $3, updated_at = now() WHERE id = $1",
        )
        .bind(job)
        .bind(guid)
        .bind(&name)
        .execute(&mut **tx)
        .await?;
        return Ok(Resolved::Keyed);
    }
    sqlx::query(
        "WITH noted AS (
            INSERT INTO job_attempts (job_id, attempt, replica, started_at, outcome, error_class, error_message)
            SELECT id, attempt, $2, coalesce(started_at, now()), $5, $6, $7 FROM jobs WHERE id = $1)
         UPDATE jobs SET state = $4, account_guid = $3, account = $8, locked_by = NULL,
                         locked_until = NULL, next_attempt_at = now(), updated_at = now(),
                         attempt = greatest(attempt - 1, 0), last_error = $7, last_error_class = $6
          WHERE id = $1",
    )
    .bind(job)
    .bind(replica)
    .bind(guid)
    .bind(JobState::Retrying)
    .bind(AttemptEnd::Deferred)
    .bind(ErrorClass::Transient)
    .bind(BUSY)
    .bind(&name)
    .execute(&mut **tx)
    .await?;
    Ok(Resolved::Busy)
}
