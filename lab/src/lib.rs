//! The lab: a simulated Windows side (the IQService/WinRM host and its Exchange session)
//! for demos, tests and benchmarks. It speaks real WS-Management at `/wsman` and serves
//! its own state as JSON under `/lab/`.

pub mod cmd;
pub mod directory;
pub mod exchange;
pub mod faults;
pub mod ldap;
pub mod parameter_sets;
pub mod wsman;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use directory::{AccountSeed, LabAccount, Recipient};
pub use exchange::{Invocation, LabState, Latency, SharedState, Stats};
pub use faults::{FaultRequest, Throttle};

/// The WinRM user the lab accepts when none is given.
pub const DEFAULT_USER: &str = "mailboxd";
/// The lab's host name (what `hostname` prints).
pub const HOSTNAME: &str = "LAB-IQSVC01";

pub struct LabConfig {
    pub listen: SocketAddr,
    pub user: String,
    pub password: SecretString,
    /// The password the domain controller accepts for `user`; `None`: the same as WinRM's.
    pub ldap_password: Option<SecretString>,
    pub accounts: Vec<AccountSeed>,
    pub latency: Latency,
    pub max_shells_per_user: usize,
    /// The lab's domain controller (LDAP); `None`: no directory served.
    pub ldap_listen: Option<SocketAddr>,
    /// Exchange's throttling policy.
    pub throttle: Throttle,
    /// Faults in force from the start (`--faults-file`).
    pub faults: Vec<FaultRequest>,
    /// MaxEnvelopeSizekb (Windows' default is 500).
    pub max_envelope_kb: usize,
    /// A second WinRM listener with TLS (Windows' 5986), on a fresh self-signed certificate.
    pub tls_listen: Option<SocketAddr>,
    /// Where to write that certificate (PEM) so clients can trust it.
    pub tls_cert_out: Option<std::path::PathBuf>,
    /// CbtHardeningLevel of the TLS listener.
    pub cbt_hardening: winrm::acceptor::CbtHardening,
    /// Kerberos accepted on both listeners when set.
    pub kerberos: Option<wsman::LabKerberos>,
}

impl LabConfig {
    /// A lab on `listen` with one account and password, no directory, no faults.
    pub fn new(listen: SocketAddr, user: impl Into<String>, password: SecretString) -> LabConfig {
        LabConfig {
            listen,
            user: user.into(),
            password,
            accounts: Vec::new(),
            latency: Latency::default(),
            max_shells_per_user: 30,
            ldap_listen: None,
            throttle: Throttle::default(),
            faults: Vec::new(),
            max_envelope_kb: 500,
            tls_listen: None,
            tls_cert_out: None,
            cbt_hardening: Default::default(),
            ldap_password: None,
            kerberos: None,
        }
    }
}

/// A running lab.
pub struct Lab {
    pub addr: SocketAddr,
    /// The TLS WinRM listener, when configured.
    pub tls_addr: Option<SocketAddr>,
    /// The TLS listener's certificate (PEM).
    pub tls_cert_pem: Option<String>,
    /// Where the lab's LDAP server listens, when it serves one.
    pub ldap_addr: Option<SocketAddr>,
    pub state: SharedState,
    down: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
    ldap_task: Option<JoinHandle<()>>,
    tls_task: Option<JoinHandle<()>>,
}

impl Lab {
    /// Binds and serves in the background.
    pub async fn start(cfg: LabConfig) -> std::io::Result<Lab> {
        let accounts = cfg
            .accounts
            .into_iter()
            .map(LabAccount::from_seed)
            .collect();
        let mut faults = faults::Faults {
            throttle: cfg.throttle,
            ..faults::Faults::default()
        };
        for f in &cfg.faults {
            faults.apply(f);
        }
        let state: SharedState = Arc::new(Mutex::new(LabState {
            accounts,
            faults,
            ..LabState::default()
        }));
        let host = Arc::new(exchange::LabHost {
            state: state.clone(),
            hostname: HOSTNAME.to_owned(),
            latency: cfg.latency,
        });
        let (ldap_addr, ldap_task) = match cfg.ldap_listen {
            Some(listen) => {
                let listener = TcpListener::bind(listen).await?;
                let addr = listener.local_addr()?;
                let auth = Arc::new(ldap::LdapAuth {
                    user: cfg.user.clone(),
                    password: cfg.ldap_password.clone().unwrap_or(cfg.password.clone()),
                });
                let task = tokio::spawn(ldap::serve(listener, state.clone(), auth));
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        let wsman_cfg = wsman::WsmanConfig {
            users: vec![(cfg.user, cfg.password)],
            max_shells_per_user: cfg.max_shells_per_user,
            max_operation_timeout: std::time::Duration::from_secs(60),
            hostname: HOSTNAME.to_owned(),
            max_envelope_kb: cfg.max_envelope_kb,
            cbt_hardening: cfg.cbt_hardening,
            kerberos: cfg.kerberos.clone(),
        };
        let down = Arc::new(tokio::sync::Notify::new());
        let app = wsman::router(wsman_cfg, host)
            .layer(middleware::from_fn_with_state(
                (state.clone(), cfg.latency.round_trip),
                host_faults,
            ))
            .merge(
                Router::new()
                    .route("/lab/invocations", get(invocations))
                    .route("/lab/mailboxes", get(mailboxes))
                    .route("/lab/stats", get(stats))
                    .route("/lab/faults", get(list_faults).post(set_fault))
                    .with_state(LabHttp {
                        state: state.clone(),
                        down: down.clone(),
                    }),
            );
        let (tls_addr, tls_cert_pem, tls_task) = match cfg.tls_listen {
            Some(listen) => {
                let (acceptor, binding, pem) = self_signed_tls()?;
                if let Some(path) = &cfg.tls_cert_out {
                    std::fs::write(path, &pem)?;
                }
                let listener = TcpListener::bind(listen).await?;
                let addr = listener.local_addr()?;
                let task = tokio::spawn(serve(listener, app.clone(), Some((acceptor, binding))));
                (Some(addr), Some(pem), Some(task))
            }
            None => (None, None, None),
        };
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(supervise(listener, addr, app, state.clone(), down.clone()));
        Ok(Lab {
            down,
            addr,
            tls_addr,
            tls_cert_pem,
            tls_task,
            ldap_addr,
            state,
            task,
            ldap_task,
        })
    }

    /// `http://addr/wsman`
    pub fn endpoint(&self) -> String {
        format!("http://{}/wsman", self.addr)
    }

    /// `ldap://addr` of the lab's domain controller, when it serves one.
    pub fn ldap_url(&self) -> Option<String> {
        self.ldap_addr.map(|a| format!("ldap://{a}"))
    }

    /// Every cmdlet call so far, in order (what `GET /lab/invocations` shows).
    pub fn invocations(&self) -> Vec<Invocation> {
        self.state.lock().invocations.clone()
    }

    /// The directory's accounts as they are now (`GET /lab/mailboxes`).
    pub fn accounts(&self) -> Vec<LabAccount> {
        self.state.lock().accounts.clone()
    }

    /// One account by sAMAccountName (case-insensitive, as AD compares it).
    pub fn account(&self, sam: &str) -> Option<LabAccount> {
        let st = self.state.lock();
        st.accounts
            .iter()
            .find(|a| a.sam_account_name.eq_ignore_ascii_case(sam))
            .cloned()
    }

    /// The host's counters (PowerShell runs, Exchange sessions, cmdlets, …).
    pub fn stats(&self) -> Stats {
        self.state.lock().stats.clone()
    }

    /// Exchange session opens refused by throttling so far.
    pub fn throttled(&self) -> u64 {
        self.state.lock().faults.throttled
    }

    /// Puts a fault in force, as `POST /lab/faults` does.
    pub fn set_fault(&self, req: &FaultRequest) {
        apply_fault(&self.state, &self.down, req);
    }

    /// The bind name of a lab account at its domain controller (`user@corp.example`).
    pub fn bind_dn(user: &str) -> String {
        format!("{user}@{}", directory::LAB_DOMAIN)
    }

    /// Waits until the server stops (it runs until the process ends).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// `https://localhost:port/wsman` of the TLS listener (the certificate names localhost and 127.0.0.1).
    pub fn tls_endpoint(&self) -> Option<String> {
        self.tls_addr
            .map(|a| format!("https://localhost:{}/wsman", a.port()))
    }

    pub fn stop(&self) {
        self.task.abort();
        if let Some(t) = &self.tls_task {
            t.abort();
        }
        if let Some(t) = &self.ldap_task {
            t.abort();
        }
    }
}

/// Serves until aborted; a `host_down` fault closes the listener (connections are refused)
/// and binds the same address again when the fault ends.
async fn supervise(
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
fn self_signed_tls() -> std::io::Result<(tokio_rustls::TlsAcceptor, Vec<u8>, String)> {
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

/// Host-level faults in front of `/wsman`: refused credentials, stalls, and the requests
/// that were already on an open connection when the host went down.
async fn host_faults(
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
fn apply_fault(
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
    let open_sessions: usize = st.faults.sessions.values().sum();
    Json(serde_json::json!({
        "stats": st.stats,
        "accounts": st.accounts.len(),
        "invocations_by_cmdlet": by_cmdlet,
        "throttled": st.faults.throttled,
        "exchange_sessions_open": open_sessions,
        "exchange_sessions_high_water": st.faults.sessions_high_water,
    }))
}
