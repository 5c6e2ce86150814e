//! The daemon's reconcile schedule (`reconcile.interval`): every interval one replica, the
//! holder of the advisory lock, runs a reconciliation; the others skip that turn.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config;
use crate::directory::Directory;
use crate::health::{Health, Task, supervise};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What the schedule needs: the directory it scans, its `[reconcile]` section and the
/// interval it runs at, the store and the attempts each job gets.
pub struct Deps {
    pub directory: Directory,
    pub cfg: config::Reconcile,
    /// `[leaver]`: which disabled users are leavers still to do.
    pub leaver: config::Leaver,
    pub interval: Duration,
    pub store: Store,
    pub max_attempts: i32,
    pub health: Arc<Health>,
}

/// Runs the schedule until the daemon stops, supervised.
pub fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        directory,
        cfg,
        leaver,
        interval,
        store,
        max_attempts,
        health,
    } = deps;
    tokio::spawn(supervise(
        Task::one("reconcile_schedule"),
        health,
        shutdown.clone(),
        move || {
            let (dir, st, cfg) = (directory.clone(), store.clone(), cfg.clone());
            scheduled(
                dir,
                st,
                cfg,
                leaver,
                max_attempts,
                interval,
                shutdown.clone(),
            )
        },
    ))
}

/// The daemon's schedule: every `interval`, one replica (the advisory lock's holder) runs.
async fn scheduled(
    dir: Directory,
    store: Store,
    cfg: config::Reconcile,
    leaver: config::Leaver,
    max_attempts: i32,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.stopped() => return,
        }
        let lock = match store.try_reconcile_lock().await {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::debug!("another replica is reconciling");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the reconcile lock");
                continue;
            }
        };
        match super::run(
            &dir,
            &store,
            &cfg,
            leaver,
            max_attempts,
            super::Mode::QueueJobs,
            super::ProgressLines::Hidden,
        )
        .await
        {
            Ok(r) => tracing::info!(
                run_id = r.run_id,
                scanned = r.scanned,
                differences = r.differences.len(),
                jobs_created = r.jobs_created,
                capped = r.capped,
                "reconciliation finished"
            ),
            Err(e) => tracing::error!(error = %e, "reconciliation failed"),
        }
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "cannot release the reconcile lock (it goes with the connection)");
        }
    }
}
