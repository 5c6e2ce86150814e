//! The daemon's admin HTTP: liveness, readiness, and the JSON API under `/api/v1` that
//! the CLI's operations mirror. Every write needs the bearer token; reads too, unless
//! `admin.open_reads` says otherwise (the rule is `access`, shared with the dashboard).
//! `/metrics` is Prometheus' text format (open, counts only). [`AdminState`] is what every
//! handler on the admin listener sees, the dashboard's included; `app` mounts both.

use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use crate::access::{Access, Refusal};
use crate::admin_guard::ClientAddr;
use crate::audit::Entry;
use crate::event::EventKind;
use crate::job::{ErrorClass, JobState};
use crate::store::{ActionRefused, JobFilter, Store};

#[derive(Clone)]
pub(crate) struct AdminState {
    pub store: Store,
    /// The daemon's tasks and intake's progress: what makes `/readyz` say not ready.
    pub health: std::sync::Arc<crate::health::Health>,
    pub broker_connected: watch::Receiver<bool>,
    pub circuit: std::sync::Arc<crate::circuit::Circuit>,
    /// The Exchange session budget (this replica's share, and the cluster's use in the store).
    pub budget: std::sync::Arc<crate::budget::SessionBudget>,
    pub access: Access,
    /// AD sign-in and the dashboard's sessions.
    pub signin: crate::signin::SignIn,
    /// Session cookies get `Secure` and the `__Host-` name (the dashboard is reached over
    /// HTTPS).
    pub secure_cookies: bool,
    /// Proxies whose `X-Forwarded-For` names the client (`admin.trusted_proxies`).
    pub trusted_proxies: std::sync::Arc<Vec<ipnet::IpNet>>,
    /// For replaying poison messages to the broker.
    pub amqp: crate::config::Amqp,
    /// How long a joiner may wait for the cloud sync (the dashboard shows the deadline).
    pub sync_deadline: std::time::Duration,
}

pub(crate) fn router(state: AdminState) -> Router {
    if state.access.open_reads() {
        tracing::warn!("admin.open_reads is set: the job API can be read without a token");
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/retry", post(bulk_retry))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/retry", post(retry_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/poison", get(list_poison))
        .route("/api/v1/poison/{id}/replay", post(replay_poison))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/reconcile/runs", get(list_reconcile_runs))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(state)
}

/// Prometheus text format. Open like `/healthz`: it holds counts, never names or secrets.
async fn metrics(State(st): State<AdminState>) -> Response {
    // Sets the task and intake gauges this scrape reports.
    st.health.problems();
    let broker = *st.broker_connected.borrow();
    let body =
        crate::metrics::render(&st.store, st.circuit.status().open, broker, &st.budget).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(json!({"error": detail.into()}))).into_response()
}

/// The token an `Authorization: Bearer …` header presents.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The refusal, unless the caller may do this.
fn refuse(s: &AdminState, headers: &HeaderMap, write: bool) -> Option<Response> {
    s.access.check(bearer(headers), write).err().map(refusal)
}

fn refusal(r: Refusal) -> Response {
    let mut resp = match r {
        Refusal::Disabled => problem(
            StatusCode::FORBIDDEN,
            "the API is disabled: set admin.token_file (or MAILBOXD_ADMIN_TOKEN) or [[admin.tokens]] to use it",
        ),
        Refusal::NoToken => problem(
            StatusCode::UNAUTHORIZED,
            "send an API token as `Authorization: Bearer <token>`",
        ),
        Refusal::ReadOnly => problem(
            StatusCode::FORBIDDEN,
            "this token may only read (role = \"viewer\"); use an operator token to act",
        ),
    };
    let why = match r {
        Refusal::Disabled => "the API is off (no token configured)",
        Refusal::NoToken => "no token, or not one of the configured tokens",
        Refusal::ReadOnly => "a viewer token asked to act",
    };
    resp.extensions_mut()
        .insert(crate::admin_guard::RefusedBecause(why.into()));
    resp
}

/// The actor of an action (`api:<token name>`), or why the caller may not act.
fn actor(s: &AdminState, headers: &HeaderMap) -> Result<String, Refusal> {
    // An action always has a token behind it: `check` opens only reads without one.
    s.access
        .check(bearer(headers), true)
        .map(|who| who.unwrap_or_else(|| "api:?".into()))
}

/// `{"<key>": rows}`, or the 500 that says where to look.
fn listing<T: serde::Serialize>(key: &str, rows: Result<T, crate::store::StoreError>) -> Response {
    match rows {
        Ok(rows) => Json(json!({ key: rows })).into_response(),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API request failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the daemon's log",
    )
}

/// `GET /api/v1/jobs?state=…&type=…&error_class=…`: states, types and classes read by
/// their own `Deserialize` (a value that names none is a 400 saying which would).
#[derive(Deserialize)]
struct JobQuery {
    state: Option<JobState>,
    account: Option<String>,
    #[serde(rename = "type")]
    kind: Option<EventKind>,
    error_class: Option<ErrorClass>,
    /// RFC 3339: jobs created at or after.
    since: Option<String>,
    /// RFC 3339: jobs created before.
    until: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn time_param(
    name: &str,
    v: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    v.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|e| format!("{name}: {e}; expected RFC 3339, e.g. 2026-11-22T10:00:00Z"))
    })
    .transpose()
}

/// A query string or path that does not parse: a JSON 400 like every other refusal.
fn bad_request(e: impl std::fmt::Display) -> Response {
    problem(StatusCode::BAD_REQUEST, e.to_string())
}

/// The account and the page size both the job list and bulk retry take, checked (`max` at
/// most, `default` when absent).
fn checked_account_and_limit(
    account: &Option<String>,
    limit: Option<i64>,
    default: i64,
    max: i64,
) -> Result<i64, String> {
    if account
        .as_ref()
        .is_some_and(|a| a.len() > 256 || a.chars().any(char::is_control))
    {
        return Err("account must be at most 256 characters without control characters".into());
    }
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!("limit {n} is outside 1..={max}")),
    }
}

fn job_filter(q: JobQuery) -> Result<JobFilter, String> {
    let limit = checked_account_and_limit(&q.account, q.limit, 100, 1000)?;
    let offset = q.offset.unwrap_or(0);
    if !(0..=1_000_000_000).contains(&offset) {
        return Err("offset must be within 0..=1000000000".into());
    }
    Ok(JobFilter {
        states: q.state.into_iter().collect(),
        account: q.account,
        kind: q.kind,
        error_class: q.error_class,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        limit,
        offset,
    })
}

async fn list_jobs(
    State(s): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<JobQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = refuse(&s, &headers, false) {
        return r;
    }
    let filter = match q
        .map_err(|e| e.to_string())
        .and_then(|Query(q)| job_filter(q))
    {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    match s.store.list_jobs(&filter).await {
        Ok(jobs) => {
            // A full page may have more behind it.
            let next = (jobs.len() as i64 == filter.limit).then_some(filter.offset + filter.limit);
            Json(json!({ "jobs": jobs, "next_offset": next })).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn show_job(
    State(s): State<AdminState>,
    headers: HeaderMap,
    id: Result<Path<Uuid>, PathRejection>,
) -> Response {
    if let Some(r) = refuse(&s, &headers, false) {
        return r;
    }
    let Path(id) = match id {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    match s.store.get_job(id).await {
        Ok(Some((job, attempts))) => {
            let actions = s.store.job_actions(id).await.unwrap_or_default();
            let outcomes = s.store.job_outcomes(id).await.unwrap_or_default();
            let cloud_watch = s.store.cloud_watch(id).await.unwrap_or_default();
            Json(
                json!({ "job": job, "attempts": attempts, "actions": actions,
                         "outcomes": outcomes, "cloud_watch": cloud_watch }),
            )
            .into_response()
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => internal(e),
    }
}

/// Retry or cancel one job, as the token's holder: 200, 404, or 409 with the job's state.
async fn job_action(
    s: AdminState,
    (headers, client): (HeaderMap, ClientAddr),
    id: Result<Path<Uuid>, PathRejection>,
    retry: bool,
) -> Response {
    let actor = match actor(&s, &headers) {
        Ok(a) => a,
        Err(r) => return refusal(r),
    };
    let Path(id) = match id {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let r = if retry {
        s.store.retry_job(id, &actor).await
    } else {
        s.store.cancel_job(id, &actor).await
    };
    let what = if retry { "retry" } else { "cancel" };
    let entry = Entry::new(&actor, what, &format!("job {id}"), outcome(&r));
    crate::audit::record(&s.store, entry.from(client.0)).await;
    match r {
        Ok(Ok(())) => Json(json!({ "id": id, "ok": true })).into_response(),
        Ok(Err(ActionRefused::NotFound)) => problem(StatusCode::NOT_FOUND, format!("no job {id}")),
        Ok(Err(ActionRefused::WrongState(st))) => {
            problem(StatusCode::CONFLICT, format!("job {id} is {st}"))
        }
        Err(e) => internal(e),
    }
}

/// How an action ended, for the audit trail.
pub(crate) fn outcome<E>(r: &Result<Result<(), ActionRefused>, E>) -> &'static str {
    match r {
        Ok(Ok(())) => "done",
        Ok(Err(ActionRefused::NotFound)) => "not found",
        Ok(Err(ActionRefused::WrongState(_))) => "refused: wrong state",
        Err(_) => "error",
    }
}

async fn retry_job(
    State(s): State<AdminState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    id: Result<Path<Uuid>, PathRejection>,
) -> Response {
    job_action(s, (headers, client), id, true).await
}

async fn cancel_job(
    State(s): State<AdminState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    id: Result<Path<Uuid>, PathRejection>,
) -> Response {
    job_action(s, (headers, client), id, false).await
}

#[derive(Deserialize)]
struct BulkQuery {
    /// `failed` (default) or `cancelled`.
    state: Option<JobState>,
    account: Option<String>,
    #[serde(rename = "type")]
    kind: Option<EventKind>,
    error_class: Option<ErrorClass>,
    limit: Option<i64>,
}

/// `POST /api/v1/jobs/retry?state=failed&error_class=systemic…`: retry every match.
fn bulk_filter(q: BulkQuery) -> Result<JobFilter, String> {
    let limit = checked_account_and_limit(&q.account, q.limit, 1000, 10_000)?;
    let state = match q.state.unwrap_or(JobState::Failed) {
        state @ (JobState::Failed | JobState::Cancelled) => state,
        other => {
            return Err(format!(
                "bulk retry takes state=failed or state=cancelled, not {:?}",
                other.as_str()
            ));
        }
    };
    Ok(JobFilter {
        states: vec![state],
        account: q.account,
        kind: q.kind,
        error_class: q.error_class,
        limit,
        ..JobFilter::default()
    })
}

async fn bulk_retry(
    State(s): State<AdminState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    q: Result<Query<BulkQuery>, QueryRejection>,
) -> Response {
    let actor = match actor(&s, &headers) {
        Ok(a) => a,
        Err(r) => return refusal(r),
    };
    let filter = match q
        .map_err(|e| e.to_string())
        .and_then(|Query(q)| bulk_filter(q))
    {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    match s.store.retry_matching(&filter, &actor).await {
        Ok(ids) => {
            let entry = Entry::new(&actor, "bulk retry", &format!("{} jobs", ids.len()), "done");
            crate::audit::record(&s.store, entry.from(client.0)).await;
            Json(json!({ "retried": ids.len(), "ids": ids })).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn list_poison(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers, false) {
        return r;
    }
    listing("poison", s.store.list_poison(100).await)
}

/// `POST /api/v1/poison/{id}/replay`: publish the stored message again (as it was).
async fn replay_poison(
    State(s): State<AdminState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> Response {
    let actor = match actor(&s, &headers) {
        Ok(a) => a,
        Err(r) => return refusal(r),
    };
    let Path(id) = match id {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    use crate::publish::ReplayError;
    let r = crate::publish::replay_poison(&s.store, &s.amqp, id, None).await;
    let done = match &r {
        Ok(key) => format!("done: to {key}"),
        Err(e) => format!("refused: {e}"),
    };
    let entry = Entry::new(&actor, "replay", &format!("poison {id}"), &done);
    crate::audit::record(&s.store, entry.from(client.0)).await;
    match r {
        Ok(key) => Json(json!({ "id": id, "replayed_to": key })).into_response(),
        Err(ReplayError::NotFound(_)) => {
            problem(StatusCode::NOT_FOUND, format!("no poison message {id}"))
        }
        Err(e @ ReplayError::Truncated(_)) => problem(StatusCode::CONFLICT, e.to_string()),
        Err(e) => internal(e),
    }
}

async fn list_alerts(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers, false) {
        return r;
    }
    listing("alerts", s.store.list_alerts(100).await)
}

#[derive(Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/audit?actor=…&limit=…`: the audit trail, newest first (read-only).
async fn list_audit(
    State(s): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = refuse(&s, &headers, false) {
        return r;
    }
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    if q.actor
        .as_ref()
        .is_some_and(|a| a.chars().count() > 256 || a.chars().any(char::is_control))
    {
        return bad_request("actor must be at most 256 characters without control characters");
    }
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(n) => return bad_request(format!("limit {n} is outside 1..=1000")),
    };
    listing("audit", s.store.list_audit(q.actor.as_deref(), limit).await)
}

async fn list_reconcile_runs(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers, false) {
        return r;
    }
    listing("runs", s.store.list_reconcile_runs(50).await)
}

/// The OpenAPI 3 description of this API (`tests/it/admin_api.rs` checks it covers every route).
pub(crate) const OPENAPI: &str = include_str!("admin_api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The process is alive and serving.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and the intake is connected to the broker. An open
/// circuit (Windows side down) is reported but does not make the daemon unready: it still
/// takes in events and keeps them.
async fn readyz(State(s): State<AdminState>) -> (StatusCode, Json<serde_json::Value>) {
    let database = s.store.ping().await.is_ok();
    let broker = *s.broker_connected.borrow();
    let circuit = s.circuit.status();
    let budget = exchange_budget(&s).await;
    let mut problems = s.health.problems();
    if !broker {
        problems.insert(
            0,
            "not connected to RabbitMQ: intake takes no events".into(),
        );
    }
    if !database {
        problems.insert(0, "PostgreSQL does not answer".into());
    }
    let ready = problems.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(
            json!({"ready": ready, "problems": problems, "database": database, "broker": broker, "circuit": circuit, "exchange_budget": budget}),
        ),
    )
}

/// The session budget as `/readyz` shows it: the cluster's slots in use and refusals
/// (from the store), this replica's share, its waiting batches and its refusals. Waiting
/// for a slot is normal under load, so it never makes the replica unready.
async fn exchange_budget(s: &AdminState) -> serde_json::Value {
    let local = s.budget.local();
    let cluster = s.store.budget_use().await.ok();
    let cmdlets = match s.budget.cmdlets() {
        Some(c) => json!({
            "max": c.limit().max,
            "window_s": c.limit().window.as_secs_f64(),
            "in_window": s.store.cmdlets_in_window().await.ok(),
            "waiting": c.waiting(),
        }),
        None => serde_json::Value::Null,
    };
    json!({
        "cmdlets": cmdlets,
        "max_sessions": local.max_sessions,
        "in_use": cluster.as_ref().map(|c| c.in_use),
        "replicas_holding": cluster.as_ref().map(|c| c.holders),
        "throttled_last_15m": cluster.as_ref().map(|c| c.throttled_recently),
        "learned_max_sessions": cluster.as_ref().and_then(|c| c.learned_max_sessions),
        "learned_at": cluster.as_ref().and_then(|c| c.learned_at),
        "last_throttled_at": cluster.and_then(|c| c.last_throttled_at),
        "replica": local,
    })
}

pub(crate) async fn bind(listen: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
