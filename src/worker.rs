//! Runs the job state machine (design §3): claim a batch, run it through Exchange,
//! record one outcome per job (success, retry with backoff, or failure with an alert).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::circuit::{Circuit, Permit};
use crate::config;
use crate::directory::{AccountState, Directory, Lookup, RecipientType};
use crate::event::{EventKind, check_address};
use crate::exchange::{AccountData, AccountOutcome, Exchange, Template};
use crate::store::{AttemptRecord, ErrorClass, Job, Resolution, Store};

#[derive(Clone)]
pub struct Worker {
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
}

/// What the directory check decided for one job (design §4, notes/exchange.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Run the template against the domain controller that answered.
    Run,
    /// Already true: succeeded without touching Exchange.
    Done(&'static str),
    /// The event is stale (a leaver whose account is enabled again).
    Cancel(String),
    /// Joiner not synced to the cloud yet.
    WaitForSync(String),
    Fail(ErrorClass, String),
}

/// Decides from what the domain controller shows whether Exchange needs to be asked.
pub fn plan(
    kind: EventKind,
    sam: &str,
    state: &AccountState,
    remote_routing_address: Option<&str>,
    require_cloud_sync: bool,
) -> Plan {
    let dc = &state.domain_controller;
    let Some(a) = &state.account else {
        return match kind {
            EventKind::Joiner => Plan::Fail(
                ErrorClass::Transient,
                format!(
                    "account {sam:?} is not on domain controller {dc} yet (replication lag, or it was never created); retried"
                ),
            ),
            EventKind::Leaver => Plan::Done("gone"),
        };
    };
    match kind {
        EventKind::Joiner => match a.recipient {
            RecipientType::RemoteMailbox => {
                let current = a.target_address.as_deref().map(|t| {
                    t.strip_prefix("SMTP:")
                        .or(t.strip_prefix("smtp:"))
                        .unwrap_or(t)
                });
                match (current, remote_routing_address) {
                    (Some(cur), Some(want)) if !cur.eq_ignore_ascii_case(want) => Plan::Fail(
                        ErrorClass::Permanent,
                        format!(
                            "account {sam:?} already has a remote mailbox routed to {cur}, not {want}; fix the targetAddress in Exchange or the event"
                        ),
                    ),
                    // Hidden and disabled: the leaver came after this joiner; never unhide it.
                    _ if a.hidden && a.disabled => Plan::Cancel(format!(
                        "account {sam:?} is disabled and hidden on {dc}: the joiner is stale (a rehire must be enabled in AD first)"
                    )),
                    // Hidden: a rehire. The template makes it visible again.
                    _ if a.hidden => Plan::Run,
                    _ => Plan::Done("already"),
                }
            }
            RecipientType::OnPremMailbox => Plan::Fail(
                ErrorClass::Permanent,
                format!(
                    "account {sam:?} has an on-premises mailbox (msExchRecipientTypeDetails={}); migrate it to Exchange Online instead of enabling a remote mailbox",
                    a.recipient_type_details.unwrap_or_default()
                ),
            ),
            RecipientType::Other => Plan::Fail(
                ErrorClass::Permanent,
                format!(
                    "account {sam:?} is already a mail recipient of another type (msExchRecipientTypeDetails={}); an Exchange administrator must decide",
                    a.recipient_type_details.unwrap_or_default()
                ),
            ),
            RecipientType::None | RecipientType::MailUser => {
                if require_cloud_sync && !a.cloud_synced {
                    Plan::WaitForSync(format!(
                        "account {sam:?} is not synced to the cloud yet (sync rule on {dc}); waiting for Entra Connect"
                    ))
                } else {
                    Plan::Run
                }
            }
        },
        EventKind::Leaver => {
            if !a.disabled {
                Plan::Cancel(format!(
                    "account {sam:?} is enabled again on {dc} (userAccountControl {}): the leaver is stale and was not applied",
                    a.user_account_control
                ))
            } else if a.recipient != RecipientType::RemoteMailbox {
                Plan::Done("not_remote")
            } else if a.hidden {
                Plan::Done("already")
            } else {
                Plan::Run
            }
        }
    }
}

/// Whether the account now shows what Exchange said it did.
fn verified(kind: EventKind, status: &str, after: &AccountState) -> Result<(), String> {
    let Some(a) = &after.account else {
        return Err(format!(
            "the account is no longer on {} after Exchange reported {status:?}",
            after.domain_controller
        ));
    };
    let ok = match (kind, status) {
        (EventKind::Joiner, _) => a.recipient == RecipientType::RemoteMailbox && !a.hidden,
        (EventKind::Leaver, "not_remote") => a.recipient != RecipientType::RemoteMailbox,
        (EventKind::Leaver, _) => a.hidden,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Exchange reported {status:?} but {} shows recipient type {:?}, hidden {}; retried",
            after.domain_controller, a.recipient, a.hidden
        ))
    }
}

/// One job on its way through a batch.
struct Pending {
    job: Job,
    data: AccountData,
    lookup: Lookup,
    before: Option<AccountState>,
}

impl Worker {
    /// Writes the circuit's opened/closed alert, one pair per outage across replicas.
    async fn raise_circuit_alert(
        &self,
        alert: &crate::store::NewAlert,
        opening: bool,
    ) -> Result<bool, crate::store::StoreError> {
        let (opened, closed) = crate::alert::circuit_subjects(self.exchange.endpoint());
        self.store
            .raise_circuit_alert(alert, &opened, &closed, opening)
            .await
    }

    /// Runs `concurrency` claim loops until shutdown.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(self.store.clone(), wake.clone(), shutdown.clone()));
        let pruner = tokio::spawn(prune(self.store.clone(), self.cfg.retention));
        let mut loops = Vec::new();
        for i in 0..self.cfg.concurrency {
            let w = self.clone();
            let wake = wake.clone();
            let shutdown = shutdown.clone();
            loops.push(tokio::spawn(async move {
                w.claim_loop(i, wake, shutdown).await
            }));
        }
        for l in loops {
            let _ = l.await;
        }
        listener.abort();
        pruner.abort();
    }

    async fn claim_loop(&self, slot: u32, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            // The Windows side is down: wait, then let one loop probe it with one job.
            let limit = match self.circuit.permit() {
                Permit::Go => i64::from(self.batch_size),
                Permit::Probe => 1,
                Permit::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d.min(self.cfg.poll_interval)) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            };
            // Register interest before claiming, so a notification in between is not lost.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claimed = self.store.claim(&self.replica, limit, self.cfg.lease).await;
            match claimed {
                Ok(mut jobs) if !jobs.is_empty() => {
                    // Let a burst fill the batch: one more claim after the linger. The jobs
                    // already claimed are leased, so waiting holds nothing up elsewhere.
                    let room = limit - jobs.len() as i64;
                    if room > 0 && !self.batch_linger.is_zero() {
                        tokio::time::sleep(self.batch_linger).await;
                        match self.store.claim(&self.replica, room, self.cfg.lease).await {
                            Ok(more) => jobs.extend(more),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot claim more jobs for the batch")
                            }
                        }
                    }
                    tracing::debug!(slot, jobs = jobs.len(), "claimed a batch");
                    self.process(jobs).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim jobs; retrying"),
            }
            if limit == 1 && self.circuit.status().open {
                self.circuit.probe_unused();
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs one claimed batch: joiners and leavers each in one PowerShell process.
    pub async fn process(&self, jobs: Vec<Job>) {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let heartbeat = {
            let store = self.store.clone();
            let replica = self.replica.clone();
            let lease = self.cfg.lease;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = store.heartbeat(&replica, &ids, lease).await {
                        tracing::warn!(error = %e, "lease heartbeat failed");
                    }
                }
            })
        };
        let mut by_kind: HashMap<EventKind, Vec<Job>> = HashMap::new();
        for job in jobs {
            by_kind.entry(job.kind).or_default().push(job);
        }
        for (kind, jobs) in by_kind {
            self.run_group(kind, jobs).await;
        }
        heartbeat.abort();
    }

    async fn run_group(&self, kind: EventKind, jobs: Vec<Job>) {
        let started_at = Utc::now();
        let template = match kind {
            EventKind::Joiner => Template::EnableRemoteMailbox,
            EventKind::Leaver => Template::HideRemoteMailbox,
        };
        let mut pending = Vec::new();
        for job in jobs {
            match self.account_data(&job) {
                Ok(data) => {
                    let ev = &job.event.account;
                    let lookup = ev.object_guid.map_or_else(
                        || Lookup::Sam(ev.sam_account_name.as_str().to_owned()),
                        Lookup::Guid,
                    );
                    pending.push(Pending {
                        job,
                        data,
                        lookup,
                        before: None,
                    });
                }
                Err(message) => {
                    let res = self.failure(&job, ErrorClass::Permanent, message);
                    self.finish(&job, &AttemptRecord::new(started_at), res)
                        .await;
                }
            }
        }
        if let Some(dir) = &self.directory {
            pending = self.precheck(dir, kind, pending, started_at).await;
        }
        metrics::histogram!("mailboxd_batch_size", "kind" => kind.as_str())
            .record(pending.len() as f64);
        if pending.is_empty() {
            return;
        }
        let host = Some(self.exchange.endpoint().to_owned());
        let accounts = pending.iter().map(|p| p.data.clone()).collect();
        let run = tokio::time::timeout(
            self.cfg.batch_timeout,
            self.exchange.run_batch(template, accounts),
        )
        .await
        .unwrap_or(Err(crate::exchange::ExchangeError::Hung(
            self.cfg.batch_timeout,
        )));
        match run {
            Ok(result) => {
                if let Some(outage) = self.circuit.success() {
                    metrics::counter!("mailboxd_circuit_transitions_total", "to" => "closed")
                        .increment(1);
                    let alert = crate::alert::circuit_closed(self.exchange.endpoint(), outage);
                    if let Err(err) = self.raise_circuit_alert(&alert, false).await {
                        tracing::error!(error = %err, "cannot write the recovery alert");
                    }
                }
                let transcript = (!result.transcript.is_empty()).then_some(result.transcript);
                let deciding = pending.iter().map(|p| {
                    let outcome = result.outcomes.get(&p.job.id).cloned();
                    let host = host.clone();
                    let transcript = transcript.clone();
                    async move {
                        let mut record = self.record(started_at, p);
                        record.host = host;
                        record.transcript = transcript;
                        let res = match outcome {
                            Some(AccountOutcome::Done { status }) => {
                                self.verify(kind, p, status, &mut record).await
                            }
                            Some(AccountOutcome::Failed { class, message }) => {
                                self.failure(&p.job, class, message)
                            }
                            None => {
                                self.failure(&p.job, ErrorClass::Transient, "no outcome".into())
                            }
                        };
                        (record, res)
                    }
                });
                let decided = futures::future::join_all(deciding).await;
                // The batch's outcomes land in one transaction.
                let outcomes: Vec<_> = pending
                    .iter()
                    .zip(&decided)
                    .map(|(p, (record, res))| (&p.job, record, res))
                    .collect();
                match self.store.finish_many(&self.replica, &outcomes).await {
                    Ok(held) => {
                        for ((job, _, res), held) in outcomes.iter().zip(held) {
                            self.log_outcome(job, res, held);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, jobs = outcomes.len(), "cannot record the batch's outcomes; its jobs run again after their lease")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = pending.len(), "batch failed as a whole");
                if let crate::exchange::ExchangeError::Winrm(w) = &e {
                    metrics::counter!("mailboxd_winrm_errors_total", "kind" => w.kind())
                        .increment(1);
                }
                let reason = e.to_string();
                // Throttling says the host is up and busy: back off, keep the circuit closed.
                let retry_after = match &e {
                    crate::exchange::ExchangeError::Throttled { retry_after, .. } => {
                        Some(retry_after.unwrap_or_default())
                    }
                    _ => None,
                };
                let (opened, open) = if retry_after.is_some() {
                    (None, false)
                } else {
                    self.circuit
                        .failure(e.class() == ErrorClass::Systemic, &reason)
                };
                if let Some(pause) = opened {
                    metrics::counter!("mailboxd_circuit_transitions_total", "to" => "open")
                        .increment(1);
                    let alert =
                        crate::alert::circuit_opened(self.exchange.endpoint(), &reason, pause);
                    if let Err(err) = self.raise_circuit_alert(&alert, true).await {
                        tracing::error!(error = %err, "cannot write the circuit alert");
                    }
                }
                for p in &pending {
                    let mut record = self.record(started_at, p);
                    record.host = host.clone();
                    let res = if open {
                        // Not this job's fault: it waits for the host without using an attempt.
                        let wait = self.circuit.reopens_in() + Duration::from_millis(100);
                        Resolution::Deferred {
                            class: e.class(),
                            error: reason.clone(),
                            at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                        }
                    } else {
                        match (self.failure(&p.job, e.class(), reason.clone()), retry_after) {
                            (Resolution::Retry { class, error, at }, Some(wait)) => {
                                let floor = Utc::now()
                                    + chrono::Duration::from_std(wait).unwrap_or_default();
                                Resolution::Retry {
                                    class,
                                    error,
                                    at: at.max(floor),
                                }
                            }
                            (res, _) => res,
                        }
                    };
                    self.finish(&p.job, &record, res).await;
                }
            }
        }
    }

    fn record(&self, started_at: chrono::DateTime<Utc>, p: &Pending) -> AttemptRecord {
        let mut record = AttemptRecord::new(started_at);
        if let Some(before) = &p.before {
            record.domain_controller = Some(before.domain_controller.clone());
            record.directory = Some(serde_json::json!({ "before": before }));
        }
        record
    }

    /// Reads every account of the batch from AD and settles the jobs that need no
    /// Exchange call; returns the rest, pointed at the domain controller that answered.
    async fn precheck(
        &self,
        dir: &Directory,
        kind: EventKind,
        pending: Vec<Pending>,
        started_at: chrono::DateTime<Utc>,
    ) -> Vec<Pending> {
        let reads = pending.into_iter().map(|mut p| async move {
            let preferred = p.job.event.account.created_on_server.clone();
            let read = dir.read(&p.lookup, preferred.as_deref()).await;
            let state = match read {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(job_id = %p.job.id, error = %e, kind = e.kind(), "directory check failed");
                    metrics::counter!("mailboxd_ldap_errors_total", "kind" => e.kind()).increment(1);
                    let res = self.failure(&p.job, e.class(), e.to_string());
                    self.finish(&p.job, &AttemptRecord::new(started_at), res).await;
                    return None;
                }
            };
            let sam = p.data.sam_account_name.clone();
            let decision = plan(
                kind,
                &sam,
                &state,
                p.data.remote_routing_address.as_deref(),
                self.require_cloud_sync,
            );
            p.data.domain_controller = Some(state.domain_controller.clone());
            if let Some(g) = state.account.as_ref().and_then(|a| a.object_guid) {
                // The GUID read from AD: unambiguous, whatever the event named.
                p.data.identity = g.to_string();
                p.lookup = Lookup::Guid(g);
            }
            p.before = Some(state);
            let res = match decision {
                Plan::Run => return Some(p),
                Plan::Done(outcome) => Resolution::Succeeded {
                    outcome: outcome.to_owned(),
                },
                Plan::Cancel(note) => Resolution::Cancelled { note },
                Plan::WaitForSync(reason) => self.wait_for_sync(&p.job, reason),
                Plan::Fail(class, reason) => self.failure(&p.job, class, reason),
            };
            self.finish(&p.job, &self.record(started_at, &p), res).await;
            None
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Re-reads the account on the same domain controller after Exchange reported success:
    /// the job succeeds only if AD shows it.
    async fn verify(
        &self,
        kind: EventKind,
        p: &Pending,
        status: String,
        record: &mut AttemptRecord,
    ) -> Resolution {
        let (Some(dir), Some(before)) = (&self.directory, &p.before) else {
            return Resolution::Succeeded { outcome: status };
        };
        match dir.reread(before, &p.lookup).await {
            Ok(after) => {
                record.directory = Some(serde_json::json!({ "before": before, "after": after }));
                match verified(kind, &status, &after) {
                    Ok(()) => Resolution::Succeeded { outcome: status },
                    Err(why) => self.failure(&p.job, ErrorClass::Transient, why),
                }
            }
            Err(e) => self.failure(
                &p.job,
                ErrorClass::Transient,
                format!("Exchange reported {status:?} but the verification read failed: {e}"),
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
            at: Utc::now()
                + chrono::Duration::from_std(self.cfg.sync_poll_interval).unwrap_or_default(),
        }
    }

    /// Builds what the template needs for one job, or says why it cannot run at all.
    fn account_data(&self, job: &Job) -> Result<AccountData, String> {
        let ev = &job.event;
        let sam = ev.account.sam_account_name.as_str();
        let mailbox = ev.mailbox.clone().unwrap_or_default();
        let remote_routing_address = match (job.kind, mailbox.remote_routing_address) {
            (EventKind::Leaver, _) => None,
            (EventKind::Joiner, Some(a)) => Some(a),
            (EventKind::Joiner, None) => {
                let local = mailbox.alias.as_deref().unwrap_or(sam);
                let derived = format!("{local}@{}", self.remote_routing_domain);
                check_address(&derived).map_err(|r| {
                    format!(
                        "cannot derive a remote routing address from {sam:?} ({r}); send mailbox.remote_routing_address or mailbox.alias in the event"
                    )
                })?;
                Some(derived)
            }
        };
        Ok(AccountData {
            job_id: job.id,
            identity: ev
                .account
                .object_guid
                .map_or_else(|| sam.to_owned(), |g| g.to_string()),
            sam_account_name: sam.to_owned(),
            domain_controller: ev.account.created_on_server.clone(),
            remote_routing_address,
            alias: mailbox.alias,
            primary_smtp_address: mailbox.primary_smtp_address,
            archive: mailbox.archive.unwrap_or(false),
        })
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
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            return Resolution::Retry { class, error, at };
        }
        Resolution::Failed {
            alert: Some(crate::alert::for_failed_job(job, class, &error)),
            class,
            error,
        }
    }

    async fn finish(&self, job: &Job, record: &AttemptRecord, res: Resolution) {
        match self.store.finish(job, &self.replica, record, &res).await {
            Ok(held) => self.log_outcome(job, &res, held),
            // The lease expires and another claim runs the job again; the Exchange step is
            // idempotent, so that is safe.
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "cannot record the outcome; the job will run again after its lease")
            }
        }
    }

    fn log_outcome(&self, job: &Job, res: &Resolution, held: bool) {
        if held {
            let (outcome, class) = match res {
                Resolution::Succeeded { .. } => ("succeeded", "none"),
                Resolution::Retry { class, .. } => ("retry", class.as_str()),
                Resolution::Failed { class, .. } => ("failed", class.as_str()),
                Resolution::Deferred { class, .. } => ("deferred", class.as_str()),
                Resolution::Cancelled { .. } => ("cancelled", "none"),
            };
            metrics::counter!("mailboxd_attempts_total", "outcome" => outcome, "class" => class)
                .increment(1);
            if let Some(started) = job.started_at {
                let secs = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1e3;
                metrics::histogram!("mailboxd_attempt_duration_seconds", "outcome" => outcome)
                    .record(secs);
            }
        }
        match held {
            true => match res {
                Resolution::Succeeded { outcome } => {
                    tracing::info!(job_id = %job.id, account = %job.account, kind = %job.kind, outcome, "job succeeded")
                }
                Resolution::Retry { class, error, at } => {
                    tracing::warn!(job_id = %job.id, account = %job.account, class = class.as_str(), %error, next_attempt_at = %at, "job will retry")
                }
                Resolution::Failed { class, error, .. } => {
                    tracing::error!(job_id = %job.id, account = %job.account, class = class.as_str(), %error, "job failed")
                }
                Resolution::Deferred { error, at, .. } => {
                    tracing::info!(job_id = %job.id, account = %job.account, %error, next_attempt_at = %at, "job deferred without using an attempt")
                }
                Resolution::Cancelled { note } => {
                    tracing::info!(job_id = %job.id, account = %job.account, %note, "job cancelled")
                }
            },
            false => {
                tracing::warn!(job_id = %job.id, "lease lost before finishing: another replica owns the job now")
            }
        }
    }
}

/// Retention: every few minutes, delete finished jobs past `worker.retention`. Any replica
/// may do it; the deletes are idempotent and chunked.
async fn prune(store: Store, retention: Duration) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(300).min(retention.max(Duration::from_secs(1))));
    loop {
        tick.tick().await;
        loop {
            match store.prune(retention, 1000).await {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "pruned finished jobs past retention")
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune finished jobs; trying again later");
                    break;
                }
            }
        }
    }
}

/// Wakes idle claim loops when a job becomes due (Postgres NOTIFY from a trigger).
async fn listen(store: Store, wake: Arc<Notify>, shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match sqlx::postgres::PgListener::connect_with(store.pool()).await {
            Ok(mut l) => {
                if l.listen("mailboxd_jobs").await.is_ok() {
                    while l.recv().await.is_ok() {
                        wake.notify_waiters();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "job listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Account;

    fn state(a: Option<Account>) -> AccountState {
        AccountState {
            domain_controller: "dc1.corp.example".into(),
            url: "ldaps://dc1.corp.example".into(),
            account: a,
        }
    }

    fn acct(recipient: RecipientType, disabled: bool, hidden: bool, synced: bool) -> Account {
        Account {
            distinguished_name: "CN=j,CN=Users,DC=corp,DC=example".into(),
            sam_account_name: "j".into(),
            user_principal_name: None,
            object_guid: None,
            user_account_control: if disabled { 514 } else { 512 },
            disabled,
            recipient,
            recipient_type_details: match recipient {
                RecipientType::RemoteMailbox => Some(2_147_483_648),
                RecipientType::OnPremMailbox => Some(1),
                RecipientType::MailUser => Some(128),
                RecipientType::Other => Some(64),
                RecipientType::None => None,
            },
            hidden,
            target_address: (recipient == RecipientType::RemoteMailbox)
                .then(|| "SMTP:j@t.mail.onmicrosoft.com".into()),
            cloud_synced: synced,
        }
    }

    #[test]
    fn every_directory_decision_of_the_design() {
        use EventKind::{Joiner, Leaver};
        use RecipientType::*;
        let rra = Some("j@t.mail.onmicrosoft.com");
        let kinds = |p: &Plan| match p {
            Plan::Run => "run",
            Plan::Done(o) => o,
            Plan::Cancel(_) => "cancel",
            Plan::WaitForSync(_) => "wait",
            Plan::Fail(ErrorClass::Transient, _) => "transient",
            Plan::Fail(ErrorClass::Permanent, _) => "permanent",
            Plan::Fail(..) => "other",
        };
        let rows: Vec<(EventKind, Option<Account>, bool, &str)> = vec![
            (Joiner, Option::None, false, "transient"),
            (Joiner, Some(acct(None, false, false, true)), false, "run"),
            (
                Joiner,
                Some(acct(MailUser, false, false, true)),
                false,
                "run",
            ),
            (
                Joiner,
                Some(acct(RemoteMailbox, false, false, true)),
                false,
                "already",
            ),
            (
                Joiner,
                Some(acct(RemoteMailbox, false, true, true)),
                false,
                "run",
            ),
            (
                Joiner,
                Some(acct(RemoteMailbox, true, true, true)),
                false,
                "cancel",
            ),
            (
                Joiner,
                Some(acct(OnPremMailbox, false, false, true)),
                false,
                "permanent",
            ),
            (
                Joiner,
                Some(acct(Other, false, false, true)),
                false,
                "permanent",
            ),
            (Joiner, Some(acct(None, false, false, false)), true, "wait"),
            (Joiner, Some(acct(None, false, false, false)), false, "run"),
            (Leaver, Option::None, false, "gone"),
            (
                Leaver,
                Some(acct(RemoteMailbox, false, false, true)),
                false,
                "cancel",
            ),
            (
                Leaver,
                Some(acct(None, true, false, true)),
                false,
                "not_remote",
            ),
            (
                Leaver,
                Some(acct(RemoteMailbox, true, true, true)),
                false,
                "already",
            ),
            (
                Leaver,
                Some(acct(RemoteMailbox, true, false, true)),
                false,
                "run",
            ),
        ];
        for (kind, a, require_sync, want) in rows {
            let desc = format!("{kind:?} {a:?} sync={require_sync}");
            let p = plan(kind, "j", &state(a), rra, require_sync);
            assert_eq!(kinds(&p), want, "{desc}: {p:?}");
        }
        // A remote mailbox routed elsewhere is a conflict for a person, not a no-op.
        let p = plan(
            Joiner,
            "j",
            &state(Some(acct(RemoteMailbox, false, false, true))),
            Some("other@t.mail.onmicrosoft.com"),
            false,
        );
        assert_eq!(kinds(&p), "permanent");
    }
}
