//! The lease heartbeat of one batch. It is not a task of its own: `Worker::process` selects
//! it with the batch, so it ends with the batch whatever way the batch ends and cannot keep
//! a lease alive for a batch that is gone.

use std::time::Duration;

use uuid::Uuid;

use crate::store::Store;

/// Extends the leases of a batch's jobs every third of the lease until aborted.
pub(super) async fn heartbeat(store: Store, replica: String, ids: Vec<Uuid>, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = store.heartbeat(&replica, &ids, lease).await {
            tracing::warn!(error = %e, "lease heartbeat failed");
        }
    }
}
