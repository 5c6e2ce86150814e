//! The lab's own HTTP API beside `/wsman` (`/lab/invocations`, `/lab/mailboxes`,
//! `/lab/stats`, `/lab/faults`), and the host-level faults that sit in front of `/wsman`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::{FaultRequest, Invocation, LabAccount, SharedState};

/// The `/lab/…` routes over `state`; `down` closes the WinRM listener on a `host_down` fault.
pub(crate) fn routes(state: SharedState, down: Arc<tokio::sync::Notify>) -> Router {
    Router::new()
        .route("/lab/invocations", get(invocations))
        .route("/lab/mailboxes", get(mailboxes))
        .route("/lab/stats", get(stats))
        .route("/lab/faults", get(list_faults).post(set_fault))
        .route("/lab/cloud/sync", axum::routing::post(cloud_sync))
        .route("/lab/cloud/users", axum::routing::post(cloud_change))
        .route("/lab/cloud/users/{sam}", get(cloud_user))
        .with_state(LabHttp { state, down })
}

/// Host-level faults in front of `/wsman`: refused credentials, stalls, and the requests
/// that were already on an open connection when the host went down.
pub(crate) async fn host_faults(
    State((state, round_trip)): State<(SharedState, std::time::Duration)>,
    req: Request,
    next: Next,
) -> Response {
    if !round_trip.is_zero() {
        tokio::time::sleep(round_trip).await;
    }
    let (refused, stall, down) = {
        let st = state.lock();
        let down = st
            .faults
            .host_down_until
            .is_some_and(|t| std::time::Instant::now() < t);
        (st.faults.auth_refused(), st.faults.stall(), down)
    };
    if down {
        let mut r = StatusCode::SERVICE_UNAVAILABLE.into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    if refused {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"WSMAN\""),
        );
        return r;
    }
    next.run(req).await
}

#[derive(Clone)]
struct LabHttp {
    state: SharedState,
    down: Arc<tokio::sync::Notify>,
}

async fn list_faults(State(lab): State<LabHttp>) -> Json<serde_json::Value> {
    Json(lab.state.lock().faults.describe())
}

async fn set_fault(
    State(lab): State<LabHttp>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let req: FaultRequest = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("not a fault request ({e}); see the module docs of src/lab/faults.rs"),
        )
    })?;
    Ok(Json(apply_fault(&lab.state, &lab.down, &req)))
}

/// Puts a fault in force (or clears them) and describes the faults now in force.
pub(crate) fn apply_fault(
    state: &SharedState,
    down: &Arc<tokio::sync::Notify>,
    req: &FaultRequest,
) -> serde_json::Value {
    let described = {
        let mut st = state.lock();
        st.faults.apply(req);
        st.faults.describe()
    };
    if matches!(req, FaultRequest::HostDown { .. }) {
        // Answer the request that asked for it first, then close the listener.
        let down = down.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            down.notify_one();
        });
    }
    tracing::info!(?req, "lab fault set");
    described
}

async fn invocations(State(lab): State<LabHttp>) -> Json<Vec<Invocation>> {
    Json(lab.state.lock().invocations.clone())
}

async fn mailboxes(State(lab): State<LabHttp>) -> Json<Vec<LabAccount>> {
    Json(lab.state.lock().accounts.clone())
}

async fn stats(State(lab): State<LabHttp>) -> Json<serde_json::Value> {
    let st = lab.state.lock();
    let mut by_cmdlet = serde_json::Map::new();
    for inv in &st.invocations {
        let n = by_cmdlet
            .get(&inv.cmdlet)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        by_cmdlet.insert(inv.cmdlet.clone(), serde_json::json!(n + 1));
    }
    Json(serde_json::json!({
        "stats": st.stats,
        "accounts": st.accounts.len(),
        "invocations_by_cmdlet": by_cmdlet,
        "throttled": st.faults.throttled,
        "exchange_sessions_open": st.faults.open_sessions(),
        "exchange_sessions_high_water": st.faults.sessions_high_water,
    }))
}

/// `POST /lab/cloud/sync`: one Entra sync cycle now; answers how many have run.
async fn cloud_sync(State(lab): State<LabHttp>) -> Json<serde_json::Value> {
    let mut st = lab.state.lock();
    st.cloud_sync(std::time::Instant::now());
    Json(serde_json::json!({ "cycles": st.cloud.cycles }))
}

/// `POST /lab/cloud/users` `{"account": "jdoe", "licensed": true, "provisioning_error": "…"}`.
async fn cloud_change(
    State(lab): State<LabHttp>,
    body: axum::body::Bytes,
) -> Result<StatusCode, (StatusCode, String)> {
    let c: crate::cloud::CloudUserChange = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("not a cloud user change ({e})"),
        )
    })?;
    if lab.state.lock().cloud_change(&c) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err((StatusCode::NOT_FOUND, format!("no account {:?}", c.account)))
    }
}

/// `GET /lab/cloud/users/{sam}`: the user as the cloud shows it.
async fn cloud_user(
    State(lab): State<LabHttp>,
    axum::extract::Path(sam): axum::extract::Path<String>,
) -> Result<Json<crate::cloud::CloudUserView>, StatusCode> {
    lab.state
        .lock()
        .cloud_user(&sam)
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}
