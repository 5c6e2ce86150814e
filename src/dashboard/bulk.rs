//! Bulk actions by filter: retry or cancel every job a filter matches. The first step
//! (GET) states the exact count and the filter in words; only its form (POST) acts, on at
//! most that many jobs, recorded once with the count and per job (`Store::bulk_act`).

use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::filter::{BadFilter, FilterForm, MAX_ROWS, QueueFilter};
use super::live::when;
use super::{esc, operator, page_with_status, visitor};
use crate::admin::AdminState;
use crate::job::{ActionKind, JobState};
use crate::store::StoreError;

/// The states an action can move a job out of.
fn movable(action: ActionKind) -> &'static [JobState] {
    match action {
        ActionKind::Retry => &JobState::RETRYABLE,
        ActionKind::Cancel => &JobState::CLAIMABLE,
    }
}

fn verb(action: ActionKind) -> (&'static str, &'static str) {
    match action {
        ActionKind::Retry => ("Retry", "retried"),
        ActionKind::Cancel => ("Cancel", "cancelled"),
    }
}

/// Why a bulk action page cannot go on; each says what to do instead.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("Bulk actions are retry and cancel.")]
    NoSuchAction,
    #[error("{0}; correct it in the address or start again from the job list.")]
    Filter(#[from] BadFilter),
    #[error("Confirm from the confirmation page: it states how many jobs the action moves.")]
    NoCount,
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, title) = match self {
            Refused::NoSuchAction => (StatusCode::NOT_FOUND, "No such action"),
            Refused::Filter(_) => (StatusCode::BAD_REQUEST, "Filter not understood"),
            Refused::NoCount => (StatusCode::BAD_REQUEST, "No count confirmed"),
            Refused::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Error"),
        };
        page_with_status(status, title, &format!("<p>{}</p>", esc(&self.to_string())))
    }
}

/// The action and the filter.
fn read(action: &str, form: &FilterForm) -> Result<(ActionKind, QueueFilter), Refused> {
    let action = ActionKind::parse(action).ok_or(Refused::NoSuchAction)?;
    Ok((action, form.check()?))
}

/// The ids the action would move: matching the filter (signature included) and in a
/// state the action applies to; and whether the store's row cap cut the match short.
async fn matching(
    s: &AdminState,
    action: ActionKind,
    f: &QueueFilter,
) -> Result<(Vec<Uuid>, bool), Refused> {
    let rows = s.store.queue_rows(&f.query()).await?;
    let capped = rows.len() as i64 >= MAX_ROWS;
    let ids = rows
        .iter()
        .filter(|r| movable(action).contains(&r.state) && f.keeps(r))
        .map(|r| r.id)
        .collect();
    Ok((ids, capped))
}

pub(super) async fn confirm(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Query(form): Query<FilterForm>,
) -> Result<Response, Refused> {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    let (action, filter) = read(&action, &form)?;
    let (ids, capped) = matching(&s, action, &filter).await?;
    let (name, _) = verb(action);
    let n = ids.len();
    let states: Vec<&str> = movable(action).iter().map(|s| s.as_str()).collect();
    let mut body = format!(
        "<p id=\"bulk-count\">{name} <b>{n}</b> job{s} matching: {what}.</p>\
         <p class=\"muted\">Only jobs that are {states} can be {done}; others the filter matches are left alone.</p>",
        s = if n == 1 { "" } else { "s" },
        what = esc(&filter.describe()),
        states = states.join(", "),
        done = verb(action).1,
    );
    if capped {
        body.push_str(&format!("<p class=\"bad\">The filter matches more than {MAX_ROWS} jobs: this takes the {MAX_ROWS} most recently updated; repeat it for the rest.</p>"));
    }
    if n == 0 {
        body.push_str("<p id=\"bulk-none\">Nothing to do.</p>");
    } else if !v.can_act() {
        body.push_str("<p id=\"bulk-viewer\">Only an operator can confirm this.</p>");
    } else {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/bulk/{a}\">{csrf}{fields}<input type=\"hidden\" name=\"expected\" value=\"{n}\">\
             <button id=\"confirm\" type=\"submit\">{name} {n} job{s}</button></form>",
            a = action.as_str(),
            csrf = v.csrf_field(),
            fields = filter.hidden_fields(),
            s = if n == 1 { "" } else { "s" },
        ));
    }
    body.push_str(&format!(
        "<p><a href=\"/jobs?{}\">Back to the list</a></p>",
        esc(&filter.to_query())
    ));
    Ok(v.page(&format!("{name} jobs by filter"), &body))
}

#[derive(Deserialize)]
pub(super) struct ConfirmedForm {
    #[serde(flatten)]
    filter: FilterForm,
    /// The count the confirmation stated: never more jobs than that are moved.
    expected: String,
    /// The session's CSRF token, from the confirmation page.
    #[serde(default)]
    csrf: String,
}

pub(super) async fn act(
    State(s): State<AdminState>,
    Extension(client): Extension<crate::admin_guard::ClientAddr>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(form): Form<ConfirmedForm>,
) -> Result<Response, Refused> {
    let session = match operator(&s, &headers, &form.csrf).await {
        Ok(session) => session,
        Err(r) => return Ok(r),
    };
    let (action, filter) = read(&action, &form.filter)?;
    let expected: usize = form.expected.parse().map_err(|_| Refused::NoCount)?;
    let (mut ids, _) = matching(&s, action, &filter).await?;
    ids.truncate(expected);
    let actor = format!("dashboard:{}", session.person);
    let b = s
        .store
        .bulk_act(&ids, action, &actor, &filter.describe())
        .await?;
    let entry = crate::audit::Entry::new(
        &actor,
        &format!("bulk {}", action.as_str()),
        &format!("bulk #{}: {} jobs matching {}", b.id, b.jobs, b.filter),
        "done",
    );
    crate::audit::record(&s.store, entry.from(client.0)).await;
    Ok(Redirect::to(&format!("/bulk#bulk-{}", b.id)).into_response())
}

/// The latest bulk actions: who moved how many jobs matching what.
pub(super) async fn list(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = s.store.list_bulk_actions(100).await.unwrap_or_default();
    let mut body = String::from(
        "<table id=\"bulk\"><tr><th>#</th><th>When</th><th>Action</th><th>Jobs</th><th>Filter</th><th>Who</th></tr>",
    );
    for b in &list {
        body.push_str(&format!(
            "<tr id=\"bulk-{id}\"><td>{id}</td><td>{at}</td><td>{what}</td><td class=\"jobs\">{n}</td><td>{f}</td><td>{who}</td></tr>",
            id = b.id,
            at = when(b.at),
            what = verb(b.action).1,
            n = b.jobs,
            f = esc(&b.filter),
            who = esc(&b.actor),
        ));
    }
    body.push_str("</table>");
    if list.is_empty() {
        body.push_str("<p>No bulk action yet.</p>");
    }
    v.page("Bulk actions", &body)
}
