//! A job's history as one timeline: each attempt (when, how long, host, DC, class, error,
//! what AD showed before and after, the transcript excerpt) and, between them, the
//! operators' retries and cancels. A manual retry starts the count again, so the attempts
//! after it read "attempt 1 of 12 after a manual retry", never a second plain "1".

use super::esc;
use super::live::when;
use crate::job::ActionKind;
use crate::store::{Attempt, Job, OperatorAction};

/// One entry of the timeline, in the order things happened.
enum Entry<'a> {
    Attempt(&'a Attempt),
    Action(&'a OperatorAction),
}

fn at(e: &Entry) -> chrono::DateTime<chrono::Utc> {
    match e {
        Entry::Attempt(a) => a.started_at,
        Entry::Action(a) => a.at,
    }
}

/// "attempt 3 of 12", with "after a manual retry" (or "after manual retry 2") once an
/// operator has retried the job.
fn attempt_label(a: &Attempt, max: i32, retries_before: usize) -> String {
    let base = format!("attempt {} of {max}", a.attempt);
    match retries_before {
        0 => base,
        1 => format!("{base} after a manual retry"),
        n => format!("{base} after manual retry {n}"),
    }
}

fn duration(a: &Attempt) -> String {
    let ms = (a.finished_at - a.started_at).num_milliseconds();
    super::health::seconds(ms as f64 / 1000.0)
}

fn attempt_row(a: &Attempt, label: &str) -> String {
    let mut row = format!(
        "<tr><td>{t}</td><td>{label}</td><td>{d}</td><td class=\"state-{o}\">{o}</td><td>{c}</td>\
         <td>{host}<br>{dc}<br><small>replica {r}</small></td><td>{e}</td></tr>",
        t = when(a.started_at),
        d = duration(a),
        o = esc(a.outcome.as_str()),
        c = esc(a.error_class.map_or("", |c| c.as_str())),
        host = esc(a.host.as_deref().unwrap_or("—")),
        dc = esc(a.domain_controller.as_deref().unwrap_or("")),
        r = esc(&a.replica),
        e = esc(a.error_message.as_deref().unwrap_or("")),
    );
    let mut more = String::new();
    if let Some(d) = &a.directory {
        let pretty = serde_json::to_string_pretty(d).unwrap_or_default();
        more.push_str(&format!(
            "<details><summary>AD before and after</summary><pre>{}</pre></details>",
            esc(&pretty)
        ));
    }
    if let Some(t) = &a.transcript {
        more.push_str(&format!(
            "<details><summary>Transcript</summary><pre>{}</pre></details>",
            esc(t)
        ));
    }
    if !more.is_empty() {
        row.push_str(&format!("<tr><td></td><td colspan=\"6\">{more}</td></tr>"));
    }
    row
}

/// The attempts and operator actions of `job` as one table, oldest first.
pub(super) fn section(job: &Job, attempts: &[Attempt], actions: &[OperatorAction]) -> String {
    let mut entries: Vec<Entry> = attempts.iter().map(Entry::Attempt).collect();
    entries.extend(actions.iter().map(Entry::Action));
    // Stable: an action and an attempt in the same instant keep the action first.
    entries.sort_by_key(|e| (at(e), matches!(e, Entry::Attempt(_))));
    let mut out = String::from(
        "<h2>Timeline</h2><table id=\"attempts\"><tr><th>Started</th><th>What</th><th>Took</th><th>Outcome</th>\
         <th>Class</th><th>Host / DC</th><th>Error</th></tr>",
    );
    let mut retries = 0;
    for e in &entries {
        match e {
            Entry::Attempt(a) => out.push_str(&attempt_row(
                a,
                &attempt_label(a, job.max_attempts, retries),
            )),
            Entry::Action(a) => {
                if a.action == ActionKind::Retry {
                    retries += 1;
                }
                out.push_str(&format!(
                    "<tr class=\"operator\"><td>{}</td><td colspan=\"6\"><b>{}</b> by {}{}</td></tr>",
                    when(a.at),
                    match a.action {
                        ActionKind::Retry => "Retried: attempts start again from 1",
                        ActionKind::Cancel => "Cancelled",
                    },
                    esc(&a.actor),
                    a.detail.as_deref().map_or(String::new(), |d| format!(" ({})", esc(d))),
                ));
            }
        }
    }
    out.push_str("</table>");
    if entries.is_empty() {
        out.push_str("<p>No attempt yet.</p>");
    }
    out
}

/// The event as the job keeps it: the validated fields only (what was not part of the
/// event schema, credentials included, was never stored).
pub(super) fn event(job: &Job) -> String {
    let json = serde_json::to_string_pretty(&job.event).unwrap_or_default();
    format!(
        "<details id=\"event\"><summary>The event as received</summary><pre>{}</pre></details>",
        esc(&json)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::AttemptEnd;

    #[test]
    fn attempts_after_a_manual_retry_say_so() {
        let t = chrono::Utc::now();
        let a = Attempt {
            attempt: 1,
            replica: "r1".into(),
            host: None,
            started_at: t,
            finished_at: t + chrono::Duration::milliseconds(1500),
            outcome: AttemptEnd::Failed,
            error_class: None,
            error_message: None,
            transcript: None,
            domain_controller: None,
            directory: None,
        };
        assert_eq!(attempt_label(&a, 12, 0), "attempt 1 of 12");
        assert_eq!(
            attempt_label(&a, 12, 1),
            "attempt 1 of 12 after a manual retry"
        );
        assert_eq!(
            attempt_label(&a, 12, 2),
            "attempt 1 of 12 after manual retry 2"
        );
        assert_eq!(duration(&a), "1.5 s");
    }
}
