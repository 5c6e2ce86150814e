//! Wake-ups when a job becomes due: the `jobs_notify` trigger NOTIFYs `mailboxd_jobs` on
//! every job queued or retried, and one LISTEN connection per [`Store::wake_ups`] turns
//! that into a signal idle claim loops wait on, instead of polling the table.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::Store;

/// The channel the trigger of migration 0001 notifies.
const CHANNEL: &str = "mailboxd_jobs";

/// A receiver of "a job became available" signals; clone one per waiting loop. The
/// listener behind it reconnects by itself and stops when the last clone is dropped.
#[derive(Clone)]
pub struct WakeUps {
    rx: watch::Receiver<u64>,
}

impl WakeUps {
    /// Forgets the signals so far: call before looking for work, so that a job that
    /// becomes due while looking still wakes the next [`WakeUps::next`].
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Waits for a signal after the last `mark_seen`. If the listener is gone, waits
    /// forever: callers poll on a timer as well.
    pub async fn next(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Store {
    /// Starts listening for due jobs (see the module doc).
    pub fn wake_ups(&self) -> WakeUps {
        self.wake_ups_on(CHANNEL)
    }

    /// The same for another channel (a released Exchange session slot, `budget`).
    pub(super) fn wake_ups_on(&self, channel: &'static str) -> WakeUps {
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(listen(self.clone(), channel, tx));
        WakeUps { rx }
    }
}

/// Listens until every receiver is gone, reconnecting a second after each failure.
async fn listen(store: Store, channel: &'static str, tx: watch::Sender<u64>) {
    loop {
        tokio::select! {
            () = relay(&store, channel, &tx) => {}
            () = tx.closed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = tx.closed() => return,
        }
    }
}

/// Relays notifications for as long as one connection lasts.
async fn relay(store: &Store, channel: &str, tx: &watch::Sender<u64>) {
    let mut listener = match PgListener::connect_with(&store.pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "job listener cannot connect");
            return;
        }
    };
    if let Err(e) = listener.listen(channel).await {
        tracing::debug!(error = %e, "job listener cannot LISTEN");
        return;
    }
    while listener.recv().await.is_ok() {
        tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}
