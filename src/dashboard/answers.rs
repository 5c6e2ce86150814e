//! What the IAM system was told about a job — its on-premises answer and, with `[cloud]`,
//! its cloud one — and, on the overview, the joiners still waiting for the cloud.

use uuid::Uuid;

use super::{esc, live};
use crate::store::Store;

/// The job page's answers: one row per outcome, then the cloud watch while it waits.
pub(super) async fn section(store: &Store, job: Uuid) -> String {
    let outcomes = store.job_outcomes(job).await.unwrap_or_default();
    let watch = store.cloud_watch(job).await.ok().flatten();
    if outcomes.is_empty() && watch.is_none() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Answers to the IAM system</h2><table id=\"answers\"><tr><th>When</th><th>Answer</th><th>Sent</th><th>Detail</th></tr>",
    );
    for o in &outcomes {
        let detail = o.body["error"]["message"]
            .as_str()
            .or_else(|| o.body["mailbox"]["primary_smtp_address"].as_str())
            .unwrap_or("");
        out.push_str(&format!(
            "<tr class=\"answer-{r}\"><td>{}</td><td>{r}</td><td>{}</td><td>{}</td></tr>",
            live::when(o.created_at),
            o.sent_at.map_or_else(|| "not yet".to_owned(), live::when),
            esc(detail),
            r = esc(&o.routing_key),
        ));
    }
    out.push_str("</table>");
    if let Some(w) = watch.filter(|w| w.resolved_at.is_none()) {
        out.push_str(&format!(
            "<p id=\"cloud-watch\">Waiting for the cloud mailbox since {} (deadline {}, {} checks so far){}.</p>",
            live::when(w.created_at),
            live::when(w.deadline_at),
            w.checks,
            w.last_seen
                .as_deref()
                .map(|s| format!(": {}", esc(s)))
                .unwrap_or_default()
        ));
    }
    out
}

/// The overview's line on joiners waiting for their cloud mailbox; nothing when none ever
/// did (`[cloud]` off).
pub(super) async fn cloud_line(store: &Store) -> String {
    let Ok(c) = store.cloud_watch_counts().await else {
        return String::new();
    };
    let waiting = c.waiting + c.overdue;
    match c.oldest {
        Some(oldest) => format!(
            "<p class=\"{}\" id=\"cloud\">Cloud: <b>{waiting}</b> joiner(s) waiting for their Exchange Online mailbox, the oldest since {}{}; {} confirmed, {} failed.</p>",
            if c.overdue > 0 { "bad" } else { "good" },
            live::when(oldest),
            if c.overdue > 0 {
                format!(
                    " (<b>{}</b> past their deadline and not checked: is the cloud watch running?)",
                    c.overdue
                )
            } else {
                String::new()
            },
            c.confirmed,
            c.failed
        ),
        None if c.confirmed + c.failed > 0 => format!(
            "<p class=\"good\" id=\"cloud\">Cloud: no joiner waiting for its Exchange Online mailbox; {} confirmed, {} failed.</p>",
            c.confirmed, c.failed
        ),
        None => String::new(),
    }
}
