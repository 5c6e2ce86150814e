//! Alerts for support staff: written to the outbox in the same transaction as the failure
//! they report (see `Store::finish`), then delivered by SMTP from there, so an SMTP outage
//! delays alerts and never loses them. This file is what the alerts say; `delivery` decides
//! what goes out when (digests, the hourly cap, retries); `sender` is the SMTP side.

pub mod delivery;
pub mod draft;
pub mod sender;

pub use draft::{AlertKind, CircuitAlert, CircuitChange, NewAlert};

use crate::event::EventKind;
use crate::job::ErrorClass;
use crate::store::Job;

impl From<ErrorClass> for AlertKind {
    /// A job's alert is of its error's class: `smtp.to_by_class` routes both alike.
    fn from(class: ErrorClass) -> AlertKind {
        match class {
            ErrorClass::Transient => AlertKind::Transient,
            ErrorClass::NotSynced => AlertKind::NotSynced,
            ErrorClass::Permanent => AlertKind::Permanent,
            ErrorClass::Systemic => AlertKind::Systemic,
        }
    }
}

/// The alert for a job that failed for good: what happened and what to do next.
pub(crate) fn for_failed_job(job: &Job, class: ErrorClass, error: &str) -> NewAlert {
    let sam = job.event.account.name();
    let digest_key = format!("{}:{}:{}", class.as_str(), job.kind, signature(error, &sam));
    failed_job(job, class, error, digest_key)
}

/// The same alert for a job that made mailboxd panic (or crash), digested under a fixed key
/// rather than its error's signature: writing it runs no more code over the job's data.
pub(crate) fn for_job_that_panicked(job: &Job, error: &str) -> NewAlert {
    failed_job(
        job,
        ErrorClass::Transient,
        error,
        format!("internal:{}", job.kind),
    )
}

fn failed_job(job: &Job, class: ErrorClass, error: &str, digest_key: String) -> NewAlert {
    let sam = job.event.account.name();
    let what = match job.kind {
        EventKind::Joiner => "not enabled",
        EventKind::Leaver => "not hidden",
        EventKind::Mover => "not renamed",
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
        kind: class.into(),
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
    let text = replace_ignoring_case(error, sam, "<account>");
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

/// `text` with every occurrence of `needle` in any case replaced by `with`. Compared char by
/// char, never through a lower-cased copy: a char's lower case may differ in byte length
/// (U+212A KELVIN SIGN is 3 bytes, its `k` one), so an offset into a lower-cased copy is
/// not an offset into the original.
fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    let want: Vec<char> = needle.chars().collect();
    if want.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match match_len(rest, &want) {
            Some(len) => {
                out.push_str(with);
                rest = &rest[len..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// The byte length of the prefix of `s` that is `want` in any case, char for char.
fn match_len(s: &str, want: &[char]) -> Option<usize> {
    let mut chars = s.char_indices();
    let mut end = 0;
    for w in want {
        let (i, c) = chars.next()?;
        if c != *w && !c.to_lowercase().eq(w.to_lowercase()) {
            return None;
        }
        end = i + c.len_utf8();
    }
    Some(end)
}

/// The one alert for operations when the circuit opens (the Windows side is down).
pub fn circuit_opened(endpoint: &str, reason: &str, pause: std::time::Duration) -> CircuitAlert {
    let change = CircuitChange::Opened;
    CircuitAlert {
        endpoint: endpoint.to_owned(),
        change,
        alert: NewAlert {
            digest_key: None,
            account: None,
            kind: AlertKind::Systemic,
            subject: CircuitAlert::subject(endpoint, change),
            body: format!(
                "mailboxd stopped sending work to {endpoint} after: {reason}\n\n\
                 Jobs are kept and wait; none uses up its attempts while the host is down. mailboxd \
                 tries again every {secs:.1} s or so (longer while it stays down) and resumes by itself once the host answers.\n\n\
                 What to do: check that the host is up, that WinRM answers on the configured endpoint, \
                 and that the service account's password has not expired or been locked.\n\
                 See the queue: mailboxd jobs list --state retrying\n",
                secs = pause.as_secs_f64()
            ),
        },
    }
}

/// The one recovery alert when the circuit closes again.
pub fn circuit_closed(endpoint: &str, outage: std::time::Duration) -> CircuitAlert {
    let change = CircuitChange::Closed;
    CircuitAlert {
        endpoint: endpoint.to_owned(),
        change,
        alert: NewAlert {
            digest_key: None,
            account: None,
            kind: AlertKind::Systemic,
            subject: CircuitAlert::subject(endpoint, change),
            body: format!(
                "{endpoint} answers again after about {secs} s; mailboxd has resumed the paused jobs.\n\n\
                 Nothing to do, unless this keeps happening: then look at the host's availability.\n\
                 See the queue: mailboxd jobs list --state retrying\n",
                secs = outage.as_secs()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_replaced_in_any_case_even_when_lower_case_changes_the_length() {
        // U+212A KELVIN SIGN lower-cases to a 1-byte 'k'; 'İ' to 'i' + U+0307 (3 bytes from 2);
        // 'ẞ' to 'ß'. None of them may shift the replacement or panic.
        let cases = [
            (
                "\u{212A}elvin refused for jdoe",
                "jdoe",
                "\u{212A}elvin refused for <account>",
            ),
            (
                "JDOE: \u{212A}\u{212A}\u{212A} not found",
                "jdoe",
                "<account>: \u{212A}\u{212A}\u{212A} not found",
            ),
            ("İİİ jDoe İ", "jdoe", "İİİ <account> İ"),
            ("kelvin failed", "\u{212A}elvin", "<account> failed"),
            ("\u{212A}ELVIN failed", "kelvin", "<account> failed"),
            ("ẞtraße x", "ßtraße", "<account> x"),
            ("no match here", "jdoe", "no match here"),
            ("", "jdoe", ""),
        ];
        for (error, sam, want) in cases {
            assert_eq!(
                replace_ignoring_case(error, sam, "<account>"),
                want,
                "{error:?}"
            );
            // And the whole signature never panics on them.
            let _ = signature(error, sam);
        }
        assert_eq!(
            signature("\u{212A}\u{212A} mailbox for jdoe failed: 42", "jdoe"),
            "\u{212A}\u{212A} mailbox for <account> failed: #"
        );
    }

    #[test]
    fn every_char_boundary_of_case_changing_text_is_safe() {
        let hostile = "\u{212A}İẞΣ\u{1E9E}ǅ";
        for a in hostile.chars() {
            for b in hostile.chars() {
                let error = format!("{a}{b} x{a}y {b}");
                for sam in [format!("{a}"), format!("x{a}y"), format!("{b}{a}")] {
                    let _ = signature(&error, &sam);
                }
            }
        }
    }
}
