//! The planner's statistics on `jobs` and `outcomes` kept up with bursts.
//!
//! A queue's table changes in bursts: an initial load or a reconciliation queues 100,000 jobs
//! in seconds, while autovacuum analyzes a table at most once a minute (`autovacuum_naptime`)
//! and only after a tenth of it changed. Until then the planner plans the claim, the re-keying
//! and the listings for the table it last saw — a few claimable jobs, none running — and picks
//! plans that read every waiting job for each batch (90–200 ms a claim instead of 2 ms,
//! measured with `bench load`). So the replica that inserts the jobs asks for an `ANALYZE` of
//! `jobs` when the new jobs since the last one may have doubled the waiting work: after
//! [`AnalyzeKeeper::FLOOR`] new jobs, then each time as many new jobs as were waiting at the
//! last one — a handful of `ANALYZE`s per initial load, one per thousand jobs in quiet times.
//! It runs beside intake (never in front of it), one at a time per replica.
//!
//! `outcomes` gets the same care from the other end: a claim of due outcomes that turned slow
//! asks for its `ANALYZE` ([`SlowClaimKeeper`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Store;
use crate::job::JobState;

#[derive(Debug, Default)]
struct Counts {
    /// Jobs this replica inserted since its last `ANALYZE`.
    since: u64,
    /// Jobs waiting (claimable) right after the last `ANALYZE`.
    waiting_then: u64,
    /// An `ANALYZE` is under way.
    running: bool,
    /// `ANALYZE` was refused (the role does not own `jobs`): autovacuum alone keeps them.
    refused: bool,
}

/// When to analyze `jobs` again; shared by the clones of a `Store`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AnalyzeKeeper(Arc<Mutex<Counts>>);

impl AnalyzeKeeper {
    /// New jobs that always justify a fresh look, however little was waiting.
    pub(crate) const FLOOR: u64 = 1_000;

    /// Counts `n` new jobs; true when the caller is to run the one `ANALYZE` now.
    fn note(&self, n: u64) -> bool {
        let mut c = self.0.lock();
        c.since += n;
        if c.running || c.refused || c.since < Self::FLOOR.max(c.waiting_then) {
            return false;
        }
        c.running = true;
        true
    }

    fn analyzed(&self, waiting: u64) {
        let mut c = self.0.lock();
        *c = Counts {
            waiting_then: waiting,
            ..Counts::default()
        };
    }

    /// Tried again after as many new jobs as the floor, unless refused for good.
    fn failed(&self, refused: bool) {
        let mut c = self.0.lock();
        c.running = false;
        c.since = 0;
        c.refused = refused;
    }
}

impl Store {
    /// Notes `n` jobs inserted; starts an `ANALYZE` of `jobs` beside the caller when due.
    pub(crate) fn jobs_inserted(&self, n: usize) {
        if !self.analyze.note(n as u64) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move { store.analyze_jobs().await });
    }

    async fn analyze_jobs(&self) {
        let analyzed = async {
            sqlx::query("ANALYZE jobs").execute(&self.pool).await?;
            let pending = super::columns::sql_list(&JobState::CLAIMABLE);
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM jobs WHERE state IN {pending}"
            )))
            .fetch_one(&self.pool)
            .await
        }
        .await;
        match analyzed {
            Ok(waiting) => self.analyze.analyzed(u64::try_from(waiting).unwrap_or(0)),
            Err(e) => {
                let refused = not_the_owner(&e);
                tracing::warn!(error = %e, refused, "cannot analyze the jobs table after a burst of new jobs; claims may be slow until autovacuum does (run mailboxd as the owner of its tables)");
                self.analyze.failed(refused);
            }
        }
    }
}

/// When to analyze `outcomes` again: after a claim of due outcomes turned slow. Its check
/// "no earlier unsent outcome of the account" is an index probe per outcome only while the
/// statistics know there are unsent outcomes; planned on statistics taken with none (a large
/// history, then a backlog: a broker outage, an initial load), it scans every earlier unsent
/// outcome for each one walked — 41.7 ms a claim with 2,000 unsent, 0.5 ms once analyzed —
/// and autovacuum analyzes only after a tenth of the table changed. Shared by the clones of a
/// `Store`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlowClaimKeeper(Arc<Mutex<SlowClaims>>);

#[derive(Debug, Default)]
struct SlowClaims {
    /// When the last `ANALYZE` was started.
    last: Option<Instant>,
    running: bool,
    /// `ANALYZE` was refused (the role does not own `outcomes`): autovacuum alone keeps them.
    refused: bool,
}

impl SlowClaimKeeper {
    /// A claim this slow (a probe per outcome takes well under a millisecond a batch)…
    pub(crate) const SLOW: Duration = Duration::from_millis(20);
    /// …asks for an `ANALYZE`, at most this often.
    pub(crate) const AT_MOST_EVERY: Duration = Duration::from_secs(30);

    /// A claim took `took`; true when the caller is to run the one `ANALYZE` now.
    fn note(&self, took: Duration, now: Instant) -> bool {
        let mut c = self.0.lock();
        let recent = c
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < Self::AT_MOST_EVERY);
        if took < Self::SLOW || c.running || c.refused || recent {
            return false;
        }
        c.running = true;
        c.last = Some(now);
        true
    }

    fn done(&self, refused: bool) {
        let mut c = self.0.lock();
        c.running = false;
        c.refused = refused;
    }
}

impl Store {
    /// Notes how long a claim of due outcomes took; starts an `ANALYZE` of `outcomes`
    /// beside the caller when it was slow ([`SlowClaimKeeper`]).
    pub(crate) fn outcome_claim_took(&self, took: Duration) {
        if !self.outcome_analyze.note(took, Instant::now()) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let r = sqlx::query("ANALYZE outcomes").execute(&store.pool).await;
            let refused = r.as_ref().is_err_and(not_the_owner);
            if let Err(e) = &r {
                tracing::warn!(error = %e, refused, "cannot analyze the outcomes table after a slow claim; outcomes may publish slowly until autovacuum does (run mailboxd as the owner of its tables)");
            }
            store.outcome_analyze.done(refused);
        });
    }
}

/// 42501, insufficient privilege: only a table's owner may analyze it, and asking again will
/// not change that.
fn not_the_owner(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42501"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_outcome_claim_asks_for_one_analyze_at_most_every_thirty_seconds() {
        let k = SlowClaimKeeper::default();
        let t0 = Instant::now();
        let slow = SlowClaimKeeper::SLOW;
        assert!(!k.note(slow - Duration::from_millis(1), t0));
        assert!(k.note(slow, t0));
        // One at a time, then not again within the interval.
        assert!(!k.note(slow * 10, t0));
        k.done(false);
        assert!(!k.note(slow * 10, t0 + Duration::from_secs(29)));
        assert!(k.note(slow, t0 + SlowClaimKeeper::AT_MOST_EVERY));
        // Refused for good: never asked again.
        k.done(true);
        assert!(!k.note(slow, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn analyzes_after_the_floor_then_when_the_waiting_work_may_have_doubled() {
        let k = AnalyzeKeeper::default();
        assert!(!k.note(999));
        assert!(k.note(1));
        // One at a time: new jobs meanwhile start none.
        assert!(!k.note(5_000));
        k.analyzed(20_000);
        assert!(!k.note(19_999));
        assert!(k.note(1));
        k.analyzed(10);
        assert!(!k.note(999));
        assert!(k.note(1));
    }

    #[test]
    fn a_refused_analyze_is_not_asked_again() {
        let k = AnalyzeKeeper::default();
        assert!(k.note(1_000));
        k.failed(false);
        assert!(!k.note(999));
        assert!(k.note(1));
        k.failed(true);
        assert!(!k.note(1_000_000));
    }
}
