//! Crash and failure hooks for the tests that need one at a precise point: the process
//! aborting between a commit and its ack, a batch panicking for one account, a claim loop
//! panicking. Armed by `MAILBOXD_FAILPOINT` (comma-separated names, read once).
//!
//! Only a build with the `failpoints` feature has them (it is in the default features, which
//! the test suite and the demo use); a production build (`--no-default-features`) compiles
//! every hook to nothing, so no environment can trigger one there.
//!
//! | name | what happens |
//! |---|---|
//! | `intake-after-commit` | the process aborts after intake committed a batch, before the ack |
//! | `outcomes-after-confirm` | the process aborts after the broker confirmed an outcome, before its row is marked sent |
//! | `batch-panic:<account>` | a batch holding a job for `<account>` panics (every time) |
//! | `claim-loop-panic:<n>` | the first `n` turns of the claim loops panic (before claiming) |
//! | `decode-panic:<marker>` | reading a message whose body holds `<marker>` panics |

/// Aborts the process if `name` is armed.
pub(crate) fn abort_at(name: &str) {
    if armed::value(name).is_some() {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// Panics if `batch-panic:<account>` is armed for this account.
pub(crate) fn panic_for_account(account: &str) {
    if armed::value("batch-panic").is_some_and(|a| a.eq_ignore_ascii_case(account)) {
        panic!("failpoint batch-panic: a batch with {account} panics");
    }
}

/// Panics if `decode-panic:<marker>` is armed and the message body holds the marker.
pub(crate) fn panic_for_body(body: &[u8]) {
    let Some(marker) = armed::value("decode-panic").filter(|m| !m.is_empty()) else {
        return;
    };
    if body.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        panic!("failpoint decode-panic: reading a message with {marker} panics");
    }
}

/// Panics on the first `n` calls when `claim-loop-panic:<n>` is armed.
pub(crate) fn claim_loop_panic() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let Some(n) = armed::value("claim-loop-panic").and_then(|n| n.parse::<u32>().ok()) else {
        return;
    };
    if SEEN.fetch_add(1, Ordering::Relaxed) < n {
        panic!("failpoint claim-loop-panic: the claim loop panics");
    }
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;

    /// `(name, value)` for every armed failpoint (`name` or `name:value`).
    fn all() -> &'static [(String, String)] {
        static ARMED: OnceLock<Vec<(String, String)>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let spec = std::env::var("MAILBOXD_FAILPOINT").unwrap_or_default();
            let armed: Vec<(String, String)> = spec
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| match s.split_once(':') {
                    Some((name, value)) => (name.to_owned(), value.to_owned()),
                    None => (s.to_owned(), String::new()),
                })
                .collect();
            if !armed.is_empty() {
                tracing::warn!(failpoints = %spec, "test failpoints are armed (MAILBOXD_FAILPOINT)");
            }
            armed
        })
    }

    /// The value of an armed failpoint (`""` when it has none); `None` when not armed.
    pub(super) fn value(name: &str) -> Option<&'static str> {
        all()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(not(feature = "failpoints"))]
mod armed {
    /// Never armed: a build without the `failpoints` feature has no hooks.
    #[inline(always)]
    pub(crate) fn value(_name: &str) -> Option<&'static str> {
        None
    }
}
