//! SQL for `mailboxd bench queue`: the reference loop that mailboxd's claim-and-finish is
//! measured against, and resetting the bench database between runs.

use super::{Store, StoreError};
use crate::job::JobState;

impl Store {
    /// Empties the job tables (bench databases only).
    pub(crate) async fn bench_reset(&self) -> Result<(), StoreError> {
        sqlx::query("TRUNCATE jobs, job_attempts, alerts, exchange_session_slots, exchange_throttle_events, exchange_learned_limit CASCADE")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts every job back to `queued`, for the reference loop to work through.
    pub(crate) async fn bench_requeue(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET state = $1, locked_by = NULL, locked_until = NULL,
                    finished_at = NULL, attempt = 0, next_attempt_at = now()",
        )
        .bind(JobState::Queued)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The ceiling: the plainest Postgres queue step, `UPDATE … WHERE id IN (SELECT … FOR
    /// UPDATE SKIP LOCKED) RETURNING id`, completing up to `batch` jobs in one statement.
    pub(crate) async fn bench_plain_step(&self, batch: i64) -> Result<u64, StoreError> {
        // The state it takes is in the text, as in the claim, for the partial index.
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = $2, finished_at = now()
              WHERE id IN (SELECT id FROM jobs WHERE state = '{queued}'
                            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            queued = JobState::Queued
        )))
        .bind(batch)
        .bind(JobState::Succeeded)
        .fetch_all(&self.pool)
        .await?;
        Ok(r.len() as u64)
    }

    /// The ceiling for ingest: the same job rows as the intake writes, inserted with plain
    /// batched `INSERT … SELECT FROM unnest` (no dedup, no advisory lock, no supersede).
    pub(crate) async fn bench_raw_insert(
        &self,
        events: &[crate::event::Event],
        batch: usize,
        max_attempts: i32,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in events.chunks(batch.max(1)) {
            let ids: Vec<uuid::Uuid> = chunk.iter().map(|_| uuid::Uuid::new_v4()).collect();
            let event_ids: Vec<&str> = chunk.iter().map(|e| e.id.as_str()).collect();
            let kinds: Vec<_> = chunk.iter().map(|e| e.kind).collect();
            let accounts: Vec<String> = chunk.iter().map(|e| e.account.name_key()).collect();
            let payloads: Vec<serde_json::Value> = chunk
                .iter()
                .map(|e| serde_json::to_value(e).unwrap_or_default())
                .collect();
            let occurred: Vec<chrono::DateTime<chrono::Utc>> =
                chunk.iter().map(|e| e.occurred_at).collect();
            let r = sqlx::query(
                "INSERT INTO jobs (id, event_id, kind, account, payload, state, max_attempts, occurred_at)
                 SELECT id, event_id, kind, account, payload, $8, $7, occurred_at
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
                        AS u(id, event_id, kind, account, payload, occurred_at)",
            )
            .bind(&ids)
            .bind(&event_ids)
            .bind(&kinds)
            .bind(&accounts)
            .bind(&payloads)
            .bind(&occurred)
            .bind(max_attempts)
            .bind(JobState::Queued)
            .execute(&self.pool)
            .await?;
            n += r.rows_affected();
        }
        Ok(n)
    }

    /// `bench scrape`'s history, set-based: jobs `from..to` (distinct accounts), spread
    /// evenly over the last 29 days at any size, finished ones with an outcome row each
    /// (sent). Per 1,000: 4 % failed, 10 % superseded, 0.5 % cancelled, the rest succeeded;
    /// among the first 10,000 also 0.5 % queued, 0.2 % retrying, 0.3 % waiting for the sync
    /// (the work at hand, the same at every size).
    pub(crate) async fn bench_fill_history(&self, from: i64, to: i64) -> Result<(), StoreError> {
        const STATE: &str = "CASE WHEN g % 1000 < 40 THEN 'failed'
                                  WHEN g % 1000 < 140 THEN 'superseded'
                                  WHEN g % 1000 < 145 THEN 'cancelled'
                                  WHEN g >= 10000 THEN 'succeeded'
                                  WHEN g % 1000 < 150 THEN 'queued'
                                  WHEN g % 1000 < 152 THEN 'retrying'
                                  WHEN g % 1000 < 155 THEN 'waiting_for_sync'
                                  ELSE 'succeeded' END";
        // Four ways to fail, none naming the account or a number: each is its own signature.
        const ERRORS: &str = "'mailbox not found', 'the proxy address is already being used', \
                              'the user is not licensed for Exchange Online', \
                              'Exchange refused the session: access denied'";
        let step = 100_000;
        let mut lo = from;
        while lo < to {
            let hi = (lo + step).min(to);
            let sql = format!(
                "INSERT INTO jobs (id, event_id, kind, account, payload, state, max_attempts,
                                   attempt, occurred_at, created_at, updated_at, finished_at,
                                   last_error, last_error_class, error_signature)
                 SELECT gen_random_uuid(), 'bench-' || g, 'joiner', 'bench' || g,
                        jsonb_build_object('id', gen_random_uuid(), 'type', 'joiner',
                                           'source', 'bench', 'occurred_at', t,
                                           'account', jsonb_build_object('sam_account_name',
                                                                         'bench' || g)),
                        s, 3, 1, t, t, t + d,
                        CASE WHEN s IN ('succeeded', 'failed', 'superseded', 'cancelled')
                             THEN t + d END,
                        CASE WHEN s = 'failed' THEN e END,
                        CASE WHEN s = 'failed' THEN 'permanent' END,
                        CASE WHEN s = 'failed' THEN e ELSE '' END
                   FROM generate_series($1::bigint, $2::bigint - 1) AS g,
                        LATERAL (SELECT {STATE} AS s,
                                        now() - (g * 7919 % (29 * 86400)) * interval '1 second' AS t,
                                        (g % 120) * interval '1 second' AS d,
                                        (ARRAY[{ERRORS}])[1 + g % 4] AS e) x"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(lo)
                .bind(hi)
                .execute(&self.pool)
                .await?;
            sqlx::query(
                "INSERT INTO outcomes (id, job_id, account, event_id, result, routing_key, body,
                                       created_at, sent_at, delivered)
                 SELECT gen_random_uuid(), j.id, j.account, j.event_id, j.state,
                        'joiner.' || j.state, '{}'::jsonb, j.finished_at, j.finished_at, 'exchange'
                   FROM jobs j
                  WHERE j.event_id = ANY(SELECT 'bench-' || g
                                           FROM generate_series($1::bigint, $2::bigint - 1) g)
                    AND j.finished_at IS NOT NULL",
            )
            .bind(lo)
            .bind(hi)
            .execute(&self.pool)
            .await?;
            lo = hi;
        }
        Ok(())
    }

    /// Fresh planner statistics after a fill, as autovacuum would gather them.
    pub(crate) async fn bench_analyze(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE").execute(&self.pool).await?;
        Ok(())
    }
}
