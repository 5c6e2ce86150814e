//! Retention (`worker.retention`): finished jobs past it are deleted, in chunks, every few
//! minutes, by every replica (the deletes are idempotent).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::health::{Health, Task, supervise};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What pruning needs.
pub(crate) struct Deps {
    pub store: Store,
    pub retention: Duration,
    pub health: Arc<Health>,
}

/// Prunes until the daemon stops, supervised.
pub(crate) fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        store,
        retention,
        health,
    } = deps;
    tokio::spawn(supervise(
        Task::one("pruner"),
        health,
        shutdown.clone(),
        move || prune(store.clone(), retention, shutdown.clone()),
    ))
}

/// Retention: every few minutes, delete finished jobs past `worker.retention`. Any replica
/// may do it; the deletes are idempotent and chunked.
async fn prune(store: Store, retention: Duration, shutdown: Shutdown) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(300).min(retention.max(Duration::from_secs(1))));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.stopped() => return,
        }
        while !shutdown.is_stopping() {
            match store.prune(retention, 1000).await {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "pruned finished jobs past retention")
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune finished jobs; trying again later");
                    break;
                }
            }
        }
    }
}
