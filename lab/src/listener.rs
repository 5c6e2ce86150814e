//! The lab's listeners: each connection served with its own security state, inside TLS on
//! the HTTPS listener, and a plain listener that a `host_down` fault closes and reopens.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{HOSTNAME, SharedState, wsman};

/// Serves until aborted; a `host_down` fault closes the listener (connections are refused)
/// and binds the same address again when the fault ends.
pub(crate) async fn supervise(
    first: TcpListener,
    addr: SocketAddr,
    app: Router,
    state: SharedState,
    down: Arc<tokio::sync::Notify>,
) {
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "lab cannot bind again yet");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Aborted with the supervisor (Lab::stop) as well as on a host_down fault.
        let server = AbortOnDrop(tokio::spawn(serve(l, app.clone(), None)));
        down.notified().await;
        drop(server);
        let until = state.lock().faults.host_down_until;
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
        tracing::info!(%addr, "lab host is up again");
    }
}

/// A fresh self-signed certificate for localhost/127.0.0.1: the acceptor, the certificate's
/// `tls-server-end-point` binding and its PEM.
pub(crate) fn self_signed_tls() -> std::io::Result<(tokio_rustls::TlsAcceptor, Vec<u8>, String)> {
    winrm::tls::install_provider();
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let key = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        HOSTNAME.to_ascii_lowercase(),
    ])
    .map_err(|e| other(&e))?;
    let der = key.cert.der().clone();
    let binding = winrm::ntlm::tls_server_end_point(der.as_ref());
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()),
    );
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], private)
        .map_err(|e| other(&e))?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        binding,
        key.cert.pem(),
    ))
}

/// Serves `app` on every connection `listener` accepts, each with its own security state
/// (NTLM is bound to a connection), inside TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<(tokio_rustls::TlsAcceptor, Vec<u8>)>,
) {
    use tower::ServiceExt;
    // The connections live in this set: when the listener's task ends (Lab::stop, a host_down
    // fault), they end with it, as a host that goes away takes its connections along.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "lab cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let security = Arc::new(match &tls {
                Some((_, binding)) => wsman::ConnSecurity::tls(binding.clone()),
                None => wsman::ConnSecurity::default(),
            });
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req.extensions_mut().insert(security.clone());
                    app.clone().oneshot(req)
                });
            let http = hyper::server::conn::http1::Builder::new();
            let done = match tls {
                Some((acceptor, _)) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "lab TLS handshake failed");
                        return;
                    }
                },
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await
                }
            };
            if let Err(e) = done {
                tracing::debug!(error = %e, %peer, "lab connection ended");
            }
        });
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
