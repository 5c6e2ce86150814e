//! What `/readyz` knows beyond the database and the broker: which of the daemon's long-running
//! tasks is down and why, and whether intake is stalled. [`supervise`] runs a task, catches
//! its panic, reports it here and restarts it with backoff.
//!
//! Intake is **stalled** when deliveries have waited longer than `amqp.stall_after` for
//! their commit (the insert keeps failing, or hangs on a lock): the broker holds every later
//! delivery meanwhile, so the replica must stop saying it is ready.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;

use crate::shutdown::Shutdown;

/// First wait before a panicked task starts again; doubles per panic in a row, up to
/// [`RESTART_CAP`].
const RESTART_BASE: Duration = Duration::from_secs(1);
const RESTART_CAP: Duration = Duration::from_secs(60);
/// A task that ran this long before it panicked starts again after [`RESTART_BASE`].
const RESTART_RESET: Duration = Duration::from_secs(300);

/// The daemon's task health and intake progress, shared by the tasks and `/readyz`.
pub struct Health {
    /// Tasks that are down now: name → why (a panic message), and when they start again.
    down: Mutex<BTreeMap<String, Down>>,
    intake: Mutex<IntakeWait>,
    stall_after: Duration,
}

struct Down {
    kind: &'static str,
    why: String,
    restarts_at: Instant,
}

/// Deliveries that wait for their commit: since when, and the last error.
#[derive(Default)]
struct IntakeWait {
    since: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
}

/// Intake's view of the wait for one commit: cleared when dropped (committed, or given up
/// with the connection).
pub struct CommitWait<'a> {
    health: &'a Health,
}

impl Drop for CommitWait<'_> {
    fn drop(&mut self) {
        *self.health.intake.lock() = IntakeWait::default();
    }
}

impl CommitWait<'_> {
    /// One try to store failed with `error`; the deliveries wait on.
    pub fn failed(&self, error: &str) {
        let mut w = self.health.intake.lock();
        w.failures = w.failures.saturating_add(1);
        w.last_error = Some(error.chars().take(300).collect());
        metrics::counter!("mailboxd_intake_store_failures_total").increment(1);
    }
}

impl Health {
    pub fn new(stall_after: Duration) -> Arc<Health> {
        Arc::new(Health {
            down: Mutex::new(BTreeMap::new()),
            intake: Mutex::new(IntakeWait::default()),
            stall_after,
        })
    }

    /// Intake starts writing deliveries it holds unacked; the wait ends when the guard drops.
    pub fn intake_storing(&self) -> CommitWait<'_> {
        self.intake.lock().since = Some(Instant::now());
        CommitWait { health: self }
    }

    /// Why this replica is not ready, one sentence each; empty when nothing is wrong here.
    /// Also sets the gauges the scrape reports.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let now = Instant::now();
        let mut down_by_kind: BTreeMap<&'static str, u32> = BTreeMap::new();
        for (name, d) in self.down.lock().iter() {
            *down_by_kind.entry(d.kind).or_default() += 1;
            let wait = d.restarts_at.saturating_duration_since(now).as_secs();
            problems.push(format!(
                "task {name} is down: {}; it starts again in {wait}s",
                d.why
            ));
        }
        for kind in TASK_KINDS {
            let n = down_by_kind.get(kind).copied().unwrap_or(0);
            metrics::gauge!("mailboxd_tasks_down", "task" => kind).set(f64::from(n));
        }
        let waited = self.intake_waited();
        metrics::gauge!("mailboxd_intake_uncommitted_seconds").set(waited.as_secs_f64());
        let stalled = waited > self.stall_after;
        metrics::gauge!("mailboxd_intake_stalled").set(f64::from(u8::from(stalled)));
        if stalled {
            let w = self.intake.lock();
            let error = w.last_error.as_deref().map_or_else(
                || "no answer yet".to_owned(),
                |e| format!("last error: {e}"),
            );
            problems.push(format!(
                "intake stalled: deliveries have waited {}s for their commit (amqp.stall_after = {}s), {} failed tries, {error}",
                waited.as_secs(),
                self.stall_after.as_secs(),
                w.failures
            ));
        }
        problems
    }

    /// How long the deliveries intake holds have waited for their commit (zero: none wait).
    fn intake_waited(&self) -> Duration {
        self.intake
            .lock()
            .since
            .map_or(Duration::ZERO, |s| s.elapsed())
    }

    fn task_down(&self, task: &Task, why: String, restart_in: Duration) {
        self.down.lock().insert(
            task.to_string(),
            Down {
                kind: task.kind,
                why,
                restarts_at: Instant::now() + restart_in,
            },
        );
    }

    fn task_up(&self, task: &Task) {
        self.down.lock().remove(&task.to_string());
    }
}

/// Every kind of supervised task, so that each reports its gauge (zero included).
pub(crate) const TASK_KINDS: [&str; 9] = [
    "intake",
    "claim_loop",
    "pruner",
    "alert_sender",
    "outcome_publisher",
    "identityiq_launcher",
    "outcome_callback",
    "reconcile_schedule",
    "cloud_watch",
];

/// A supervised task: its kind (the metric label) and, when there are several of that kind,
/// which one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task {
    pub kind: &'static str,
    pub index: Option<u32>,
}

impl Task {
    pub(crate) fn one(kind: &'static str) -> Task {
        Task { kind, index: None }
    }

    pub(crate) fn nth(kind: &'static str, index: u32) -> Task {
        Task {
            kind,
            index: Some(index),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}#{i}", self.kind),
            None => f.write_str(self.kind),
        }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs the task `start` makes until it returns. A panic is logged, counted in `mailboxd_task_restarts_total{task}`, shown by `/readyz` while the
/// task is down, and the task starts again after a doubling wait (1 s up to 60 s).
pub(crate) async fn supervise<F, Fut>(
    task: Task,
    health: Arc<Health>,
    shutdown: Shutdown,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut in_a_row = 0u32;
    loop {
        health.task_up(&task);
        let began = Instant::now();
        // A task that returns is done (shutdown, or nothing to do: no SMTP server).
        let Err(payload) = AssertUnwindSafe(start()).catch_unwind().await else {
            return;
        };
        if shutdown.is_stopping() {
            return;
        }
        let why = format!("panicked: {}", panic_message(payload.as_ref()));
        in_a_row = if began.elapsed() > RESTART_RESET {
            1
        } else {
            in_a_row.saturating_add(1)
        };
        let wait = RESTART_BASE
            .saturating_mul(1 << in_a_row.saturating_sub(1).min(6))
            .min(RESTART_CAP);
        tracing::error!(task = %task, reason = %why, restart_in_s = wait.as_secs(), "a task of the daemon stopped; starting it again");
        metrics::counter!("mailboxd_task_restarts_total", "task" => task.kind).increment(1);
        health.task_down(&task, why, wait);
        if !shutdown.pause(wait).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_started_again() {
        let health = Health::new(Duration::from_secs(60));
        let (_stop, shutdown) = Shutdown::new();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        let task = tokio::spawn(supervise(
            Task::one("intake"),
            health.clone(),
            shutdown,
            move || {
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        panic!("boom");
                    }
                    std::future::pending::<()>().await
                }
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while health.problems().is_empty() {
            assert!(Instant::now() < deadline, "the panic was never reported");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let problems = health.problems();
        assert!(
            problems[0].contains("task intake is down: panicked: boom"),
            "{problems:?}"
        );
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the task was not started again");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(health.problems().is_empty(), "up again: ready again");
        task.abort();
    }

    #[test]
    fn intake_is_stalled_only_past_the_threshold_and_until_the_commit() {
        let health = Health::new(Duration::from_millis(50));
        assert!(health.problems().is_empty());
        let wait = health.intake_storing();
        wait.failed("error returned from database: no");
        assert!(health.problems().is_empty(), "not yet past the threshold");
        std::thread::sleep(Duration::from_millis(80));
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("intake stalled:"), "{problems:?}");
        assert!(
            problems[0].contains("1 failed tries, last error: error returned from database: no"),
            "{problems:?}"
        );
        drop(wait);
        assert!(health.problems().is_empty(), "committed: not stalled");
    }
}
