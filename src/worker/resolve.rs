//! Finding the account an event names by what its sender has — the sAMAccountName, the
//! distinguishedName, the objectGUID or the userPrincipalName (docs/decisions.md, "One
//! account, whichever name the event uses"): how the job looks it up, the job re-keyed on
//! the objectGUID AD shows once it has read the account (`store::Store::resolve_account`),
//! and what it means that a DN or a UPN finds nothing.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Prepared, Worker, plan::Plan};
use crate::directory::{AccountState, Lookup};
use crate::event::EventKind;
use crate::exchange::AccountData;
use crate::job::ErrorClass;
use crate::store::{AttemptRecord, Job, Resolved};

impl Worker {
    /// How to find the job's account, and its template data as far as the event tells it.
    pub(super) fn lookup_and_data(&self, job: &Job) -> Result<(Lookup, AccountData), String> {
        let account = &job.event.account;
        let lookup = Lookup::of(account).ok_or(
            "the event names no account (validation requires one name; a stored event was changed?)",
        )?;
        let sam = account.sam_account_name.as_ref().map(|s| s.as_str());
        if sam.is_none() && self.directory.is_none() {
            return Err(format!(
                "the event names the account by {lookup} only, and without a domain controller ([ldap].urls) mailboxd cannot find it: configure [ldap], or send account.sam_account_name"
            ));
        }
        Ok((lookup, self.account_data(job, sam)?))
    }

    /// After the first reads of a batch: each job's template data from AD's sAMAccountName
    /// when the event did not give it, and each job keyed on the objectGUID AD showed when
    /// the event did not give that — the quiet ones (nothing else of the account pending,
    /// running or newer) in one statement for the batch, the others one by one by the rules
    /// of an insert. Returns the jobs that go on; the others have ended here (superseded by
    /// a newer job of the account, waiting for one that runs, or failed).
    pub(super) async fn resolve_all(
        &self,
        reads: Vec<(Prepared, AccountState)>,
        started_at: DateTime<Utc>,
    ) -> Vec<(Prepared, AccountState)> {
        let mut named = Vec::with_capacity(reads.len());
        for (mut p, state) in reads {
            match self.with_ads_name(&mut p, &state) {
                Ok(()) => named.push((p, state)),
                Err(message) => {
                    self.ended(&p.job, started_at, ErrorClass::Permanent, message)
                        .await
                }
            }
        }
        let wanted: Vec<(Uuid, Uuid, &str)> = named
            .iter()
            .filter_map(|(p, s)| Some((p.job.id, key_to(p, s)?, found_sam(s)?)))
            .collect();
        let keyed: HashSet<Uuid> = match self.store.key_quiet_accounts(&self.replica, &wanted).await
        {
            Ok(keyed) => keyed.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot key the batch's jobs on their objectGUIDs at once; one by one");
                HashSet::new()
            }
        };
        let mut going_on = Vec::with_capacity(named.len());
        for (p, state) in named {
            let go = match key_to(&p, &state) {
                Some(guid) if !keyed.contains(&p.job.id) => {
                    self.rekey(&p, guid, &state, started_at).await
                }
                _ => true,
            };
            if go {
                going_on.push((p, state));
            }
        }
        going_on
    }

    /// The template data rebuilt with AD's sAMAccountName when the event did not name the
    /// account by it (what the start date decided stays); the error ends the job.
    fn with_ads_name(&self, p: &mut Prepared, state: &AccountState) -> Result<(), String> {
        let Some(found) = &state.account else {
            return Ok(());
        };
        if p.job.event.account.sam_account_name.is_none() {
            let data = self.account_data(&p.job, Some(&found.sam_account_name))?;
            p.data = AccountData {
                hidden: p.data.hidden,
                ..data
            };
        }
        Ok(())
    }

    /// One job keyed on `guid` by the rules of an insert (`Store::resolve_account`): `false`
    /// when it has ended here.
    async fn rekey(
        &self,
        p: &Prepared,
        guid: Uuid,
        state: &AccountState,
        started_at: DateTime<Utc>,
    ) -> bool {
        let sam = found_sam(state).unwrap_or_default();
        let resolved = self
            .store
            .resolve_account(p.job.id, &self.replica, guid, sam)
            .await;
        let job = &p.job;
        match resolved {
            Ok(Resolved::Keyed) => return true,
            Ok(Resolved::Superseded(by)) => {
                tracing::info!(job_id = %job.id, %guid, superseded_by = %by, "the account has a newer job under another name: superseded");
            }
            Ok(Resolved::Busy) => {
                tracing::info!(job_id = %job.id, %guid, "another job of the account is running: this one waits for it");
            }
            Ok(Resolved::NotHeld) => {
                tracing::warn!(job_id = %job.id, "the job's lease was lost before it was keyed on its account");
            }
            Err(e) => {
                let message =
                    format!("cannot key the job on its account's objectGUID {guid}: {e}; retried");
                self.ended(job, started_at, ErrorClass::Transient, message)
                    .await;
            }
        }
        false
    }

    async fn ended(&self, job: &Job, started_at: DateTime<Utc>, class: ErrorClass, error: String) {
        let res = self.failure(job, class, error);
        self.finish(job, &AttemptRecord::new(started_at), res).await;
    }
}

/// The objectGUID AD showed, when the event did not give one: what the job is to be keyed on.
fn key_to(p: &Prepared, state: &AccountState) -> Option<Uuid> {
    let found = state.account.as_ref()?;
    found
        .object_guid
        .filter(|_| p.job.event.account.object_guid.is_none())
}

/// The account's sAMAccountName as AD showed it.
fn found_sam(state: &AccountState) -> Option<&str> {
    state.account.as_ref().map(|a| a.sam_account_name.as_str())
}

/// What it means that AD shows no account for a DN or a UPN: a DN changes when the
/// account is moved or renamed, a UPN when it is renamed, so the account may well be
/// there under another one. A joiner retries (the account may not have replicated yet); a
/// leaver fails with what to do instead of being taken as gone, which would leave a
/// leaver's mailbox visible. `None`: the account was found, or the name was one that
/// cannot go out of date (the objectGUID; the sAMAccountName keeps its rule, `plan`).
pub(super) fn unmatched(kind: EventKind, lookup: &Lookup, state: &AccountState) -> Option<Plan> {
    if state.account.is_some() || !lookup.may_be_stale() {
        return None;
    }
    let dc = &state.domain_controller;
    Some(match kind {
        EventKind::Joiner => Plan::Fail(
            ErrorClass::Transient,
            format!(
                "no account has {lookup} on domain controller {dc} yet (replication lag, or the name is wrong or out of date); retried — if it stays, fix the name in the IAM system or send the objectGUID"
            ),
        ),
        EventKind::Leaver => Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "no account has {lookup} on domain controller {dc}: it may have been moved or renamed since the IAM system read it, so mailboxd does not take it as gone; send the objectGUID or the sAMAccountName (or the current name), then retry the job"
            ),
        ),
        // A rename may itself be why the old name finds nothing: the account is there under
        // its new one, and only the IAM system knows which.
        EventKind::Mover => Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "no account has {lookup} on domain controller {dc}: a renamed account is found by its objectGUID or sAMAccountName, not by the name it had before; send the mover with one of those, then retry the job"
            ),
        ),
    })
}
