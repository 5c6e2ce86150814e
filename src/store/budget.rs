//! The cluster-wide Exchange session budget (migration 0007): slots `0 .. max` claimed
//! under a lease with `FOR UPDATE SKIP LOCKED`, renewed by the holder's heartbeat,
//! released with a NOTIFY that wakes the replicas waiting for one, and Exchange's
//! throttling refusals counted for the whole cluster.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Store, StoreError, WakeUps, secs};
use crate::budget::slot::SlotPurpose;

/// The channel a released slot notifies.
pub(super) const SLOTS_CHANNEL: &str = "mailboxd_session_slots";

/// What the budget looks like now, for `/readyz`, the dashboard, metrics and `check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetUse {
    /// Slots held under a live lease, by any replica.
    pub in_use: i64,
    /// Replicas holding at least one slot.
    pub holders: i64,
    /// Exchange's refusals over the last 15 minutes, all replicas.
    pub throttled_recently: i64,
    pub last_throttled_at: Option<DateTime<Utc>>,
    /// The session limit Exchange stated in a refusal, in force below the configured
    /// `exchange.max_sessions` (None: the configured value holds).
    pub learned_max_sessions: Option<i32>,
    pub learned_at: Option<DateTime<Utc>>,
}

/// Slots a replica may use: its configured `max` ($n), or fewer when Exchange stated a lower
/// limit (migration 0013). In the look-up itself, so every replica adopts it at once.
const SLOT_CAP: &str =
    "least($4, coalesce((SELECT max_sessions FROM exchange_learned_limit WHERE id), $4))";

impl Store {
    /// Makes sure slots `0 .. max` exist (replicas with a smaller `max` ignore the rest).
    pub(crate) async fn ensure_session_slots(&self, max: u32) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO exchange_session_slots (slot)
             SELECT generate_series(0, $1 - 1) ON CONFLICT DO NOTHING",
        )
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes a free slot below `max` (or one whose lease ran out) as `lease` for `holder`;
    /// `None` when all are held.
    pub(crate) async fn acquire_session_slot(
        &self,
        holder: &str,
        lease: Uuid,
        purpose: SlotPurpose,
        max: u32,
        lease_for: Duration,
    ) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE exchange_session_slots s
                SET holder = $1, lease = $2, purpose = $3, acquired_at = now(),
                    leased_until = now() + make_interval(secs => $5)
              WHERE s.slot = (
                    SELECT slot FROM exchange_session_slots
                     WHERE slot < {SLOT_CAP} AND (holder IS NULL OR leased_until < now())
                     ORDER BY slot LIMIT 1
                     FOR UPDATE SKIP LOCKED)
             RETURNING s.slot"
        )))
        .bind(holder)
        .bind(lease)
        .bind(purpose)
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .bind(secs(lease_for))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Extends the given holdings (the heartbeat); returns how many were still held.
    pub(crate) async fn renew_session_slots(
        &self,
        leases: &[Uuid],
        lease_for: Duration,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE exchange_session_slots
                SET leased_until = now() + make_interval(secs => $2)
              WHERE lease = ANY($1)",
        )
        .bind(leases)
        .bind(secs(lease_for))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Frees one holding and wakes the replicas waiting for a slot.
    pub(crate) async fn release_session_slot(&self, lease: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "WITH freed AS (
                UPDATE exchange_session_slots
                   SET holder = NULL, lease = NULL, purpose = NULL, leased_until = NULL
                 WHERE lease = $1 RETURNING slot)
             SELECT pg_notify($2, slot::text) FROM freed",
        )
        .bind(lease)
        .bind(SLOTS_CHANNEL)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records one throttling refusal by Exchange.
    pub async fn record_throttled(
        &self,
        replica: &str,
        wait: Option<Duration>,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO exchange_throttle_events (replica, wait_ms, message) VALUES ($1, $2, $3)",
        )
        .bind(replica)
        .bind(wait.map(|w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX)))
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Exchange refused a session, which says it allows `max`: every replica uses at most
    /// that many slots from its next look-up on. With `settled`, only if the limit in force
    /// was not learned or raised within it. Returns whether this changed the limit in force.
    pub(crate) async fn learn_session_limit(
        &self,
        max: u32,
        replica: &str,
        message: &str,
        settled: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO exchange_learned_limit (max_sessions, replica, message)
             VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE
                SET max_sessions = excluded.max_sessions, learned_at = now(), raised_at = NULL,
                    replica = excluded.replica, message = excluded.message
              WHERE (exchange_learned_limit.max_sessions <> excluded.max_sessions
                     OR exchange_learned_limit.raised_at IS NOT NULL)
                AND ($4::float8 IS NULL
                     OR coalesce(exchange_learned_limit.raised_at, exchange_learned_limit.learned_at)
                        < now() - make_interval(secs => $4))",
        )
        .bind(i32::try_from(max.max(1)).unwrap_or(i32::MAX))
        .bind(replica)
        .bind(message)
        .bind(settled.map(secs))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Gives Exchange one more session than it last stated, after `quiet` without a
    /// refusal; back at `configured`, the learned limit is dropped. A refusal at the raised
    /// level learns the stated limit again. Returns the limit in force afterwards, if any.
    pub async fn raise_learned_limit(
        &self,
        configured: u32,
        quiet: Duration,
    ) -> Result<Option<i32>, StoreError> {
        let configured = i32::try_from(configured).unwrap_or(i32::MAX);
        let now: Option<i32> = sqlx::query_scalar(
            "WITH quiet AS (
                SELECT 1 FROM exchange_learned_limit
                 WHERE id AND coalesce(raised_at, learned_at) < now() - make_interval(secs => $2)
                   AND NOT EXISTS (SELECT 1 FROM exchange_throttle_events
                                    WHERE at > now() - make_interval(secs => $2)))
             , raised AS (
                UPDATE exchange_learned_limit SET max_sessions = max_sessions + 1, raised_at = now()
                 WHERE id AND EXISTS (SELECT 1 FROM quiet) AND max_sessions + 1 < $1
                RETURNING max_sessions)
             , dropped AS (
                DELETE FROM exchange_learned_limit
                 WHERE id AND EXISTS (SELECT 1 FROM quiet) AND max_sessions + 1 >= $1
                RETURNING 1)
             SELECT CASE WHEN EXISTS (SELECT 1 FROM dropped) THEN NULL
                         ELSE coalesce((SELECT max_sessions FROM raised),
                                       (SELECT max_sessions FROM exchange_learned_limit WHERE id))
                    END",
        )
        .bind(configured)
        .bind(secs(quiet))
        .fetch_one(&self.pool)
        .await?;
        Ok(now.filter(|n| *n < configured))
    }

    /// Slots held under a live lease, cluster-wide.
    pub(crate) async fn held_session_slots(&self) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM exchange_session_slots
              WHERE holder IS NOT NULL AND leased_until >= now()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The budget in use now, cluster-wide.
    pub async fn budget_use(&self) -> Result<BudgetUse, StoreError> {
        let (in_use, holders): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT holder) FROM exchange_session_slots
              WHERE holder IS NOT NULL AND leased_until >= now()",
        )
        .fetch_one(&self.pool)
        .await?;
        let (throttled_recently, last_throttled_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE at > now() - interval '15 minutes'), max(at)
                   FROM exchange_throttle_events",
        )
        .fetch_one(&self.pool)
        .await?;
        let learned: Option<(i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT max_sessions, coalesce(raised_at, learned_at) FROM exchange_learned_limit WHERE id",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(BudgetUse {
            in_use,
            holders,
            throttled_recently,
            last_throttled_at,
            learned_max_sessions: learned.map(|l| l.0),
            learned_at: learned.map(|l| l.1),
        })
    }

    /// Replicas holding slots under a live lease, with how many each.
    pub async fn slot_holders(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT holder, count(*) FROM exchange_session_slots
              WHERE holder IS NOT NULL AND leased_until >= now()
              GROUP BY holder ORDER BY holder",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Starts listening for released slots.
    pub(crate) fn slot_wake_ups(&self) -> WakeUps {
        self.wake_ups_on(SLOTS_CHANNEL)
    }
}
