//! How long every retry loop waits before its next try: the worker between attempts of a
//! job, the intake between reconnects and database retries, the alert outbox between SMTP
//! tries, the circuit between probes of the Windows host.
//!
//! Both curves double from `base` per try and stop at `cap`; try `n` (counted from 1) has
//! the ceiling `min(cap, base·2^(n-1))`. [`full_jitter`] draws the delay at random below the
//! ceiling, so that many waiters that failed together do not come back together;
//! [`doubling`] is the ceiling itself, for a single waiter whose pause people read (the
//! circuit's cooldown, an alert's next try).

use std::time::Duration;

use rand::Rng;

/// The ceiling for try `n`: `min(cap, base·2^(n-1))` (try 0 counts as try 1).
pub(crate) fn doubling(n: u32, base: Duration, cap: Duration) -> Duration {
    // 2^30 times any sensible base is past any sensible cap; the clamp keeps the power finite.
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(cap)
}

/// Exponential backoff with full jitter: a random delay in `[0, doubling(n, base, cap)]`.
pub(crate) fn full_jitter(n: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = doubling(n, base, cap);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(30);
    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn doubling_starts_at_base_and_stops_at_cap() {
        assert_eq!(doubling(0, BASE, CAP), BASE);
        assert_eq!(doubling(1, BASE, CAP), BASE);
        assert_eq!(doubling(2, BASE, CAP), BASE * 2);
        assert_eq!(doubling(3, BASE, CAP), BASE * 4);
        assert_eq!(doubling(40, BASE, CAP), CAP);
        assert_eq!(doubling(u32::MAX, BASE, CAP), CAP);
    }

    #[test]
    fn full_jitter_stays_within_its_exponential_ceiling() {
        for _ in 0..200 {
            assert!(full_jitter(1, BASE, CAP) <= BASE);
            assert!(full_jitter(3, BASE, CAP) <= BASE * 4);
            assert!(full_jitter(40, BASE, CAP) <= CAP);
        }
        // Full jitter really spreads: 200 draws are not all equal.
        let draws: std::collections::HashSet<_> =
            (0..200).map(|_| full_jitter(5, BASE, CAP)).collect();
        assert!(draws.len() > 10);
    }
}
