//! Lease rescue: a replica that died (`kill -9`, a lost host) leaves its jobs `running` under a
//! lease nobody extends. Every replica looks for expired leases on a short interval and makes
//! those jobs due again at once, the lost attempt recorded; the state change wakes the claim
//! loops (`jobs_notify`), so another replica takes them without waiting for its poll.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::health::{Health, Task, supervise};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How often a replica looks for expired leases: a dead replica's jobs run again at most this
/// much after their lease ran out. The look is one indexed `UPDATE` that finds nothing on a
/// healthy system, and claims no longer pay it with every batch.
pub(crate) const EVERY: Duration = Duration::from_millis(250);

/// What lease rescue needs.
pub(crate) struct Deps {
    pub store: Store,
    pub health: Arc<Health>,
}

/// Rescues expired leases until the daemon stops, supervised.
pub(crate) fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps { store, health } = deps;
    tokio::spawn(supervise(
        Task::one("lease_rescue"),
        health,
        shutdown.clone(),
        move || rescue(store.clone(), shutdown.clone()),
    ))
}

async fn rescue(store: Store, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.stopped() => return,
        }
        match store.rescue_expired_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "leases expired (their replica died): the jobs run again"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot look for expired leases; trying again"),
        }
    }
}
