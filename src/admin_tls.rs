//! HTTPS on the admin listener (rustls, ring): the certificate and key from
//! `admin.tls_cert_file` / `admin.tls_key_file`, read again on SIGHUP or when either file
//! changes (a renewed certificate is served without a restart; a broken one is logged and
//! the one before stays). Handshakes run in their own tasks, so a slow client does not hold
//! up the others; the HTTP server sees finished TLS streams.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::shutdown::Shutdown;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("cannot read {path}: {source} (check admin.tls_cert_file / admin.tls_key_file)")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no {what} in PEM form")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The certificate and key files, and the configuration last read from them.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads the certificate chain and the private key into a server configuration.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    winrm::tls::install_provider();
    let pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            what: "certificate",
        });
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: key.to_owned(),
        what: "private key",
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The admin listener's HTTPS side: finished TLS streams and their clients' addresses.
pub(crate) struct TlsListener {
    streams: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(s) => s,
            // The accepting task ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl TlsListener {
    /// Serves TLS on `tcp` with the files' configuration until `shutdown`; reloads it on
    /// SIGHUP or when a file changes.
    /// At most `max_handshakes` handshakes (and finished streams not yet served) at once.
    pub(crate) fn start(
        tcp: TcpListener,
        cert: &Path,
        key: &Path,
        max_handshakes: usize,
        shutdown: Shutdown,
    ) -> Result<TlsListener, TlsError> {
        let local = tcp.local_addr().map_err(|source| TlsError::Read {
            path: "admin.listen".into(),
            source,
        })?;
        let certs = Arc::new(Certs {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(load(cert, key)?),
        });
        let (tx, streams) = mpsc::channel(64);
        // Taken over here, before anything is served, so a SIGHUP from now on reloads
        // instead of ending the process.
        #[cfg(unix)]
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        #[cfg(not(unix))]
        let hup = None;
        let slots = Arc::new(tokio::sync::Semaphore::new(max_handshakes.max(1)));
        tokio::spawn(accept(tcp, certs.clone(), tx, slots, shutdown.clone()));
        tokio::spawn(reload(certs, hup, shutdown));
        Ok(TlsListener { streams, local })
    }
}

async fn accept(
    tcp: TcpListener,
    certs: Arc<Certs>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    slots: Arc<tokio::sync::Semaphore>,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            r = async {
                let slot = slots.clone().acquire_owned().await.ok()?;
                Some((slot, tcp.accept().await))
            } => r,
            () = shutdown.stopped() => return,
        };
        let Some((slot, accepted)) = accepted else {
            return;
        };
        let (stream, addr) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.current.read().clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Bounded too: a stream the server does not take in time is dropped.
                    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, tx.send((tls, addr))).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(client = %addr, error = %e, "admin TLS handshake failed")
                }
                Err(_) => tracing::debug!(client = %addr, "admin TLS handshake timed out"),
            }
        });
    }
}

/// When each file was last changed (`None`: unreadable now).
fn stamps(certs: &Certs) -> [Option<SystemTime>; 2] {
    [&certs.cert, &certs.key].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

async fn reload(certs: Arc<Certs>, mut hup: Option<Hangup>, shutdown: Shutdown) {
    let mut seen = stamps(&certs);
    loop {
        let hangup = async {
            match hup.as_mut() {
                #[cfg(unix)]
                Some(h) => h.recv().await,
                _ => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = hangup => "SIGHUP",
            _ = tokio::time::sleep(WATCH_EVERY) => "changed",
            () = shutdown.stopped() => return,
        };
        let now = stamps(&certs);
        if why == "changed" && now == seen {
            continue;
        }
        seen = now;
        match load(&certs.cert, &certs.key) {
            Ok(config) => {
                *certs.current.write() = config;
                tracing::info!(reason = why, cert = %certs.cert.display(), "admin TLS certificate loaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "admin TLS certificate not reloaded; the previous one stays in use")
            }
        }
    }
}
