//! Failures grouped: failed and retrying jobs by error class and error signature (the
//! normalisation the alert digests use), so a wave of one problem reads as one line —
//! "37 jobs — proxy address already in use" — with when it was first and last seen, the
//! accounts, and one retry (and cancel) for the whole group through a confirmation.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::filter::QueueFilter;
use super::live::{region, when};
use super::{esc, visitor};
use crate::admin::AdminState;
use crate::job::JobState;
use crate::store::{FailureGroup as Group, JobFilter, StoreError};

/// Accounts a group names before "and N more jobs".
const ACCOUNTS_SHOWN: usize = 12;

/// What the dashboard does with a group the store counted.
trait GroupView {
    fn jobs(&self) -> i64;
    fn filter(&self, states: &[JobState]) -> QueueFilter;
}

impl GroupView for Group {
    fn jobs(&self) -> i64 {
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

/// The failure groups now, the largest first: counted as the jobs change (migration 0025),
/// so a month of failed jobs costs a few rows per group, not a scan.
async fn current(s: &AdminState) -> Result<Vec<Group>, StoreError> {
    s.store.failure_groups(ACCOUNTS_SHOWN as i64).await
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
        Ok(groups) => groups,
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
    let groups = current(&s).await.unwrap_or_else(|e| {
        body.push_str(&unreadable(&e));
        Vec::new()
    });
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
    let mut accounts: Vec<String> = g.accounts.iter().map(|a| esc(a)).collect();
    // The accounts are those of the newest jobs, one each: the rest is said as jobs.
    if n > accounts.len() as i64 {
        let more = n - accounts.len() as i64;
        accounts.push(format!(
            "and {more} more job{}",
            if more == 1 { "" } else { "s" }
        ));
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
    use crate::job::ErrorClass;

    #[test]
    fn a_group_names_its_accounts_its_counts_and_its_actions() {
        let at =
            |m| chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 6, 1, m, 0).unwrap();
        let g = Group {
            class: Some(ErrorClass::Transient),
            signature: "proxy smtp:<account>@x.org already in use (id #)".into(),
            failed: 1,
            retrying: 14,
            first_seen: at(2),
            last_seen: at(9),
            example: "proxy smtp:ann@x.org already in use (id 4711)".into(),
            accounts: vec!["ann".into(), "bob".into(), "cy".into()],
        };
        let html = group_html(0, &g, true);
        assert!(
            html.contains("15 jobs — proxy smtp:&lt;account&gt;@x.org"),
            "{html}"
        );
        assert!(html.contains("ann, bob, cy, and 12 more jobs"), "{html}");
        assert!(html.contains("Cancel the 14 retrying"), "{html}");
        assert!(!group_html(0, &g, false).contains("Retry these"));
    }
}
