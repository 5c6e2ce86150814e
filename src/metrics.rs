//! Prometheus metrics (`/metrics` on the admin listener). Counters and histograms are
//! recorded where things happen; queue depths are read from PostgreSQL at scrape time, so
//! every replica reports the same truth about the shared queue. Jobs per state come from the
//! counts the jobs table's triggers keep (migration 0018), never from counting the table: a
//! scrape costs the same with a month of history (issue 35, `bench scrape`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mailboxd_jobs` | gauge | `state` |
//! | `mailboxd_alert_outbox` | gauge | `status` (pending, failing) |
//! | `mailboxd_outcome_outbox` | gauge | `status` (pending, failing) |
//! | `mailboxd_outcomes_published_total` / `mailboxd_outcome_publish_failures_total` | counter | — |
//! | `mailboxd_identityiq_launches_total` | counter | `result` (launched, refused, failed) |
//! | `mailboxd_outcome_callback_total` | counter | `result` (delivered, refused, failed) |
//! | `mailboxd_poison_messages` | gauge | — |
//! | `mailboxd_cloud_watches` | gauge | `state` (waiting: joiners whose cloud mailbox is awaited; overdue: past their deadline, not checked since) |
//! | `mailboxd_cloud_oldest_watch_seconds` | gauge | — (age of the oldest waiting cloud watch) |
//! | `mailboxd_cloud_failed_total` | counter | — (joiners whose cloud mailbox did not show by the deadline, this replica) |
//! | `mailboxd_circuit_open` | gauge | — |
//! | `mailboxd_broker_connected` | gauge | — |
//! | `mailboxd_events_ingested_total` | counter | `format` (json, identityiq) |
//! | `mailboxd_poison_received_total` | counter | — |
//! | `mailboxd_reply_to_refused_total` | counter | — |
//! | `mailboxd_http_intake_requests_total` | counter | `status` (the HTTP intake's answers: 202, 200, 400, 401, 408, 413, 501, 503, 404) |
//! | `mailboxd_traceparent_refused_total` | counter | — (an event's `traceparent` that broke W3C Trace Context's rules: the event went on without a trace) |
//! | `mailboxd_attempts_total` | counter | `outcome`, `class` |
//! | `mailboxd_attempt_duration_seconds` | histogram | `outcome` |
//! | `mailboxd_batch_size` | histogram | `kind` |
//! | `mailboxd_winrm_errors_total` | counter | `kind` |
//! | `mailboxd_ldap_errors_total` | counter | `kind` |
//! | `mailboxd_circuit_transitions_total` | counter | `to` (open, closed) |
//! | `mailboxd_alerts_sent_total` / `mailboxd_alert_send_failures_total` | counter | — |
//! | `mailboxd_reconcile_runs_total` | counter | `mode` |
//! | `mailboxd_reconcile_scanned`, `mailboxd_reconcile_progress` | gauge | — |
//! | `mailboxd_reconcile_differences` | gauge | `kind` |
//! | `mailboxd_reconcile_jobs_created_total` | counter | — |
//! | `mailboxd_exchange_sessions_max` | gauge | — (`exchange.max_sessions`) |
//! | `mailboxd_exchange_sessions_in_use` | gauge | — (all replicas, from PostgreSQL) |
//! | `mailboxd_exchange_sessions_held` | gauge | — (this replica) |
//! | `mailboxd_exchange_session_share` | gauge | — (this replica's adaptive share) |
//! | `mailboxd_exchange_session_waiters` | gauge | — (batches of this replica waiting for a slot) |
//! | `mailboxd_exchange_throttled_total` | counter | — (Exchange's refusals seen by this replica) |
//! | `mailboxd_exchange_cmdlets_in_window` | gauge | — (all replicas; only with `exchange.max_cmdlets`) |
//! | `mailboxd_exchange_cmdlet_waiters` | gauge | — (batches of this replica waiting for room) |
//! | `mailboxd_task_restarts_total` | counter | `task` (a supervised task that panicked and was started again) |
//! | `mailboxd_tasks_down` | gauge | `task` (instances down now, waiting to start again) |
//! | `mailboxd_batch_panics_total` | counter | — (batches that panicked, caught in the claim loop) |
//! | `mailboxd_decode_panics_total` | counter | — (messages whose reading panicked: stored as poison) |
//! | `mailboxd_intake_stalled` | gauge | — (1: deliveries waited longer than `amqp.stall_after` for their commit) |
//! | `mailboxd_intake_uncommitted_seconds` | gauge | — (how long the deliveries intake holds have waited for their commit) |
//! | `mailboxd_intake_store_failures_total` | counter | — (failed tries to store deliveries) |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (several in-process daemons share it, as tests
/// run them) and returns the handle that renders the text format.
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ];
            let sizes = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("mailboxd_attempt_duration_seconds".into()),
                    &buckets,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("mailboxd_batch_size".into()), &sizes)
                })
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// Sets the gauges read from the store at scrape time: jobs per state, the alert and
/// outcome outboxes, poison messages. Apart from [`render`] so `bench scrape` times it.
pub(crate) async fn queue_gauges(store: &crate::store::Store) {
    if let Ok(counts) = store.job_counts().await {
        for state in crate::job::JobState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("mailboxd_jobs", "state" => state.as_str()).set(n as f64);
        }
    }
    if let Ok((pending, failing)) = store.alert_outbox_depth().await {
        metrics::gauge!("mailboxd_alert_outbox", "status" => "pending").set(pending as f64);
        metrics::gauge!("mailboxd_alert_outbox", "status" => "failing").set(failing as f64);
    }
    if let Ok(c) = store.outcome_counts().await {
        metrics::gauge!("mailboxd_outcome_outbox", "status" => "pending").set(c.unsent as f64);
        metrics::gauge!("mailboxd_outcome_outbox", "status" => "failing").set(c.failing as f64);
    }
    if let Ok(n) = store.count_poison().await {
        metrics::gauge!("mailboxd_poison_messages").set(n as f64);
    }
    if let Ok(c) = store.cloud_watch_counts().await {
        metrics::gauge!("mailboxd_cloud_watches", "state" => "waiting").set(c.waiting as f64);
        metrics::gauge!("mailboxd_cloud_watches", "state" => "overdue").set(c.overdue as f64);
        let age = c
            .oldest
            .map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64().max(0.0));
        metrics::gauge!("mailboxd_cloud_oldest_watch_seconds").set(age);
    }
}

/// The scrape: recorded metrics plus the queue's state read now.
pub(crate) async fn render(
    store: &crate::store::Store,
    circuit_open: bool,
    broker_connected: bool,
    budget: &crate::budget::SessionBudget,
) -> String {
    let local = budget.local();
    metrics::gauge!("mailboxd_exchange_sessions_max").set(f64::from(local.max_sessions));
    metrics::gauge!("mailboxd_exchange_sessions_held").set(f64::from(local.held));
    metrics::gauge!("mailboxd_exchange_session_share").set(f64::from(local.share));
    metrics::gauge!("mailboxd_exchange_session_waiters").set(local.waiting as f64);
    if let Ok(cluster) = store.budget_use().await {
        metrics::gauge!("mailboxd_exchange_sessions_in_use").set(cluster.in_use as f64);
        // What every replica uses now: the configured maximum, or the lower limit Exchange
        // stated in a refusal (learned through the store).
        let limit = cluster
            .learned_max_sessions
            .map_or(local.max_sessions, |n| n.unsigned_abs());
        metrics::gauge!("mailboxd_exchange_sessions_limit").set(f64::from(limit));
    }
    if let Some(cmdlets) = budget.cmdlets() {
        metrics::gauge!("mailboxd_exchange_cmdlet_waiters").set(cmdlets.waiting() as f64);
        if let Ok(n) = store.cmdlets_in_window().await {
            metrics::gauge!("mailboxd_exchange_cmdlets_in_window").set(n as f64);
        }
    }
    queue_gauges(store).await;
    metrics::gauge!("mailboxd_circuit_open").set(f64::from(u8::from(circuit_open)));
    metrics::gauge!("mailboxd_broker_connected").set(f64::from(u8::from(broker_connected)));
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
