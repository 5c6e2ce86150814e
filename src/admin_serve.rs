//! Serving the admin listener's router on hyper directly (plain TCP or the TLS streams of
//! `admin_tls`), with the limits `axum::serve` does not set: a deadline for a request's
//! headers, which also ends a keep-alive connection left idle (hyper starts it when it
//! waits for the next request), a deadline for the whole request (a slow body included),
//! and a cap on connections served at once (further clients wait in the listen backlog).
//! At shutdown each connection finishes its request in flight and closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::shutdown::Shutdown;

/// The limits of one listener (`admin.header_read_timeout`, `admin.max_connections`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// How long connections may finish their requests after shutdown began.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`.
pub(crate) async fn serve<L>(mut listener: L, router: Router, limits: Limits, shutdown: Shutdown)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = async {
                // The cap: no accept without a free slot.
                let slot = slots.clone().acquire_owned().await.ok()?;
                let (io, peer) = listener.accept().await;
                Some((slot, io, peer))
            } => a,
            () = shutdown.stopped() => break,
        };
        let Some((slot, io, peer)) = accepted else {
            break;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            connection(io, peer, router, limits, shutdown).await;
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
}

/// One connection: HTTP/1.1 with the header deadline, each request under the request
/// deadline and told its peer (`ConnectInfo`).
async fn connection<I>(io: I, peer: SocketAddr, router: Router, limits: Limits, shutdown: Shutdown)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let req = req.map(axum::body::Body::new);
            let resp = match tokio::time::timeout(limits.request_timeout, router.oneshot(req)).await
            {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(_) => timed_out(peer),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = shutdown.stopped() => None,
    };
    let result = match done {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header deadline passed, client gone, bad request line: the client's business.
        tracing::debug!(client = %peer, error = %e, "admin connection ended");
    }
}

fn timed_out(peer: SocketAddr) -> Response {
    tracing::warn!(client = %peer, "admin request ran past its deadline and was answered 503");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The request took too long and was abandoned; try again.\n",
    )
        .into_response()
}
