//! The loop every outbox deliverer runs (the outcome publisher, IdentityIQ delivery, the
//! alert sender): a round takes what is due and delivers it; after a round that delivered
//! nothing the loop waits its poll interval, otherwise it goes on at once; it ends between
//! rounds when the daemon stops. The rows themselves are claimed with a lease (`store`), so
//! every replica runs its own loop and they keep apart; what failed is due again after a
//! doubling wait (`next_try`).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;

use crate::backoff;
use crate::config;
use crate::shutdown::Shutdown;
use crate::store::{OutcomeChannel, OutcomeRow, Store, StoreError};

/// One outbox's delivery round.
pub(crate) trait Round: Send {
    /// Takes what is due and delivers it (logging what failed): how many went out, 0 when
    /// the loop should wait before the next round.
    fn round(&mut self) -> impl Future<Output = usize> + Send;
}

/// Runs rounds until the daemon stops, waiting `poll` after a round that delivered nothing.
pub(crate) async fn run(mut outbox: impl Round, poll: Duration, shutdown: Shutdown) {
    loop {
        if shutdown.is_stopping() {
            return;
        }
        if outbox.round().await == 0 && !shutdown.pause(poll).await {
            return;
        }
    }
}

/// A round's worth of outcomes due on `channel`, leased to `replica`.
pub(crate) async fn claim(
    store: &Store,
    channel: OutcomeChannel,
    replica: &str,
    cfg: &config::Outcomes,
) -> Result<Vec<OutcomeRow>, StoreError> {
    let limit = i64::from(cfg.batch_size.max(1));
    store
        .claim_outcomes(channel, replica, limit, cfg.lease)
        .await
}

/// When an outcome that failed `attempts` times on a channel is due again.
pub(crate) fn next_try(attempts: i32, cfg: &config::Outcomes) -> chrono::DateTime<Utc> {
    let n = u32::try_from(attempts).unwrap_or(u32::MAX);
    let wait = backoff::doubling(n, cfg.retry_base, cfg.retry_cap);
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Delivers `due` one round at a time, then finds nothing; counts its rounds.
    struct Counting {
        due: usize,
        rounds: Arc<AtomicUsize>,
    }

    impl Round for Counting {
        async fn round(&mut self) -> usize {
            self.rounds.fetch_add(1, Ordering::SeqCst);
            let n = self.due.min(1);
            self.due -= n;
            n
        }
    }

    #[tokio::test]
    async fn rounds_go_on_at_once_while_there_is_work_then_wait_until_the_stop() {
        let (stop, shutdown) = Shutdown::new();
        let rounds = Arc::new(AtomicUsize::new(0));
        let outbox = Counting {
            due: 3,
            rounds: rounds.clone(),
        };
        let task = tokio::spawn(run(outbox, Duration::from_secs(60), shutdown));
        // Three rounds with work and the empty one after them, without waiting.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rounds.load(Ordering::SeqCst) < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rounds did not go on"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Then the poll interval, which the stop cuts short.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4, "an empty round waits");
        stop.stop();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the stop ends the wait")
            .unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), 4, "no round after the stop");
    }
}
