//! The job list: filter by state, type, error class, error signature, account and time
//! range; the matching jobs live-updated; from here, retry or cancel all of them at once.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::filter::{FilterForm, QueueFilter};
use super::live::{region, when};
use super::{esc, page_with_status, state_cell, visitor};
use crate::admin::AdminState;
use crate::event::EventKind;
use crate::job::{ErrorClass, JobState};

/// Jobs a list shows.
const SHOWN: usize = 200;

pub(super) async fn jobs(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(form): Query<FilterForm>,
) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let filter = match form.check() {
        Ok(f) => f,
        Err(e) => {
            return page_with_status(
                StatusCode::BAD_REQUEST,
                "Filter not understood",
                &format!("<p>{}</p>", esc(&e.to_string())),
            );
        }
    };
    let mut query = filter.query();
    if filter.signature.is_none() {
        query.limit = SHOWN as i64 + 1;
    }
    let rows = s.store.queue_rows(&query).await.unwrap_or_default();
    let rows: Vec<_> = rows.into_iter().filter(|r| filter.keeps(r)).collect();
    let mut table = String::from(
        "<table id=\"jobs\"><tr><th>Account</th><th>Type</th><th>State</th><th>Attempts</th><th>Last error</th><th>Updated</th></tr>",
    );
    for j in rows.iter().take(SHOWN) {
        table.push_str(&format!(
            "<tr><td><a href=\"/jobs/{id}\">{acct}</a></td><td>{kind}</td>{state}<td>{n} of {max}</td><td>{err}</td><td>{at}</td></tr>",
            id = j.id,
            acct = esc(&j.account),
            kind = j.kind,
            state = state_cell(j.state.as_str()),
            n = j.attempt,
            max = j.max_attempts,
            err = esc(&j.detail().chars().take(140).collect::<String>()),
            at = when(j.updated_at),
        ));
    }
    table.push_str("</table>");
    if rows.is_empty() {
        table.push_str("<p>No job matches.</p>");
    } else if rows.len() > SHOWN {
        table.push_str(&format!("<p id=\"more\">Showing the {SHOWN} most recently updated; narrow the filter to see the rest.</p>"));
    }
    let bulk = if v.can_act() {
        bulk_links(&filter)
    } else {
        String::new()
    };
    let body = [form_html(&filter), bulk, region(&table)].concat();
    v.page("Jobs", &body)
}

fn options<T: Copy + PartialEq>(
    all: &[T],
    chosen: Option<T>,
    text: impl Fn(T) -> String,
) -> String {
    all.iter()
        .map(|v| {
            let sel = if chosen == Some(*v) { " selected" } else { "" };
            format!("<option{sel}>{}</option>", text(*v))
        })
        .collect()
}

fn form_html(queue: &QueueFilter) -> String {
    let f = &queue.jobs;
    let state = (f.states.len() == 1).then(|| f.states[0]);
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    };
    let signature = queue.signature.as_ref().map_or(String::new(), |s| {
        format!(
            "<input type=\"hidden\" name=\"signature\" value=\"{v}\"> <span>Error “{v}”</span>",
            v = esc(s)
        )
    });
    let many = if f.states.len() > 1 {
        let st: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
        format!(
            "<option value=\"{v}\" selected>{v}</option>",
            v = st.join(",")
        )
    } else {
        String::new()
    };
    format!(
        "<form method=\"get\" action=\"/jobs\" class=\"filter\"><label>Account <input name=\"account\" value=\"{acct}\"></label> \
         <label>State <select name=\"state\"><option value=\"\">any</option>{many}{states}</select></label> \
         <label>Type <select name=\"type\"><option value=\"\">any</option>{kinds}</select></label> \
         <label>Error class <select name=\"class\"><option value=\"\">any</option>{classes}</select></label> \
         <label>Created from <input type=\"datetime-local\" name=\"since\" value=\"{since}\"></label> \
         <label>before <input type=\"datetime-local\" name=\"until\" value=\"{until}\"></label> (UTC){signature} \
         <button type=\"submit\">Search</button></form>",
        acct = esc(f.account.as_deref().unwrap_or("")),
        states = options(&JobState::ALL, state, |s| s.as_str().to_owned()),
        kinds = options(
            &[EventKind::Joiner, EventKind::Leaver, EventKind::Mover],
            f.kind,
            |k| k.to_string()
        ),
        classes = options(&ErrorClass::ALL, f.error_class, |c| c.as_str().to_owned()),
        since = time(&f.since),
        until = time(&f.until),
    )
}

fn bulk_links(f: &QueueFilter) -> String {
    let q = esc(&f.to_query());
    format!(
        "<p class=\"bulk-links\"><a class=\"button\" id=\"bulk-retry\" href=\"/bulk/retry?{q}\">Retry all matching…</a> \
         <a class=\"button\" id=\"bulk-cancel\" href=\"/bulk/cancel?{q}\">Cancel all matching…</a> \
         <small>Each asks for confirmation with the exact count.</small></p>"
    )
}
