//! Runs the job state machine (design §3): claim a batch, run it through Exchange,
//! record one outcome per job (success, retry with backoff, or failure with an alert).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::circuit::{Circuit, Permit};
use crate::config;
use crate::event::{EventKind, check_address};
use crate::exchange::{AccountData, AccountOutcome, Exchange, Template};
use crate::store::{AttemptRecord, ErrorClass, Job, Resolution, Store};

/// Exponential backoff with full jitter: a random delay in `[0, min(cap, base·2^(n-1))]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let ceiling = exp.min(cap);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    pub exchange: Exchange,
    pub cfg: config::Worker,
    pub batch_size: u32,
    pub remote_routing_domain: String,
    pub replica: String,
    pub circuit: Arc<Circuit>,
}

impl Worker {
    /// Runs `concurrency` claim loops until shutdown.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(self.store.clone(), wake.clone(), shutdown.clone()));
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
                Ok(jobs) if !jobs.is_empty() => {
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
        let mut accounts = Vec::new();
        let mut runnable = Vec::new();
        for job in jobs {
            match self.account_data(&job) {
                Ok(a) => {
                    accounts.push(a);
                    runnable.push(job);
                }
                Err(message) => {
                    let record = AttemptRecord {
                        started_at,
                        host: None,
                        transcript: None,
                    };
                    let res = self.failure(&job, ErrorClass::Permanent, message);
                    self.finish(&job, &record, res).await;
                }
            }
        }
        if runnable.is_empty() {
            return;
        }
        let host = Some(self.exchange.endpoint().to_owned());
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
                self.circuit.success();
                let record = AttemptRecord {
                    started_at,
                    host,
                    transcript: (!result.transcript.is_empty()).then_some(result.transcript),
                };
                for job in &runnable {
                    let res = match result.outcomes.get(&job.id) {
                        Some(AccountOutcome::Done { status }) => Resolution::Succeeded {
                            outcome: status.clone(),
                        },
                        Some(AccountOutcome::Failed { class, message }) => {
                            self.failure(job, *class, message.clone())
                        }
                        None => self.failure(job, ErrorClass::Transient, "no outcome".into()),
                    };
                    self.finish(job, &record, res).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = runnable.len(), "batch failed as a whole");
                let reason = e.to_string();
                let (opened, open) = self
                    .circuit
                    .failure(e.class() == ErrorClass::Systemic, &reason);
                if let Some(pause) = opened {
                    let alert =
                        crate::alert::circuit_opened(self.exchange.endpoint(), &reason, pause);
                    if let Err(err) = self
                        .store
                        .raise_alert(&alert, Duration::from_secs(3600))
                        .await
                    {
                        tracing::error!(error = %err, "cannot write the circuit alert");
                    }
                }
                let record = AttemptRecord {
                    started_at,
                    host,
                    transcript: None,
                };
                for job in &runnable {
                    let res = if open {
                        // Not this job's fault: it waits for the host without using an attempt.
                        let wait = self.circuit.reopens_in() + Duration::from_millis(100);
                        Resolution::Deferred {
                            class: e.class(),
                            error: reason.clone(),
                            at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                        }
                    } else {
                        self.failure(job, e.class(), reason.clone())
                    };
                    self.finish(job, &record, res).await;
                }
            }
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
            let delay = backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_cap);
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
            Ok(true) => match &res {
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
                    tracing::info!(job_id = %job.id, account = %job.account, %error, next_attempt_at = %at, "job deferred: the circuit is open")
                }
            },
            Ok(false) => {
                tracing::warn!(job_id = %job.id, "lease lost before finishing: another replica owns the job now")
            }
            // The lease expires and another claim runs the job again; the Exchange step is
            // idempotent, so that is safe.
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "cannot record the outcome; the job will run again after its lease")
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

    #[test]
    fn backoff_stays_within_its_exponential_ceiling() {
        let base = Duration::from_secs(30);
        let cap = Duration::from_secs(3600);
        for _ in 0..200 {
            assert!(backoff(1, base, cap) <= base);
            assert!(backoff(3, base, cap) <= base * 4);
            assert!(backoff(40, base, cap) <= cap);
        }
        // Full jitter really spreads: 200 draws are not all equal.
        let draws: std::collections::HashSet<_> = (0..200).map(|_| backoff(5, base, cap)).collect();
        assert!(draws.len() > 10);
    }
}
