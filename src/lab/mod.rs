//! The lab: a simulated Windows side (the IQService/WinRM host and its Exchange session)
//! for demos, tests and benchmarks. It speaks real WS-Management at `/wsman` and serves
//! its own state as JSON under `/lab/`.

pub mod cmd;
pub mod directory;
pub mod exchange;
pub mod ldap;
pub mod wsman;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use directory::{AccountSeed, LabAccount, Recipient};
pub use exchange::{Invocation, LabState, Latency, SharedState, Stats};

/// The WinRM user the lab accepts when none is given.
pub const DEFAULT_USER: &str = "mailboxd";
/// The lab's host name (what `hostname` prints).
pub const HOSTNAME: &str = "LAB-IQSVC01";

pub struct LabConfig {
    pub listen: SocketAddr,
    pub user: String,
    pub password: SecretString,
    pub accounts: Vec<AccountSeed>,
    pub latency: Latency,
    pub max_shells_per_user: usize,
    /// The lab's domain controller (LDAP); `None`: no directory served.
    pub ldap_listen: Option<SocketAddr>,
}

/// A running lab.
pub struct Lab {
    pub addr: SocketAddr,
    /// Where the lab's LDAP server listens, when it serves one.
    pub ldap_addr: Option<SocketAddr>,
    pub state: SharedState,
    task: JoinHandle<()>,
    ldap_task: Option<JoinHandle<()>>,
}

impl Lab {
    /// Binds and serves in the background.
    pub async fn start(cfg: LabConfig) -> std::io::Result<Lab> {
        let accounts = cfg
            .accounts
            .into_iter()
            .map(LabAccount::from_seed)
            .collect();
        let state: SharedState = Arc::new(Mutex::new(LabState {
            accounts,
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
                    password: cfg.password.clone(),
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
        };
        let app = wsman::router(wsman_cfg, host).merge(
            Router::new()
                .route("/lab/invocations", get(invocations))
                .route("/lab/mailboxes", get(mailboxes))
                .route("/lab/stats", get(stats))
                .with_state(state.clone()),
        );
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            {
                tracing::error!(error = %e, "lab server stopped");
            }
        });
        Ok(Lab {
            addr,
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

    /// `[ldap]` settings that point mailboxd at the lab's domain controller.
    pub fn ldap_settings(&self, user: &str, password: SecretString) -> Option<crate::config::Ldap> {
        let url = self.ldap_url()?;
        Some(crate::config::Ldap {
            urls: vec![url],
            base_dn: directory::LAB_BASE_DN.into(),
            bind_dn: format!("{user}@{}", directory::LAB_DOMAIN),
            password: Some(password),
            // The lab speaks plain LDAP on loopback; said explicitly, as the client requires.
            starttls: false,
            allow_plaintext: true,
            ..crate::config::Ldap::default()
        })
    }

    /// Waits until the server stops (it runs until the process ends).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn stop(&self) {
        self.task.abort();
        if let Some(t) = &self.ldap_task {
            t.abort();
        }
    }
}

/// Locks lab state; a panic while it was held left plain data behind, so keep serving it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn invocations(State(state): State<SharedState>) -> Json<Vec<Invocation>> {
    Json(lock(&state).invocations.clone())
}

async fn mailboxes(State(state): State<SharedState>) -> Json<Vec<LabAccount>> {
    Json(lock(&state).accounts.clone())
}

async fn stats(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let st = lock(&state);
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
    }))
}
