//! One Exchange session budget for every replica (issue 22). Before a cold batch opens its
//! shell and Exchange session, and before a warm process starts, the replica takes one of
//! `exchange.max_sessions` slots in PostgreSQL (`store::budget`), so replicas × concurrency
//! can exceed Exchange's PowerShellMaxConcurrency without a single refusal: a replica that
//! finds no free slot waits for one (woken by the release's NOTIFY) instead of opening a
//! session and being throttled. Slots are leased and renewed here every third of
//! `exchange.session_lease`; a killed replica's slots come back when their lease runs out.
//!
//! When Exchange throttles anyway (people or other tools use the same account), the
//! replica's own share is halved and paused for the wait Exchange stated, then grows back by
//! one slot per batch that got its session (AIMD), so it probes upwards without stampeding.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config;
use crate::store::{Store, StoreError};

pub mod cmdlets;
pub mod slot;

pub use cmdlets::{CmdletBudget, CmdletBudgetError, CmdletGrant, CmdletLimit};
pub use slot::SlotPurpose;

/// How long a waiter sleeps between looks when no release wakes it (a lost NOTIFY, or a
/// killed holder whose lease expires without one).
const RECHECK: Duration = Duration::from_millis(500);

/// The wait after a throttled session when Exchange states none.
pub(crate) const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(5);

/// How long the cluster runs at a limit Exchange stated, without a refusal, before it offers
/// Exchange one more session (the limit goes back up only as far as Exchange accepts).
pub(crate) const LEARNED_LIMIT_QUIET: Duration = Duration::from_secs(600);

/// How long after the limit was learned (or raised) a refusal may not lower it further from
/// the slots held: longer than a session takes to open, so that refusals of the sessions
/// opened together with the one that taught it do not count.
const REFUSALS_SETTLE: Duration = Duration::from_secs(60);

/// The session limit an Exchange refusal states: "… you have exceeded the maximum number of
/// connections allowed : 6 for the policy party : MaxConcurrency" (the MaxConcurrency
/// refusal of a remote PowerShell runspace; its text is not localized, it comes from the
/// server's throttling policy).
pub fn stated_session_limit(message: &str) -> Option<u32> {
    const MARK: &str = "maximum number of connections allowed";
    let rest = &message[message.find(MARK)? + MARK.len()..];
    let rest = rest.trim_start_matches([' ', ':']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|n| *n > 0)
}

/// The session limit the cluster adopts after Exchange refused one session, stating its
/// limit `stated`, while the cluster held `held` slots (the refused session's own included:
/// it holds its slot until the refusal has been handled).
///
/// Held beyond `stated`, mailboxd's own sessions explain the refusal: adopt `stated`. Held
/// no more than `stated`, Exchange counts runspaces mailboxd does not hold (another client
/// of the same account, or a session of an ended process Exchange has not yet let go):
/// only the `held - 1` others are known to fit, so adopt that (at least 1). Retrying at
/// `stated` would be refused again at once, every batch, until those runspaces end. Either
/// way the limit goes back up by one after a quiet period ([`LEARNED_LIMIT_QUIET`]). No
/// slot held at all (a refusal outside the budget) says nothing about others: `stated`.
pub fn limit_after_refusal(stated: u32, held: u32) -> u32 {
    if held == 0 || held > stated {
        stated
    } else {
        held.saturating_sub(1).max(1)
    }
}

/// This replica's adaptive share of the budget (AIMD).
#[derive(Debug)]
struct Share {
    /// Slots this replica may hold now: `1 ..= max`.
    limit: u32,
    /// Slots it holds.
    held: u32,
    /// No new session before this (Exchange asked to wait).
    paused_until: Option<Instant>,
}

/// What `/readyz` and the dashboard show of this replica's side of the budget.
#[derive(Debug, Clone, Serialize)]
pub struct LocalBudget {
    pub max_sessions: u32,
    pub share: u32,
    pub held: u32,
    pub waiting: u64,
    pub throttled: u64,
    pub paused_for_ms: u64,
}

pub struct SessionBudget {
    store: Store,
    holder: String,
    max: u32,
    lease: Duration,
    share: Mutex<Share>,
    /// The holdings the heartbeat renews.
    leases: Mutex<HashSet<Uuid>>,
    waiting: AtomicU64,
    throttled: AtomicU64,
    /// Released slots (one LISTEN connection per replica, cloned per waiter).
    wake: crate::store::WakeUps,
    /// Exchange's cmdlet budget, when configured (`exchange.max_cmdlets`).
    cmdlets: Option<Arc<CmdletBudget>>,
}

/// A held session slot; dropping it gives the slot back.
pub struct SlotGuard {
    budget: Arc<SessionBudget>,
    lease: Uuid,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.budget.leases.lock().remove(&self.lease);
        {
            let mut share = self.budget.share.lock();
            share.held = share.held.saturating_sub(1);
        }
        let store = self.budget.store.clone();
        let lease = self.lease;
        // Released at once so a waiting replica can go; if this fails (or the runtime is
        // gone), the lease, no longer renewed, runs out instead.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_session_slot(lease).await {
                    tracing::warn!(error = %e, "cannot release an Exchange session slot; it frees itself when its lease runs out");
                }
            });
        }
    }
}

impl SessionBudget {
    /// The budget `[exchange]` describes (`max_sessions`, `session_lease`, and the cmdlet
    /// window when `max_cmdlets` is set), held in `store` under this replica's name.
    pub async fn from_config(
        store: &Store,
        cfg: &config::Exchange,
    ) -> Result<Arc<SessionBudget>, StoreError> {
        let replica = crate::replica_name().to_owned();
        let cmdlets = CmdletLimit::from_config(cfg).map(|limit| {
            CmdletBudget::new(store.clone(), replica.clone(), limit, cfg.session_lease)
        });
        SessionBudget::start(
            store.clone(),
            replica,
            cfg.max_sessions,
            cfg.session_lease,
            cmdlets,
        )
        .await
    }

    /// Creates the slots and starts the heartbeat that renews this replica's holdings.
    pub async fn start(
        store: Store,
        holder: String,
        max: u32,
        lease: Duration,
        cmdlets: Option<Arc<CmdletBudget>>,
    ) -> Result<Arc<SessionBudget>, StoreError> {
        store.ensure_session_slots(max).await?;
        let budget = Arc::new(SessionBudget {
            store: store.clone(),
            holder,
            max: max.max(1),
            lease,
            share: Mutex::new(Share {
                limit: max.max(1),
                held: 0,
                paused_until: None,
            }),
            leases: Mutex::new(HashSet::new()),
            waiting: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            wake: store.slot_wake_ups(),
            cmdlets,
        });
        tokio::spawn(renew(Arc::downgrade(&budget), lease));
        Ok(budget)
    }

    /// Waits until this replica may open one more Exchange session, and holds its slot.
    /// Cancel-safe: a slot taken by a cancelled call is released by its guard.
    pub async fn acquire(self: &Arc<Self>, purpose: SlotPurpose) -> SlotGuard {
        let mut wake = self.wake.clone();
        let mut counted = Waiting::new(&self.waiting);
        loop {
            wake.mark_seen();
            let wait = match self.local_wait() {
                Some(wait) => wait,
                None => match self.try_acquire(purpose).await {
                    Ok(Some(guard)) => return guard,
                    Ok(None) => RECHECK,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take an Exchange session slot; trying again");
                        RECHECK
                    }
                },
            };
            counted.start();
            tokio::select! {
                () = wake.next() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long to wait before looking for a slot, when this replica's share is spent or
    /// Exchange asked to pause; `None`: look now.
    fn local_wait(&self) -> Option<Duration> {
        let share = self.share.lock();
        if let Some(until) = share.paused_until {
            let now = Instant::now();
            if until > now {
                return Some(until - now);
            }
        }
        (share.held >= share.limit).then_some(RECHECK)
    }

    /// One look for a free slot in the database.
    async fn try_acquire(
        self: &Arc<Self>,
        purpose: SlotPurpose,
    ) -> Result<Option<SlotGuard>, StoreError> {
        let lease = Uuid::new_v4();
        self.leases.lock().insert(lease);
        self.share.lock().held += 1;
        // The guard exists before the statement runs: a cancelled call still releases.
        let guard = SlotGuard {
            budget: self.clone(),
            lease,
        };
        let slot = self
            .store
            .acquire_session_slot(&self.holder, lease, purpose, self.max, self.lease)
            .await?;
        Ok(slot.map(|_| guard))
    }

    /// A batch got its Exchange session: additive increase of this replica's share.
    pub(crate) fn session_opened(&self) {
        let mut share = self.share.lock();
        share.limit = (share.limit + 1).min(self.max);
    }

    /// Exchange throttled a session anyway: halve the share, pause for the stated wait, and
    /// record it for the cluster's view. When the refusal states Exchange's limit below the
    /// configured one, every replica adopts it through the store (one refusal teaches the
    /// whole cluster). Returns the wait the jobs are deferred by.
    pub async fn throttled(&self, retry_after: Option<Duration>, message: &str) -> Duration {
        if let Some(stated) = stated_session_limit(message) {
            self.learn_limit(stated, message).await;
        }
        let wait = retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT);
        {
            let mut share = self.share.lock();
            share.limit = (share.limit / 2).max(1);
            let until = Instant::now() + wait;
            share.paused_until = Some(share.paused_until.map_or(until, |u| u.max(until)));
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mailboxd_exchange_throttled_total").increment(1);
        if let Err(e) = self
            .store
            .record_throttled(&self.holder, retry_after, message)
            .await
        {
            tracing::warn!(error = %e, "cannot record the throttling refusal");
        }
        wait
    }

    /// Exchange refused a session stating its limit: the whole cluster adopts what is left
    /// of it for mailboxd ([`limit_after_refusal`]), when that is below the configured one.
    async fn learn_limit(&self, stated: u32, message: &str) {
        let held = match self.store.held_session_slots().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the Exchange session slots held");
                u32::MAX
            }
        };
        let limit = limit_after_refusal(stated, held);
        if limit >= self.max {
            return;
        }
        // Learnt from what mailboxd held, the figure is only as good as the moment: the other
        // refusals of a burst that just taught the stated limit come back while sessions of
        // that burst end, and would each take one more away.
        let settled = (limit < stated).then_some(REFUSALS_SETTLE);
        match self
            .store
            .learn_session_limit(limit, &self.holder, message, settled)
            .await
        {
            Ok(true) if limit < stated => tracing::warn!(
                limit,
                stated,
                held,
                "Exchange refused a session at {stated} of {stated} while mailboxd held {held} slots (this one included): another client or a session not yet ended holds the rest; every replica now uses at most {limit}"
            ),
            Ok(true) => tracing::warn!(
                limit,
                configured = self.max,
                "Exchange allows {limit} sessions, fewer than exchange.max_sessions: every replica now uses at most {limit} (set exchange.max_sessions = {limit} to match)"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the session limit Exchange stated")
            }
        }
    }

    /// This replica's side, now.
    pub fn local(&self) -> LocalBudget {
        let share = self.share.lock();
        let paused = share
            .paused_until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        LocalBudget {
            max_sessions: self.max,
            share: share.limit,
            held: share.held,
            waiting: self.waiting.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            paused_for_ms: u64::try_from(paused.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn max_sessions(&self) -> u32 {
        self.max
    }

    /// Accounts per batch: `configured` (`exchange.batch_size`), or fewer when not even
    /// that many new joiners fit Exchange's cmdlet budget; an error when one account's
    /// longest path does not fit.
    pub fn batch_size(
        &self,
        configured: u32,
        session_cmdlets: u32,
    ) -> Result<u32, CmdletBudgetError> {
        let Some(c) = &self.cmdlets else {
            return Ok(configured);
        };
        let per_account = (
            ps_templates::LEAST_CMDLETS_PER_ACCOUNT,
            ps_templates::MAX_CMDLETS_PER_ACCOUNT,
        );
        let n = c.accounts_per_batch(configured, session_cmdlets, per_account)?;
        if n < configured {
            tracing::info!(
                batch_size = n,
                "batches hold fewer accounts than exchange.batch_size so that one batch fits exchange.max_cmdlets"
            );
        }
        Ok(n)
    }

    /// Exchange's cmdlet budget, when one is configured.
    pub fn cmdlets(&self) -> Option<&Arc<CmdletBudget>> {
        self.cmdlets.as_ref()
    }
}

/// Counts one waiter while it waits (metrics and `/readyz`), however the wait ends.
struct Waiting<'a> {
    counter: &'a AtomicU64,
    counted: bool,
}

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicU64) -> Waiting<'a> {
        Waiting {
            counter,
            counted: false,
        }
    }

    fn start(&mut self) {
        if !self.counted {
            self.counted = true;
            self.counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Renews this replica's holdings every third of the lease, for as long as the budget lives.
async fn renew(budget: std::sync::Weak<SessionBudget>, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    loop {
        tick.tick().await;
        let Some(b) = budget.upgrade() else { return };
        match b
            .store
            .raise_learned_limit(b.max, LEARNED_LIMIT_QUIET)
            .await
        {
            Ok(learned) => {
                metrics::gauge!("mailboxd_exchange_sessions_limit")
                    .set(f64::from(learned.map_or(b.max, |n| n.unsigned_abs())));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the learned Exchange session limit")
            }
        }
        let leases: Vec<Uuid> = b.leases.lock().iter().copied().collect();
        if leases.is_empty() {
            continue;
        }
        if let Err(e) = b.store.renew_session_slots(&leases, lease).await {
            tracing::warn!(error = %e, "cannot renew the Exchange session slots; they run out after exchange.session_lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limit_after_refusal;

    #[test]
    fn a_refusal_above_the_stated_limit_adopts_it() {
        // Configured 12, Exchange allows 6: 12 opened at once, 6 of them refused.
        assert_eq!(limit_after_refusal(6, 12), 6);
        assert_eq!(limit_after_refusal(6, 7), 6);
    }

    #[test]
    fn a_refusal_at_or_below_the_stated_limit_adopts_what_mailboxd_really_got() {
        // "4/4" while mailboxd held 3 and opened a 4th: one runspace is someone else's.
        assert_eq!(limit_after_refusal(4, 4), 3);
        assert_eq!(limit_after_refusal(4, 2), 1);
        // Never below one session.
        assert_eq!(limit_after_refusal(4, 1), 1);
        // Nothing held: nothing known beyond the stated limit.
        assert_eq!(limit_after_refusal(4, 0), 4);
    }
}
