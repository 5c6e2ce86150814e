//! Alerts for support staff: written to the outbox in the same transaction as the failure
//! they report (see `Store::finish`). Delivery by SMTP (lettre) arrives with its own issue;
//! until then the outbox is visible with `mailboxd alerts list`.

use crate::event::EventKind;
use crate::store::{ErrorClass, Job, NewAlert};

/// The alert for a job that failed for good: what happened and what to do next.
pub fn for_failed_job(job: &Job, class: ErrorClass, error: &str) -> NewAlert {
    let sam = job.event.account.sam_account_name.as_str();
    let what = match job.kind {
        EventKind::Joiner => "not enabled",
        EventKind::Leaver => "not hidden",
    };
    let short: String = error.chars().take(120).collect();
    let next = match class {
        ErrorClass::Permanent => {
            "What to do: the account or the request is wrong; fix it in AD or in the IAM system, then retry the job."
        }
        _ => {
            "What to do: the attempts are exhausted; check the Windows host and Exchange, then retry the job."
        }
    };
    NewAlert {
        kind: class.as_str().to_owned(),
        subject: format!("[mailboxd] Mailbox for {sam} {what}: {short}"),
        body: format!(
            "Job {id} ({kind} for {sam}, event {event}) failed after {n} attempt(s).\n\n\
             Error class: {class}\nLast error: {error}\n\n{next}\n\n\
             Show it:  mailboxd jobs show {id}\nRetry it: mailboxd jobs retry {id}\n",
            id = job.id,
            kind = job.kind,
            event = job.event_id,
            n = job.attempt,
            class = class.as_str(),
        ),
    }
}

/// The one alert for operations when the circuit opens (the Windows side is down).
pub fn circuit_opened(endpoint: &str, reason: &str, pause: std::time::Duration) -> NewAlert {
    NewAlert {
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: format!("[mailboxd] Windows host {endpoint} unavailable: mailbox jobs paused"),
        body: format!(
            "mailboxd stopped sending work to {endpoint} after: {reason}\n\n\
             Jobs are kept and wait; none uses up its attempts while the host is down. mailboxd \
             tries again every {secs} s or so and resumes by itself once the host answers.\n\n\
             What to do: check that the host is up, that WinRM answers on the configured endpoint, \
             and that the service account's password has not expired or been locked.\n\
             See the queue: mailboxd jobs list --state retrying\n",
            secs = pause.as_secs()
        ),
    }
}
