//! Finding the account an event names by what its sender has — the sAMAccountName, the
//! distinguishedName, the objectGUID or the userPrincipalName (docs/decisions.md, "One
//! account, whichever name the event uses"): how the job looks it up, the job re-keyed on
//! the objectGUID AD shows once it has read the account (`store::Store::resolve_account`),
//! and what it means that a DN or a UPN finds nothing.

use chrono::{DateTime, Utc};

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

    /// After the first read: the template data from AD's sAMAccountName when the event
    /// did not give it, and the job keyed on the objectGUID AD showed when the event did
    /// not give that. `false` when the job has ended here (superseded by a newer job of
    /// the account, waiting for one that runs, or failed) and must not go on.
    pub(super) async fn resolve(
        &self,
        p: &mut Prepared,
        state: &AccountState,
        started_at: DateTime<Utc>,
    ) -> bool {
        let Some(found) = &state.account else {
            return true;
        };
        let named = &p.job.event.account;
        if named.sam_account_name.is_none() {
            match self.account_data(&p.job, Some(&found.sam_account_name)) {
                // Rebuilt with AD's name; what the start date decided stays.
                Ok(data) => {
                    p.data = AccountData {
                        hidden: p.data.hidden,
                        ..data
                    }
                }
                Err(message) => {
                    self.ended(&p.job, started_at, ErrorClass::Permanent, message)
                        .await;
                    return false;
                }
            }
        }
        let Some(guid) = found.object_guid.filter(|_| named.object_guid.is_none()) else {
            return true;
        };
        let resolved = self
            .store
            .resolve_account(p.job.id, &self.replica, guid, &found.sam_account_name)
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
