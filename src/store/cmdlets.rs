//! Exchange's cmdlet budget shared by every replica (migration 0010): grants of cmdlets in a
//! sliding window, taken under one transaction-scoped advisory lock so that two replicas never
//! both see room that only one of them may use; settling a grant NOTIFYs the waiters.

use std::time::Duration;

use super::{Store, StoreError, WakeUps, secs};

/// The channel a settled grant notifies.
const CMDLETS_CHANNEL: &str = "mailboxd_cmdlet_grants";

/// The advisory lock that serialises taking grants ("mbxcmdl" in ASCII).
const GRANT_LOCK: i64 = 0x006d_6278_636d_646c;

/// Grants that left the window this long ago are deleted as new ones are taken.
const KEEP_FOR: Duration = Duration::from_secs(3600);

/// What one look at the window came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdletTake {
    /// The cmdlets are taken: the grant's id, to settle it once the batch is back.
    Granted(i64),
    /// No room: enough of the window frees itself after this long (sooner when a running
    /// batch settles its grant).
    Full { room_in: Duration },
}

impl Store {
    /// Takes `cmdlets` (at most `max`) from the window of `max` if there is room, counted
    /// until `hold_for` from now unless settled sooner.
    pub async fn take_cmdlets(
        &self,
        holder: &str,
        cmdlets: u32,
        max: u32,
        hold_for: Duration,
    ) -> Result<CmdletTake, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(GRANT_LOCK)
            .execute(&mut *tx)
            .await?;
        // The grants still counting, the first to leave the window first, with the seconds
        // until each leaves.
        let live: Vec<(i64, f64)> = sqlx::query_as(
            "SELECT cmdlets::bigint, extract(epoch FROM counts_until - now())::float8
               FROM exchange_cmdlet_grants WHERE counts_until > now()
              ORDER BY counts_until",
        )
        .fetch_all(&mut *tx)
        .await?;
        let need = i64::from(cmdlets.min(max));
        let mut room = i64::from(max) - live.iter().map(|(n, _)| n).sum::<i64>();
        if need > room {
            let mut wait = 0.0;
            for (n, left) in &live {
                room += n;
                wait = *left;
                if room >= need {
                    break;
                }
            }
            return Ok(CmdletTake::Full {
                room_in: Duration::from_secs_f64(wait.max(0.0)),
            });
        }
        sqlx::query(
            "DELETE FROM exchange_cmdlet_grants
              WHERE counts_until < now() - make_interval(secs => $1)",
        )
        .bind(secs(KEEP_FOR))
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO exchange_cmdlet_grants (holder, cmdlets, counts_until)
             VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING id",
        )
        .bind(holder)
        .bind(i32::try_from(need).unwrap_or(i32::MAX))
        .bind(secs(hold_for))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CmdletTake::Granted(id))
    }

    /// Keeps a running batch's grant counting for `hold` from now (its replica's heartbeat);
    /// a settled grant is left as it is.
    pub(crate) async fn renew_cmdlets(
        &self,
        id: i64,
        hold: Duration,
        window: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE exchange_cmdlet_grants SET counts_until = now() + make_interval(secs => $2)
              WHERE id = $1 AND counts_until > now() + make_interval(secs => $3)",
        )
        .bind(id)
        .bind(secs(hold))
        .bind(secs(window))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The grant's batch is back: it counts the cmdlets that ran until `window` from now —
    /// more than it took when the batch ran a longer path than the directory predicted, so
    /// that the window holds every cmdlet Exchange counted —, and the replicas waiting for
    /// room look again.
    pub async fn settle_cmdlets(
        &self,
        id: i64,
        ran: u32,
        window: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH settled AS (
                UPDATE exchange_cmdlet_grants
                   SET cmdlets = $2,
                       counts_until = now() + make_interval(secs => $3)
                 WHERE id = $1 RETURNING id)
             SELECT pg_notify($4, id::text) FROM settled",
        )
        .bind(id)
        .bind(i32::try_from(ran).unwrap_or(i32::MAX))
        .bind(secs(window))
        .bind(CMDLETS_CHANNEL)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cmdlets counted in the window now, all replicas.
    pub async fn cmdlets_in_window(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(sum(cmdlets), 0)::bigint FROM exchange_cmdlet_grants
              WHERE counts_until > now()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Starts listening for settled grants.
    pub(crate) fn cmdlet_wake_ups(&self) -> WakeUps {
        self.wake_ups_on(CMDLETS_CHANNEL)
    }
}
