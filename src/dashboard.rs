//! The operators' dashboard: server-rendered HTML on the admin listener, readable without
//! JavaScript. Queue overview with a 24-hour chart, the job list with filters and search by
//! account, a job page with its attempts and the retry/cancel buttons, the alert outbox,
//! poison messages and reconciliation runs.
//!
//! Access follows the API's rule (`access`): the admin token (sent once through `/login`,
//! then kept in an HttpOnly, SameSite=Strict cookie), or reads without it when
//! `admin.open_reads` is set. Actions always need the token. Every value shown is
//! HTML-escaped. The pages read [`AdminState`] like the API does; `app` mounts both.
//!
//! The queue views live in the child modules: the job list with its filter (`list`,
//! `filter`), failures grouped by error signature (`failures`), bulk actions by filter
//! (`bulk`), health at a glance (`health`), the job page's timeline (`timeline`) and the
//! self-refreshing part of a page (`live`).

mod bulk;
mod failures;
mod filter;
mod health;
mod list;
mod live;
mod timeline;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use uuid::Uuid;

use crate::access::Refusal;
use crate::admin::AdminState;
use crate::store::{Job, JobState, OperatorAction};

const COOKIE: &str = "mailboxd_token";

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/jobs", get(list::jobs))
        .route("/failures", get(failures::failures))
        .route("/bulk", get(bulk::list))
        .route("/bulk/{action}", get(bulk::confirm).post(bulk::act))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/alerts", get(alerts))
        .route("/poison", get(poison))
        .route("/reconcile", get(reconcile))
        .with_state(state)
}

/// HTML-escapes a value for text and attribute positions.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The refusal when the visitor may not see (or, for `write`, change) anything.
fn check(s: &AdminState, headers: &HeaderMap, write: bool) -> Option<Response> {
    let refusal = s
        .access
        .check(cookie_token(headers).as_deref(), write)
        .err()?;
    Some(match refusal {
        Refusal::Disabled => page_with_status(
            StatusCode::FORBIDDEN,
            "Dashboard off",
            "<p>The dashboard needs an admin token: set <code>admin.token_file</code> (or \
             <code>MAILBOXD_ADMIN_TOKEN</code>), or <code>admin.open_reads = true</code> to read without one.</p>",
        ),
        Refusal::NoToken if write => page_with_status(
            StatusCode::UNAUTHORIZED,
            "Token needed",
            "<p>Actions need the admin token. <a href=\"/login\">Log in</a>.</p>",
        ),
        Refusal::NoToken => Redirect::to("/login").into_response(),
    })
}

fn page(title: &str, body: &str) -> Response {
    page_with_status(StatusCode::OK, title, body)
}

fn page_with_status(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t} · mailboxd</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; }}
header {{ background: #17324d; color: #fff; padding: .6em 1.2em; }}
header a {{ color: #fff; margin-right: 1.2em; text-decoration: none; }}
main {{ padding: 1em 1.2em; max-width: 80em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }}
.state-failed {{ color: #a40000; font-weight: bold; }} .state-succeeded {{ color: #1d6b1d; }}
.state-retrying, .state-waiting_for_sync {{ color: #8a5a00; }} .state-running {{ color: #0b4f8a; }}
.bad {{ background: #fde7e7; padding: .5em; }} .good {{ background: #e6f4e6; padding: .5em; }}
.cards {{ display: flex; flex-wrap: wrap; gap: .8em; }} .card {{ border: 1px solid #ccc; padding: .6em 1em; min-width: 8em; }}
.card b {{ font-size: 1.6em; display: block; }} pre {{ white-space: pre-wrap; background: #f4f4f4; padding: .6em; }}
.card small {{ display: block; font-size: .55em; font-weight: normal; }} .muted {{ color: #555; }}
a.button {{ display: inline-block; border: 1px solid #17324d; padding: .2em .7em; border-radius: 3px; color: #17324d; text-decoration: none; }}
.group {{ border-left: 4px solid #a40000; padding: .1em 1em; margin: 1em 0; }} tr:target {{ background: #fff4c2; }}
.swatch {{ display: inline-block; width: .8em; height: .8em; }} .swatch-ok {{ background: #2e7d32; }} .swatch-bad {{ background: #c62828; }}
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, summary:focus-visible {{ outline: 3px solid #f0a500; outline-offset: 2px; }}
.skip {{ position: absolute; left: -999px; }} .skip:focus {{ left: 1em; top: .4em; background: #fff; color: #17324d; padding: .3em; }}
</style></head>
<body><a class="skip" href='#main'>Skip to the content</a><header><a href="/"><b>mailboxd</b></a><a href="/jobs">Jobs</a><a href="/failures">Failures</a><a href="/bulk">Bulk actions</a><a href="/alerts">Alerts</a><a href="/poison">Poison</a><a href="/reconcile">Reconcile</a><a href="/login">Log in</a></header>
<main id="main"><h1>{t}</h1>
{body}
</main><script>{local}</script></body></html>"#,
        t = esc(title),
        local = live::LOCAL_TIMES
    );
    (status, Html(html)).into_response()
}

fn state_cell(state: &str) -> String {
    format!("<td class=\"state-{s}\">{s}</td>", s = esc(state))
}

async fn overview(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = check(&s, &headers, false) {
        return r;
    }
    let counts = s.store.count_by_state().await.unwrap_or_default();
    let circuit = s.circuit.status();
    let broker = *s.broker_connected.borrow();
    let mut body = String::new();
    body.push_str(&match (&circuit.open, &circuit.reason) {
        (true, reason) => format!(
            "<p class=\"bad\" id=\"circuit\">Circuit <b>open</b>: work on the Windows side is paused ({}). Next probe in {} s.</p>",
            esc(reason.as_deref().unwrap_or("")),
            circuit.retry_in_s.unwrap_or(0)
        ),
        (false, _) => "<p class=\"good\" id=\"circuit\">Circuit closed: the Windows side answers.</p>".into(),
    });
    body.push_str(if broker {
        "<p class=\"good\" id=\"broker\">Broker connected: events flow in.</p>"
    } else {
        "<p class=\"bad\" id=\"broker\">Broker <b>disconnected</b>: events wait in RabbitMQ until mailboxd reconnects.</p>"
    });
    body.push_str("<h2>Queue</h2><div class=\"cards\">");
    for state in JobState::ALL {
        let n = counts
            .iter()
            .find(|(st, _)| *st == state)
            .map_or(0, |(_, n)| *n);
        body.push_str(&format!(
            "<a class=\"card\" href=\"/jobs?state={s}\" id=\"count-{s}\"><b>{n}</b>{s}</a>",
            s = state.as_str()
        ));
    }
    body.push_str("</div>");
    body.push_str(&failures::summary(&s).await);
    body.push_str(&health::section(&s).await);
    page("Overview", &live::region(&body))
}

async fn job(State(s): State<AdminState>, headers: HeaderMap, Path(id): Path<Uuid>) -> Response {
    if let Some(r) = check(&s, &headers, false) {
        return r;
    }
    let Ok(Some((j, attempts))) = s.store.get_job(id).await else {
        return page_with_status(
            StatusCode::NOT_FOUND,
            "No such job",
            "<p>No job with that id.</p>",
        );
    };
    let actions = s.store.job_actions(id).await.unwrap_or_default();
    let body = [
        job_table(&j),
        action_buttons(id),
        timeline::section(&j, &attempts, &actions),
        timeline::event(&j),
        operator_actions(&actions),
    ]
    .concat();
    page(
        &format!("Job for {}", j.event.account.sam_account_name.as_str()),
        &body,
    )
}

fn job_table(j: &Job) -> String {
    format!(
        "<table id=\"job\"><tr><th>Account</th><td id=\"account\">{}</td></tr>\
         <tr><th>Type</th><td>{}</td></tr><tr><th>State</th><td id=\"state\" class=\"state-{st}\">{st}</td></tr>\
         <tr><th>Outcome</th><td>{}</td></tr><tr><th>Attempts</th><td id=\"attempt-count\">{} of {}</td></tr>\
         <tr><th>Next attempt</th><td>{}</td></tr><tr><th>Event</th><td>{} (source {}, occurred {})</td></tr>\
         <tr><th>Last error</th><td>{} {}</td></tr></table>",
        esc(j.event.account.sam_account_name.as_str()),
        j.kind,
        esc(j.outcome.map_or("", |o| o.as_str())),
        j.attempt,
        j.max_attempts,
        live::when(j.next_attempt_at),
        esc(&j.event_id),
        esc(j.event.source.as_deref().unwrap_or("-")),
        live::when(j.occurred_at),
        esc(j.last_error_class.map_or("", |c| c.as_str())),
        esc(j.last_error.as_deref().unwrap_or("")),
        st = esc(j.state.as_str()),
    )
}

fn action_buttons(id: Uuid) -> String {
    format!(
        "<form method=\"post\" action=\"/jobs/{id}/retry\" style=\"display:inline\"><button id=\"retry\" type=\"submit\">Retry now</button></form> \
         <form method=\"post\" action=\"/jobs/{id}/cancel\" style=\"display:inline\"><button id=\"cancel\" type=\"submit\">Cancel</button></form>"
    )
}

/// Who retried or cancelled the job, and when; nothing when no operator did.
fn operator_actions(actions: &[OperatorAction]) -> String {
    if actions.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Operator actions</h2><table id=\"actions\"><tr><th>When</th><th>What</th><th>Who</th></tr>",
    );
    for a in actions {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            live::when(a.at),
            esc(&format!(
                "{} {}",
                a.action,
                a.detail.as_deref().unwrap_or("")
            )),
            esc(&a.actor)
        ));
    }
    out.push_str("</table>");
    out
}

async fn act(s: AdminState, headers: HeaderMap, id: Uuid, retry: bool) -> Response {
    if let Some(r) = check(&s, &headers, true) {
        return r;
    }
    let actor = s.access.actor("dashboard");
    let r = if retry {
        s.store.retry_job(id, &actor).await
    } else {
        s.store.cancel_job(id, &actor).await
    };
    match r {
        Ok(Ok(())) => {
            tracing::info!(job_id = %id, action = if retry { "retry" } else { "cancel" }, "operator action from the dashboard");
            Redirect::to(&format!("/jobs/{id}")).into_response()
        }
        Ok(Err(e)) => page_with_status(
            StatusCode::CONFLICT,
            "Not possible",
            &format!(
                "<p>{}</p><p><a href=\"/jobs/{id}\">Back to the job</a></p>",
                esc(&format!("{e:?}"))
            ),
        ),
        Err(e) => page_with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            &format!("<p>{}</p>", esc(&e.to_string())),
        ),
    }
}

async fn retry(State(s): State<AdminState>, headers: HeaderMap, Path(id): Path<Uuid>) -> Response {
    act(s, headers, id, true).await
}

async fn cancel(State(s): State<AdminState>, headers: HeaderMap, Path(id): Path<Uuid>) -> Response {
    act(s, headers, id, false).await
}

async fn alerts(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = check(&s, &headers, false) {
        return r;
    }
    let list = s.store.list_alerts(200).await.unwrap_or_default();
    let mut body = String::from(
        "<table id=\"alerts\"><tr><th>Created</th><th>Status</th><th>Subject</th><th>Attempts</th><th>Last error</th></tr>",
    );
    for a in &list {
        let status = if a.suppressed {
            "suppressed"
        } else if a.folded_into.is_some() {
            "sent in a digest"
        } else if a.sent_at.is_some() {
            "sent"
        } else if a.last_error.is_some() {
            "failing"
        } else {
            "pending"
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.created_at.format("%Y-%m-%d %H:%M:%S"),
            esc(&a.subject),
            a.attempts,
            esc(a.last_error.as_deref().unwrap_or("")),
        ));
    }
    body.push_str("</table>");
    page("Alerts", &body)
}

async fn poison(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = check(&s, &headers, false) {
        return r;
    }
    let list = s.store.list_poison(200).await.unwrap_or_default();
    let mut body = String::from(
        "<p>Messages that could not become a job. Replay one after fixing it: <code>mailboxd poison replay ID</code>.</p><table id=\"poison\"><tr><th>Id</th><th>Received</th><th>Routing key</th><th>Reason</th><th>Size</th></tr>",
    );
    for p in &list {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.id,
            p.received_at.format("%Y-%m-%d %H:%M:%S"),
            esc(&p.routing_key),
            esc(&p.reason),
            p.body_size
        ));
    }
    body.push_str("</table>");
    page("Poison messages", &body)
}

async fn reconcile(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = check(&s, &headers, false) {
        return r;
    }
    let runs = s.store.list_reconcile_runs(50).await.unwrap_or_default();
    let mut body = String::from(
        "<table id=\"runs\"><tr><th>Started</th><th>Mode</th><th>DC</th><th>Scanned</th><th>Differences</th><th>Jobs queued</th><th>Notes</th></tr>",
    );
    for r in &runs {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            if r.dry_run { "dry run" } else { "run" },
            esc(r.domain_controller.as_deref().unwrap_or("")),
            r.scanned,
            r.differences,
            esc(&r.by_kind.to_string()),
            r.jobs_created,
            esc(&match (&r.error, r.capped) {
                (Some(e), _) => e.clone(),
                (None, true) => "capped: nothing queued, alert raised".into(),
                _ => String::new(),
            }),
        ));
    }
    body.push_str("</table>");
    page("Reconciliation runs", &body)
}

async fn login_form() -> Response {
    page(
        "Log in",
        "<form method=\"post\" action=\"/login\"><label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"off\"></label> <button id=\"login\" type=\"submit\">Log in</button></form>",
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<AdminState>, Form(f): Form<LoginForm>) -> Response {
    if !s.access.is_token(&f.token) {
        return page_with_status(
            StatusCode::UNAUTHORIZED,
            "Log in",
            "<p class=\"bad\">Wrong token.</p><p><a href=\"/login\">Try again</a></p>",
        );
    }
    // Tokens are opaque ASCII secrets; anything else could not travel in a cookie anyway.
    if !f
        .token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return page_with_status(
            StatusCode::BAD_REQUEST,
            "Log in",
            "<p>This token cannot be kept in a cookie; use the API with a bearer header.</p>",
        );
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", f.token),
            ),
        ],
    )
        .into_response()
}
