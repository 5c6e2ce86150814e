//! Failures grouped: failed and retrying jobs by error class and error signature (the
//! normalisation the alert digests use), so a wave of one problem reads as one line —
//! "37 jobs — proxy address already in use" — with when it was first and last seen, the
//! accounts, and one retry (and cancel) for the whole group through a confirmation.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::filter::{MAX_ROWS, QueueFilter, row_signature};
use super::live::{region, when};
use super::{esc, visitor};
use crate::admin::AdminState;
use crate::job::{ErrorClass, JobState};
use crate::store::{JobFilter, QueueRow, StoreError};

/// Accounts a group names before "and N more".
const ACCOUNTS_SHOWN: usize = 12;

/// The jobs that fail the same way.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub class: Option<ErrorClass>,
    pub signature: String,
    /// The newest job's error in full.
    pub example: String,
    pub failed: usize,
    pub retrying: usize,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub accounts: Vec<String>,
}

impl Group {
    pub(super) fn jobs(&self) -> usize {
        self.failed + self.retrying
    }

    fn filter(&self, states: &[JobState]) -> QueueFilter {
        QueueFilter {
            jobs: JobFilter {
                states: states.to_vec(),
                error_class: self.class,
                ..JobFilter::default()
            },
            signature: Some(self.signature.clone()),
        }
    }
}

/// Groups rows (newest first, as the store gives them) by class and signature, the
/// largest group first.
pub(super) fn group(rows: &[QueueRow]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<(Option<ErrorClass>, String), usize> = HashMap::new();
    for r in rows {
        let sig = row_signature(r);
        let i = match index.get(&(r.last_error_class, sig.clone())) {
            Some(i) => *i,
            None => {
                index.insert((r.last_error_class, sig.clone()), groups.len());
                groups.push(Group {
                    class: r.last_error_class,
                    signature: sig,
                    example: r.last_error.clone().unwrap_or_default(),
                    failed: 0,
                    retrying: 0,
                    first_seen: r.updated_at,
                    last_seen: r.updated_at,
                    accounts: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        match r.state {
            JobState::Failed => g.failed += 1,
            _ => g.retrying += 1,
        }
        g.first_seen = g.first_seen.min(r.updated_at);
        g.last_seen = g.last_seen.max(r.updated_at);
        if !g.accounts.contains(&r.account) {
            g.accounts.push(r.account.clone());
        }
    }
    groups.sort_by(|a, b| b.jobs().cmp(&a.jobs()).then(b.last_seen.cmp(&a.last_seen)));
    groups
}

/// The failure groups now, and whether the row cap left jobs out.
async fn current(s: &AdminState) -> Result<(Vec<Group>, bool), StoreError> {
    let all = QueueFilter {
        jobs: JobFilter {
            states: vec![JobState::Failed, JobState::Retrying],
            ..JobFilter::default()
        },
        signature: None,
    };
    let rows = s.store.queue_rows(&all.query()).await?;
    Ok((group(&rows), rows.len() as i64 >= MAX_ROWS))
}

/// Said instead of the groups when the store did not answer: never "no failure".
fn unreadable(e: &StoreError) -> String {
    format!(
        "<p class=\"bad\" id=\"failures-unreadable\">The failures cannot be read now: {}</p>",
        esc(&e.to_string())
    )
}

/// Groups an overview shows before "all failures".
const ON_OVERVIEW: usize = 3;

/// The largest failure groups for the overview, each with its group retry for an operator.
pub(super) async fn summary(s: &AdminState, can_act: bool) -> String {
    let groups = match current(s).await {
        Ok((groups, _)) => groups,
        Err(e) => return format!("<h2>Failures</h2>{}", unreadable(&e)),
    };
    if groups.is_empty() {
        return "<h2>Failures</h2><p id=\"top-failures\">No failed or retrying job.</p>".into();
    }
    let items: String = groups
        .iter()
        .take(ON_OVERVIEW)
        .enumerate()
        .map(|(i, g)| {
            format!(
                "<li><a href=\"/failures#group-{i}\">{n} job{s} — {sig}</a> ({class}, last seen {last}){retry}</li>",
                n = g.jobs(),
                s = if g.jobs() == 1 { "" } else { "s" },
                sig = esc(&g.signature),
                class = esc(g.class.map_or("unclassified", |c| c.as_str())),
                last = when(g.last_seen),
                retry = if can_act {
                    format!(
                        " <a class=\"button\" href=\"/bulk/retry?{}\">Retry these {}…</a>",
                        esc(&g.filter(&[JobState::Failed, JobState::Retrying]).to_query()),
                        g.jobs()
                    )
                } else {
                    String::new()
                },
            )
        })
        .collect();
    format!(
        "<h2>Failures</h2><ul id=\"top-failures\">{items}</ul><p><a href=\"/failures\">All {} failure group(s)</a></p>",
        groups.len()
    )
}

pub(super) async fn failures(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut body = String::new();
    let (groups, capped) = current(&s).await.unwrap_or_else(|e| {
        body.push_str(&unreadable(&e));
        (Vec::new(), false)
    });
    if capped {
        body.push_str(&format!(
            "<p class=\"bad\">Only the {MAX_ROWS} most recently updated failed or retrying jobs are grouped here.</p>"
        ));
    }
    if groups.is_empty() && body.is_empty() {
        body.push_str("<p id=\"no-failures\">No failed or retrying job.</p>");
    }
    for (i, g) in groups.iter().enumerate() {
        body.push_str(&group_html(i, g, v.can_act()));
    }
    v.page(
        "Failures",
        &format!(
            "<p>Failed and retrying jobs, grouped by what went wrong (error class and the error \
             without account names and numbers). Largest group first.</p>{}",
            region(&body)
        ),
    )
}

/// One group; its retry and cancel links only for an operator.
fn group_html(i: usize, g: &Group, can_act: bool) -> String {
    let both = [JobState::Failed, JobState::Retrying];
    let n = g.jobs();
    let mut accounts: Vec<String> = g
        .accounts
        .iter()
        .take(ACCOUNTS_SHOWN)
        .map(|a| esc(a))
        .collect();
    if g.accounts.len() > ACCOUNTS_SHOWN {
        accounts.push(format!("and {} more", g.accounts.len() - ACCOUNTS_SHOWN));
    }
    let q = esc(&g.filter(&both).to_query());
    let retry = if can_act {
        format!(
            "<a class=\"button\" id=\"group-{i}-retry\" href=\"/bulk/retry?{q}\">Retry these {n}…</a> "
        )
    } else {
        String::new()
    };
    let cancel = if g.retrying > 0 && can_act {
        format!(
            " <a class=\"button\" id=\"group-{i}-cancel\" href=\"/bulk/cancel?{}\">Cancel the {} retrying…</a>",
            esc(&g.filter(&[JobState::Retrying]).to_query()),
            g.retrying
        )
    } else {
        String::new()
    };
    format!(
        "<section class=\"group\" id=\"group-{i}\" aria-labelledby=\"group-{i}-title\">\
         <h2 id=\"group-{i}-title\">{n} job{s} — {sig}</h2>\
         <p>Class <b class=\"class-{class}\">{class}</b>: {failed} failed, {retrying} retrying. \
         First seen {first}, last seen {last}.</p>\
         <p>Accounts: {accounts}</p>\
         <details><summary>Newest error in full</summary><pre>{example}</pre></details>\
         <p>{retry}{cancel} <a href=\"/jobs?{q}\">List them</a></p></section>",
        s = if n == 1 { "" } else { "s" },
        sig = esc(&g.signature),
        class = esc(g.class.map_or("unclassified", |c| c.as_str())),
        failed = g.failed,
        retrying = g.retrying,
        first = when(g.first_seen),
        last = when(g.last_seen),
        accounts = accounts.join(", "),
        example = esc(&g.example),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn row(account: &str, state: JobState, error: &str, minute: u32) -> QueueRow {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 6, 1, minute, 0).unwrap();
        QueueRow {
            id: uuid::Uuid::new_v4(),
            account: account.into(),
            kind: EventKind::Joiner,
            state,
            attempt: 1,
            max_attempts: 12,
            last_error: Some(error.into()),
            last_error_class: Some(ErrorClass::Transient),
            created_at: at,
            updated_at: at,
            next_attempt_at: at,
            step: None,
        }
    }

    #[test]
    fn one_problem_for_many_accounts_is_one_group_the_largest_first() {
        let rows = vec![
            row(
                "ann",
                JobState::Retrying,
                "proxy smtp:ann@x.org already in use (id 4711)",
                9,
            ),
            row("other", JobState::Failed, "mailbox database full", 8),
            row(
                "bob",
                JobState::Failed,
                "proxy smtp:bob@x.org already in use (id 12)",
                5,
            ),
            row(
                "cy",
                JobState::Retrying,
                "proxy smtp:cy@x.org already in use (id 3)",
                2,
            ),
        ];
        let groups = group(&rows);
        assert_eq!(groups.len(), 2);
        let g = &groups[0];
        assert_eq!(g.jobs(), 3);
        assert_eq!((g.failed, g.retrying), (1, 2));
        assert_eq!(
            g.signature,
            "proxy smtp:<account>@x.org already in use (id #)"
        );
        assert_eq!(g.accounts, ["ann", "bob", "cy"]);
        assert_eq!(g.example, "proxy smtp:ann@x.org already in use (id 4711)");
        assert!(g.first_seen < g.last_seen);
        let html = group_html(0, g, true);
        assert!(
            html.contains("3 jobs — proxy smtp:&lt;account&gt;@x.org"),
            "{html}"
        );
        assert!(html.contains("Cancel the 2 retrying"), "{html}");
    }
}
