//! Exchange's cmdlet budget for every replica (issue 22): PowerShellMaxCmdlets per
//! PowerShellMaxCmdletsTimePeriod counts the service account's cmdlets, whoever runs them, so
//! a batch takes the cmdlets it is expected to run (the path the directory predicts, issue
//! 35: `worker::pacing`) from one window shared through PostgreSQL (`store::cmdlets`) before
//! it runs, and waits — no attempt used, nothing refused — while the window is spent. A
//! running batch's grant is leased and renewed like a session slot. Once the batch is back
//! its grant is set to what really ran, more than it took if AD changed meanwhile, and
//! counts until the window after the batch's end: every cmdlet started before then, so the
//! window mailboxd keeps never ends before Exchange's does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config;
use crate::store::{CmdletTake, Store, StoreError, WakeUps};

use super::Waiting;

/// Longest wait between looks when no settled grant wakes the waiter.
const RECHECK: Duration = Duration::from_secs(1);
/// Shortest wait, so a window about to free itself is not polled in a busy loop.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// The budget as configured (`exchange.max_cmdlets` within `exchange.cmdlet_window`).
#[derive(Debug, Clone, Copy)]
pub struct CmdletLimit {
    pub max: u32,
    pub window: Duration,
}

impl CmdletLimit {
    /// `None` when the budget is not configured (Exchange's default: Unlimited).
    pub fn from_config(cfg: &config::Exchange) -> Option<CmdletLimit> {
        Some(CmdletLimit {
            max: cfg.max_cmdlets?,
            window: cfg.cmdlet_window?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CmdletBudgetError {
    #[error(
        "exchange.max_cmdlets = {max} cannot hold one account's batch ({needed} cmdlets with the session's): raise it to at least {needed}, or raise PowerShellMaxCmdlets in the service account's throttling policy first"
    )]
    TooSmall { max: u32, needed: u32 },
}

pub struct CmdletBudget {
    store: Store,
    holder: String,
    limit: CmdletLimit,
    /// A running batch's grant counts this long past its last renewal (the lease plus the
    /// window), renewed every third of the lease: a killed replica's grants run out by
    /// themselves, and no cmdlet it started leaves Exchange's window before mailboxd's.
    hold: Duration,
    lease: Duration,
    waiting: AtomicU64,
    wake: WakeUps,
}

/// Cmdlets taken for one batch, renewed while it runs. Settle it with what ran; dropped
/// unsettled (the batch's future cancelled), it counts all it took until its hold runs out.
pub struct CmdletGrant {
    budget: Arc<CmdletBudget>,
    id: i64,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for CmdletGrant {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

impl CmdletBudget {
    /// `lease`: how long a killed replica's grants keep counting besides the window
    /// (`exchange.session_lease`, as for its session slots).
    pub fn new(
        store: Store,
        holder: String,
        limit: CmdletLimit,
        lease: Duration,
    ) -> Arc<CmdletBudget> {
        Arc::new(CmdletBudget {
            wake: store.cmdlet_wake_ups(),
            store,
            holder,
            limit,
            hold: lease + limit.window,
            lease,
            waiting: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> CmdletLimit {
        self.limit
    }

    /// Batches of this replica waiting for room in the window now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The most accounts one batch may hold: `batch_size`, or fewer so that a batch of new
    /// joiners (`least` cmdlets each, the cheapest path) with its session takes at most half
    /// the window: two batches' grants then fit at once, and a batch waits for one grant
    /// to leave the window, never for the whole window to empty (a grant counts for the
    /// window after its batch ended, so one filling the window would leave it idle while its
    /// batch runs). A batch expected to cost more is run in parts that fit
    /// (`worker::pacing`). An error when one account's longest path (`most`) does not fit.
    pub(crate) fn accounts_per_batch(
        &self,
        batch_size: u32,
        session_cmdlets: u32,
        (least, most): (u32, u32),
    ) -> Result<u32, CmdletBudgetError> {
        let room = self.limit.max.saturating_sub(session_cmdlets);
        if room < most {
            return Err(CmdletBudgetError::TooSmall {
                max: self.limit.max,
                needed: session_cmdlets + most,
            });
        }
        let half = (self.limit.max / 2).saturating_sub(session_cmdlets);
        Ok((half / least.max(1)).clamp(1, batch_size.max(1)))
    }

    /// Waits until the window has room for `cmdlets` and takes them. Cancel-safe: a
    /// cancelled wait holds nothing.
    pub async fn take(self: &Arc<Self>, cmdlets: u32) -> CmdletGrant {
        let mut wake = self.wake.clone();
        let mut counted = Waiting::new(&self.waiting);
        loop {
            wake.mark_seen();
            let wait = match self.try_take(cmdlets).await {
                Ok(CmdletTake::Granted(id)) => {
                    return CmdletGrant {
                        budget: self.clone(),
                        id,
                        renew: tokio::spawn(renew(self.clone(), id)),
                    };
                }
                Ok(CmdletTake::Full { room_in }) => room_in.clamp(MIN_WAIT, RECHECK),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take from Exchange's cmdlet budget; trying again");
                    RECHECK
                }
            };
            counted.start();
            tokio::select! {
                () = wake.next() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn try_take(&self, cmdlets: u32) -> Result<CmdletTake, StoreError> {
        self.store
            .take_cmdlets(&self.holder, cmdlets, self.limit.max, self.hold)
            .await
    }
}

impl CmdletGrant {
    /// The batch is back and ran `ran` cmdlets: the grant counts those until the window
    /// after now. If this fails, the grant counts all it took until its hold runs out.
    pub async fn settle(self, ran: u32) {
        self.renew.abort();
        let b = &self.budget;
        if let Err(e) = b.store.settle_cmdlets(self.id, ran, b.limit.window).await {
            tracing::warn!(error = %e, "cannot settle a cmdlet grant; it counts in full until exchange.session_lease plus exchange.cmdlet_window");
        }
    }
}

/// Renews one running batch's grant every third of the lease until aborted.
async fn renew(budget: Arc<CmdletBudget>, id: i64) {
    let mut tick = tokio::time::interval(budget.lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let b = &budget;
        if let Err(e) = b.store.renew_cmdlets(id, b.hold, b.limit.window).await {
            tracing::warn!(error = %e, "cannot renew a cmdlet grant; it may run out while its batch runs");
        }
    }
}
