//! The operators' dashboard: server-rendered HTML on the admin listener, readable without
//! JavaScript. Queue overview with a 24-hour chart, the job list with filters and search by
//! account, a job page with its attempts and the retry/cancel buttons, the alert outbox,
//! poison messages and reconciliation runs.
//!
//! People sign in with their AD account (`signin`): the cookie holds a random session id
//! (HttpOnly, SameSite=Strict, `Secure` behind HTTPS), viewers read, operators also act,
//! and every state-changing form carries the session's CSRF token. `admin.open_reads` lets
//! anyone read without signing in; the shared admin token is for the API only. Every value
//! shown is HTML-escaped. The pages read [`AdminState`] like the API does; `app` mounts both.
//!
//! The queue views live in the child modules: the job list with its filter (`list`,
//! `filter`), failures grouped by error signature (`failures`), bulk actions by filter
//! (`bulk`), health at a glance (`health`), the job page's timeline (`timeline`) and the
//! self-refreshing part of a page (`live`).

mod answers;
mod bulk;
mod failures;
mod filter;
mod health;
mod list;
mod live;
mod timeline;

use std::net::IpAddr;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Extension, Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use crate::access::Role;
use crate::admin::AdminState;
use crate::admin_guard::{ClientAddr, RefusedBecause};
use crate::audit::Entry;
use crate::job::JobState;
use crate::signin::{Session, SignInError};
use crate::store::{Job, OperatorAction};

/// The session cookie's name over plain HTTP.
const COOKIE: &str = "mailboxd_session";
/// Its name when `Secure`: browsers take a `__Host-` cookie only from HTTPS, for this
/// host alone (no `Domain`) and the whole site (`Path=/`), so a sibling host or a plain
/// HTTP page cannot set or shadow it.
const HOST_COOKIE: &str = "__Host-mailboxd_session";

fn cookie_name(s: &AdminState) -> &'static str {
    if s.secure_cookies {
        HOST_COOKIE
    } else {
        COOKIE
    }
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
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
        .route("/static/dashboard.css", get(style))
        .route("/static/dashboard.js", get(script))
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

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Who is looking: a signed-in person, or nobody (reads open to all).
struct Visitor {
    session: Option<Session>,
}

impl Visitor {
    fn can_act(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.role == Role::Operator)
    }

    /// The hidden field every state-changing form carries.
    fn csrf_field(&self) -> String {
        self.session.as_ref().map_or(String::new(), |s| {
            format!(
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                esc(&s.csrf)
            )
        })
    }

    fn page(&self, title: &str, body: &str) -> Response {
        let who = match &self.session {
            Some(s) => format!(
                "<span id=\"who\">{} ({})</span> <form method=\"post\" action=\"/logout\" class=\"inline\">{}<button id=\"logout\" type=\"submit\">Sign out</button></form>",
                esc(&s.person),
                s.role,
                self.csrf_field()
            ),
            None => "<a href=\"/login\">Sign in</a>".into(),
        };
        render(StatusCode::OK, title, &who, body)
    }
}

/// The visitor, or the response when they may not see (or, for `write`, change) anything.
async fn visitor(s: &AdminState, headers: &HeaderMap, write: bool) -> Result<Visitor, Response> {
    let session = match cookie_value(headers, cookie_name(s)) {
        Some(c) => s.signin.session(&c).await.map_err(|e| {
            tracing::error!(error = %e, "cannot check a dashboard session");
            page_with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>Your session cannot be checked right now (the directory or the database did \
                 not answer); try again shortly.</p>",
            )
        })?,
        None => None,
    };
    let visitor = Visitor { session };
    match (&visitor.session, write) {
        (Some(_), true) if !visitor.can_act() => Err(forbidden(
            "Your AD groups let you read the dashboard, not act on it.",
        )),
        (Some(_), _) => Ok(visitor),
        (None, true) => Err(forbidden("Actions need an operator signed in.")),
        (None, false) if s.access.open_reads() => Ok(visitor),
        (None, false) if !s.signin.enabled() => Err(page_with_status(
            StatusCode::FORBIDDEN,
            "Dashboard off",
            "<p>The dashboard needs AD sign-in: set <code>[ldap].urls</code> and \
             <code>admin.viewer_groups</code> or <code>admin.operator_groups</code>, or \
             <code>admin.open_reads = true</code> to read without signing in.</p>",
        )),
        (None, false) => Err(Redirect::to("/login").into_response()),
    }
}

fn forbidden(why: &str) -> Response {
    let mut r = page_with_status(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!("<p>{}</p><p><a href=\"/login\">Sign in</a></p>", esc(why)),
    );
    r.extensions_mut().insert(RefusedBecause(why.to_owned()));
    r
}

/// The operator session a state-changing form was sent in, its CSRF token checked.
async fn operator(s: &AdminState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let v = visitor(s, headers, true).await?;
    match v.session {
        Some(session) if crate::secret_eq(session.csrf.as_bytes(), csrf.as_bytes()) => Ok(session),
        _ => Err(forbidden(
            "This form is stale or did not come from this dashboard; reload the page and try again.",
        )),
    }
}

fn page_with_status(status: StatusCode, title: &str, body: &str) -> Response {
    render(status, title, "<a href=\"/login\">Sign in</a>", body)
}

/// The page around `body`, with `who` (the signed-in person, or a sign-in link) in the header.
fn render(status: StatusCode, title: &str, who: &str, body: &str) -> Response {
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t} · mailboxd</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script></head>
<body><a class="skip" href='#main'>Skip to the content</a><header><a href="/"><b>mailboxd</b></a><a href="/jobs">Jobs</a><a href="/failures">Failures</a><a href="/bulk">Bulk actions</a><a href="/alerts">Alerts</a><a href="/poison">Poison</a><a href="/reconcile">Reconcile</a>{who}</header>
<main id="main"><h1>{t}</h1>
{body}
</main></body></html>"#,
        t = esc(title),
    );
    (status, Html(html)).into_response()
}

/// The style sheet (a browser asks again each time: it changes with the binary).
async fn style() -> Response {
    asset("text/css; charset=utf-8", live::STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", live::SCRIPT)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn state_cell(state: &str) -> String {
    format!("<td class=\"state-{s}\">{s}</td>", s = esc(state))
}

async fn overview(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let counts = s.store.job_counts().await.unwrap_or_default();
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
    // A task that is down or an intake that cannot commit: what /readyz answers 503 for.
    let problems = s.health.problems();
    if !problems.is_empty() {
        body.push_str(&format!(
            "<p class=\"bad\" id=\"health\">This replica is <b>not ready</b>: {}.</p>",
            esc(&problems.join("; "))
        ));
    }
    body.push_str(&outcomes_line(&s).await);
    body.push_str(&answers::cloud_line(&s.store).await);
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
    body.push_str(&exchange_budget(&s).await);
    body.push_str(&failures::summary(&s, v.can_act()).await);
    body.push_str(&health::section(&s).await);
    v.page("Overview", &live::region(&body))
}

/// The Exchange budget in words: sessions in use of the cluster's maximum, this replica's
/// share and waiting batches, Exchange's refusals, and the cmdlets in the window.
async fn exchange_budget(s: &AdminState) -> String {
    let local = s.budget.local();
    let cluster = s.store.budget_use().await.ok();
    let in_use = cluster
        .as_ref()
        .map_or_else(|| "an unknown number".into(), |c| c.in_use.to_string());
    let refusals = match &cluster {
        Some(c) if c.throttled_recently > 0 => format!(
            "<b>Exchange refused {} time(s)</b> in the last 15 minutes (all replicas): someone else uses the service account, or the budget is above its throttling policy.",
            c.throttled_recently
        ),
        _ => "Exchange refused nothing in the last 15 minutes.".into(),
    };
    let learned = match cluster.as_ref().and_then(|c| c.learned_max_sessions) {
        Some(n) => format!(
            " <b id=\"learned-limit\">Exchange leaves mailboxd only {n} sessions</b> (learned from its refusal): every replica uses at most {n} until Exchange accepts more. If the refusal stated {n}, set <code>exchange.max_sessions = {n}</code> to match; if it stated more, another client holds runspaces of the same account."
        ),
        None => String::new(),
    };
    let cmdlets = match s.budget.cmdlets() {
        Some(c) => format!(
            "Cmdlets: {} of {} used in the {} s window (all replicas); {} batch(es) of this replica waiting for room.",
            s.store
                .cmdlets_in_window()
                .await
                .map_or_else(|_| "?".into(), |n| n.to_string()),
            c.limit().max,
            c.limit().window.as_secs_f64(),
            c.waiting()
        ),
        None => "Cmdlets are not paced (<code>exchange.max_cmdlets</code> unset, as Exchange's default policy has no cmdlet limit).".into(),
    };
    format!(
        "<h2>Exchange budget</h2><p id=\"exchange-budget\">Sessions: {in_use} of {max} in use (all replicas). \
         This replica may hold {share} and holds {held}; {waiting} batch(es) waiting for a session. {refusals}{learned}</p>\
         <p id=\"cmdlet-budget\">{cmdlets}</p>",
        max = local.max_sessions,
        share = local.share,
        held = local.held,
        waiting = local.waiting,
    )
}

/// Whether the IAM system hears back: outcomes waiting for the broker, and failing ones.
async fn outcomes_line(s: &AdminState) -> String {
    let c = s.store.outcome_counts().await.unwrap_or_default();
    if c.failing > 0 {
        format!(
            "<p class=\"bad\" id=\"outcomes\">Outcomes: <b>{}</b> could not be published to the IAM system ({} waiting in all); <code>mailboxd outcomes list --status failing</code> shows why. None is lost.</p>",
            c.failing, c.unsent
        )
    } else {
        format!(
            "<p class=\"good\" id=\"outcomes\">Outcomes: {} waiting to be published to the IAM system.</p>",
            c.unsent
        )
    }
}

async fn job(State(s): State<AdminState>, headers: HeaderMap, Path(id): Path<Uuid>) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
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
        action_buttons(id, &v),
        answers::section(&s.store, id).await,
        timeline::section(&j, &attempts, &actions),
        timeline::event(&j),
        operator_actions(&actions),
    ]
    .concat();
    v.page(&format!("Job for {}", j.event.account.name()), &body)
}

fn job_table(j: &Job) -> String {
    format!(
        "<table id=\"job\"><tr><th>Account</th><td id=\"account\">{}</td></tr>\
         <tr><th>Type</th><td>{}</td></tr><tr><th>State</th><td id=\"state\" class=\"state-{st}\">{st}</td></tr>\
         <tr><th>Outcome</th><td>{}</td></tr><tr><th>Attempts</th><td id=\"attempt-count\">{} of {}</td></tr>\
         <tr><th>Next attempt</th><td>{}</td></tr><tr><th>Event</th><td>{} (source {}, occurred {})</td></tr>\
         <tr><th>Last error</th><td>{} {}</td></tr>{}</table>",
        esc(&j.event.account.name()),
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
        trace_row(j),
        st = esc(j.state.as_str()),
    )
}

/// The trace the event came with (its W3C trace id, what a tracing back end finds it by).
fn trace_row(j: &Job) -> String {
    j.trace_parent
        .as_deref()
        .and_then(|t| crate::trace::TraceParent::parse(t.as_bytes()).ok())
        .map_or_else(String::new, |t| {
            format!(
                "<tr><th>Trace</th><td id=\"trace-id\">{}</td></tr>",
                esc(t.trace_id())
            )
        })
}

/// Retry and cancel, for operators only: a viewer's page has no buttons to press.
fn action_buttons(id: Uuid, v: &Visitor) -> String {
    if !v.can_act() {
        return String::new();
    }
    let csrf = v.csrf_field();
    format!(
        "<form method=\"post\" action=\"/jobs/{id}/retry\" class=\"inline\">{csrf}<button id=\"retry\" type=\"submit\">Retry now</button></form> \
         <form method=\"post\" action=\"/jobs/{id}/cancel\" class=\"inline\">{csrf}<button id=\"cancel\" type=\"submit\">Cancel</button></form>"
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

/// The CSRF token a state-changing form carries.
#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The form's CSRF token; a POST without a form has none (and is refused like a wrong one).
fn csrf(f: Result<Form<CsrfForm>, FormRejection>) -> String {
    f.map(|Form(f)| f.csrf).unwrap_or_default()
}

async fn act(
    s: AdminState,
    (headers, client): (HeaderMap, ClientAddr),
    id: Uuid,
    retry: bool,
    csrf: &str,
) -> Response {
    let session = match operator(&s, &headers, csrf).await {
        Ok(session) => session,
        Err(r) => return r,
    };
    let actor = format!("dashboard:{}", session.person);
    let r = if retry {
        s.store.retry_job(id, &actor).await
    } else {
        s.store.cancel_job(id, &actor).await
    };
    let what = if retry { "retry" } else { "cancel" };
    let entry = Entry::new(
        &actor,
        what,
        &format!("job {id}"),
        crate::admin::outcome(&r),
    );
    crate::audit::record(&s.store, entry.from(client.0)).await;
    match r {
        Ok(Ok(())) => Redirect::to(&format!("/jobs/{id}")).into_response(),
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

async fn retry(
    State(s): State<AdminState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    act(s, (headers, client), id, true, &csrf(f)).await
}

async fn cancel(
    State(s): State<AdminState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    act(s, (headers, client), id, false, &csrf(f)).await
}

async fn alerts(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
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
    v.page("Alerts", &body)
}

async fn poison(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
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
    v.page("Poison messages", &body)
}

async fn reconcile(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
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
    v.page("Reconciliation runs", &body)
}

async fn login_form(State(s): State<AdminState>) -> Response {
    let note = if s.signin.enabled() {
        ""
    } else {
        "<p class=\"bad\">AD sign-in is not configured on this daemon.</p>"
    };
    page_with_status(StatusCode::OK, "Sign in", &format!("{note}{LOGIN_FORM}"))
}

const LOGIN_FORM: &str = "<form method=\"post\" action=\"/login\">\
<p><label>User <input name=\"user\" autocomplete=\"username\" placeholder=\"CORP\\jdoe or jdoe@corp.example\"></label></p>\
<p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label></p>\
<button id=\"login\" type=\"submit\">Sign in</button></form>";

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: SecretString,
}

/// Signs the person in with AD; refusals are logged with their reason (never the
/// password) and all look the same to the person.
async fn login(
    State(s): State<AdminState>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let (cookie, session) = match s.signin.sign_in(&f.user, &f.password, client).await {
        Ok(ok) => ok,
        Err(e) => return refused(&f.user, client, &e),
    };
    let actor = format!("dashboard:{}", session.person);
    let entry = Entry::new(&actor, "sign in", &format!("role {}", session.role), "done");
    crate::audit::record(&s.store, entry.from(client)).await;
    let name = cookie_name(&s);
    let secure = if s.secure_cookies { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (
                header::SET_COOKIE,
                format!("{name}={cookie}; HttpOnly; SameSite=Strict; Path=/{secure}"),
            ),
        ],
    )
        .into_response()
}

/// The page for a refused sign-in, and its log line: one text and one status for every
/// reason about the account, so the page says nothing about it.
fn refused(user: &str, client: IpAddr, e: &SignInError) -> Response {
    let typed: String = user.chars().take(256).collect();
    // A log line, not a row: anyone can cause refusals, so they must not fill the database.
    // (The typed name goes to the log as typed: both log formats escape it.)
    tracing::warn!(target: "audit", user = %typed, client = %client, reason = %e, "dashboard sign-in refused");
    let (status, shown) = match e {
        SignInError::Refused(_) => (StatusCode::UNAUTHORIZED, crate::signin::REFUSED.to_owned()),
        SignInError::Off => (StatusCode::FORBIDDEN, e.to_string()),
        // Someone not signed in learns nothing about the directory or the database behind it.
        SignInError::Directory(_) | SignInError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not possible right now (the directory or the database did not answer); try again shortly.".to_owned(),
        ),
    };
    page_with_status(
        status,
        "Sign in",
        &format!(
            "<p class=\"bad\" id=\"error\">{}</p>{LOGIN_FORM}",
            esc(&shown)
        ),
    )
}

/// Ends the session on every replica and forgets the cookie.
async fn logout(
    State(s): State<AdminState>,
    headers: HeaderMap,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = csrf(f);
    let v = match visitor(&s, &headers, false).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(session) = v
        .session
        .filter(|x| crate::secret_eq(x.csrf.as_bytes(), csrf.as_bytes()))
    else {
        return forbidden("Sign out from a page of this dashboard.");
    };
    if let Err(e) = s.signin.sign_out(&session).await {
        return page_with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!("<p>{}</p>", esc(&e.to_string())),
        );
    }
    let actor = format!("dashboard:{}", session.person);
    crate::audit::record(&s.store, Entry::new(&actor, "sign out", "", "done")).await;
    let name = cookie_name(&s);
    let secure = if s.secure_cookies { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_owned()),
            (
                header::SET_COOKIE,
                format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"),
            ),
        ],
    )
        .into_response()
}
