//! The circuit breaker between the worker and the Windows side (docs/decisions.md, the
//! `systemic` error class): when the host
//! refuses the credentials or stays unreachable, work pauses instead of burning every job's
//! attempts, operations get one alert, and a single probe batch tests the host from time to time.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backoff;

/// The longest pause between probes, however long the host stays down.
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Closed: claim as usual.
    Go,
    /// Half-open: this caller runs the one probe batch, and hands the probe back with
    /// [`Circuit::probe_ended`] when the batch is over.
    Probe(Probe),
    /// Open: wait this long before asking again.
    Wait(Duration),
}

/// The one probe a half-open circuit lets out at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe(u64);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct CircuitStatus {
    pub open: bool,
    pub reason: Option<String>,
    /// Seconds until the next probe, when open.
    pub retry_in_s: Option<u64>,
}

struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    /// Probes that failed since the circuit opened: each doubles the pause.
    failed_probes: u32,
    /// The probe out now, if any.
    probe: Option<u64>,
    /// Probes let out so far: each gets the next number.
    probes: u64,
    reason: Option<String>,
    opened_at: Option<Instant>,
}

pub(crate) struct Circuit {
    threshold: u32,
    base_cooldown: Duration,
    /// The shortest pause after refused credentials (`worker.credential_probe_interval`).
    credential_floor: Duration,
    inner: Mutex<Inner>,
}

impl Circuit {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Circuit {
        Circuit {
            threshold: threshold.max(1),
            base_cooldown: cooldown,
            credential_floor: Duration::ZERO,
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                failed_probes: 0,
                probe: None,
                probes: 0,
                reason: None,
                opened_at: None,
            }),
        }
    }

    /// After refused credentials the circuit pauses at least `floor`: every probe sends the
    /// credentials again, and AD counts each refusal toward the account's lockout.
    pub(crate) fn with_credential_floor(mut self, floor: Duration) -> Circuit {
        self.credential_floor = floor;
        self
    }

    /// A batch failed because the credentials were refused: opens at once (or keeps open)
    /// and pauses no less than the credential floor. Same answer as [`Circuit::failure`].
    pub(crate) fn credentials_refused(&self, reason: &str) -> (Option<Duration>, bool) {
        let (opened, open) = self.failure(true, reason);
        let mut s = self.lock();
        let floor = Instant::now() + self.credential_floor;
        if s.open_until.is_some_and(|t| t < floor) {
            s.open_until = Some(floor);
        }
        drop(s);
        (opened.map(|pause| pause.max(self.credential_floor)), open)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// The pause before the next probe: the configured cooldown, doubled per failed probe
    /// up to `MAX_COOLDOWN` (or the configured cooldown, if that is longer).
    fn cooldown(&self, failed_probes: u32) -> Duration {
        let cap = MAX_COOLDOWN.max(self.base_cooldown);
        backoff::doubling(failed_probes.saturating_add(1), self.base_cooldown, cap)
    }

    pub(crate) fn permit(&self) -> Permit {
        let mut s = self.lock();
        match s.open_until {
            None => Permit::Go,
            Some(t) => {
                let now = Instant::now();
                if now < t {
                    Permit::Wait(t - now)
                } else if s.probe.is_none() {
                    s.probes += 1;
                    s.probe = Some(s.probes);
                    Permit::Probe(Probe(s.probes))
                } else {
                    Permit::Wait(Duration::from_millis(200))
                }
            }
        }
    }

    /// The probe's batch is over. If it reached the host, `success` or `failure` has
    /// settled the probe already; if not (nothing was due, the directory settled its job,
    /// Exchange only throttled), the next claim probes instead.
    pub(crate) fn probe_ended(&self, probe: Probe) {
        let mut s = self.lock();
        if s.probe == Some(probe.0) {
            s.probe = None;
        }
    }

    /// A batch reached the Windows side and came back: close. Returns how long the outage
    /// lasted when this closed an open circuit (the caller raises the one recovery alert).
    pub(crate) fn success(&self) -> Option<Duration> {
        let mut s = self.lock();
        let outage = s.opened_at.take().map(|t| t.elapsed());
        if let Some(d) = outage {
            tracing::info!(
                outage_s = d.as_secs(),
                "the Windows side answers again: circuit closed, work resumes"
            );
        }
        s.failures = 0;
        s.open_until = None;
        s.probe = None;
        s.failed_probes = 0;
        s.reason = None;
        outage
    }

    /// A whole batch failed. Returns `Some(pause)` when this opened the circuit (the
    /// caller raises the one alert), and whether the circuit is open now.
    pub(crate) fn failure(&self, systemic: bool, reason: &str) -> (Option<Duration>, bool) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        let now = Instant::now();
        if s.probe.take().is_some() {
            // The probe failed: stay open, wait longer.
            s.failed_probes = s.failed_probes.saturating_add(1);
            s.open_until = Some(now + self.cooldown(s.failed_probes));
            s.reason = Some(reason.to_owned());
            return (None, true);
        }
        if s.open_until.is_some() {
            return (None, true);
        }
        if systemic || s.failures >= self.threshold {
            let pause = self.cooldown(s.failed_probes);
            s.open_until = Some(now + pause);
            s.opened_at = Some(now);
            s.reason = Some(reason.to_owned());
            tracing::error!(
                reason,
                pause_s = pause.as_secs(),
                "circuit opened: work paused"
            );
            return (Some(pause), true);
        }
        (None, false)
    }

    /// When work may resume (for deferred jobs' next attempt).
    pub(crate) fn reopens_in(&self) -> Duration {
        self.lock().open_until.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    pub(crate) fn status(&self) -> CircuitStatus {
        let s = self.lock();
        CircuitStatus {
            open: s.open_until.is_some(),
            reason: s.reason.clone(),
            retry_in_s: s
                .open_until
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_or_at_once_when_systemic() {
        let c = Circuit::new(3, Duration::from_secs(60));
        assert_eq!(c.failure(false, "refused"), (None, false));
        assert_eq!(c.failure(false, "refused"), (None, false));
        assert_eq!(
            c.failure(false, "refused"),
            (Some(Duration::from_secs(60)), true)
        );
        assert!(matches!(c.permit(), Permit::Wait(_)));
        assert!(c.status().open);
        // Further failures while open raise nothing new.
        assert_eq!(c.failure(true, "401"), (None, true));

        let c = Circuit::new(3, Duration::from_secs(60));
        assert_eq!(c.failure(true, "401").0, Some(Duration::from_secs(60)));
    }

    #[test]
    fn one_probe_after_the_cooldown_and_a_longer_pause_when_it_fails() {
        let c = Circuit::new(1, Duration::from_millis(10));
        c.failure(false, "down");
        std::thread::sleep(Duration::from_millis(20)); // past the 10 ms cooldown
        assert!(matches!(c.permit(), Permit::Probe(_)));
        assert!(
            matches!(c.permit(), Permit::Wait(_)),
            "only one probe at a time"
        );
        assert_eq!(c.failure(false, "still down"), (None, true));
        assert!(
            c.reopens_in() > Duration::from_millis(10),
            "the pause doubled"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(c.permit(), Permit::Probe(_)));
        assert!(c.success().is_some(), "closing reports the outage");
        assert_eq!(c.success(), None, "a closed circuit closes nothing");
        assert_eq!(c.permit(), Permit::Go);
        assert!(!c.status().open);
    }

    #[test]
    fn refused_credentials_open_at_once_and_probe_no_faster_than_the_lockout_floor() {
        let floor = Duration::from_secs(1800);
        let c = Circuit::new(3, Duration::from_millis(10)).with_credential_floor(floor);
        let (opened, open) = c.credentials_refused("KDC_ERR_PREAUTH_FAILED");
        assert!(open);
        assert_eq!(
            opened,
            Some(floor),
            "the first refusal opens it, for the floor"
        );
        assert!(c.reopens_in() > Duration::from_secs(1790));
        std::thread::sleep(Duration::from_millis(20)); // past the 10 ms cooldown
        assert!(
            matches!(c.permit(), Permit::Wait(_)),
            "no probe before the floor"
        );
        // Ordinary failures keep the ordinary cooldown.
        let c = Circuit::new(1, Duration::from_millis(10)).with_credential_floor(floor);
        c.failure(true, "unreachable");
        std::thread::sleep(Duration::from_millis(20));
        let Permit::Probe(_) = c.permit() else {
            panic!("an ordinary outage probes after its cooldown")
        };
        // The probe then meets refused credentials: the floor applies from now on.
        assert_eq!(c.credentials_refused("401"), (None, true));
        assert!(c.reopens_in() > Duration::from_secs(1790));
    }

    #[test]
    fn a_probe_that_told_nothing_lets_the_next_claim_probe() {
        let c = Circuit::new(1, Duration::from_millis(10));
        c.failure(false, "down");
        std::thread::sleep(Duration::from_millis(20));
        let Permit::Probe(first) = c.permit() else {
            panic!("no probe after the cooldown")
        };
        assert!(matches!(c.permit(), Permit::Wait(_)), "one probe at a time");
        // Its batch never reached the host: no verdict, the probe comes back.
        c.probe_ended(first);
        let Permit::Probe(second) = c.permit() else {
            panic!("the next claim must probe")
        };
        // The first probe's late end does not free the second one.
        c.probe_ended(first);
        assert!(matches!(c.permit(), Permit::Wait(_)));
        // A verdict settles the probe; ending it afterwards changes nothing.
        assert_eq!(c.failure(false, "still down"), (None, true));
        c.probe_ended(second);
        assert!(
            matches!(c.permit(), Permit::Wait(_)),
            "the pause after a failed probe"
        );
    }
}
