//! The daemon's stop, as every long-lived task sees it: one [`Stop`] (owned by `App`) asks,
//! any number of [`Shutdown`] handles (cheap to clone, one per task) see it. Stopping happens
//! once and is never undone; a dropped `Stop` counts as a stop, so a task cannot outlive the
//! `App` that started it.

use std::time::Duration;

use tokio::sync::watch;

/// What a task holds to learn that the daemon is stopping.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// What asks every [`Shutdown`] made from it to stop.
#[derive(Debug)]
pub struct Stop(watch::Sender<bool>);

impl Shutdown {
    /// A stop and the first handle on it.
    pub fn new() -> (Stop, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Stop(tx), Shutdown(rx))
    }

    /// Whether the stop was asked: checked between rounds, so a task ends at a clean point.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Returns once the stop is asked (at once if it already was, or if the `Stop` is gone).
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Sleeps `d`, or less if the stop comes first: true after the whole pause, false when
    /// stopping (the caller returns).
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stopped() => false,
        }
    }
}

impl Stop {
    /// Asks every task to stop; asking again does nothing more.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_reaches_every_handle_even_those_made_after_it() {
        let (stop, shutdown) = Shutdown::new();
        let early = shutdown.clone();
        assert!(!early.is_stopping());
        assert!(early.pause(Duration::from_millis(1)).await);
        stop.stop();
        let late = shutdown.clone();
        assert!(early.is_stopping() && late.is_stopping());
        early.stopped().await;
        late.stopped().await;
        assert!(!late.pause(Duration::from_secs(60)).await);
    }

    #[tokio::test]
    async fn a_dropped_stop_ends_the_waits() {
        let (stop, shutdown) = Shutdown::new();
        drop(stop);
        shutdown.stopped().await;
        assert!(shutdown.is_stopping());
        assert!(!shutdown.pause(Duration::from_secs(60)).await);
    }
}
