//! The HTTP intake (`[http_intake]`): events posted over HTTPS, for senders that cannot
//! reach the broker — SailPoint Identity Security Cloud's event triggers are HTTP only.
//!
//! Its own listener, served like the admin one (`admin_serve`: header deadline, connection
//! cap, graceful shutdown; `admin_tls`: rustls from files, reloaded on change). A request is
//! authenticated first (`auth`: bearer token or Basic, constant time), its body read up to
//! `max_body_bytes` (a larger one is refused with 413 before it is read), then handled
//! exactly as a broker delivery is (`intake::keep`): decoded by `event::decode` by content
//! type, stored through `Store::insert_deliveries` with its duplicate and supersede rules,
//! a body that does not decode kept as a poison row. The answer follows the commit:
//! 202 with the job, 200 with the existing job for a known event id, 400 with the reason
//! for a body kept as poison, 503 with `Retry-After` when the database cannot be reached
//! (nothing was stored; the sender keeps the event). Bad input never gets a 5xx.

mod auth;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use tokio::task::JoinHandle;

use auth::Refusal;
pub(crate) use auth::parse as parse_authorization;

use crate::config;
use crate::event::{self, Event};
use crate::intake::keep::{self, Patience, storable};
use crate::shutdown::Shutdown;
use crate::store::{Inserted, NewPoison, ReplyTo, Store, StoreError};
use crate::trace::{self, TraceParent};

/// The path of mailboxd's own events (and whatever else `event::decode` reads).
pub(crate) const EVENTS_PATH: &str = "/v1/events";
/// The path of Identity Security Cloud's "Provisioning Completed" trigger.
pub(crate) const ISC_PROVISIONING_COMPLETED_PATH: &str = "/v1/isc/provisioning-completed";
/// What a poison row of this intake names as its exchange.
const POISON_EXCHANGE: &str = "http_intake";
/// A whole request is abandoned after this (answered 503 by `admin_serve`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A body not received by then is refused with 408: a slow sender, not an outage.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// What a 503 tells the sender to wait before trying again.
const RETRY_AFTER_SECS: u64 = 30;

/// What the intake's requests share.
#[derive(Clone)]
pub(crate) struct HttpIntake {
    pub store: Store,
    pub rules: Arc<event::IntakeRules>,
    pub max_attempts: i32,
    pub max_body_bytes: usize,
    credentials: Arc<auth::Credentials>,
}

impl HttpIntake {
    pub(crate) fn new(
        cfg: &config::HttpIntake,
        store: Store,
        rules: event::IntakeRules,
        max_attempts: i32,
    ) -> HttpIntake {
        HttpIntake {
            store,
            rules: Arc::new(rules),
            max_attempts,
            max_body_bytes: cfg.max_body_bytes,
            credentials: Arc::new(auth::Credentials::from_config(cfg)),
        }
    }
}

/// Which decoder a path's body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `event::decode`, by content type: mailboxd's JSON, IdentityIQ's XML, midPoint's JSON.
    Events,
    /// Identity Security Cloud's "Provisioning Completed" trigger.
    IscProvisioningCompleted,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Events => EVENTS_PATH,
            Route::IscProvisioningCompleted => ISC_PROVISIONING_COMPLETED_PATH,
        }
    }
}

pub(crate) fn router(state: HttpIntake) -> Router {
    Router::new()
        .route(
            EVENTS_PATH,
            post(|s, c, h, b| handle(Route::Events, s, c, h, b)),
        )
        .route(
            ISC_PROVISIONING_COMPLETED_PATH,
            post(|s, c, h, b| handle(Route::IscProvisioningCompleted, s, c, h, b)),
        )
        .fallback(|| async {
            refusal(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint: POST {EVENTS_PATH} or {ISC_PROVISIONING_COMPLETED_PATH}"
                ),
            )
        })
        .with_state(state)
}

/// Binds `http_intake.listen` and serves the intake on it over HTTPS until shutdown; `None`
/// when no listen address is configured.
pub(crate) async fn start(
    cfg: &config::HttpIntake,
    state: HttpIntake,
    shutdown: Shutdown,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let Some(listen) = &cfg.listen else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) else {
        anyhow::bail!("http_intake.listen is set: set http_intake.tls_cert_file and tls_key_file");
    };
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding http_intake.listen {listen}"))?;
    let addr = tcp.local_addr()?;
    let tls =
        crate::admin_tls::TlsListener::start(tcp, cert, key, cfg.max_connections, shutdown.clone())
            .context("the HTTP intake's certificate (http_intake.tls_cert_file, tls_key_file)")?;
    let limits = crate::admin_serve::Limits {
        header_read_timeout: cfg.header_read_timeout,
        request_timeout: REQUEST_TIMEOUT,
        max_connections: cfg.max_connections,
    };
    let task = tokio::spawn(crate::admin_serve::serve(
        tls,
        router(state),
        limits,
        shutdown,
    ));
    tracing::info!(%addr, "HTTP intake listening");
    Ok(Some((addr, task)))
}

/// One request: authenticated, its body read within the limit, decoded, stored, answered.
async fn handle(
    route: Route,
    State(s): State<HttpIntake>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = answer(route, &s, peer, &headers, body).await;
    let status = answer.status();
    metrics::counter!("mailboxd_http_intake_requests_total", "status" => status.as_u16().to_string())
        .increment(1);
    tracing::info!(client = %peer, path = route.path(), status = status.as_u16(), "HTTP intake request");
    answer
}

async fn answer(
    route: Route,
    s: &HttpIntake,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Err(why) = s.credentials.check(authorization) {
        tracing::warn!(client = %peer, reason = why.as_str(), "HTTP intake refused a request's credentials");
        return unauthorized(&s.credentials, why);
    }
    let received = Received::new(route, peer, headers);
    let span = keep::intake_span("https", route.path(), received.trace.as_ref());
    let answer = receive(s, &received, headers, body).await;
    let status = answer.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_client_error() || status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    answer
}

/// An authenticated request's body read, decoded, stored (or kept as poison), answered.
async fn receive(s: &HttpIntake, received: &Received, headers: &HeaderMap, body: Body) -> Response {
    let bytes = match read_body(headers, body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyRefusal::TooLarge(size)) => {
            let why = format!(
                "the body is over http_intake.max_body_bytes ({} bytes{}); it was not read",
                s.max_body_bytes,
                size.map(|n| format!(", Content-Length {n}"))
                    .unwrap_or_default()
            );
            return keep_poison(s, received, &[], why, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        Err(BodyRefusal::TooSlow) => {
            return refusal(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
            );
        }
        Err(BodyRefusal::Broken(e)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {e}"),
            );
        }
    };
    let decoded = match decode(received.route, &received.delivery(&bytes), &s.rules) {
        Ok(d) => d,
        Err(Undecodable::Refused(why)) => {
            return keep_poison(s, received, &bytes, why, StatusCode::BAD_REQUEST).await;
        }
    };
    store(s, received, &bytes, decoded).await
}

/// Why a body became no events.
enum Undecodable {
    /// The decoder refused it: the sender's to fix (400).
    Refused(String),
}

/// The events of a body, by its route's decoder.
fn decode(
    route: Route,
    received: &event::Delivery<'_>,
    rules: &event::IntakeRules,
) -> Result<event::Decoded, Undecodable> {
    match route {
        Route::Events => keep::decode(received, rules, route.path()).map_err(Undecodable::Refused),
        // Only ISC's payload here, so that a body meant for another endpoint is not taken
        // for what it is not; the same decoder as everywhere (`event::isc`), with the AD
        // sources `http_intake.isc_ad_sources` names.
        Route::IscProvisioningCompleted if received.format() != event::Format::Isc => {
            Err(Undecodable::Refused(format!(
                "{ISC_PROVISIONING_COMPLETED_PATH} takes Identity Security Cloud's Provisioning Completed payload (JSON with trackingNumber and accountRequests); send mailboxd's own events to {EVENTS_PATH}"
            )))
        }
        Route::IscProvisioningCompleted => {
            keep::decode(received, rules, route.path()).map_err(Undecodable::Refused)
        }
    }
}

/// Stores the events and answers after the commit: 202 when a job was written, 200 when
/// every event id was known already (or the body asked nothing of mailboxd).
async fn store(
    s: &HttpIntake,
    received: &Received,
    bytes: &[u8],
    decoded: event::Decoded,
) -> Response {
    let events = decoded.events;
    // Its sender hears the outcome on the HTTP callback, if one is configured.
    let back = ReplyTo {
        http_intake: true,
        ..ReplyTo::default()
    };
    let reply_to = vec![back; events.len()];
    let traces = vec![received.trace.clone(); events.len()];
    let carried = (reply_to.as_slice(), traces.as_slice());
    match keep::store_events(&s.store, Patience::Once, &events, carried, s.max_attempts).await {
        Ok(inserted) => accepted(&events, &inserted, decoded.ignored),
        Err(e) if e.is_data_exception() => {
            let why = format!("PostgreSQL refused to store this event: {e}");
            keep_poison(s, received, bytes, why, StatusCode::BAD_REQUEST).await
        }
        Err(e) => unavailable(&e),
    }
}

#[derive(Serialize)]
struct Accepted<'a> {
    /// The first event's job: what a sender of one event reads.
    job_id: Option<uuid::Uuid>,
    jobs: Vec<JobAnswer<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<String>,
}

#[derive(Serialize)]
struct JobAnswer<'a> {
    event_id: &'a str,
    job_id: uuid::Uuid,
    /// `accepted` (a new job), `duplicate` (the event id was known: its job),
    /// `superseded` (stored, but a newer event of the account is already queued).
    result: &'static str,
}

fn accepted(events: &[Event], inserted: &[Inserted], ignored: Vec<String>) -> Response {
    let jobs: Vec<JobAnswer<'_>> = events
        .iter()
        .zip(inserted)
        .map(|(e, i)| JobAnswer {
            event_id: &e.id,
            job_id: i.job_id(),
            result: match i {
                Inserted::New(_) => "accepted",
                Inserted::Duplicate(_) => "duplicate",
                Inserted::Stale(_) => "superseded",
            },
        })
        .collect();
    let written = inserted
        .iter()
        .any(|i| !matches!(i, Inserted::Duplicate(_)));
    let status = if written {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let body = Accepted {
        job_id: jobs.first().map(|j| j.job_id),
        jobs,
        ignored,
    };
    (status, axum::Json(body)).into_response()
}

/// What a request keeps beside its body when it becomes poison.
struct Received {
    route: Route,
    content_type: Option<String>,
    headers: serde_json::Value,
    /// The request's `traceparent` header (W3C Trace Context), if valid.
    trace: Option<TraceParent>,
}

impl Received {
    /// The request's content type, and the headers a poison row keeps: never
    /// `Authorization` or a cookie, only what helps an operator find the sender.
    fn new(route: Route, peer: SocketAddr, headers: &HeaderMap) -> Received {
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .map(|v| storable(&String::from_utf8_lossy(v.as_bytes())))
        };
        let kept = serde_json::json!({
            "transport": "https",
            "client": peer.ip().to_string(),
            "user_agent": text(header::USER_AGENT),
            "content_length": text(header::CONTENT_LENGTH),
        });
        let trace_header = headers.get(trace::HEADER).map(HeaderValue::as_bytes);
        Received {
            route,
            content_type: text(header::CONTENT_TYPE),
            headers: kept,
            trace: trace::accept(trace_header, route.path()),
        }
    }

    fn delivery<'a>(&'a self, body: &'a [u8]) -> event::Delivery<'a> {
        event::Delivery {
            body,
            content_type: self.content_type.as_deref(),
            message_id: None,
            routing_key: self.route.path(),
            message_type: None,
        }
    }
}

/// Keeps a refused request as a poison row (its body as `poison_body` allows) and answers
/// `status` with the reason and the row's id; 503 when the database cannot be reached.
async fn keep_poison(
    s: &HttpIntake,
    received: &Received,
    bytes: &[u8],
    reason: String,
    status: StatusCode,
) -> Response {
    let row = NewPoison {
        reason: storable(&reason),
        routing_key: format!("POST {}", received.route.path()),
        exchange: POISON_EXCHANGE.into(),
        content_type: received.content_type.clone(),
        message_id: None,
        headers: received.headers.clone(),
        body: keep::poison_copy(&received.delivery(bytes)),
    };
    match keep::store_poison(&s.store, Patience::Once, row).await {
        Ok(poison_id) => {
            let body = serde_json::json!({ "error": reason, "poison_id": poison_id });
            (status, axum::Json(body)).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Why a body was not read whole.
enum BodyRefusal {
    /// Over the limit: `Content-Length` said so (the size), or the stream passed it.
    TooLarge(Option<u64>),
    TooSlow,
    Broken(String),
}

/// The body, up to `limit` bytes: a `Content-Length` over it is refused before a byte is
/// read, a chunked body as soon as it passes it.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, BodyRefusal> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyRefusal::TooLarge(declared));
    }
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut body = body;
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyRefusal::TooSlow),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(BodyRefusal::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(BodyRefusal::TooLarge(None));
            }
            out.extend_from_slice(&data);
        }
    }
}

fn refusal(status: StatusCode, reason: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}

fn unauthorized(credentials: &auth::Credentials, why: Refusal) -> Response {
    let mut r = refusal(StatusCode::UNAUTHORIZED, why.as_str().to_owned());
    for c in credentials.challenges(why) {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

/// The database could not be reached: nothing was stored, the sender should try again.
fn unavailable(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "HTTP intake cannot reach PostgreSQL; answered 503");
    let mut r = refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "mailboxd cannot store events right now (its database is unreachable); nothing was stored, try again in {RETRY_AFTER_SECS}s"
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}
