//! The claim loops: `worker.concurrency` of them, each claiming a batch when jobs are due
//! (woken by `LISTEN`, at the next job's due time, or every `worker.poll_interval`), holding
//! an Exchange session slot only while its batch runs, and waiting while the circuit is open (one loop probes). Jobs whose
//! lease expired (their replica died) are made due again by lease rescue (`rescue`), whose
//! state change wakes these loops.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::Worker;
use crate::budget::SlotGuard;
use crate::budget::SlotPurpose;
use crate::circuit::Permit;
use crate::health::{Health, Task, supervise};
use crate::shutdown::Shutdown;
use crate::store::{Job, StoreError, WakeUps};

/// What the claim loops need: the worker that runs their batches, and where a panic is
/// reported.
pub(crate) struct Deps {
    pub worker: Worker,
    pub health: Arc<Health>,
}

/// Runs `worker.concurrency` claim loops until the daemon stops, each supervised: a loop
/// that panics is reported to `health` and started again. The handle ends with the last
/// loop, so waiting for it waits for the batches in flight.
pub(crate) fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps { worker, health } = deps;
    let wake = worker.store.wake_ups();
    let loops: Vec<JoinHandle<()>> = (0..worker.cfg.concurrency)
        .map(|i| {
            let (w, wake, stop) = (worker.clone(), wake.clone(), shutdown.clone());
            tokio::spawn(supervise(
                Task::nth("claim_loop", i),
                health.clone(),
                shutdown.clone(),
                move || {
                    let (w, wake, stop) = (w.clone(), wake.clone(), stop.clone());
                    async move { w.claim_loop(i, wake, stop).await }
                },
            ))
        })
        .collect();
    tokio::spawn(async move {
        for l in loops {
            let _ = l.await;
        }
    })
}

impl Worker {
    async fn claim_loop(&self, slot: u32, mut wake: WakeUps, shutdown: Shutdown) {
        // After a full batch more work is likely due: claim again at once, without first
        // asking the database when the next job is due (one round trip per batch saved).
        let mut full = false;
        loop {
            if shutdown.is_stopping() {
                return;
            }
            crate::failpoint::claim_loop_panic();
            if !std::mem::take(&mut full) && !self.wait_until_due(&mut wake, &shutdown).await {
                continue;
            }
            // The Windows side is down: wait, then let one loop probe it with one job.
            let (limit, probe) = match self.circuit.permit() {
                Permit::Go => (i64::from(self.batch_size), None),
                Permit::Probe(probe) => (1, Some(probe)),
                Permit::Wait(d) => {
                    if !shutdown.pause(d.min(self.cfg.poll_interval)).await {
                        return;
                    }
                    continue;
                }
            };
            // A session slot first, so no job is leased while its batch waits for one.
            let Some(session) = self.session_slot(&shutdown).await else {
                return;
            };
            // Before claiming, so that a job queued meanwhile still wakes the wait below.
            wake.mark_seen();
            let worked = match self.claim_batch(limit).await {
                Ok(jobs) if !jobs.is_empty() => {
                    tracing::debug!(slot, jobs = jobs.len(), "claimed a batch");
                    full = jobs.len() as i64 >= limit;
                    self.process(jobs).await;
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim jobs; retrying");
                    false
                }
            };
            drop(session);
            if let Some(probe) = probe {
                self.circuit.probe_ended(probe);
            }
            if worked {
                continue;
            }
            tokio::select! {
                _ = wake.next() => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                () = shutdown.stopped() => return,
            }
        }
    }

    /// Returns true when a job is due now. Otherwise waits, holding no Exchange session
    /// slot, until a wake-up, the next job's due time or `worker.poll_interval`, whichever
    /// comes first, and returns false: idle loops never take one of the sessions every
    /// replica shares just to find no work, and a retry runs when it is due rather than at
    /// the next poll.
    async fn wait_until_due(&self, wake: &mut WakeUps, shutdown: &Shutdown) -> bool {
        // Before reading, so that a job queued meanwhile still wakes the wait below.
        wake.mark_seen();
        let wait = match self.store.next_due_in().await {
            Ok(Some(d)) if d.is_zero() => return true,
            Ok(Some(d)) => d.min(self.cfg.poll_interval),
            Ok(None) => self.cfg.poll_interval,
            // The claim that follows says what is wrong with the database.
            Err(_) => return true,
        };
        tokio::select! {
            _ = wake.next() => {}
            _ = tokio::time::sleep(wait) => {}
            () = shutdown.stopped() => {}
        }
        false
    }

    /// Waits for an Exchange session slot for one cold batch; `Some(None)` with warm
    /// sessions (the process holds the slot), `None` at shutdown.
    async fn session_slot(&self, shutdown: &Shutdown) -> Option<Option<SlotGuard>> {
        if self.exchange.is_warm() {
            return Some(None);
        }
        tokio::select! {
            slot = self.budget.acquire(SlotPurpose::Batch) => Some(Some(slot)),
            () = shutdown.stopped() => None,
        }
    }

    /// Claims up to `limit` jobs, letting a burst fill the batch: one more claim after the
    /// linger. The jobs already claimed are leased, so waiting holds nothing up elsewhere.
    async fn claim_batch(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        let mut jobs = self
            .store
            .claim(&self.replica, limit, self.cfg.lease)
            .await?;
        let room = limit - jobs.len() as i64;
        if !jobs.is_empty() && room > 0 && !self.batch_linger.is_zero() {
            tokio::time::sleep(self.batch_linger).await;
            match self.store.claim(&self.replica, room, self.cfg.lease).await {
                Ok(more) => jobs.extend(more),
                Err(e) => tracing::warn!(error = %e, "cannot claim more jobs for the batch"),
            }
        }
        Ok(jobs)
    }
}
