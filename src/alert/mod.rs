//! Alerts for support staff: written to the outbox in the same transaction as the failure
//! they report (see `Store::finish`), then delivered by SMTP from there, so an SMTP outage
//! delays alerts and never loses them. This file is what the alerts say; `delivery` decides
//! what goes out when (digests, the hourly cap, retries); `sender` is the SMTP side.

pub mod delivery;
pub mod sender;

use crate::event::EventKind;
use crate::store::{ErrorClass, Job, NewAlert};

/// The alert for a job that failed for good: what happened and what to do next.
pub fn for_failed_job(job: &Job, class: ErrorClass, error: &str) -> NewAlert {
    let sam = job.event.account.sam_account_name.as_str();
    let digest_key = format!("{}:{}:{}", class.as_str(), job.kind, signature(error, sam));
    failed_job(job, class, error, digest_key)
}

/// The same alert for a job that made mailboxd panic (or crash), digested under a fixed key
/// rather than its error's signature: writing it runs no more code over the job's data.
pub fn for_job_that_panicked(job: &Job, error: &str) -> NewAlert {
    failed_job(
        job,
        ErrorClass::Transient,
        error,
        format!("internal:{}", job.kind),
    )
}

fn failed_job(job: &Job, class: ErrorClass, error: &str, digest_key: String) -> NewAlert {
    let sam = job.event.account.sam_account_name.as_str();
    let what = match job.kind {
        EventKind::Joiner => "not enabled",
        EventKind::Leaver => "not hidden",
    };
    let short = shorten(error, 110);
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
        digest_key: Some(digest_key),
        account: Some(sam.to_owned()),
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

/// At most `max` characters, cut at a word boundary with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{}…", cut.trim_end_matches([',', ';', ':']))
}

/// The problem an error describes, without what differs between accounts (the name,
/// ids, numbers), so that the same failure for many accounts folds into one digest.
pub fn signature(error: &str, sam: &str) -> String {
    let mut text = error.replace(sam, "<account>");
    if !sam.is_empty() {
        let lower = text.to_lowercase();
        if let Some(i) = lower.find(&sam.to_lowercase()) {
            text.replace_range(i..i + sam.len(), "<account>");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_hex = 0usize;
    for c in text.chars() {
        // Digits and GUID-like hex runs become '#': RequestIds, timestamps, counts.
        if c.is_ascii_digit() || (in_hex > 0 && (c.is_ascii_hexdigit() || c == '-')) {
            if !out.ends_with('#') {
                out.push('#');
            }
            in_hex += 1;
            continue;
        }
        in_hex = 0;
        out.push(c);
    }
    out.chars().take(200).collect()
}

/// The subjects of the circuit's two alerts for `endpoint`: (opened, closed). They name the
/// pair the store keeps to one per outage.
pub fn circuit_subjects(endpoint: &str) -> (String, String) {
    (
        format!("[mailboxd] Windows host {endpoint} unavailable: mailbox jobs paused"),
        format!("[mailboxd] Windows host {endpoint} available again: mailbox jobs resumed"),
    )
}

/// The one alert for operations when the circuit opens (the Windows side is down).
pub fn circuit_opened(endpoint: &str, reason: &str, pause: std::time::Duration) -> NewAlert {
    NewAlert {
        digest_key: None,
        account: None,
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: circuit_subjects(endpoint).0,
        body: format!(
            "mailboxd stopped sending work to {endpoint} after: {reason}\n\n\
             Jobs are kept and wait; none uses up its attempts while the host is down. mailboxd \
             tries again every {secs:.1} s or so (longer while it stays down) and resumes by itself once the host answers.\n\n\
             What to do: check that the host is up, that WinRM answers on the configured endpoint, \
             and that the service account's password has not expired or been locked.\n\
             See the queue: mailboxd jobs list --state retrying\n",
            secs = pause.as_secs_f64()
        ),
    }
}

/// The one recovery alert when the circuit closes again.
pub fn circuit_closed(endpoint: &str, outage: std::time::Duration) -> NewAlert {
    NewAlert {
        digest_key: None,
        account: None,
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: circuit_subjects(endpoint).1,
        body: format!(
            "{endpoint} answers again after about {secs} s; mailboxd has resumed the paused jobs.\n\n\
             Nothing to do, unless this keeps happening: then look at the host's availability.\n\
             See the queue: mailboxd jobs list --state retrying\n",
            secs = outage.as_secs()
        ),
    }
}
