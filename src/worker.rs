//! The job state machine (ARCHITECTURE.md, "Job states"): claim a batch, check each account
//! in AD (`plan`), run the rest through Exchange, verify in AD, and record one outcome per
//! job — success, retry with backoff, failure with an alert, cancel, or a deferral that uses
//! no attempt while the Windows side is down (`circuit`) or the account waits for the cloud
//! sync.

mod check;
pub(crate) mod claim;
mod cloud_guard;
mod data;
mod heartbeat;
mod pacing;
mod plan;
pub(crate) mod prune;
pub(crate) mod rescue;
mod resolve;
pub(crate) mod view;

pub(crate) use plan::{Plan, Wanted, plan};

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use uuid::Uuid;

use crate::budget::SessionBudget;
use crate::circuit::Circuit;
use crate::config;
use crate::directory::{AccountState, Directory, Lookup};
use crate::event::EventKind;
use crate::exchange::{
    AccountData, AccountReply, BatchResult, Exchange, ExchangeError, Template, throttling,
};
use crate::health::panic_message;
use crate::job::{ErrorClass, JobEffect, Resolution};
use crate::store::{AttemptRecord, Job, Store};
use crate::trace::{self, JobSpan, TraceParent};

#[derive(Clone)]
pub(crate) struct Worker {
    pub store: Store,
    pub exchange: Exchange,
    pub cfg: config::Worker,
    pub batch_size: u32,
    pub batch_linger: Duration,
    pub remote_routing_domain: String,
    pub replica: String,
    pub circuit: Arc<Circuit>,
    /// `None`: no domain controller configured, Exchange's answers are trusted.
    pub directory: Option<Directory>,
    pub require_cloud_sync: bool,
    /// `[leaver]`: hide a leaver's mailbox, or convert it to shared.
    pub leaver: config::Leaver,
    /// `[joiner]`: when a start date given as a day begins.
    pub joiner: config::StartOfDay,
    /// The cluster-wide Exchange session budget: a cold batch holds a slot while it runs
    /// (a warm process holds its own, see `exchange::warm`).
    pub budget: Arc<SessionBudget>,
    /// `[graph]`: the licence-first guard asks it before Enable-RemoteMailbox.
    pub graph: Option<Arc<crate::graph::GraphClient>>,
}

/// One job on its way through a batch.
struct Prepared {
    job: Job,
    data: AccountData,
    lookup: Lookup,
    before: Option<AccountState>,
    /// A joiner whose start date is ahead: hidden until then (`data.hidden`).
    hidden_until: Option<DateTime<Utc>>,
}

impl Prepared {
    /// What the job asks of the mailbox.
    fn wanted(&self) -> Wanted<'_> {
        Wanted {
            scheduled: self.job.step.is_some(),
            ..Wanted::of(&self.job.event, &self.data)
        }
    }
}

/// A job's attempt as it is recorded: the job, its record, what it came to.
type Finished<'a> = (&'a Job, AttemptRecord, Resolution);

impl Worker {
    /// Runs one claimed batch: joiners and leavers each in one PowerShell process, the
    /// leases kept alive meanwhile by a heartbeat that is part of this future (it ends with
    /// the batch, whatever way the batch ends). A panic in the batch is caught (`isolate`).
    pub(crate) async fn process(&self, mut jobs: Vec<Job>) {
        jobs.iter_mut().for_each(begin_span);
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let heartbeat = heartbeat::heartbeat(
            self.store.clone(),
            self.replica.clone(),
            ids,
            self.cfg.lease,
        );
        tokio::select! {
            () = self.isolate(jobs) => {}
            () = heartbeat => {}
        }
    }

    /// Runs a batch; if it panics, runs the jobs it still holds again in halves, down to one
    /// job alone. So the jobs batched with one that panics finish normally (in the same
    /// attempt), and only the job that panics alone is released with the failure recorded
    /// (`panicked`): retried like any transient failure, failed with an alert once its
    /// attempts are spent. A panic never ends the claim loop or leaves a job `running`.
    async fn isolate(&self, jobs: Vec<Job>) {
        let mut groups = vec![jobs];
        while let Some(group) = groups.pop() {
            let alone = group.len() == 1;
            let keys: Vec<(Uuid, i32)> = group.iter().map(|j| (j.id, j.attempt)).collect();
            let Err(payload) = AssertUnwindSafe(self.run_kinds(group)).catch_unwind().await else {
                continue;
            };
            let why = panic_message(payload.as_ref());
            metrics::counter!("mailboxd_batch_panics_total").increment(1);
            let held = match self.store.held_jobs(&self.replica, &keys).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::error!(error = %e, panic = %why, jobs = keys.len(), "a batch panicked and its jobs cannot be read back; they run again after their lease");
                    continue;
                }
            };
            tracing::error!(panic = %why, jobs = keys.len(), unfinished = held.len(), alone, "a batch panicked (a bug in mailboxd)");
            if alone {
                self.panicked(held, &why).await;
            } else {
                let mut held = held;
                let half = held.split_off(held.len() / 2);
                groups.extend([held, half].into_iter().filter(|g| !g.is_empty()));
            }
        }
    }

    /// The jobs of a batch, one PowerShell process per kind.
    async fn run_kinds(&self, jobs: Vec<Job>) {
        let mut by_kind: HashMap<EventKind, Vec<Job>> = HashMap::new();
        for job in jobs {
            by_kind.entry(job.kind).or_default().push(job);
        }
        for (kind, jobs) in by_kind {
            self.run_group(kind, jobs).await;
        }
    }

    /// A job that panicked alone: its attempt is recorded as an internal error, and it is
    /// retried or failed (with its alert) like any transient failure.
    async fn panicked(&self, jobs: Vec<Job>, why: &str) {
        let error = format!(
            "internal error: mailboxd panicked while running this job ({}); this is a bug in mailboxd, please report it with the log",
            why.chars().take(300).collect::<String>()
        );
        for job in jobs {
            // The alert's text comes from the same data that made the batch panic: if
            // writing it panics too, the job fails with a plain alert instead.
            let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.failure(&job, ErrorClass::Transient, error.clone())
            }))
            .unwrap_or_else(|_| Resolution::Failed {
                alert: Some(crate::alert::for_job_that_panicked(&job, &error)),
                class: ErrorClass::Transient,
                error: error.clone(),
            });
            self.finish(&job, &AttemptRecord::new(Utc::now()), res)
                .await;
        }
    }

    /// One kind's jobs: those that can run are checked in AD, the rest of them go to
    /// Exchange in one batch, and every job ends with one recorded outcome.
    async fn run_group(&self, kind: EventKind, jobs: Vec<Job>) {
        let started_at = Utc::now();
        let mut prepared = self.prepare(jobs, started_at).await;
        if let Some(dir) = &self.directory {
            prepared = self.precheck(dir, kind, prepared, started_at).await;
        }
        metrics::histogram!("mailboxd_batch_size", "kind" => kind.as_str())
            .record(prepared.len() as f64);
        if prepared.is_empty() {
            return;
        }
        // Paced to Exchange's cmdlet budget: in runs whose expected cmdlets fit its window.
        let template = template(kind);
        let max = self.budget.cmdlets().map(|c| c.limit().max);
        let session = self.exchange.session_cmdlets();
        let cost = |p: &Prepared| p.expected_cmdlets(template);
        for run in pacing::runs(prepared, cost, session, max) {
            let batch = batch_span(kind, &run);
            let ran = self.run_batch(template, &run).await;
            if let Err(e) = &ran {
                batch.record("batch.error_class", e.class().as_str());
                batch.record("otel.status_code", "ERROR");
            }
            drop(batch);
            match ran {
                Ok(result) => {
                    self.budget.session_opened();
                    self.host_answered().await;
                    self.settle(kind, &run, result, started_at).await;
                }
                Err(e) => self.batch_failed(&run, e, started_at).await,
            }
        }
    }

    /// What each job needs for the template; a job that cannot run at all fails here.
    async fn prepare(&self, jobs: Vec<Job>, started_at: DateTime<Utc>) -> Vec<Prepared> {
        let mut prepared = Vec::new();
        for job in jobs {
            if job.attempt > job.max_attempts {
                self.spent(&job, started_at).await;
                continue;
            }
            crate::failpoint::panic_for_account(&job.account);
            let hidden_until = self.hidden_until(&job, started_at);
            match self.lookup_and_data(&job) {
                Ok((lookup, mut data)) => {
                    data.hidden = hidden_until.is_some();
                    prepared.push(Prepared {
                        job,
                        data,
                        lookup,
                        before: None,
                        hidden_until,
                    });
                }
                Err(message) => {
                    let res = self.failure(&job, ErrorClass::Permanent, message);
                    self.finish(&job, &AttemptRecord::new(started_at), res)
                        .await;
                }
            }
        }
        prepared
    }

    /// A job claimed again after its last attempt ended without an outcome (its lease
    /// expired: the replica stopped, perhaps killed by this very job) is not run again: it
    /// fails with an alert, so that a job that crashes mailboxd cannot crash it forever.
    async fn spent(&self, job: &Job, started_at: DateTime<Utc>) {
        let error = format!(
            "gave up: the last of its {} attempts ended without an outcome (the replica running it stopped: a crash, a kill or a lost database connection); see the attempts, then retry the job",
            job.max_attempts
        );
        let res = Resolution::Failed {
            alert: Some(crate::alert::for_job_that_panicked(job, &error)),
            class: ErrorClass::Transient,
            error,
        };
        self.finish(job, &AttemptRecord::new(started_at), res).await;
    }

    /// Runs the batch's template in one PowerShell process, within `worker.batch_timeout`.
    async fn run_batch(
        &self,
        template: Template,
        prepared: &[Prepared],
    ) -> Result<BatchResult, ExchangeError> {
        let accounts: Vec<AccountData> = prepared.iter().map(|p| p.data.clone()).collect();
        let session = self.exchange.session_cmdlets();
        // Paced to Exchange's cmdlet budget: the batch waits for room in the window shared
        // by every replica instead of being refused (its jobs stay leased; no attempt used),
        // for what the directory predicts it runs (`pacing`).
        let expected = || {
            session
                + prepared
                    .iter()
                    .map(|p| p.expected_cmdlets(template))
                    .sum::<u32>()
        };
        let grant = match self.budget.cmdlets() {
            Some(c) => Some(c.take(expected()).await),
            None => None,
        };
        // Kept only to settle a grant: without a cmdlet budget the batch is not copied.
        let settled = grant.map(|g| (g, accounts.clone()));
        let result = tokio::time::timeout(
            self.cfg.batch_timeout,
            self.exchange.run_batch(template, accounts),
        )
        .await
        .unwrap_or(Err(ExchangeError::Hung(self.cfg.batch_timeout)));
        if let Some((grant, accounts)) = settled {
            grant
                .settle(cmdlets_ran(template, &accounts, &result, session))
                .await;
        }
        result
    }

    /// The batch came back from the Windows side: the host answers, so an open circuit
    /// closes, with the one recovery alert.
    async fn host_answered(&self) {
        let Some(outage) = self.circuit.success() else {
            return;
        };
        metrics::counter!("mailboxd_circuit_transitions_total", "to" => "closed").increment(1);
        let alert = crate::alert::circuit_closed(self.exchange.endpoint(), outage);
        if let Err(err) = self.store.raise_circuit_alert(&alert).await {
            tracing::error!(error = %err, "cannot write the recovery alert");
        }
    }

    /// Decides each job from its outcome in the batch (verified in AD) and records them
    /// all in one transaction.
    async fn settle(
        &self,
        kind: EventKind,
        prepared: &[Prepared],
        result: BatchResult,
        started_at: DateTime<Utc>,
    ) {
        let host = Some(self.exchange.endpoint().to_owned());
        let transcript = (!result.transcript.is_empty()).then_some(result.transcript);
        let deciding = prepared.iter().map(|p| {
            let outcome = result.outcomes.get(&p.job.id).cloned();
            let mut record = self.record(started_at, p);
            record.host = host.clone();
            record.transcript = transcript.clone();
            async move {
                let res = self.judge(kind, p, outcome, &mut record).await;
                (&p.job, record, res)
            }
        });
        let finished = futures::future::join_all(deciding).await;
        self.finish_all(&finished).await;
    }

    /// What Exchange's answer for one job comes to.
    async fn judge(
        &self,
        kind: EventKind,
        p: &Prepared,
        outcome: Option<AccountReply>,
        record: &mut AttemptRecord,
    ) -> Resolution {
        match outcome {
            Some(AccountReply::Done { outcome }) => self.verify(kind, p, outcome, record).await,
            // Exchange's cmdlet budget was spent: not the job's fault, no attempt used; the
            // wait Exchange stated is honoured.
            Some(AccountReply::Failed {
                message,
                retry_after,
                ..
            }) if throttling(&message).is_some() => {
                let stated = throttling(&message).flatten().or(retry_after);
                let wait = self.budget.throttled(stated, &message).await;
                Resolution::Deferred {
                    class: ErrorClass::Transient,
                    error: message,
                    after: wait,
                }
            }
            Some(AccountReply::Failed {
                class,
                message,
                retry_after,
            }) => no_sooner_than(self.failure(&p.job, class, message), retry_after),
            None => self.failure(&p.job, ErrorClass::Transient, "no outcome".into()),
        }
    }

    /// The whole batch failed: count it against the circuit (not when Exchange only
    /// throttled), then retry or defer every job of it.
    async fn batch_failed(
        &self,
        prepared: &[Prepared],
        e: ExchangeError,
        started_at: DateTime<Utc>,
    ) {
        tracing::warn!(error = %e, jobs = prepared.len(), "batch failed as a whole");
        if let ExchangeError::Winrm(w) = &e {
            metrics::counter!("mailboxd_winrm_errors_total", "kind" => w.kind()).increment(1);
        }
        let reason = e.to_string();
        // Throttling says the host is up and busy: lower this replica's share, keep the
        // circuit closed, and defer the jobs by Exchange's wait without using attempts. A
        // session Exchange dropped says the host is up too.
        let throttled = match &e {
            ExchangeError::Throttled {
                retry_after,
                message,
            } => Some(self.budget.throttled(*retry_after, message).await),
            _ => None,
        };
        let host_is_up = throttled.is_some() || matches!(e, ExchangeError::SessionDropped { .. });
        let open = !host_is_up && self.host_failed(&e, &reason).await;
        let host = Some(self.exchange.endpoint().to_owned());
        let finished: Vec<Finished<'_>> = prepared
            .iter()
            .map(|p| {
                let mut record = self.record(started_at, p);
                record.host = host.clone();
                let res = self.after_failed_batch(&p.job, e.class(), &reason, open, throttled);
                (&p.job, record, res)
            })
            .collect();
        self.finish_all(&finished).await;
    }

    /// Tells the circuit the host failed, raising the one alert if that opened it.
    /// Returns whether the circuit is open now.
    async fn host_failed(&self, e: &ExchangeError, reason: &str) -> bool {
        // Refused credentials: each probe counts toward AD's lockout (circuit's floor).
        let (opened, open) = if e.refuses_credentials() {
            self.circuit.credentials_refused(reason)
        } else {
            self.circuit
                .failure(e.class() == ErrorClass::Systemic, reason)
        };
        if let Some(pause) = opened {
            metrics::counter!("mailboxd_circuit_transitions_total", "to" => "open").increment(1);
            let alert = crate::alert::circuit_opened(self.exchange.endpoint(), reason, pause);
            if let Err(err) = self.store.raise_circuit_alert(&alert).await {
                tracing::error!(error = %err, "cannot write the circuit alert");
            }
        }
        open
    }

    /// One job of a batch that failed as a whole: deferred while the circuit is open or
    /// Exchange throttled (not its fault: no attempt used), otherwise retried or failed.
    fn after_failed_batch(
        &self,
        job: &Job,
        class: ErrorClass,
        reason: &str,
        open: bool,
        throttled: Option<Duration>,
    ) -> Resolution {
        let deferred_by = match (open, throttled) {
            (true, _) => Some(self.circuit.reopens_in() + Duration::from_millis(100)),
            (false, wait) => wait,
        };
        match deferred_by {
            Some(wait) => Resolution::Deferred {
                class,
                error: reason.to_owned(),
                after: wait,
            },
            None => self.failure(job, class, reason.to_owned()),
        }
    }

    fn record(&self, started_at: DateTime<Utc>, p: &Prepared) -> AttemptRecord {
        let mut record = AttemptRecord::new(started_at);
        record.stays_on_premises = self.leaver.stays_on_premises();
        record.hidden_until = p.hidden_until;
        if let Some(before) = &p.before {
            record.domain_controller = Some(before.domain_controller.clone());
            record.directory = Some(serde_json::json!({ "before": before }));
            record.view = view::of(before);
            record.view_before = record.view.clone();
        }
        record
    }

    /// Re-reads the account on the same domain controller after Exchange reported success:
    /// the job succeeds only if AD shows it.
    async fn verify(
        &self,
        kind: EventKind,
        p: &Prepared,
        status: JobEffect,
        record: &mut AttemptRecord,
    ) -> Resolution {
        let (Some(dir), Some(before)) = (&self.directory, &p.before) else {
            return Resolution::Succeeded { outcome: status };
        };
        match dir.reread(before, &p.lookup).await {
            Ok(after) => {
                record.directory = Some(serde_json::json!({ "before": before, "after": after }));
                record.view = view::of(&after);
                let wanted = p.wanted();
                let checked = match kind {
                    EventKind::Mover => plan::mover::verified(status, before, &after, wanted),
                    _ => plan::verified(kind, status, &after, wanted),
                };
                match checked {
                    Ok(()) => Resolution::Succeeded { outcome: status },
                    Err(why) => self.failure(&p.job, ErrorClass::Transient, why),
                }
            }
            Err(e) => self.failure(
                &p.job,
                ErrorClass::Transient,
                format!(
                    "Exchange reported {status:?} but the verification read failed: {e}",
                    status = status.as_str()
                ),
            ),
        }
    }

    /// Waits (without using attempts) until the sync deadline, then fails with the reason.
    fn wait_for_sync(&self, job: &Job, reason: String) -> Resolution {
        let waited = (Utc::now() - job.created_at).to_std().unwrap_or_default();
        if waited >= self.cfg.sync_deadline {
            let error = format!(
                "{reason}; gave up after {}s (worker.sync_deadline): check Entra Connect and the account's sync scope",
                self.cfg.sync_deadline.as_secs()
            );
            return Resolution::Failed {
                alert: Some(crate::alert::for_failed_job(
                    job,
                    ErrorClass::NotSynced,
                    &error,
                )),
                class: ErrorClass::NotSynced,
                error,
            };
        }
        Resolution::Deferred {
            class: ErrorClass::NotSynced,
            error: reason,
            after: self.cfg.sync_poll_interval,
        }
    }

    /// Retry while attempts remain and the error may pass; otherwise fail with an alert.
    fn failure(&self, job: &Job, class: ErrorClass, error: String) -> Resolution {
        let retryable = matches!(
            class,
            ErrorClass::Transient | ErrorClass::Systemic | ErrorClass::NotSynced
        );
        if retryable && job.attempt < job.max_attempts {
            let attempt = u32::try_from(job.attempt).unwrap_or(1);
            let delay =
                crate::backoff::full_jitter(attempt, self.cfg.backoff_base, self.cfg.backoff_cap);
            return Resolution::Retry {
                class,
                error,
                after: delay,
            };
        }
        Resolution::Failed {
            alert: Some(crate::alert::for_failed_job(job, class, &error)),
            class,
            error,
        }
    }

    async fn finish(&self, job: &Job, record: &AttemptRecord, res: Resolution) {
        match self.store.finish(job, &self.replica, record, &res).await {
            Ok(held) => log_outcome(job, &res, held),
            // The lease expires and another claim runs the job again; the Exchange step is
            // idempotent, so that is safe.
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "cannot record the outcome; the job will run again after its lease")
            }
        }
    }

    /// A batch's outcomes land in one transaction.
    async fn finish_all(&self, finished: &[Finished<'_>]) {
        let outcomes: Vec<_> = finished
            .iter()
            .map(|(job, record, res)| (*job, record, res))
            .collect();
        match self.store.finish_many(&self.replica, &outcomes).await {
            Ok(held) => {
                for ((job, _, res), held) in outcomes.iter().zip(held) {
                    log_outcome(job, res, held);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = outcomes.len(), "cannot record the batch's outcomes; its jobs run again after their lease")
            }
        }
    }
}

/// The template a kind of job runs.
fn template(kind: EventKind) -> Template {
    match kind {
        EventKind::Joiner => Template::EnableRemoteMailbox,
        EventKind::Leaver => Template::HideRemoteMailbox,
        EventKind::Mover => Template::RenameRemoteMailbox,
    }
}

/// The most cmdlets a batch may run: what it counts when it failed as a whole.
fn most_cmdlets(template: Template, accounts: &[AccountData], session: u32) -> u32 {
    session
        + accounts
            .iter()
            .map(|a| template.max_cmdlets(a))
            .sum::<u32>()
}

/// The cmdlets a batch ran: what Exchange's answer counted (`BatchResult::cmdlets_ran`),
/// the most it may have run when the batch failed as a whole.
fn cmdlets_ran(
    template: Template,
    accounts: &[AccountData],
    result: &Result<BatchResult, ExchangeError>,
    session: u32,
) -> u32 {
    match result {
        Ok(result) => session + result.cmdlets_ran,
        Err(_) => most_cmdlets(template, accounts, session),
    }
}

/// A retry no sooner than Exchange's throttling asked (`wait`); other resolutions as they are.
fn no_sooner_than(res: Resolution, wait: Option<Duration>) -> Resolution {
    match (res, wait) {
        (
            Resolution::Retry {
                class,
                error,
                after,
            },
            Some(wait),
        ) => Resolution::Retry {
            class,
            error,
            after: after.max(wait),
        },
        (res, _) => res,
    }
}

/// The attempt's span, continuing the trace the event came with: the job's outcome carries
/// it back in place of the sender's span (`trace::own`), when spans are exported.
fn begin_span(job: &mut Job) {
    let sender = job
        .trace_parent
        .as_deref()
        .and_then(|t| TraceParent::parse(t.as_bytes()).ok());
    let span = tracing::info_span!(
        target: trace::SPANS,
        parent: None,
        "job",
        otel.name = %format_args!("job {}", job.kind),
        job.id = %job.id,
        job.kind = %job.kind,
        job.account = %job.account,
        job.attempt = job.attempt,
        job.outcome = tracing::field::Empty,
        job.error_class = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    trace::continues(&span, sender.as_ref());
    if let Some(own) = trace::own(&span) {
        job.trace_parent = Some(own.to_string());
    }
    job.span = JobSpan(span);
}

/// The span of one Exchange batch. Its jobs may come from several traces, so it is a root of
/// its own, linked to each job's span and each job's span to it (OpenTelemetry's way for a
/// batch: a span has one parent, links name the others).
fn batch_span(kind: EventKind, prepared: &[Prepared]) -> tracing::Span {
    let span = tracing::info_span!(
        target: trace::SPANS,
        parent: None,
        "exchange batch",
        otel.name = %format_args!("exchange batch {kind}"),
        otel.kind = "client",
        batch.kind = %kind,
        batch.jobs = prepared.len(),
        batch.error_class = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    for p in prepared {
        trace::link(&span, &p.job.span.0);
        trace::link(&p.job.span.0, &span);
    }
    span
}

/// The attempt's end on its span: what it came to, and the error's class (never its text,
/// which may quote what a peer sent).
fn end_span(job: &Job, res: &Resolution) {
    let (outcome, class) = labels(res);
    let span = &job.span.0;
    span.record("job.outcome", outcome);
    if class != "none" {
        span.record("job.error_class", class);
    }
    if matches!(res, Resolution::Failed { .. }) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The metric labels of an attempt: (outcome, class).
fn labels(res: &Resolution) -> (&'static str, &'static str) {
    match res {
        Resolution::Succeeded { .. } => ("succeeded", "none"),
        Resolution::Retry { class, .. } => ("retry", class.as_str()),
        Resolution::Failed { class, .. } => ("failed", class.as_str()),
        Resolution::Deferred { class, .. } => ("deferred", class.as_str()),
        Resolution::Cancelled { .. } => ("cancelled", "none"),
    }
}

fn log_outcome(job: &Job, res: &Resolution, held: bool) {
    if !held {
        tracing::warn!(job_id = %job.id, "lease lost before finishing: another replica owns the job now");
        return;
    }
    end_span(job, res);
    let (outcome, class) = labels(res);
    metrics::counter!("mailboxd_attempts_total", "outcome" => outcome, "class" => class)
        .increment(1);
    if let Some(started) = job.started_at {
        let secs = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1e3;
        metrics::histogram!("mailboxd_attempt_duration_seconds", "outcome" => outcome).record(secs);
    }
    // The trace the event came with (W3C Trace Context): the job's lines carry its id.
    let trace_id = job
        .trace_parent
        .as_deref()
        .and_then(|t| t.split('-').nth(1))
        .unwrap_or_default();
    let _trace = tracing::info_span!("job", trace_id).entered();
    match res {
        Resolution::Succeeded { outcome } => {
            tracing::info!(job_id = %job.id, account = %job.account, kind = %job.kind, outcome = outcome.as_str(), "job succeeded")
        }
        Resolution::Retry {
            class,
            error,
            after,
        } => {
            tracing::warn!(job_id = %job.id, account = %job.account, class = class.as_str(), %error, retry_in = ?after, "job will retry")
        }
        Resolution::Failed { class, error, .. } => {
            tracing::error!(job_id = %job.id, account = %job.account, class = class.as_str(), %error, "job failed")
        }
        Resolution::Deferred { error, after, .. } => {
            tracing::info!(job_id = %job.id, account = %job.account, %error, retry_in = ?after, "job deferred without using an attempt")
        }
        Resolution::Cancelled { note } => {
            tracing::info!(job_id = %job.id, account = %job.account, %note, "job cancelled")
        }
    }
}
