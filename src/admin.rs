//! The daemon's admin HTTP: liveness and readiness. The dashboard, JSON API and metrics
//! arrive with their own issue.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::Store;

#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub broker_connected: watch::Receiver<bool>,
    pub circuit: std::sync::Arc<crate::circuit::Circuit>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
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
    let ready = database && broker;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"ready": ready, "database": database, "broker": broker, "circuit": circuit})),
    )
}

pub async fn bind(listen: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
