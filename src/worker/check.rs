//! The directory check before Exchange: every account of a batch read on a configured DC,
//! the jobs keyed on the objectGUIDs read (`resolve`), and what AD shows decides each job —
//! run, already done, cancel, wait for the sync, or fail (`plan`); the jobs that need no
//! Exchange call end here.

use chrono::{DateTime, Utc};

use super::{Plan, Prepared, Worker, cloud_guard, plan, resolve};
use crate::directory::{AccountState, Directory, Lookup};
use crate::event::EventKind;
use crate::job::{ErrorClass, Resolution};
use crate::store::AttemptRecord;

impl Worker {
    /// Reads every account of the batch from AD, keys the jobs on the objectGUIDs read
    /// (`resolve_all`) and settles the jobs that need no Exchange call; returns the rest,
    /// pointed at the domain controller that answered.
    pub(super) async fn precheck(
        &self,
        dir: &Directory,
        kind: EventKind,
        prepared: Vec<Prepared>,
        started_at: DateTime<Utc>,
    ) -> Vec<Prepared> {
        let reads = prepared
            .into_iter()
            .map(|p| self.read_one(dir, p, started_at));
        let reads: Vec<(Prepared, AccountState)> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        let reads = self.resolve_all(reads, started_at).await;
        let decided = reads
            .into_iter()
            .map(|(p, state)| self.decide_one(kind, p, state, started_at));
        futures::future::join_all(decided)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One account read in AD; `None` once a failed read's outcome is recorded.
    async fn read_one(
        &self,
        dir: &Directory,
        p: Prepared,
        started_at: DateTime<Utc>,
    ) -> Option<(Prepared, AccountState)> {
        let preferred = p.job.event.account.created_on_server.clone();
        match dir.read(&p.lookup, preferred.as_deref()).await {
            Ok(state) => Some((p, state)),
            Err(e) => {
                tracing::warn!(job_id = %p.job.id, error = %e, kind = e.kind(), "directory check failed");
                metrics::counter!("mailboxd_ldap_errors_total", "kind" => e.kind()).increment(1);
                let res = self.failure(&p.job, e.class(), e.to_string());
                self.finish(&p.job, &AttemptRecord::new(started_at), res)
                    .await;
                None
            }
        }
    }

    /// What AD showed decides: the job back if Exchange must run it, or `None` once its
    /// outcome is recorded.
    async fn decide_one(
        &self,
        kind: EventKind,
        mut p: Prepared,
        state: AccountState,
        started_at: DateTime<Utc>,
    ) -> Option<Prepared> {
        let decision = resolve::unmatched(kind, &p.lookup, &state).unwrap_or_else(|| {
            plan(
                kind,
                &p.data.sam_account_name,
                &state,
                p.wanted(),
                self.require_cloud_sync,
            )
        });
        p.data.domain_controller = Some(state.domain_controller.clone());
        if let Some(g) = state.account.as_ref().and_then(|a| a.object_guid) {
            // The GUID read from AD: unambiguous, whatever the event named.
            p.data.identity = g.to_string();
            p.lookup = Lookup::Guid(g);
        }
        p.before = Some(state);
        let res = match decision {
            Plan::Run => match self.guard(kind, &p).await {
                Ok(()) => return Some(p),
                Err((class, reason)) => self.failure(&p.job, class, reason),
            },
            Plan::Done(outcome) => Resolution::Succeeded { outcome },
            Plan::Cancel(note) => Resolution::Cancelled { note },
            Plan::WaitForSync(reason) => self.wait_for_sync(&p.job, reason),
            Plan::Fail(class, reason) => self.failure(&p.job, class, reason),
        };
        self.finish(&p.job, &self.record(started_at, &p), res).await;
        None
    }

    /// The checks in the cloud before a joiner runs (`cloud_guard`), when `[graph]` is set.
    async fn guard(&self, kind: EventKind, p: &Prepared) -> Result<(), (ErrorClass, String)> {
        let Some(graph) = self.graph.as_deref().filter(|_| kind == EventKind::Joiner) else {
            return Ok(());
        };
        let account = p.before.as_ref().and_then(|s| s.account.as_ref());
        cloud_guard::licence_first(graph, account).await
    }
}
