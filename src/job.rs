//! The job's vocabulary, beside `event` (what comes in): where a job is in its life
//! (`JobState` and its named sets), what it did to the mailbox (`JobEffect`), why an
//! attempt failed (`ErrorClass`), how one attempt ended (`AttemptEnd`), what the worker
//! decided (`Resolution`) and what an operator did (`ActionKind`). `store` maps these to its
//! columns and back (`store::columns`); the text of each variant is the column's text.

use crate::alert::draft::NewAlert;
use crate::text_enum::text_enum;

text_enum! {
    /// Where a job is in its life. ARCHITECTURE.md draws the transitions; each variant
    /// says who moves a job into it, who moves it out, and when it is pruned. Pruning
    /// (`worker.retention`) deletes only [`JobState::PRUNABLE`] jobs whose outcome is sent.
    pub enum JobState as "job state" {
        /// Waiting for its first run. In: intake inserting a new event, an operator's
        /// retry (API, dashboard, CLI). Out: a worker's claim (→ running), a newer event
        /// of the account (→ superseded), an operator's cancel (→ cancelled). Not pruned.
        Queued = "queued",
        /// A worker holds it under a lease, extended by the batch's heartbeat. In: a claim.
        /// Out: the worker's resolution (→ succeeded, retrying, waiting_for_sync, failed,
        /// cancelled), the lease expiring because its replica died (→ retrying, the lost
        /// attempt recorded), the replica giving it back at shutdown (→ retrying, the
        /// attempt not counted). At most one per account. Not pruned.
        Running = "running",
        /// Due again at `next_attempt_at`. In: a failed attempt with attempts left, a
        /// deferral (circuit open, Exchange throttling: no attempt used), lease expiry,
        /// release at shutdown. Out: a claim once due (→ running), a newer event
        /// (→ superseded), an operator's cancel or retry. Not pruned.
        Retrying = "retrying",
        /// The account has not reached Entra ID yet; polled without using attempts until
        /// the sync deadline. In: a pre-check or attempt that found it unsynced (its
        /// outcome message sent once). Out: like `retrying`. Not pruned.
        WaitingForSync = "waiting_for_sync",
        /// A step due at a set time, not before: a joiner's start date, whose mailbox is
        /// hidden until `next_attempt_at` ([`JobStep::MakeVisible`]). In: the joiner's
        /// success, in its transaction. Out: a claim once due (→ running), a newer event of
        /// the account (→ superseded), an operator's cancel, or retry (→ queued: due now).
        /// Not pruned.
        Scheduled = "scheduled",
        /// Done, and AD shows it. In: the worker, after the verification read (or a
        /// pre-check that found nothing to do). Final. Pruned after the retention.
        Succeeded = "succeeded",
        /// Permanent error, or attempts spent: the alert is written in the same
        /// transaction. In: the worker. Out: only an operator's retry (→ queued). Kept
        /// until an operator has looked at it: never pruned.
        Failed = "failed",
        /// Will not run. In: an operator's cancel of a pending job, or the worker's
        /// pre-check finding the event stale (a leaver whose account is enabled again).
        /// Out: an operator's retry (→ queued). Pruned after the retention.
        Cancelled = "cancelled",
        /// A newer event for the same account made it moot (`superseded_by` names the
        /// newer job). In: intake's insert of the newer event, or of an event older than
        /// the account's newest (stale at insert). Final. Pruned after the retention.
        Superseded = "superseded",
    }
}

impl JobState {
    /// Waiting for a worker to claim them (once due): a claim, a supersede and an
    /// operator cancel take jobs in these states, and the `jobs_claimable` index covers
    /// exactly them.
    pub(crate) const CLAIMABLE: [JobState; 4] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Scheduled,
    ];
    /// Not finished yet: claimable, or running now.
    pub(crate) const UNFINISHED: [JobState; 5] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Scheduled,
        JobState::Running,
    ];
    /// What an operator may run again (now): what ended without success, or is waiting.
    /// A bulk retry by filter takes these; a scheduled step is never swept up with them.
    pub(crate) const RETRYABLE: [JobState; 4] = [
        JobState::Failed,
        JobState::Cancelled,
        JobState::Retrying,
        JobState::WaitingForSync,
    ];
    /// What an operator's retry of one job takes: [`JobState::RETRYABLE`], and a scheduled
    /// step run before its time ("run now": the person starts early).
    pub(crate) const RUNNABLE_NOW: [JobState; 5] = [
        JobState::Failed,
        JobState::Cancelled,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Scheduled,
    ];
    /// States that carry the account's intent (the newest of them decides whether an older
    /// event is stale): everything but what was cancelled or superseded.
    pub(crate) const INTENDED: [JobState; 7] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Scheduled,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
    ];
    /// Finished and of no further interest after the retention: failed jobs are kept
    /// until an operator has looked at them.
    pub(crate) const PRUNABLE: [JobState; 3] = [
        JobState::Succeeded,
        JobState::Cancelled,
        JobState::Superseded,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Superseded
        )
    }
}

text_enum! {
    /// A job that is a later step of its event rather than the event itself
    /// (`jobs.step`; `None` for the event's own job). Its outcome answers the same event.
    pub enum JobStep as "job step" {
        /// A joiner's start date has come: make the mailbox the joiner created hidden
        /// visible in the address lists (`Set-RemoteMailbox -HiddenFromAddressListsEnabled
        /// $false`); its outcome is `joiner.visible`.
        MakeVisible = "make_visible",
    }
}

text_enum! {
    /// What a job that ended without an error did to the account's mailbox, or why it did
    /// nothing: what Exchange reported (`enabled`, `unhidden`, `hidden`, `already`,
    /// `not_remote`), what the directory showed before Exchange was asked (`already`,
    /// `not_remote`, `gone`), or a stale event (`stale`). Kept in `jobs.outcome`, and the
    /// `outcome` field of the outcome message ("outcome" alone names that message).
    pub enum JobEffect as "job outcome" {
        /// A remote mailbox was enabled.
        Enabled = "enabled",
        /// A hidden remote mailbox (a rehire) was made visible again.
        Unhidden = "unhidden",
        /// A joiner whose remote mailbox was of another type than it asks (most often a
        /// rehire whose mailbox had been converted to shared): converted
        /// (`Set-RemoteMailbox -Type`, `Regular` for a person) and made visible.
        Converted = "converted",
        /// The remote mailbox was hidden from the address lists.
        Hidden = "hidden",
        /// A leaver under `leaver.action = "shared"`: the user mailbox is a shared one now
        /// (`Set-RemoteMailbox -Type Shared`); its Exchange Online licence may be removed.
        Shared = "shared",
        /// A mover: the remote mailbox has its new alias, UPN or primary address
        /// (`Set-RemoteMailbox`), the old primary kept as a secondary address.
        Renamed = "renamed",
        /// It was true already: nothing to do.
        Already = "already",
        /// A leaver without a remote mailbox: nothing to hide.
        NotRemote = "not_remote",
        /// A leaver whose account no longer exists.
        Gone = "gone",
        /// Cancelled: the directory shows the event no longer applies.
        Stale = "stale",
    }
}

text_enum! {
    /// Why an attempt failed, which decides what happens next.
    pub enum ErrorClass as "error class" {
        /// Network, WinRM timeouts, throttling, replication lag: retry with backoff.
        Transient = "transient",
        /// The directory says wait for cloud sync.
        NotSynced = "not_synced",
        /// The account or request is wrong: retrying cannot help; alert support.
        Permanent = "permanent",
        /// Authentication refused, host down for long: pause, alert operations once.
        Systemic = "systemic",
    }
}

text_enum! {
    /// How one attempt ended, as its `job_attempts` row records it (`outcome` column).
    pub enum AttemptEnd as "attempt outcome" {
        Succeeded = "succeeded",
        Retrying = "retrying",
        WaitingForSync = "waiting_for_sync",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Not the job's fault (circuit open, waiting for the sync): no attempt used.
        Deferred = "deferred",
        /// The replica running it stopped; another one took the job over.
        LeaseExpired = "lease_expired",
        /// The replica shut down before the attempt ended and gave the job back.
        Released = "released",
    }
}

text_enum! {
    /// What an operator did to a job.
    pub enum ActionKind as "operator action" {
        Retry = "retry",
        Cancel = "cancel",
    }
}

/// What one attempt came to, as the worker decided: `Store::finish` moves the job by it.
#[derive(Debug, Clone)]
pub enum Resolution {
    Succeeded {
        outcome: JobEffect,
    },
    /// Tried again `after` this long, counted from when the attempt is recorded (on the
    /// database's clock, like the attempt's `finished_at` and the claim), so that time spent
    /// writing it never shortens a wait Exchange asked for.
    Retry {
        class: ErrorClass,
        error: String,
        after: std::time::Duration,
    },
    Failed {
        class: ErrorClass,
        error: String,
        alert: Option<NewAlert>,
    },
    /// The directory says the job must not run (a leaver whose account is enabled again):
    /// cancelled with a note, no alert.
    Cancelled {
        note: String,
    },
    /// Not the job's fault (the Windows side is down: the circuit is open, or the account
    /// waits for the cloud sync). Retried `after` this long (counted as for `Retry`) without
    /// using up one of its attempts.
    Deferred {
        class: ErrorClass,
        error: String,
        after: std::time::Duration,
    },
}

impl Resolution {
    /// The state the job moves to.
    pub fn state(&self) -> JobState {
        match self {
            Resolution::Succeeded { .. } => JobState::Succeeded,
            Resolution::Retry { class, .. } | Resolution::Deferred { class, .. } => match class {
                ErrorClass::NotSynced => JobState::WaitingForSync,
                _ => JobState::Retrying,
            },
            Resolution::Failed { .. } => JobState::Failed,
            Resolution::Cancelled { .. } => JobState::Cancelled,
        }
    }

    /// What the attempt's record says it came to.
    pub(crate) fn attempt_outcome(&self) -> AttemptEnd {
        match self {
            Resolution::Succeeded { .. } => AttemptEnd::Succeeded,
            Resolution::Retry {
                class: ErrorClass::NotSynced,
                ..
            } => AttemptEnd::WaitingForSync,
            Resolution::Retry { .. } => AttemptEnd::Retrying,
            Resolution::Failed { .. } => AttemptEnd::Failed,
            Resolution::Cancelled { .. } => AttemptEnd::Cancelled,
            Resolution::Deferred { .. } => AttemptEnd::Deferred,
        }
    }

    /// The alert a final failure raises, if any.
    pub fn alert(&self) -> Option<&NewAlert> {
        match self {
            Resolution::Failed { alert, .. } => alert.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_reads_back_from_its_text() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        for o in JobEffect::ALL {
            assert_eq!(JobEffect::parse(o.as_str()), Some(o));
        }
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
        for a in AttemptEnd::ALL {
            assert_eq!(AttemptEnd::parse(a.as_str()), Some(a));
        }
        let err = "Queued".parse::<JobState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"Queued\" is not a valid job state (one of: queued, running, retrying, \
             waiting_for_sync, scheduled, succeeded, failed, cancelled, superseded)"
        );
        assert_eq!(
            serde_json::json!(JobState::WaitingForSync),
            "waiting_for_sync"
        );
        let read: JobState =
            serde_json::from_value(serde_json::json!("waiting_for_sync")).expect("a state's text");
        assert_eq!(read, JobState::WaitingForSync);
        assert!(serde_json::from_value::<JobState>(serde_json::json!("Queued")).is_err());
    }
}
