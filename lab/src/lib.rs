//! The lab: a simulated Windows side (the IQService/WinRM host and its Exchange session)
//! for demos, tests and benchmarks. It speaks real WS-Management at `/wsman` and serves
//! its own state as JSON under `/lab/`; in-process callers read the same state through
//! [`Lab`]'s typed accessors.

pub mod address_policy;
mod api;
pub mod cloud;
pub mod cmd;
mod config;
pub mod directory;
pub mod exchange;
pub mod faults;
pub mod graph;
mod index;
pub mod ldap;
mod listener;
pub mod parameter_sets;
pub mod wsman;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{LOOPBACK_ANY_PORT, LabConfig};
pub use directory::{AccountSeed, LabAccount, Recipient, RemoteType};
pub use exchange::{
    HostPolicy, Invocation, LAB_SIGNING_THUMBPRINT, LabState, Latency, SharedState, Stats,
};
pub use faults::{FaultRequest, Throttle};
pub use listener::serve;

/// The WinRM user the lab accepts when none is given.
pub const DEFAULT_USER: &str = "mailboxd";
/// The lab's host name (what `hostname` prints).
pub const HOSTNAME: &str = "LAB-IQSVC01";

/// A running lab. Dropping it stops every listener and the connections they accepted, as
/// [`Lab::stop`] does: a test that fails leaves no lab behind.
pub struct Lab {
    pub addr: SocketAddr,
    /// The TLS WinRM listener, when configured.
    pub tls_addr: Option<SocketAddr>,
    /// The TLS listener's certificate (PEM).
    pub tls_cert_pem: Option<String>,
    /// Where the lab's LDAP server listens, when it serves one.
    pub ldap_addr: Option<SocketAddr>,
    /// SHA-256 fingerprint of the CredSSP certificate, when CredSSP is on (the client pins it).
    pub credssp_cert_sha256: Option<String>,
    state: SharedState,
    down: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
    ldap_task: Option<JoinHandle<()>>,
    tls_task: Option<JoinHandle<()>>,
    /// The cloud's sync schedule, when `CloudConfig::sync_interval` is set.
    cloud_task: Option<JoinHandle<()>>,
    graph: graph::Tenant,
}

impl Lab {
    /// Binds and serves in the background.
    pub async fn start(cfg: LabConfig) -> std::io::Result<Lab> {
        let state = initial_state(&cfg);
        let cloud_task = cfg
            .cloud
            .sync_interval
            .map(|every| tokio::spawn(sync_cloud_every(state.clone(), every)));
        let (ldap_addr, ldap_task) = match cfg.ldap_listen {
            Some(listen) => {
                let (addr, task) = start_directory(listen, &cfg, &state).await?;
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        let down = Arc::new(tokio::sync::Notify::new());
        let credssp = credssp_settings(&cfg).await?;
        let credssp_cert_sha256 = credssp.as_ref().map(|c| c.cert.fingerprint.clone());
        let graph = state.lock().graph.clone();
        let app = router(&cfg, &state, &down, credssp).merge(graph::routes(graph.clone()));
        let (tls_addr, tls_cert_pem, tls_task) = match cfg.tls_listen {
            Some(listen) => {
                let (addr, pem, task) = start_tls(listen, &cfg, app.clone()).await?;
                (Some(addr), Some(pem), Some(task))
            }
            None => (None, None, None),
        };
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(listener::supervise(
            listener,
            addr,
            app,
            state.clone(),
            down.clone(),
        ));
        Ok(Lab {
            down,
            addr,
            tls_addr,
            tls_cert_pem,
            tls_task,
            ldap_addr,
            credssp_cert_sha256,
            state,
            task,
            ldap_task,
            cloud_task,
            graph,
        })
    }

    /// `http://addr/wsman`
    pub fn endpoint(&self) -> String {
        format!("http://{}/wsman", self.addr)
    }

    /// `https://localhost:port/wsman` of the TLS listener (the certificate names localhost and 127.0.0.1).
    pub fn tls_endpoint(&self) -> Option<String> {
        self.tls_addr
            .map(|a| format!("https://localhost:{}/wsman", a.port()))
    }

    /// `https://localhost:port` of the TLS listener, where the Graph stand-in answers both
    /// as the identity platform (`authority_url`) and as Microsoft Graph (`graph_url`).
    pub fn https_url(&self) -> Option<String> {
        self.tls_addr
            .map(|a| format!("https://localhost:{}", a.port()))
    }

    /// The Graph stand-in's tenant: its apps, users and what it answered.
    pub fn graph(&self) -> &graph::Tenant {
        &self.graph
    }

    /// `ldap://addr` of the lab's domain controller, when it serves one.
    pub fn ldap_url(&self) -> Option<String> {
        self.ldap_addr.map(|a| format!("ldap://{a}"))
    }

    /// The bind name of a lab account at its domain controller (`user@corp.example`).
    pub fn bind_dn(user: &str) -> String {
        format!("{user}@{}", directory::LAB_DOMAIN)
    }

    /// Every cmdlet call so far, in order (what `GET /lab/invocations` shows).
    pub fn invocations(&self) -> Vec<Invocation> {
        self.state.lock().invocations.clone()
    }

    /// What the host's module logging recorded of the bootstrap's own cmdlets
    /// (`ConvertFrom-Json`'s input), in order: with `invocations`, every cmdlet parameter a
    /// Windows host with module logging on would have written to its event log.
    pub fn module_log(&self) -> Vec<String> {
        self.state.lock().module_log.clone()
    }

    /// The calls of one cmdlet, in order.
    pub fn invocations_of(&self, cmdlet: &str) -> Vec<Invocation> {
        let st = self.state.lock();
        st.invocations
            .iter()
            .filter(|i| i.cmdlet == cmdlet)
            .cloned()
            .collect()
    }

    /// The calls of `cmdlet` whose `-Identity` names `identity`: the text itself, or the
    /// objectGUID of the account with that sAMAccountName (what mailboxd passes to Exchange
    /// once the directory check found the account).
    pub fn invocations_for(&self, cmdlet: &str, identity: &str) -> Vec<Invocation> {
        let st = self.state.lock();
        let guid = st
            .accounts
            .iter()
            .find(|a| a.sam_account_name == identity)
            .map(|a| a.object_guid.to_string());
        st.invocations
            .iter()
            .filter(|i| i.cmdlet == cmdlet)
            .filter(|i| {
                i.identity()
                    .is_some_and(|id| id == identity || guid.as_deref() == Some(id))
            })
            .cloned()
            .collect()
    }

    /// Successful calls of `cmdlet` per sAMAccountName, whether Exchange was given the name
    /// or the objectGUID (an identity that names no account counts under itself).
    pub fn successes_per_account(&self, cmdlet: &str) -> BTreeMap<String, usize> {
        let st = self.state.lock();
        let mut counts = BTreeMap::new();
        for inv in st.invocations.iter().filter(|i| i.cmdlet == cmdlet) {
            let Some(id) = inv.identity().filter(|_| inv.succeeded()) else {
                continue;
            };
            let sam = st
                .accounts
                .iter()
                .find(|a| a.sam_account_name == id || a.object_guid.to_string() == id)
                .map_or(id, |a| a.sam_account_name.as_str());
            *counts.entry(sam.to_owned()).or_default() += 1;
        }
        counts
    }

    /// Every WinRS command line the host was asked to start, in order (as a process
    /// listing or the host's event log would show them).
    pub fn command_lines(&self) -> Vec<String> {
        self.state.lock().command_lines.clone()
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

    /// Exchange sessions open now, over all users.
    pub fn exchange_sessions_open(&self) -> usize {
        let mut st = self.state.lock();
        // Sessions no one removed count until their idle timeout, then free.
        exchange::reap_orphaned_sessions(&mut st);
        st.faults.open_sessions()
    }

    /// Another client of `user` (the WinRM logon, as the lab counts sessions) holds one
    /// Exchange runspace from now on, as an administrator's open console would.
    pub fn hold_foreign_session(&self, user: &str) {
        self.state.lock().faults.hold_foreign_session(user);
    }

    /// The most Exchange sessions one user had open at once.
    pub fn exchange_sessions_high_water(&self) -> usize {
        self.state.lock().faults.sessions_high_water
    }

    /// Puts a fault in force, as `POST /lab/faults` does.
    pub fn set_fault(&self, req: &FaultRequest) {
        api::apply_fault(&self.state, &self.down, req);
    }

    /// Runs one Entra sync cycle now (with Exchange Online's provisioning and the hybrid
    /// writeback, `cloud` module docs), as `POST /lab/cloud/sync` does.
    pub fn cloud_sync(&self) {
        self.state.lock().cloud_sync(std::time::Instant::now());
    }

    /// Licenses (or unlicenses) the account `sam` in the cloud; false if there is no such
    /// account.
    pub fn set_licensed(&self, sam: &str, licensed: bool) -> bool {
        let c = cloud::CloudUserChange {
            account: sam.to_owned(),
            licensed: Some(licensed),
            provisioning_error: None,
        };
        self.state.lock().cloud_change(&c)
    }

    /// Holds the account's cloud mailbox "Setting up" with this error text (`""` clears
    /// it); false if there is no such account.
    pub fn set_provisioning_error(&self, sam: &str, error: &str) -> bool {
        let c = cloud::CloudUserChange {
            account: sam.to_owned(),
            licensed: None,
            provisioning_error: Some(error.to_owned()),
        };
        self.state.lock().cloud_change(&c)
    }

    /// The account's user as the cloud shows it (licence, mailbox, recipient type,
    /// addresses, cloud ids): what a Graph stand-in answers from.
    /// What an IAM system's AD connector writes before a mover's event: the account's
    /// givenName and sn (what the email address policy builds the primary address from).
    /// False when no account has this sAMAccountName.
    pub fn rename_person(&self, sam: &str, given_name: &str, surname: &str) -> bool {
        let mut st = self.state.lock();
        let Some(a) = st
            .accounts
            .iter_mut()
            .find(|a| a.sam_account_name.eq_ignore_ascii_case(sam))
        else {
            return false;
        };
        a.given_name = Some(given_name.to_owned());
        a.surname = Some(surname.to_owned());
        true
    }

    pub fn cloud_user(&self, sam: &str) -> Option<cloud::CloudUserView> {
        self.state.lock().cloud_user(sam)
    }

    /// Waits until the server stops (it runs until the process ends, or `stop`).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Stops every listener; the connections they accepted end with them.
    pub fn stop(&self) {
        self.task.abort();
        if let Some(t) = &self.tls_task {
            t.abort();
        }
        if let Some(t) = &self.ldap_task {
            t.abort();
        }
        if let Some(t) = &self.cloud_task {
            t.abort();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory from the seeds, the faults in force from the start, no calls yet.
fn initial_state(cfg: &LabConfig) -> SharedState {
    let accounts: Vec<LabAccount> = cfg
        .accounts
        .iter()
        .cloned()
        .map(LabAccount::from_seed)
        .collect();
    let mut faults = faults::Faults {
        throttle: cfg.throttle,
        ..faults::Faults::default()
    };
    for f in &cfg.faults {
        faults.apply(f);
    }
    Arc::new(Mutex::new(LabState {
        index: index::AccountIndex::build(&accounts),
        accounts,
        faults,
        cloud: cloud::Cloud::new(cfg.cloud.clone()),
        ..LabState::default()
    }))
}

/// Runs a cloud sync cycle every `interval` until the task is aborted (with the lab).
async fn sync_cloud_every(state: SharedState, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval.max(std::time::Duration::from_millis(10)));
    loop {
        tick.tick().await;
        state.lock().cloud_sync(std::time::Instant::now());
    }
}

/// Binds the domain controller on `listen` and serves it in the background.
async fn start_directory(
    listen: SocketAddr,
    cfg: &LabConfig,
    state: &SharedState,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let auth = Arc::new(ldap::LdapAuth {
        user: cfg.user.clone(),
        password: cfg.ldap_password.clone().unwrap_or(cfg.password.clone()),
    });
    Ok((
        addr,
        tokio::spawn(ldap::serve(listener, state.clone(), auth)),
    ))
}

/// `/wsman` behind the host-level faults, and the lab's own `/lab/…` API beside it.
/// CredSSP's certificate (an RSA key takes a moment: off the runtime's threads).
async fn credssp_settings(cfg: &LabConfig) -> std::io::Result<Option<wsman::LabCredSsp>> {
    if !cfg.credssp {
        return Ok(None);
    }
    let cert = tokio::task::spawn_blocking(|| winrm::acceptor::CredSspCert::generate(HOSTNAME))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    let netbios = directory::LAB_DOMAIN
        .split('.')
        .next()
        .unwrap_or_default()
        .to_uppercase();
    Ok(Some(wsman::LabCredSsp {
        cert,
        domains: vec![netbios, directory::LAB_DOMAIN.to_owned()],
    }))
}

fn router(
    cfg: &LabConfig,
    state: &SharedState,
    down: &Arc<tokio::sync::Notify>,
    credssp: Option<wsman::LabCredSsp>,
) -> Router {
    let host = Arc::new(exchange::LabHost {
        state: state.clone(),
        hostname: HOSTNAME.to_owned(),
        latency: cfg.latency,
        policy: cfg.host_policy,
        domain_accounts: cfg.all_domain_accounts(),
    });
    let wsman_cfg = wsman::WsmanConfig {
        users: vec![(cfg.user.clone(), cfg.password.clone())],
        max_shells_per_user: cfg.max_shells_per_user,
        max_operation_timeout: std::time::Duration::from_secs(60),
        hostname: HOSTNAME.to_owned(),
        max_envelope_kb: cfg.max_envelope_kb,
        cbt_hardening: cfg.cbt_hardening,
        kerberos: cfg.kerberos.clone(),
        credssp,
        trusted_for_delegation: cfg.trusted_for_delegation,
        allow_remote_shell_access: !cfg.remote_shells_disabled,
        deny_ntlm: cfg.deny_ntlm,
    };
    wsman::router(wsman_cfg, host)
        .layer(middleware::from_fn_with_state(
            (state.clone(), cfg.latency.round_trip),
            api::host_faults,
        ))
        .merge(api::routes(state.clone(), down.clone()))
}

/// Binds the HTTPS listener on a fresh self-signed certificate (written where the
/// configuration asks) and serves `app` on it: its address, the certificate's PEM, the task.
async fn start_tls(
    listen: SocketAddr,
    cfg: &LabConfig,
    app: Router,
) -> std::io::Result<(SocketAddr, String, JoinHandle<()>)> {
    let (acceptor, binding, pem) = listener::self_signed_tls()?;
    if let Some(path) = &cfg.tls_cert_out {
        std::fs::write(path, &pem)?;
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(listener::serve(listener, app, Some((acceptor, binding))));
    Ok((addr, pem, task))
}
