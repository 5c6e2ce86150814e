//! A receiver of mailboxd's outcome callback (`[outcome_callback]`) over HTTPS, with a
//! certificate from a CA of its own (`TestCa`), so the daemon trusts it only through
//! `outcome_callback.ca_file`: it records every request (headers, the exact body) and
//! answers as the test scripts it — a status with an optional `Retry-After`, or no answer
//! at all (`Reply::Hold`, for a daemon killed mid-request); 200 once the script is spent.
//! Stops when dropped.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority of the test's own: no system trusts it.
pub struct TestCa {
    /// Its certificate, PEM: what `outcome_callback.ca_file` holds.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("the CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 signed by this CA, as rustls serves it.
    fn server_config(&self) -> rustls::ServerConfig {
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
        );
        winrm::tls::install_provider();
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], private)
            .expect("a server config")
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This status, with `Retry-After: <seconds>` if given.
    Status(u16, Option<u32>),
    /// No answer: the request stays open until the client goes away.
    Hold,
}

/// One request as the receiver saw it, and what it answered (`None`: held, never answered).
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
    pub answered: Option<u16>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct CallbackReceiver {
    /// What `outcome_callback.url` is set to: `https://127.0.0.1:<port>/mailboxd/outcomes`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackReceiver {
    /// Serves HTTPS with a certificate from `ca`, answering `script` in order, then 200.
    pub async fn start(ca: &TestCa, script: Vec<Reply>) -> CallbackReceiver {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the callback receiver");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            seen: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, acceptor, state.clone()));
        CallbackReceiver {
            url: format!("https://{addr}/mailboxd/outcomes"),
            state,
            task,
        }
    }

    /// Every request, in the order they came.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }

    /// The requests it answered with a 2xx: what it accepted.
    pub fn accepted(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.answered.is_some_and(|c| (200..300).contains(&c)))
            .collect()
    }

    /// Waits (bounded) until `n` requests came.
    pub async fn wait_requests(&self, n: usize) -> Vec<Seen> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the receiver got {} of {n} requests within 30 s",
                seen.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        connections.spawn(async move {
            // A client that does not trust the certificate ends here, before any request.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| answer(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = state
        .script
        .lock()
        .pop_front()
        .unwrap_or(Reply::Status(200, None));
    let answered = match reply {
        Reply::Status(code, _) => Some(code),
        Reply::Hold => None,
    };
    state.seen.lock().push(Seen {
        at: std::time::Instant::now(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: body.to_vec(),
        answered,
    });
    match reply {
        Reply::Hold => std::future::pending().await,
        Reply::Status(code, retry_after) => {
            let mut r = hyper::Response::builder().status(code);
            if let Some(secs) = retry_after {
                r = r.header("retry-after", secs.to_string());
            }
            Ok(r.body(Full::new(Bytes::from_static(b"{}")))
                .expect("a response"))
        }
    }
}
